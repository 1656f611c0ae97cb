"""Billing behind the Router: 50 concurrent requests race a spending limit
(bounded overshoot, 402s in OpenAI's shape), and Billing killed while the
Router serves requests loses or doubles no ledger entry.

One private stack with the demo's reference provider, catalog and prices.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
from functools import partial

import openai
import orjson
import pytest
from helpers.billing import unique
from helpers.waiting import eventually

from services.common.pricing import Price, estimate_nano_usd, prompt_tokens_estimate
from services.demo import CHAT_MODEL, PRICES, AdminApi, start_demo

DEADLINE_SECONDS = 60.0
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def routed(make_stack):
    """A stack whose Router waits long enough for reservations that none is skipped under load."""
    sb = make_stack(SWITCHBOARD_BILLING_TIMEOUT_SECONDS="20", SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="3600")
    start_demo(sb.stack, sb.base_url, sb.admin_token)
    return sb


def new_user(sb) -> tuple[str, str]:
    api = AdminApi(sb.base_url, sb.admin_token)
    user = unique("payer")
    api.call("POST", "/admin/v1/users", {"name": user})
    return user, api.new_token(user)


def chat_body(text: str) -> bytes:
    return orjson.dumps(
        {"model": CHAT_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS}
    )


def reservation_of(body: bytes) -> int:
    """What the Router reserves for this body (the demo's price of reference-chat)."""
    chat_price = next(p for p in PRICES if p["provider_model"] == "reference-chat")
    price = Price(
        input_token_nano_usd=chat_price["input_token_nano_usd"],
        output_token_nano_usd=chat_price["output_token_nano_usd"],
        request_nano_usd=chat_price["request_nano_usd"],
    )
    return estimate_nano_usd(
        price, "conversational", input_tokens=prompt_tokens_estimate(len(body)), output_tokens=MAX_TOKENS
    )


def ledger_ids(sb, account: str) -> list[str]:
    """Every request id Billing stored for the account (read-only look at its SQLite file)."""
    with sqlite3.connect(f"file:{sb.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT request_id FROM ledger WHERE account = ?", (account,))]


async def test_fifty_concurrent_requests_race_a_spending_limit(routed) -> None:
    user, token = new_user(routed)
    body = chat_body("How much is too much?")
    reservation = reservation_of(body)
    budget = reservation * 10 + reservation // 2  # room for 10 reservations, not 11
    with routed.admin() as admin:
        answer = admin.put(f"/v1/billing/accounts/{user}/limit", json={"limitNanoUsd": budget})
        assert answer.status_code == 200, answer.text

    client = openai.AsyncOpenAI(base_url=f"{routed.base_url}/v1", api_key=token, max_retries=0, timeout=60)

    async def one() -> int | openai.APIStatusError:
        try:
            await client.post("/chat/completions", body=orjson.loads(body), cast_to=object)
        except openai.APIStatusError as exc:
            return exc
        return 200

    async with client:
        outcomes = await asyncio.gather(*(one() for _ in range(50)))
    refused = [o for o in outcomes if isinstance(o, openai.APIStatusError)]
    served = len(outcomes) - len(refused)
    assert served >= 10  # at least what the budget holds even if all 50 are in flight at once
    assert refused, "the limit never refused a request"
    for error in refused:
        assert error.status_code == 402, error
        assert error.body == {
            "message": error.body["message"],
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    eventually(lambda: len(ledger_ids(routed, user)) == served, "every served request in the ledger")
    with routed.admin() as admin:
        account = admin.get(f"/v1/billing/accounts/{user}").json()
    # Nothing is in flight any more: spending stays within the budget (overshoot bounded by reservations).
    assert account["reservedNanoUsd"] == 0
    assert 0 < account["spentNanoUsd"] <= budget


class Traffic:
    """Chat requests sent in a loop by a few threads; remembers the request id of every 200."""

    def __init__(self, sb, token: str, workers: int = 3) -> None:
        self.sb, self.token = sb, token
        self.served: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]

    def _loop(self) -> None:
        with self.sb.http(self.token) as http:
            while not self._stop.is_set():
                answer = http.post("/v1/chat/completions", content=chat_body("Count me once."),
                                   headers={"Content-Type": "application/json"})  # fmt: skip
                if answer.status_code == 200:
                    self.served.append(answer.headers["x-request-id"])
                else:
                    self.failures.append(f"{answer.status_code} {answer.text[:200]}")

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE_SECONDS)

    def wait_served(self, more: int) -> None:
        target = len(self.served) + more
        eventually(lambda: len(self.served) >= target, f"{more} more served requests")


def test_billing_killed_while_the_router_serves_loses_and_doubles_nothing(routed) -> None:
    user, token = new_user(routed)
    with Traffic(routed, token) as traffic:
        traffic.wait_served(15)
        billing = next(c for c in routed.stack.children if c.name == "billing")
        os.kill(billing.process.pid, signal.SIGKILL)
        billing.process.wait(timeout=10)
        traffic.wait_served(15)  # served while Billing is down: the Router spools the records
        routed.stack.children.remove(billing)
        routed.stack.start("billing", billing.argv, billing.ready)
        routed.stack.wait_ready()
        traffic.wait_served(15)
    served = list(traffic.served)
    assert not traffic.failures, traffic.failures[:3]
    eventually(lambda: len(ledger_ids(routed, user)) >= len(served), "the spooled records")
    stored = ledger_ids(routed, user)
    assert sorted(stored) == sorted(served)  # every served request exactly once
    with routed.admin() as admin:
        report = admin.get("/v1/billing/usage", params={"account": user}).json()
    assert report["requests"] == len(served)


def generation(sb, token: str, request_id: str):
    with sb.http(token) as http:
        return http.get("/v1/generation", params={"id": request_id})


def recorded(sb, token: str, request_id: str, usage: dict) -> bool:
    """Whether Billing holds the request's final record (its estimate the one usage stated)."""
    found = generation(sb, token, request_id)
    return found.status_code == 200 and found.json()["estimatedNanoUsd"] == str(usage["cost_nano_usd"])


def reference_cost(usage: dict) -> int:
    """What the reference provider's cost API answers for an answer of this usage."""
    from services.reference_provider.app import COST_PER_INPUT_TOKEN, COST_PER_OUTPUT_TOKEN, COST_PER_REQUEST

    return (
        COST_PER_REQUEST
        + COST_PER_INPUT_TOKEN * usage["prompt_tokens"]
        + COST_PER_OUTPUT_TOKEN * usage["completion_tokens"]
    )


def streamed_usage(sb, token: str) -> tuple[str, dict]:
    """(x-request-id, the final usage chunk's usage) of a stream that asked for usage."""
    body = {**orjson.loads(chat_body("Stream the cost")), "stream": True, "stream_options": {"include_usage": True}}
    with sb.http(token) as http, http.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        events = [line[6:] for line in answer.iter_lines() if line.startswith("data: {")]
        return answer.headers["x-request-id"], orjson.loads(events[-1])["usage"]


def test_every_usage_states_its_cost_and_the_generation_lookup_returns_the_record(routed) -> None:
    user, token = new_user(routed)
    with routed.http(token) as http:
        answer = http.post("/v1/chat/completions", content=chat_body("What did this cost?"))
    assert answer.status_code == 200, answer.text
    unary = answer.headers["x-request-id"], answer.json()["usage"]
    answers = [unary, streamed_usage(routed, token)]
    for request_id, usage in answers:
        assert usage["cost"] == usage["cost_nano_usd"] / 1e9 and usage["cost_nano_usd"] > 0
        # The Router sends its records in batches; a stream's provisional record (at the reservation's
        # estimate) is completed by its final one.
        eventually(partial(recorded, routed, token, request_id, usage), f"the record of {request_id}")
        record = generation(routed, token, request_id).json()
        assert (record["id"], record["account"], record["provider"], record["model"]) == (
            request_id, user, "demo", CHAT_MODEL)  # fmt: skip
        assert record["estimatedNanoUsd"] == str(usage["cost_nano_usd"])  # int64 is a JSON string
        assert (record["inputTokens"], record["outputTokens"]) == (
            str(usage["prompt_tokens"]), str(usage["completion_tokens"]))  # fmt: skip
        assert record["reconciliationState"] == "pending" and "settledNanoUsd" not in record
        assert int(record["totalTimeMs"]) >= int(record.get("timeToFirstTokenMs", 0)) >= 0
    with routed.admin() as admin:
        assert admin.post("/admin/v1/billing:reconcile", json={}, timeout=120).status_code == 200
    for request_id, usage in answers:
        record = generation(routed, token, request_id).json()
        assert record["reconciliationState"] == "settled"
        assert int(record["settledNanoUsd"]) == reference_cost(usage)
        assert record["settledCost"] == reference_cost(usage) / 1e9


def test_a_generation_is_readable_by_its_caller_its_orgs_admins_and_operators_only(routed) -> None:
    api = AdminApi(routed.base_url, routed.admin_token)
    org = unique("generations-org")
    api.call("POST", "/admin/v1/orgs", {"name": org})
    (caller, caller_token), (admin, admin_token), (member, member_token), (_, stranger_token) = (
        new_user(routed) for _ in range(4)
    )
    for user, role in ((caller, "write"), (admin, "admin"), (member, "write")):
        api.call("PUT", f"/admin/v1/orgs/{org}/members/{user}", {"role": role})
    with routed.http(caller_token) as http:
        answer = http.post("/v1/chat/completions", content=chat_body("Bill my org"), headers={"X-HF-Bill-To": org})
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    eventually(lambda: generation(routed, caller_token, request_id).status_code == 200, "the record")
    for token, status in ((caller_token, 200), (admin_token, 200), (routed.admin_token, 200),
                          (member_token, 404), (stranger_token, 404)):  # fmt: skip
        found = generation(routed, token, request_id)
        assert found.status_code == status, found.text
        if status == 404:
            assert found.json()["error"]["code"] == "generation_not_found"
    assert generation(routed, stranger_token, "no-such-request").status_code == 404
    assert generation(routed, caller_token, "x" * 65).status_code == 400
    with routed.http() as http:
        assert http.get("/v1/generation", params={"id": request_id}).status_code == 401
