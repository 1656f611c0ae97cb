"""Issue 10's findings, each reproduced through real Envoy against a private stack:
served answers are billed exactly once, bad answers never, numbers are checked
at the boundary, a new limit bites at once, Billing away costs one timeout per
cooldown, revocation reaches Billing, and the internal services need the
service credential.

A small HTTP server stands in for a provider's upstream: each base URL path
(`/<behaviour>/v1/...`) picks how it answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import grpc
import httpx
import pytest
from helpers.clients import async_http_client
from helpers.money import CHAT_ANSWER, OVERSIZE_BYTES, chat, ledger_rows
from helpers.upstream import JsonHandler
from helpers.waiting import eventually
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.accounts import OPERATOR_ACCOUNT
from services.common.auth import PREVIOUS_SERVICE_CREDENTIAL_KEY
from services.demo import AdminApi
from services.launcher import free_port

API_KEY = "sk-upstream-" + uuid.uuid4().hex
BILLING_AUTHORIZATION = "Bearer cost-" + uuid.uuid4().hex


def _chunk(content: str) -> bytes:
    event = {"id": "c1", "object": "chat.completion.chunk", "model": "upstream-model",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class Upstream(JsonHandler):
    """Answers by the first path segment: good (streams without usage), garbage, no-choices,
    empty-choices, oversize."""

    def _send(self, body: bytes, content_type: str = "application/json") -> None:
        self.send(200, body, content_type)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(request)
        behaviour = self.path.split("/")[1]
        if behaviour == "garbage":
            self._send(b"<html>not json</html>", "text/html")
        elif behaviour == "no-choices":
            self._send(b'{"id": "c1", "object": "chat.completion"}')
        elif behaviour == "empty-choices":
            self._send(b'{"id": "c1", "object": "chat.completion", "choices": []}')
        elif behaviour == "oversize":
            self._send(json.dumps({**CHAT_ANSWER, "padding": "x" * OVERSIZE_BYTES}).encode())
        elif request.get("stream"):  # a stream that never reports usage, even when asked
            self._send(_chunk("one") + _chunk(" two") + _chunk(" three") + b"data: [DONE]\n\n", "text/event-stream")
        else:
            self._send(json.dumps(CHAT_ANSWER).encode())


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Upstream)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sb(make_stack):
    return make_stack(
        SWITCHBOARD_MAX_ANSWER_BYTES="100000",
        SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="3600",
    )


class Setup:
    """A user with a token, and a chat model served by one mock provider per behaviour."""

    def __init__(self, sb, upstream: ThreadingHTTPServer) -> None:
        self.sb, self.api = sb, AdminApi(sb.base_url, sb.admin_token)
        suffix = uuid.uuid4().hex[:8]
        self.org, self.user = f"org-{suffix}", f"user-{suffix}"
        self.api.ensure_member(self.org, self.user)
        self.token = self.api.new_token(self.user)
        self.upstream = f"http://127.0.0.1:{upstream.server_address[1]}"

    def provider(self, url: str, **settings: object) -> str:
        provider = f"p-{uuid.uuid4().hex[:8]}"
        settings = {"api_key": API_KEY, "tasks": ["conversational"], **settings}
        self.api.ensure_provider({"id": provider, "org": self.org, "base_url": url, **settings})
        return provider

    def serve(self, provider: str, model: str) -> None:
        mapping = {"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live"}
        self.api.call("POST", f"/api/partners/{provider}/models", mapping)

    def chat_model(self, behaviour: str) -> str:
        model = f"{self.org}/m-{uuid.uuid4().hex[:8]}"
        catalog_entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        self.api.call("POST", "/admin/v1/models:batchUpsert", {"models": [catalog_entry]})
        self.serve(self.provider(f"{self.upstream}/{behaviour}"), model)
        return model

    def http(self, token: str | None = None) -> httpx.Client:
        return self.sb.http(token or self.token)


@pytest.fixture
def setup(sb, upstream) -> Setup:
    return Setup(sb, upstream)


def error_of(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# --- 1. served, never billed: numbers are checked at the boundary ---------------------------


@pytest.mark.parametrize(
    ("param", "value"),
    [("max_tokens", 1e18), ("max_tokens", 2**63), ("max_tokens", 10**18), ("max_completion_tokens", -1),
     ("max_tokens", True), ("n", 4e18), ("n", 0), ("temperature", 3), ("top_p", "1"), ("seed", 2**64),
     ("stream", "yes"), ("messages", "hello"), ("model", "x" * 20_000), ("provider", " ".join(["p"] * 3000))],
)  # fmt: skip
def test_numbers_and_types_out_of_range_are_a_400_naming_the_parameter(setup, param, value) -> None:
    model = setup.chat_model("good")
    body = chat(model, stream=True) | {param: value}
    with setup.http() as http:
        error = error_of(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param and error["code"] == "invalid_parameter"
    assert len(error["message"]) < 200  # never echoes the input


def test_image_counts_out_of_range_are_a_400(setup) -> None:
    with setup.http() as http:
        for n in (4e18, 2**63, 11, 0):
            body = {"model": "org/none", "prompt": "a cat", "n": n}
            assert error_of(http.post("/v1/images/generations", json=body), 400)["param"] == "n"


def test_streams_without_usage_are_billed_with_counted_tokens_and_hide_the_usage_they_asked_for(
    setup, upstream
) -> None:
    model = setup.chat_model("good")
    with setup.http() as http:
        answers = [http.post("/v1/chat/completions", json=chat(model, stream=True, max_tokens=1_000_000))
                   for _ in range(5)]  # fmt: skip
    assert [a.status_code for a in answers] == [200] * 5
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}  # asked for, on the caller's behalf
    assert all(b'"usage"' not in a.content for a in answers)  # the caller did not ask: none shown
    ids = sorted(a.headers["x-request-id"] for a in answers)
    eventually(lambda: len(ledger_rows(setup.sb, setup.user)) == 5, "five ledger records")
    rows = ledger_rows(setup.sb, setup.user)
    assert [r[0] for r in rows] == ids
    assert {r[1] for r in rows} == {3}  # three content events counted as output tokens
    assert all(r[2] > 0 for r in rows)


async def test_fifty_concurrent_large_streams_are_each_billed_once(setup) -> None:
    model = setup.chat_model("good")
    async with async_http_client(base_url=setup.sb.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {setup.token}"}) as http:  # fmt: skip
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=chat(model, stream=True, max_tokens=1_000_000)) for _ in range(50))
        )
    assert [a.status_code for a in answers] == [200] * 50
    eventually(lambda: len(ledger_rows(setup.sb, setup.user)) == 50, "fifty ledger records")
    assert sorted(r[0] for r in ledger_rows(setup.sb, setup.user)) == sorted(a.headers["x-request-id"] for a in answers)


# --- 3. bad provider answers are a 502 and cost nothing --------------------------------------


# The size cap is of unary answers; a stream's events are passed on as they come.
@pytest.mark.parametrize(
    ("behaviour", "stream"),
    [
        ("garbage", False),
        ("no-choices", False),
        ("empty-choices", False),
        ("oversize", False),
        ("garbage", True),
        ("no-choices", True),
    ],
)
def test_an_answer_that_is_not_valid_for_its_route_is_a_502_and_never_billed(setup, behaviour, stream) -> None:
    model = setup.chat_model(behaviour)
    with setup.http() as http:
        error = error_of(http.post("/v1/chat/completions", json=chat(model, stream=stream)), 502)
        good = http.post("/v1/chat/completions", json=chat(setup.chat_model("good")))
    assert error["code"] == "upstream_error"
    assert good.status_code == 200
    eventually(lambda: ledger_rows(setup.sb, setup.user), "the good request's record")
    assert [r[0] for r in ledger_rows(setup.sb, setup.user)] == [good.headers["x-request-id"]]


def test_a_bad_answer_fails_over_to_the_next_provider(setup) -> None:
    model = setup.chat_model("garbage")
    second = setup.provider(f"{setup.upstream}/good", default_rank=1)
    setup.serve(second, model)
    with setup.http() as http:
        answer = http.post("/v1/chat/completions", json=chat(model))
    assert answer.status_code == 200 and answer.headers["x-inference-provider"] == second


# --- 2. a new limit bites at once -------------------------------------------------------------


async def test_a_limit_set_after_a_request_applies_to_the_next_fifty(setup) -> None:
    model = setup.chat_model("good")
    with setup.http() as http:
        assert http.post("/v1/chat/completions", json=chat(model)).status_code == 200
        limit = http.put(f"/v1/billing/accounts/{setup.user}/limit", json={"limitNanoUsd": 30_000})
        assert limit.status_code == 200, limit.text
    async with async_http_client(base_url=setup.sb.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {setup.token}"}) as http:  # fmt: skip
        answers = await asyncio.gather(*(http.post("/v1/chat/completions", json=chat(model)) for _ in range(50)))
    # No price is set: every request's estimate is the default 100,000 nano-USD, over the whole budget.
    assert [a.status_code for a in answers] == [402] * 50
    assert {a.json()["error"]["code"] for a in answers} == {"insufficient_quota"}


def test_a_limit_body_without_the_limit_is_a_400_not_no_limit(setup) -> None:
    with setup.http() as http:
        assert http.put(f"/v1/billing/accounts/{setup.user}/limit", json={"limitNanoUsd": 5000}).status_code == 200
        for body in ({}, {"limitNanoUSD": 5000}):
            error = error_of(http.put(f"/v1/billing/accounts/{setup.user}/limit", json=body), 400)
            assert "limitNanoUsd" in error["message"] or "limitNanoUSD" in error["message"]
        account = http.get(f"/v1/billing/accounts/{setup.user}").json()
    assert account["limitNanoUsd"] == 5000


# --- 4. the admin token bills an account no user can own --------------------------------------


def test_what_the_admin_token_spends_is_billed_to_the_operator_account(setup) -> None:
    model = setup.chat_model("good")
    with setup.sb.admin() as admin:
        answer = admin.post("/v1/chat/completions", json=chat(model))
    assert answer.status_code == 200
    eventually(lambda: answer.headers["x-request-id"] in {r[0] for r in ledger_rows(setup.sb, OPERATOR_ACCOUNT)},
             "the operator's record")  # fmt: skip
    with setup.sb.admin() as admin:
        assert admin.post("/admin/v1/users", json={"name": OPERATOR_ACCOUNT}).status_code == 400


# --- 7. a hung Billing costs one timeout per cooldown -----------------------------------------


def test_a_hung_billing_is_skipped_after_a_few_timeouts(make_stack, upstream) -> None:
    stack = make_stack(SWITCHBOARD_BILLING_BREAKER_COOLDOWN_SECONDS="3600", SWITCHBOARD_BILLING_TIMEOUT_SECONDS="0.5")
    hung = Setup(stack, upstream)
    model = hung.chat_model("good")
    with hung.http() as http:
        assert http.put(f"/v1/billing/accounts/{hung.user}/limit", json={"limitNanoUsd": 10**15}).status_code == 200
    # Billing's push of which accounts have a limit is what spares the unlimited account: the Router
    # follows it from the stack's start (tests/helpers/stacks.py waits for that).
    unlimited = Setup(hung.sb, upstream)
    billing = next(c for c in hung.sb.stack.children if c.name == "billing")
    os.kill(billing.process.pid, signal.SIGSTOP)
    try:
        with unlimited.http() as http:  # Billing pushed that this account has no limit: never asked
            free = [http.post("/v1/chat/completions", json=chat(model)) for _ in range(5)]
        failures_before_limited = reservation_failures(hung.sb)
        with hung.http() as http:
            answers = [http.post("/v1/chat/completions", json=chat(model)) for _ in range(12)]
    finally:
        os.kill(billing.process.pid, signal.SIGCONT)
    assert [a.status_code for a in free + answers] == [200] * 17  # availability wins
    assert failures_before_limited == 0
    # Three reservation timeouts (--billing-breaker-failures) opened the breaker; the others never asked.
    assert reservation_failures(hung.sb) == 3
    eventually(lambda: len(ledger_rows(hung.sb, hung.user)) == 12, "every served request in the ledger")


def reservation_failures(sb) -> int:
    logs = (sb.stack.data_dir / "logs" / "router.log").read_text()
    return logs.count('"reservation failed: the request proceeds without a spending check"')


# --- 8. revocation reaches Billing through the Registry's change feed ------------------------


def test_a_revoked_token_is_refused_by_billing_without_a_cache_timer(setup) -> None:
    token_name = f"t-{uuid.uuid4().hex[:6]}"
    token = setup.api.call("POST", f"/admin/v1/users/{setup.user}/tokens", {"name": token_name})["token"]
    with setup.http(token) as http:
        assert http.get(f"/v1/billing/accounts/{setup.user}").status_code == 200  # cached now
        setup.api.call("DELETE", f"/admin/v1/users/{setup.user}/tokens/{token_name}")
        eventually(lambda: http.get(f"/v1/billing/accounts/{setup.user}").status_code == 401, "the revocation")


# --- 9. the internal services need the service credential ------------------------------------


def test_internal_services_refuse_calls_without_the_service_credential(sb) -> None:
    with sb.channel("registry", internal=False) as channel:
        internal = internal_grpc.InternalServiceStub(channel)
        for call, request in (
            (internal.ListProviderConfigs, internal_pb.ListProviderConfigsRequest()),
            (internal.AuthenticateToken, internal_pb.AuthenticateTokenRequest(token=sb.admin_token)),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with sb.channel("billing", internal=False) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            record = billing_pb.LedgerRecord(request_id=str(uuid.uuid4()), provider="p", account="victim")
            billing_grpc.LedgerServiceStub(channel).RecordRequests(
                billing_pb.RecordRequestsRequest(records=[record]), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_credentials_previous_name_is_accepted_for_a_rolling_upgrade(sb) -> None:
    """A service of the release before presents the credential under its previous name."""
    with sb.channel("registry", internal=False) as registry, sb.channel("billing", internal=False) as billing:
        calls = (
            (internal_grpc.InternalServiceStub(registry).ListProviderConfigs, internal_pb.ListProviderConfigsRequest()),
            (billing_grpc.LedgerServiceStub(billing).RecordRequests, billing_pb.RecordRequestsRequest()),
        )
        for call, request in calls:
            call(request, metadata=[(PREVIOUS_SERVICE_CREDENTIAL_KEY, sb.service_credential)], timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=[(PREVIOUS_SERVICE_CREDENTIAL_KEY, "not-the-credential")], timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_each_service_gets_only_the_provider_secret_it_calls_with(setup) -> None:
    provider = setup.provider(
        setup.upstream, billing_url=f"{setup.upstream}/costs", billing_authorization=BILLING_AUTHORIZATION
    )
    with setup.sb.channel("registry") as channel:
        internal = internal_grpc.InternalServiceStub(channel)

        def secrets_of(kind: int) -> tuple[str, str]:
            answer = internal.ListProviderConfigs(internal_pb.ListProviderConfigsRequest(secrets=kind), timeout=10)
            mine = next(c.provider for c in answer.providers if c.provider.id == provider)
            return mine.api_key, mine.billing_authorization

        assert secrets_of(internal_pb.PROVIDER_SECRETS_INFERENCE) == (API_KEY, "")
        assert secrets_of(internal_pb.PROVIDER_SECRETS_COST_API) == ("", BILLING_AUTHORIZATION)
        assert secrets_of(internal_pb.PROVIDER_SECRETS_UNSPECIFIED) == ("", "")


# --- a caller's mistake the Registry finds is the caller's error, not an outage ---------------


def test_the_registrys_verdict_on_a_request_reaches_the_caller_unchanged(setup) -> None:
    with setup.http() as http:
        assert error_of(http.get("/v1/models/nope/missing"), 404)["code"] == "model_not_found"
        assert error_of(http.post("/v1/chat/completions", json=chat(" ")), 400)["param"] == "model"


def test_billing_accounts_are_names_never_arbitrary_strings(setup) -> None:
    with setup.sb.admin() as admin:
        for account in ("x" * 500, "../etc", "a b", "-lead"):  # a longer path: Envoy's cap
            answer = admin.get("/v1/billing/usage", params={"account": account})
            error = error_of(answer, 400)
            assert error["param"] == "account" and len(error["message"]) < 200
        assert admin.get("/v1/billing/usage", params={"account": OPERATOR_ACCOUNT}).status_code == 200


def test_every_service_kept_its_feeds_all_along(sb) -> None:
    """Callers, resolutions and limited accounts are pushed, not polled: a feed that kept failing
    would still answer correctly (every lookup asks), so its absence is checked on its own."""
    assert "feed lost" not in sb.logs()
