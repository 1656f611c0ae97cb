"""API keys' limits with two Router replicas behind one Envoy, counting in one Redis (the
issue's "the same whichever replica answers"): a burst of 3x a key's requests per minute
gets exactly that many served (requests are taken atomically when admitted: no in-flight
overshoot for requests), the rest 429 with Retry-After and OpenAI's x-ratelimit-* headers;
a key revoked through one replica, or expired, is refused by both within 1 s; with Redis
stopped, rate limits fail open and budgets fail closed (docs/api-keys.md)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2
from helpers.clients import TLS, http_client
from helpers.redis_server import RedisServer, redis_server
from helpers.registry import unique
from helpers.stacks import Stacks
from helpers.waiting import eventually
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, UpOptions, free_port, hosts_failing_health, http_ok, start_stack

pytestmark = pytest.mark.slow

PROVIDER_KEY = "ref-key-" + uuid.uuid4().hex
MESSAGES = [{"role": "user", "content": "hi"}]
REQUESTS_PER_MINUTE = 12
# The design refuses a revoked key on every replica within a second (the change feed's push); a test on a
# machine the suite keeps busy can only bound it generously, or a stalled process fails it.
REFUSAL_DEADLINE_SECONDS = 30.0
REPLICAS = ("router", "router-2")


@dataclass
class Lab:
    stack: Stack
    base_url: str
    api: AdminApi
    redis: RedisServer
    model: str
    user: str

    def token(self, **limits: object) -> str:
        body = {"name": unique("t"), **({"limits": limits} if limits else {})}
        return self.api.call("POST", f"/admin/v1/users/{self.user}/tokens", body)["token"]

    def chat(self, token: str) -> httpx.Response:
        return self.call("POST", "/v1/chat/completions", token, {"model": self.model, "messages": MESSAGES})

    def call(self, method: str, path: str, token: str, body: dict | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{self.base_url}{path}", json=body, headers=headers, timeout=30, verify=TLS)

    def replica_code(self, replica: str, token: str) -> grpc.StatusCode:
        """One chat straight to one Router replica over gRPC: OK or the error's code."""
        body = orjson.dumps({"model": self.model, "messages": MESSAGES})
        request = router_pb.CreateChatCompletionRequest(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=body)
        )
        with grpc.insecure_channel(self.stack.addresses[replica]) as channel:
            try:
                list(router_grpc.RouterServiceStub(channel).CreateChatCompletion(
                    request, metadata=[("authorization", f"Bearer {token}")], timeout=30))  # fmt: skip
            except grpc.RpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    def served_by_replica(self) -> dict[str, int]:
        clusters = httpx.get(f"http://{self.stack.addresses['envoy_admin']}/clusters", timeout=10).text
        counts = {}
        for name in REPLICAS:
            prefix = f"router::{self.stack.addresses[name]}::rq_total::"
            counts[name] = int(
                next(line for line in clusters.splitlines() if line.startswith(prefix)).rsplit("::", 1)[1]
            )
        return counts


@pytest.fixture(scope="module")
def lab(stacks: Stacks) -> Iterator[Lab]:
    with redis_server() as redis:
        port = free_port()
        provider_port = free_port()
        provider_url = f"http://127.0.0.1:{provider_port}"
        environment = {
            "SWITCHBOARD_PROBES_ENABLED": "false",
            "SWITCHBOARD_COUNTER_STORE_URL": redis.url,
            # A busy test machine must not pass for a store outage (which lets rates through uncounted).
            "SWITCHBOARD_COUNTER_STORE_TIMEOUT_SECONDS": "10",
        }
        options = UpOptions(port, stacks.data_dir("key-limits"), "", demo=False, router_replicas=2,
                            environment=environment)  # fmt: skip
        stack, admin_token, _ = start_stack(options)
        try:
            stack.start(
                "reference_provider", reference_provider_argv(provider_port), http_ok(f"{provider_url}/health"),
                env=reference_provider_secrets(api_key=PROVIDER_KEY),
            )  # fmt: skip
            stack.wait_ready()
            base_url = f"http://127.0.0.1:{port}"
            api = AdminApi(base_url, admin_token)
            org, user, provider = unique("org"), unique("caller"), unique("p")
            api.call("POST", "/admin/v1/orgs", {"name": org})
            api.call("POST", "/admin/v1/users", {"name": user})
            api.ensure_provider({"id": provider, "org": org, "base_url": provider_url, "api_key": PROVIDER_KEY,
                                 "tasks": ["conversational"]})  # fmt: skip
            model = f"{org}/{unique('m')}"
            entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
            api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
            body = {"task": "conversational", "hfModel": model, "providerModel": "m", "status": "live"}
            api.call("POST", f"/api/partners/{provider}/models", body)
            yield Lab(stack, base_url, api, redis, model, user)
        finally:
            stack.stop()


def test_three_times_the_rate_across_both_replicas_serves_exactly_the_limit(lab) -> None:
    token = lab.token(requestsPerMinute=REQUESTS_PER_MINUTE, tokensPerMinute=10_000_000)
    # Envoy calls both (a check slowed by a loaded machine may have left one out for a moment)
    eventually(lambda: not hosts_failing_health(lab.stack.addresses["envoy_admin"]), "both replicas in rotation")
    before = lab.served_by_replica()
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: lab.chat(token), range(3 * REQUESTS_PER_MINUTE)))
    lasted = time.monotonic() - started
    after = lab.served_by_replica()
    assert all(after[name] > before[name] for name in REPLICAS), (before, after)  # both replicas answered
    statuses = sorted(a.status_code for a in answers)
    # The limit at once, plus the one request the rate frees every 60/N s while the burst lasts
    # (none when it lasts under 5 s; a loaded machine can stretch it); nothing for requests in flight.
    freed = int(lasted * REQUESTS_PER_MINUTE / 60)
    assert REQUESTS_PER_MINUTE <= statuses.count(200) <= REQUESTS_PER_MINUTE + freed, (statuses, lasted)
    assert statuses.count(200) + statuses.count(429) == len(statuses), statuses
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(answer.headers["retry-after"]) <= 60 // REQUESTS_PER_MINUTE  # one frees every 5 s
            assert answer.headers["x-ratelimit-limit-requests"] == str(REQUESTS_PER_MINUTE)
            assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        else:
            assert answer.headers["x-ratelimit-limit-tokens"] == "10000000"
            assert int(answer.headers["x-ratelimit-remaining-requests"]) < REQUESTS_PER_MINUTE
    while (refused := lab.chat(token)).status_code == 200:  # a request the rate freed since
        pass
    assert refused.status_code == 429, refused.text
    time.sleep(int(refused.headers["retry-after"]))  # what Retry-After promises: then one more is served
    assert lab.chat(token).status_code == 200


def refused_everywhere_within(lab: Lab, token: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for replica in REPLICAS:
        while (code := lab.replica_code(replica, token)) != grpc.StatusCode.UNAUTHENTICATED:
            assert code == grpc.StatusCode.OK and time.monotonic() < deadline, (replica, code)
            time.sleep(0.02)


def test_a_key_revoked_through_one_replica_is_refused_by_both(lab) -> None:
    name = unique("t")
    token = lab.api.call(
        "POST", f"/admin/v1/users/{lab.user}/tokens", {"name": name, "limits": {"requestsPerMinute": 1000}}
    )["token"]
    for replica in REPLICAS:  # each replica has the caller cached now
        assert lab.replica_code(replica, token) == grpc.StatusCode.OK
    lab.api.call("DELETE", f"/admin/v1/users/{lab.user}/tokens/{name}")
    refused_everywhere_within(lab, token, REFUSAL_DEADLINE_SECONDS)


def test_an_expired_key_is_refused_by_both_replicas(lab) -> None:
    expiry = time.time() + 2
    token = lab.token(
        expireTime=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expiry)) + f".{int(expiry % 1 * 1000):03d}Z"
    )
    for replica in REPLICAS:  # accepted until it expires (a slow machine may get there first)
        code = lab.replica_code(replica, token)
        assert code == grpc.StatusCode.OK or time.time() >= expiry, (replica, code)
    reads = [("GET", f"/v1/billing/usage?account={lab.user}", None), ("GET", "/v1/models", None),
             ("GET", f"/api/models/{lab.model}", None)]  # fmt: skip
    for method, path, body in reads:  # each service has met the token (and may cache its caller)
        assert lab.call(method, path, token, body).status_code == 200 or time.time() >= expiry, path
    time.sleep(max(0.0, expiry - time.time()))
    refused_everywhere_within(lab, token, REFUSAL_DEADLINE_SECONDS)
    assert lab.chat(token).json()["error"]["code"] == "api_key_expired"
    # No service lets it act: not Billing (it may not lift its account's spending limit), not a read.
    for method, path, body in [*reads, ("PUT", f"/v1/billing/accounts/{lab.user}/limit", {"limitNanoUsd": "0"})]:
        answer = lab.call(method, path, token, body)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "api_key_expired", (path, answer.text)


def test_with_the_store_stopped_rates_fail_open_and_budgets_fail_closed(lab) -> None:
    rated = lab.token(requestsPerMinute=1)
    budgeted = lab.token(budgetNanoUsd=10**12, budgetPeriod="monthly")
    assert lab.chat(rated).status_code == 200 and lab.chat(rated).status_code == 429
    assert lab.chat(budgeted).status_code == 200
    lab.redis.stop()
    try:
        assert [lab.chat(rated).status_code for _ in range(4)] == [200] * 4  # counted by no one: served
        answer = lab.chat(budgeted)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "limits_unavailable"
    finally:
        lab.redis.start()
    deadline = time.monotonic() + 30  # the Routers ask the store again after their cooldown
    while (answer := lab.chat(budgeted)).status_code != 200:
        assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
        time.sleep(0.1)


def test_new_limits_of_a_key_hold_on_both_replicas(lab) -> None:
    name = unique("t")
    body = {"name": name, "limits": {"requestsPerMinute": 1000}}
    token = lab.api.call("POST", f"/admin/v1/users/{lab.user}/tokens", body)["token"]
    for replica in REPLICAS:
        assert lab.replica_code(replica, token) == grpc.StatusCode.OK
    updated = lab.api.call("PATCH", f"/admin/v1/users/{lab.user}/tokens/{name}", {"requestsPerMinute": 1})
    assert updated["limits"]["requestsPerMinute"] == 1
    deadline = time.monotonic() + REFUSAL_DEADLINE_SECONDS
    for replica in REPLICAS:  # one request a minute now: at most one more passes
        while (code := lab.replica_code(replica, token)) != grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert code == grpc.StatusCode.OK and time.monotonic() < deadline, (replica, code)
    # The owner lifts them, with a token of their own without limits (the limited one may not).
    owner = lab.token()
    with http_client(base_url=lab.base_url, headers={"Authorization": f"Bearer {owner}"}) as http:
        cleared = http.patch(f"/v1/me/tokens/{name}", json={})
    assert cleared.status_code == 200 and not cleared.json().get("limits"), cleared.text
    deadline = time.monotonic() + REFUSAL_DEADLINE_SECONDS
    for replica in REPLICAS:
        while (code := lab.replica_code(replica, token)) != grpc.StatusCode.OK:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline, (replica, code)


def test_an_org_admins_token_for_the_org_bills_the_org_and_others_may_not_make_one(lab) -> None:
    org, admin, reader = unique("org"), unique("admin"), unique("reader")
    lab.api.call("POST", "/admin/v1/orgs", {"name": org})
    for user, role in ((admin, "admin"), (reader, "read")):
        lab.api.call("POST", "/admin/v1/users", {"name": user})
        lab.api.call("PUT", f"/admin/v1/orgs/{org}/members/{user}", {"role": role})
    own = {user: lab.api.new_token(user) for user in (admin, reader)}
    body = {"name": "shared", "limits": {"requestsPerMinute": 100}}
    with http_client(base_url=lab.base_url, headers={"Authorization": f"Bearer {own[reader]}"}) as http:
        assert http.post(f"/v1/orgs/{org}/tokens", json=body).status_code == 403
    with http_client(base_url=lab.base_url, headers={"Authorization": f"Bearer {own[admin]}"}) as http:
        created = http.post(f"/v1/orgs/{org}/tokens", json=body).json()
        listed = {t["name"]: t for t in http.get("/v1/me/tokens").json()["apiTokens"]}
    assert created["apiToken"]["account"] == org and listed["shared"]["account"] == org
    answer = lab.chat(created["token"])
    assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "100"
    deadline = time.monotonic() + 30  # the Router's ledger spool sends the record in the background
    while lab.api.call("GET", f"/v1/billing/usage?account={org}").get("requests", 0) != 1:
        assert time.monotonic() < deadline, "the org was not billed"
        time.sleep(0.1)
    assert lab.api.call("GET", f"/v1/billing/usage?account={admin}").get("requests", 0) == 0
