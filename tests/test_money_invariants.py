"""Issue 10's money invariants through the real stack (Envoy, Registry, Router, Billing).

Hypothesis (fixed seed) runs random mixes of unary and streamed chat requests, embeddings and
(streamed, binary) speech requests, a few at a time, against a mock provider that answers as each
request asks: well (with or without usage), garbage, JSON without `choices` (embeddings without
`data`, speech without audio), oversize, cut off, or a 500; some requests may fail
over to a second provider that always answers well. In between, Billing is paused (SIGSTOP),
resumed, killed and restarted, and the Router is killed (SIGKILL) and restarted. After each
run: every 2xx the caller saw is one ledger record (with the answer's provider request id and
the documented output tokens), no other answer is, and once reconciled the settled total is
exactly what the cost API answered for those requests.

In the random runs processes are stopped between requests, never during one (a unary request
cut by its Router's death has no outcome the caller could check); a stream whose Router is
stopped (SIGTERM) or killed (SIGKILL) mid-way has a test of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from helpers.billing import CostApiStub, serving_in_thread
from helpers.money import (
    ABSURD,
    AUDIO_PIECE,
    BEHAVIOURS,
    CHAT_ANSWER,
    CHAT_ROUTE,
    CUT,
    DRAIN_SECONDS,
    EMBEDDINGS,
    GOOD,
    HELD,
    MESSAGES_ROUTE,
    NO_USAGE,
    OVERSIZE,
    RESPONSES_ROUTE,
    SPEECH,
    UNREADABLE,
    USAGE,
    MockProvider,
    chat,
)
from helpers.waiting import eventually
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from services.demo import AdminApi
from services.launcher import Child

pytestmark = pytest.mark.slow

MAX_ANSWER_BYTES = 65_536
SPENDING_LIMIT = 10**15  # never reached: it only makes every request ask Billing
BILLING_AUTHORIZATION = "Bearer money-" + uuid.uuid4().hex

CHAT_LIKE = (CHAT_ROUTE, RESPONSES_ROUTE, MESSAGES_ROUTE)
ROUTES = (*CHAT_LIKE, EMBEDDINGS, SPEECH)
PATHS = {CHAT_ROUTE: "/v1/chat/completions", RESPONSES_ROUTE: "/v1/responses", MESSAGES_ROUTE: "/v1/messages"}


def cost_of(provider_request_id: str) -> int:
    """What the cost API answers for an id: arbitrary, but fixed, so sums can be checked."""
    return 1_000 + zlib.crc32(provider_request_id.encode()) % 1_000_000


def expected_status(behaviour: str, stream: bool, failover: bool, route: str = CHAT_ROUTE) -> int:
    """A valid answer is a 200, and so is a stream cut after its first event or with a large event
    (the size cap is of unary answers; speech is always a stream); anything else is tried on the
    second provider when there is one, and is a 502 when there is not."""
    stream = route == SPEECH if route in (EMBEDDINGS, SPEECH) else stream
    if failover or behaviour in (GOOD, NO_USAGE, ABSURD) or (stream and behaviour in (CUT, OVERSIZE)):
        return 200
    return 502


async def _costs(ids: list[str]) -> tuple[int, bytes]:
    return 200, orjson.dumps({"requests": [{"requestId": i, "costNanoUsd": cost_of(i)} for i in ids]})


# --- the stack and its processes --------------------------------------------------------------


@dataclass
class Environment:
    """The stack, the mock provider and its cost API, shared by every run."""

    sb: object  # conftest.RunningStack
    provider: MockProvider
    costs: CostApiStub
    faults: Counter = field(default_factory=Counter)  # which faults the runs caused, to check they all did

    @property
    def spool(self) -> Path:
        return self.sb.stack.data_dir / "router-ledger-spool"

    def child(self, name: str) -> Child | None:
        return next((c for c in self.sb.stack.children if c.name == name), None)

    def kill(self, name: str, signum: int = signal.SIGKILL) -> Child:
        """Ends the process (SIGKILL ends a stopped one too); the child leaves the stack until started again."""
        child = self.child(name)
        assert child is not None
        child.process.send_signal(signum)
        child.process.wait(timeout=30)
        self.sb.stack.children.remove(child)
        return child

    def start_again(self, old: Child) -> None:
        """The same argv (so the same port), ready before this returns."""
        new = self.sb.stack.start(old.name, old.argv, old.ready)
        eventually(lambda: new.process.poll() is not None or new.ready(), f"{old.name} to start again")
        assert new.process.poll() is None, new.tail()

    def signal_billing(self, signum: int) -> None:
        billing = self.child("billing")
        assert billing is not None
        os.kill(billing.process.pid, signum)

    def drained(self) -> bool:
        """Whether the Router's spool holds no record Billing has not acknowledged: no batch file,
        and every journal (the open one, those sealed by a restart) empty."""
        try:
            sizes = [path.stat().st_size for path in self.spool.iterdir() if path.suffix != ".rejected"]
        except FileNotFoundError:  # a file went while we looked: the sender is at work
            return False
        return (self.spool / "journal.log").exists() and not any(sizes)


@pytest.fixture(scope="module")
def environment(make_stack) -> Iterator[Environment]:
    sb = make_stack(
        SWITCHBOARD_MAX_ANSWER_BYTES=str(MAX_ANSWER_BYTES),
        SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="0.5",  # background passes run (and get killed) mid-run
        SWITCHBOARD_BREAKER_FAILURES="1000000",  # the provider is never skipped: every status is predictable
        # A pass killed mid-way leaves its claims until this timeout (+5 s) is over: 8 s, not 35 s.
        SWITCHBOARD_COST_API_TIMEOUT_SECONDS="3",
        SWITCHBOARD_BILLING_TIMEOUT_SECONDS="0.5",  # the default: a paused Billing costs each request 0.5 s
    )
    with serving_in_thread(MockProvider()) as provider, serving_in_thread(CostApiStub(_costs)) as costs:
        try:
            yield Environment(sb, provider, costs)
        finally:
            provider.release.set()


# --- one run's world and what its caller saw ---------------------------------------------------


@dataclass
class World:
    """One run's caller (with a spending limit, so every request asks Billing) and a chat, an
    embeddings and a speech model, each served by two providers of the mock: p1 as asked, p2
    always well."""

    tag: str
    user: str
    token: str
    model: str
    providers: tuple[str, str]

    def model_of(self, route: str) -> str:
        return self.model if route in CHAT_LIKE else f"{self.model}-{route}"


# The task each route's model is mapped for.
ROUTE_TASKS = {CHAT_ROUTE: "conversational", EMBEDDINGS: "feature-extraction", SPEECH: "text-to-speech"}


def new_world(env: Environment) -> World:
    api = AdminApi(env.sb.base_url, env.sb.admin_token)
    tag = uuid.uuid4().hex[:8]
    org, user, model = f"org-{tag}", f"user-{tag}", f"org-{tag}/chat"
    api.ensure_member(org, user)
    world = World(tag, user, "", model, (f"p1-{tag}", f"p2-{tag}"))
    catalog = [{"id": world.model_of(route), "pipeline_tag": task} for route, task in ROUTE_TASKS.items()]
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": catalog})
    for path, provider in zip(("p1", "p2"), world.providers, strict=True):
        api.ensure_provider({
            "id": provider, "org": org, "base_url": f"{env.provider.url}/{tag}/{path}", "api_key": "sk-mock-0123456789",
            "tasks": list(ROUTE_TASKS.values()), "billing_url": env.costs.url,
            "billing_authorization": BILLING_AUTHORIZATION,
        })  # fmt: skip
        api.add_mappings(provider, [
            {"task": task, "hfModel": world.model_of(route), "providerModel": "upstream-model", "status": "live"}
            for route, task in ROUTE_TASKS.items()
        ])  # fmt: skip
    api.call("PUT", f"/v1/billing/accounts/{user}/limit", {"limitNanoUsd": SPENDING_LIMIT})
    world.token = api.new_token(user)
    return world


@dataclass(frozen=True)
class Seen:
    """One request and what its caller got."""

    behaviour: str
    stream: bool
    failover: bool
    status: int
    request_id: str = ""  # x-request-id of a 2xx
    provider: str = ""  # x-inference-provider of a 2xx
    provider_request_id: str = ""  # the answer's id
    content_events: int = 0  # of a stream, the events with content its caller got
    asked_for_usage: bool = False  # a stream's caller sent stream_options.include_usage
    route: str = CHAT_ROUTE

    @property
    def reported(self) -> bool:
        """Whether the answering provider reported usage (p2 always does; p1 when it answers well,
        and when it reports absurd usage)."""
        return self.provider.startswith("p2-") or self.behaviour in (GOOD, ABSURD)

    @property
    def believed(self) -> bool:
        """Whether the reported usage is billed (absurd usage is billed as no usage)."""
        return self.reported and not (self.behaviour == ABSURD and self.provider.startswith("p1-"))

    @property
    def output_tokens(self) -> int:
        """What the ledger records: the usage the provider reported; for a stream without usage,
        the content events sent; for a unary answer without usage, 0 (billed at the estimate); none
        for embeddings and speech (billed in input tokens and characters)."""
        if self.route not in CHAT_LIKE:
            return 0
        if self.stream:
            return USAGE["completion_tokens"] if self.believed else self.content_events
        return CHAT_ANSWER["usage"]["completion_tokens"] if self.believed else 0


def _events(answer: httpx.Response) -> list[dict]:
    """A stream's data events, [DONE] left out."""
    data = [e.removeprefix(b"data: ") for e in answer.content.split(b"\n\n") if e.startswith(b"data: ")]
    return [json.loads(d) for d in data if d != b"[DONE]"]


def send_task(env: Environment, world: World, behaviour: str, failover: bool, route: str) -> tuple[Seen, bytes]:
    """One embeddings or speech request to p1 (then p2 when `failover`): what its caller saw, and
    the body (a speech stream read until it ends or breaks)."""
    providers = " ".join(world.providers if failover else world.providers[:1])
    body = {"model": world.model_of(route), "input": behaviour, "provider": providers, "voice": "alloy"}
    path = "/v1/embeddings" if route == EMBEDDINGS else "/v1/audio/speech"
    received = b""
    # A speech stream cut mid-way: what arrived is the answer.
    with (
        env.sb.http(world.token) as http,
        http.stream("POST", path, json=body) as answer,
        contextlib.suppress(httpx.HTTPError),
    ):
        for piece in answer.iter_raw():
            received += piece
    if answer.status_code != 200:
        return Seen(behaviour, route == SPEECH, failover, answer.status_code, route=route), received
    headers = answer.headers
    seen = Seen(behaviour, route == SPEECH, failover, 200, headers["x-request-id"], headers["x-inference-provider"],
                headers["inference-id"], route=route)  # fmt: skip
    return seen, received


CONTENT_EVENTS = {RESPONSES_ROUTE: "response.output_text.delta", MESSAGES_ROUTE: "content_block_delta"}


def routed(route: str, body: dict) -> dict:
    """The chat body as the route's API says it (its one user message holds the behaviour)."""
    common = {key: body[key] for key in ("model", "stream", "provider")}
    if route == RESPONSES_ROUTE:
        return {**common, "input": body["messages"][0]["content"]}
    if route == MESSAGES_ROUTE:
        return {**common, "max_tokens": 64, "messages": body["messages"]}
    return body


def _typed_events(answer: httpx.Response) -> list[dict]:
    """A translated stream's events ("event: <type>" and "data: {...}" lines)."""
    lines = (line for event in answer.content.split(b"\n\n") for line in event.split(b"\n"))
    return [json.loads(line.removeprefix(b"data: ")) for line in lines if line.startswith(b"data: ")]


def send(
    env: Environment,
    world: World,
    behaviour: str,
    stream: bool,
    failover: bool,
    usage: bool = False,
    route: str = CHAT_ROUTE,
) -> tuple[Seen, httpx.Response | bytes]:
    """One request to p1 (then p2 when `failover`); with `usage`, a chat stream asks for usage
    (a translated stream always does: its answer carries usage). Embeddings and speech (`route`)
    go by send_task."""
    if route not in CHAT_LIKE:
        return send_task(env, world, behaviour, failover, route)
    body = chat(world.model, stream=stream, provider=" ".join(world.providers if failover else world.providers[:1]))
    body["messages"][0]["content"] = behaviour
    if stream and usage:
        body["stream_options"] = {"include_usage": True}
    with env.sb.http(world.token) as http:
        answer = http.post(PATHS[route], json=routed(route, body))
    if answer.status_code != 200:
        return Seen(behaviour, stream, failover, answer.status_code, route=route), answer
    headers = answer.headers
    if route != CHAT_ROUTE:
        contents = sum(1 for e in _typed_events(answer) if e["type"] == CONTENT_EVENTS[route]) if stream else 0
        seen = Seen(behaviour, stream, failover, 200, headers["x-request-id"], headers["x-inference-provider"],
                    headers["inference-id"], contents, stream, route)  # fmt: skip
        return seen, answer
    events = _events(answer) if stream else [answer.json()]
    seen = Seen(behaviour, stream, failover, 200, headers["x-request-id"], headers["x-inference-provider"],
                events[0]["id"], sum(1 for e in events if e.get("choices")), stream and usage)  # fmt: skip
    return seen, answer


def check_answer(world: World, seen: Seen, answer: httpx.Response | bytes) -> None:
    """The status each behaviour calls for, in OpenAI's shape (Anthropic's on its route), from the
    provider that should answer; a chat stream's usage never shown unasked; speech's audio as the
    provider sent it."""
    body = answer if isinstance(answer, bytes) else answer.content
    expected = expected_status(seen.behaviour, seen.stream, seen.failover, seen.route)
    assert seen.status == expected, (seen, body[:300])
    if seen.status != 200:
        error = orjson.loads(body)["error"]
        assert error["type" if seen.route == MESSAGES_ROUTE else "code"] in ("upstream_error", "api_error"), error
        return
    first_served = expected_status(seen.behaviour, seen.stream, False, seen.route) == 200
    assert seen.provider == world.providers[0 if first_served else 1]
    assert seen.provider_request_id.startswith(f"{world.tag}-{'p1' if first_served else 'p2'}-")
    if seen.route == SPEECH and seen.behaviour == CUT:  # what arrived before the cut, its end held back
        assert (AUDIO_PIECE * 2).startswith(body), body[:64]  # (a secret could have begun there)
    elif seen.route == SPEECH:
        assert body.startswith(AUDIO_PIECE) and len(body) % len(AUDIO_PIECE) == 0, body[:64]
    if seen.route not in CHAT_LIKE:
        return
    if seen.stream and seen.route != CHAT_ROUTE:
        last = _typed_events(answer)[-1]["type"]
        broken = {RESPONSES_ROUTE: "response.failed", MESSAGES_ROUTE: "error"}[seen.route]
        assert (last == broken) == (seen.behaviour == CUT), last
    elif seen.stream:
        # Asked for on the caller's behalf: shown only to a caller who asked, when the provider sent it.
        assert (b'"usage"' in answer.content) == (seen.asked_for_usage and seen.reported)
        assert answer.content.endswith(b"data: [DONE]\n\n"), answer.content[-200:]
        assert (b'"stream_interrupted"' in answer.content) == (seen.behaviour == CUT)  # a stream never switches


# --- the state machine ------------------------------------------------------------------------

MAX_KILLS = 2  # of each process per run
# (behaviour, stream, failover, a stream's caller asks for usage); the route cycles through ROUTES
# (not drawn: the same draws keep the runs reaching every fault)
REQUEST = st.tuples(st.sampled_from(BEHAVIOURS), st.booleans(), st.booleans(), st.booleans())
REQUESTS = st.lists(REQUEST, min_size=1, max_size=4)


class MoneyMachine(RuleBasedStateMachine):
    """Requests (a few at a time, concurrently) and process faults in a random order."""

    def __init__(self, env: Environment) -> None:
        super().__init__()
        self.env = env
        self.world = new_world(env)
        self.seen: list[Seen] = []
        self.billing_paused = False
        self.billing_dead: Child | None = None
        self.kills: Counter = Counter()  # restarts take seconds: a few per run
        self.routes = itertools.cycle(ROUTES)

    @initialize()
    def ask_each_behaviour(self) -> None:
        """Every behaviour once at the start of every run: on each chat-like route unary and streamed,
        on embeddings and speech."""
        chats = [(behaviour, stream, False, False, route)
                 for behaviour in BEHAVIOURS for stream in (False, True) for route in CHAT_LIKE]  # fmt: skip
        tasks = [(behaviour, False, False, False, route) for behaviour in BEHAVIOURS for route in (EMBEDDINGS, SPEECH)]
        self._ask(chats + tasks)

    # Rules are drawn by name order first: "ask" makes the simplest run one of requests, not of faults.
    @rule(requests=REQUESTS)
    def ask(self, requests: list[tuple[str, bool, bool, bool]]) -> None:
        self._ask([(*request, next(self.routes)) for request in requests])

    def _ask(self, requests: list[tuple[str, bool, bool, bool, str]]) -> None:
        """Sends the requests at once; records what each caller saw before checking it."""
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda r: send(self.env, self.world, *r), requests))
        self.seen += [seen for seen, _ in answers]  # first: what was billed is checked even when a check fails
        for seen, answer in answers:
            check_answer(self.world, seen, answer)

    @precondition(lambda self: not self.billing_paused and self.billing_dead is None)
    @rule()
    def pause_billing(self) -> None:
        self.env.signal_billing(signal.SIGSTOP)
        self.billing_paused = True
        self.env.faults["pause billing"] += 1

    @precondition(lambda self: self.billing_paused)
    @rule()
    def resume_billing(self) -> None:
        self.env.signal_billing(signal.SIGCONT)
        self.billing_paused = False

    @precondition(lambda self: self.billing_dead is None and self.kills["billing"] < MAX_KILLS)
    @rule()
    def kill_billing(self) -> None:
        self.env.faults["kill billing" + (" while paused" if self.billing_paused else "")] += 1
        self.billing_dead, self.billing_paused = self.env.kill("billing"), False
        self.kills["billing"] += 1

    @precondition(lambda self: self.billing_dead is not None)
    @rule()
    def restart_billing(self) -> None:
        self.env.start_again(self.billing_dead)
        self.billing_dead = None

    @precondition(lambda self: self.kills["router"] < MAX_KILLS)
    @rule()
    def kill_and_restart_router(self) -> None:
        away = "dead" if self.billing_dead else "paused" if self.billing_paused else "up"
        self.env.faults[f"kill router, billing {away}"] += 1
        self.env.start_again(self.env.kill("router"))
        self.kills["router"] += 1

    def teardown(self) -> None:
        if self.billing_paused:
            self.resume_billing()
        if self.billing_dead is not None:
            self.restart_billing()
        check_invariants(self.env, self.world, self.seen)


# --- the invariants ---------------------------------------------------------------------------


def ledger_of(env: Environment, account: str) -> dict[str, tuple[str, str, int]]:
    """request id -> (provider request id, provider, output tokens) of the account's ledger rows (read-only)."""
    query = "SELECT request_id, provider_request_id, provider, output_tokens FROM ledger WHERE account = ?"
    with sqlite3.connect(f"file:{env.sb.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        return {request_id: tuple(rest) for request_id, *rest in db.execute(query, (account,))}


def usage(env: Environment, account: str) -> dict:
    """The month's usage report; the daily one answers too (usage reports never answer 5xx)."""
    with env.sb.admin() as admin:
        daily = admin.get(f"/v1/billing/accounts/{account}/dailyUsage")
        answer = admin.get("/v1/billing/usage", params={"account": account})
    assert daily.status_code == 200, daily.text
    assert answer.status_code == 200, answer.text
    return answer.json()


def month_total_recounted(env: Environment, account: str) -> tuple[int, int]:
    """(the account's running month total, its ledger recounted: settled costs, else estimates)."""
    with env.sb.admin() as admin:
        answer = admin.get(f"/v1/billing/accounts/{account}")
    assert answer.status_code == 200, answer.text
    charge = "CASE WHEN state = 'settled' THEN cost_nano_usd ELSE estimated_nano_usd END"
    query = f"SELECT {charge} FROM ledger WHERE account = ?"
    with sqlite3.connect(f"file:{env.sb.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        recount = sum(charge for (charge,) in db.execute(query, (account,)))
    return int(answer.json()["spentNanoUsdExact"]), recount


def reconciled(env: Environment, account: str) -> dict:
    """The account's usage report once nothing is pending."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while (report := usage(env, account)).get("pendingNanoUsd"):
        assert time.monotonic() < deadline, report
        with env.sb.admin() as admin:
            answer = admin.post("/admin/v1/billing:reconcile", json={}, timeout=120)
        assert answer.status_code == 200, answer.text
    return report


def check_invariants(env: Environment, world: World, seen: list[Seen]) -> None:
    served = [s for s in seen if s.status == 200]
    wanted = {s.request_id: (s.provider_request_id, s.provider, s.output_tokens) for s in served}
    assert len(wanted) == len(served)  # request ids are unique
    eventually(lambda: env.drained() and set(wanted) <= set(ledger_of(env, world.user)),
             "every served request in the ledger", seconds=DRAIN_SECONDS)  # fmt: skip
    assert not any(env.spool.glob("*.rejected"))
    # Each 2xx is one row, with the answer's provider request id, provider and size; nothing else is a row.
    assert ledger_of(env, world.user) == wanted
    report = reconciled(env, world.user)
    assert report.get("requests", 0) == len(served)
    assert int(report.get("settledNanoUsd", 0)) == sum(cost_of(pid) for pid, *_ in wanted.values())
    spent, recounted = month_total_recounted(env, world.user)
    assert spent == recounted
    # The cost API was asked about the served answers' ids, and about no other answer of this run.
    asked = {i for call in env.costs.calls for i in call if i.startswith(world.tag)}
    assert asked == {pid for pid, *_ in wanted.values()}


# --- the test ---------------------------------------------------------------------------------

RUNS = settings(
    max_examples=5,
    stateful_step_count=15,
    deadline=None,
    derandomize=True,  # a fixed seed: the same runs every time
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each step is seconds of a real stack
    suppress_health_check=list(HealthCheck),
)


def test_every_served_answer_is_billed_once_and_nothing_else_is(environment: Environment) -> None:
    run_state_machine_as_test(lambda: MoneyMachine(environment), settings=RUNS)
    faults = environment.faults
    for fault in ("pause billing", "kill billing", "kill billing while paused", "kill router, billing up",
                  "kill router, billing paused", "kill router, billing dead"):  # fmt: skip
        assert faults[fault], (fault, faults)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_stream_cut_by_the_routers_end_is_still_billed(environment: Environment, signum: int) -> None:
    env, world = environment, new_world(environment)
    body = chat(world.model, stream=True, provider=world.providers[0])
    body["messages"][0]["content"] = HELD
    with env.sb.http(world.token) as http, http.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        events = answer.iter_raw()
        assert b"chat.completion.chunk" in next(events)  # the first event reached the caller
        env.start_again(env.kill("router", signum))  # SIGTERM: the stream outlives the shutdown grace
        with contextlib.suppress(httpx.HTTPError):
            for _ in events:  # whatever Envoy makes of the broken stream
                pass
    eventually(env.drained, "the restarted Router's spool sent", seconds=DRAIN_SECONDS)
    assert request_id in ledger_of(env, world.user)


def test_an_answer_its_api_cannot_be_made_of_costs_nothing(environment: Environment) -> None:
    """The chat route serves (and bills) what the translated routes cannot make their answer of:
    for them it is the provider's failure, a 502 that is no ledger row and no cost asked for."""
    env, world = environment, new_world(environment)
    seen = [send(env, world, UNREADABLE, stream=False, failover=False, route=route)[0] for route in CHAT_LIKE]
    assert [s.status for s in seen] == [200 if s.route == CHAT_ROUTE else 502 for s in seen], seen
    check_invariants(env, world, seen)


def test_unary_answers_without_usage_count_against_a_keys_tokens_per_minute(environment: Environment) -> None:
    """A provider that reports no usage leaves the key's minute counted as its reservation assumed
    (the prompt's estimate and max_tokens), as it is billed: three such answers use a 5,000-token
    minute, and the key is refused before its tenth request."""
    env, world = environment, new_world(environment)
    body = {"name": f"tpm-{world.tag}", "limits": {"tokensPerMinute": 5_000}}
    token = AdminApi(env.sb.base_url, env.sb.admin_token).call("POST", f"/admin/v1/users/{world.user}/tokens", body)
    request = chat(world.model, provider=world.providers[0], max_tokens=2_000)
    request["messages"][0]["content"] = NO_USAGE
    statuses = []
    with env.sb.http(token["token"]) as http:
        while len(statuses) < 10 and 429 not in statuses:
            statuses.append(http.post("/v1/chat/completions", json=request).status_code)
            time.sleep(0.2)  # the minute's count is recorded off the answer's path
    assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429, statuses
