"""The providers' health as the Router measures it, through real Envoy: exact counts after known
requests, the breaker opening, redacted last errors, and who may read it.

A private stack whose breakers open after BREAKER_FAILURES failures and stay open for an hour,
so that no test depends on how fast it runs. The reference provider answers; a small in-process
upstream fails in the ways a test needs, with the provider's key planted in its error bodies.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import grpc
import httpx
import orjson
import pytest
from helpers.clients import http_client
from helpers.stacks import RunningStack
from hypothesis import given
from hypothesis import strategies as st
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common.paging import key_after
from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, free_port, http_ok
from services.router.health import models_listing

PROVIDER_KEY = "health-key-" + uuid.uuid4().hex
BREAKER_FAILURES = 3
MESSAGES = [{"role": "user", "content": "how are you"}]
# What the failing upstream answers on each path prefix: (status, body), the key planted in it.
FAILURES = {
    "overloaded": (503, {"error": {"message": f"overloaded; your key {PROVIDER_KEY} is fine", "type": "server"}}),
    "refusing": (400, {"error": {"message": f"bad temperature for key {PROVIDER_KEY}", "param": "temperature"}}),
    "plain": (500, None),  # a body that is not JSON: the key in plain text
    "unauthorized": (401, {"error": {"message": f"key {PROVIDER_KEY} is not valid", "type": "auth"}}),
}


class FailingUpstream(BaseHTTPRequestHandler):
    """Answers every POST /<mode>/v1/... with the failure FAILURES names for <mode>."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = FAILURES[self.path.split("/")[1]]
        data = orjson.dumps(body) if body is not None else f"crashed with key={PROVIDER_KEY}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body is not None else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class World:
    """A private stack, an org with a writer, and the two upstreams."""

    stack: RunningStack
    base_url: str
    api: AdminApi
    admin_token: str
    reference_url: str
    failing_url: str
    org: str
    token: str

    @staticmethod
    def unique(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def model(self) -> str:
        """A new chat model in the catalog."""
        model = f"{self.org}/{self.unique('m')}"
        upsert = {"models": [{"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}]}
        self.api.call("POST", "/admin/v1/models:batchUpsert", upsert)
        return model

    def map(self, provider: str, model: str, provider_model: str) -> None:
        mapping = {"task": "conversational", "hfModel": model, "providerModel": provider_model, "status": "live"}
        self.api.call("POST", f"/api/partners/{provider}/models", mapping)

    def served_by(self, *urls: str) -> tuple[str, list[str]]:
        """A new chat model and one new provider per URL serving it, tried in that order."""
        model = self.model()
        providers = [self.unique("hp") for _ in urls]
        for rank, (provider, url) in enumerate(zip(providers, urls, strict=True)):
            self.api.ensure_provider(
                {"id": provider, "org": self.org, "base_url": url, "api_key": PROVIDER_KEY,
                 "tasks": ["conversational"], "default_rank": rank}
            )  # fmt: skip
            self.map(provider, model, f"{provider}-model")
        return model, providers

    def provider_with_model(self, url: str) -> tuple[str, str]:
        """A provider at `url` serving a new chat model: (provider id, hub model id)."""
        model, (provider,) = self.served_by(url)
        return provider, model

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http_client(base_url=self.base_url, headers=headers, timeout=30)

    def chat(self, model: str, **extra: object) -> httpx.Response:
        with self.http(self.token) as http:
            return http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra})

    def health(self, provider: str, token: str | None = None) -> httpx.Response:
        with self.http(self.token if token is None else token) as http:
            return http.get(f"/api/partners/{quote(provider, safe='')}/health")

    def model_health(self, provider: str) -> dict:
        answer = self.health(provider)
        assert answer.status_code == 200, answer.text
        (model,) = answer.json()["models"]
        assert model["providerModel"] == f"{provider}-model"
        return model


@pytest.fixture(scope="module")
def world(make_stack, tmp_path_factory) -> Iterator[World]:
    stack = make_stack(SWITCHBOARD_BREAKER_FAILURES=str(BREAKER_FAILURES), SWITCHBOARD_BREAKER_COOLDOWN_SECONDS="3600")
    processes = Stack(tmp_path_factory.mktemp("health-providers"), dict(os.environ))
    port = free_port()
    reference_url = f"http://127.0.0.1:{port}"
    processes.start(
        "reference_provider",
        reference_provider_argv(port),
        http_ok(f"{reference_url}/health"),
        env=reference_provider_secrets(api_key=PROVIDER_KEY),
    )
    failing = ThreadingHTTPServer(("127.0.0.1", 0), FailingUpstream)
    serving = threading.Thread(target=failing.serve_forever, daemon=True)
    serving.start()
    try:
        processes.wait_ready()
        api = AdminApi(stack.base_url, stack.admin_token)
        org, user = World.unique("org"), World.unique("user")
        api.ensure_member(org, user)
        yield World(
            stack, stack.base_url, api, stack.admin_token, reference_url,
            f"http://127.0.0.1:{failing.server_address[1]}", org, api.new_token(user),
        )  # fmt: skip
    finally:
        failing.shutdown()
        failing.server_close()
        processes.stop()


def test_counts_are_exact_after_known_requests(world: World) -> None:
    provider, model = world.provider_with_model(world.reference_url)
    for _ in range(3):
        assert world.chat(model).status_code == 200
    with world.http(world.token) as http:
        body = {"model": model, "messages": MESSAGES, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200 and list(stream.iter_lines())[-2:] == ["data: [DONE]", ""]
    answer = world.health(provider).json()
    assert answer["provider"] == provider and answer["breakerState"] == "BREAKER_STATE_CLOSED"
    assert answer["consecutiveFailures"] == 0 and answer["windowSeconds"] == 300 and answer["startTime"]
    assert (answer["requests"], answer["errors"], answer["errorRate"], answer["nextPageToken"]) == ("4", "0", 0, "")
    assert "lastError" not in answer
    (health,) = answer["models"]
    counts = {k: health[k] for k in ("requests", "errors", "rejected", "skipped", "recentRequests", "recentErrors")}
    # int64 counts are JSON strings (proto3's JSON mapping), int32 ones numbers
    assert counts == {"requests": "4", "errors": "0", "rejected": "0", "skipped": "0",
                      "recentRequests": 4, "recentErrors": 0}  # fmt: skip
    assert health["errorRate"] == 0 and health["lastErrors"] == []
    assert health["timeToFirstTokenMs"] > 0 and health["throughputTokensPerSecond"] > 0


def test_failures_open_the_breaker_and_are_shown_redacted(world: World) -> None:
    provider, model = world.provider_with_model(f"{world.failing_url}/overloaded")
    for _ in range(BREAKER_FAILURES + 2):
        assert world.chat(model).status_code in (502, 503)
    answer = world.health(provider)
    assert PROVIDER_KEY not in answer.text
    body = answer.json()
    assert body["breakerState"] == "BREAKER_STATE_OPEN" and body["consecutiveFailures"] == BREAKER_FAILURES
    (health,) = body["models"]
    assert (health["requests"], health["errors"], health["skipped"]) == (str(BREAKER_FAILURES),) * 2 + ("2",)
    assert (health["recentRequests"], health["recentErrors"], health["errorRate"]) == (3, 3, 1.0)
    assert len(health["lastErrors"]) == BREAKER_FAILURES
    last = health["lastErrors"][0]
    assert {k: last[k] for k in ("providerStatus", "code", "reason")} == {
        "providerStatus": 503, "code": "UNAVAILABLE", "reason": "UPSTREAM_HTTP_ERROR"
    }  # fmt: skip
    assert last["message"] == "HTTP 503: overloaded; your key [redacted] is fine"
    assert last["time"] >= body["startTime"] and body["lastError"] == last


def test_a_failover_counts_one_attempt_at_each_provider(world: World) -> None:
    model, (failing, answering) = world.served_by(f"{world.failing_url}/overloaded", world.reference_url)
    answer = world.chat(model)
    assert answer.status_code == 200 and answer.headers["x-inference-provider"] == answering
    failed, answered = world.model_health(failing), world.model_health(answering)
    assert (failed["requests"], failed["errors"], failed["recentErrors"], failed["errorRate"]) == ("1", "1", 1, 1.0)
    assert (answered["requests"], answered["errors"], answered["errorRate"]) == ("1", "0", 0)
    assert world.health(failing).json()["consecutiveFailures"] == 1


# mode of the failing upstream -> the caller's status, (requests, errors, rejected), and the last
# error's (providerStatus, code, reason, message) ({p}: the provider id)
ONE_FAILURE = {
    "refusing": (400, ("1", "0", "1"), (400, "INVALID_ARGUMENT", "BAD_REQUEST",
                                        "provider {p}: bad temperature for key [redacted]")),
    "plain": (502, ("1", "1", "0"), (500, "UNAVAILABLE", "UPSTREAM_HTTP_ERROR",
                                     "HTTP 500: crashed with key=[redacted]")),
    "unauthorized": (502, ("1", "1", "0"), (401, "UNAVAILABLE", "UPSTREAM_AUTH_ERROR",
                                            "provider {p} refused Switchboard's credentials")),
}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(ONE_FAILURE))
def test_one_failure_is_classed_and_redacted(world: World, mode: str) -> None:
    """A refusal of the request is a request, not an error; the provider's failures are errors."""
    caller_status, counts, error = ONE_FAILURE[mode]
    provider, model = world.provider_with_model(f"{world.failing_url}/{mode}")
    answer = world.chat(model)
    assert answer.status_code == caller_status and PROVIDER_KEY not in answer.text
    health = world.health(provider)
    assert PROVIDER_KEY not in health.text
    (model_health,) = health.json()["models"]
    assert (model_health["requests"], model_health["errors"], model_health["rejected"]) == counts
    assert model_health["errorRate"] == (1.0 if counts[1] == "1" else 0)
    (last,) = model_health["lastErrors"]
    status, code, reason, message = error
    assert (last["providerStatus"], last["code"], last["reason"]) == (status, code, reason)
    assert last["message"] == message.format(p=provider)


def test_an_unreachable_provider_is_an_error_without_a_status(world: World) -> None:
    provider, model = world.provider_with_model(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert world.chat(model).status_code == 502
    health = world.model_health(provider)
    assert (health["requests"], health["errors"]) == ("1", "1")
    (last,) = health["lastErrors"]
    assert (last["providerStatus"], last["code"], last["reason"]) == (0, "UNAVAILABLE", "UPSTREAM_UNREACHABLE")
    assert last["message"].startswith("connection failed (")


def test_a_stream_broken_after_it_began_is_an_error(world: World) -> None:
    provider, model = world.provider_with_model(f"{world.reference_url}/knobs/cut=2")
    with world.http(world.token) as http:
        body = {"model": model, "messages": MESSAGES, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert "stream_interrupted" in "".join(stream.iter_lines())
    health = world.model_health(provider)
    assert (health["requests"], health["errors"], health["recentErrors"]) == ("1", "1", 1)
    (last,) = health["lastErrors"]
    assert (last["providerStatus"], last["reason"]) == (0, "STREAM_INTERRUPTED")


def test_who_may_read_a_providers_health(world: World) -> None:
    provider, _ = world.provider_with_model(world.reference_url)
    other_org, outsider, reader = world.unique("org"), world.unique("user"), world.unique("user")
    world.api.ensure_member(other_org, outsider, "admin")  # an admin, but of another org
    world.api.ensure_member(world.org, reader, "read")
    statuses = {
        "anonymous": world.health(provider, "").status_code,
        "unknown token": world.health(provider, "not-a-token").status_code,
        "another org's admin": world.health(provider, world.api.new_token(outsider)).status_code,
        "a read member": world.health(provider, world.api.new_token(reader)).status_code,
        "a write member": world.health(provider).status_code,
        "the admin token": world.health(provider, world.admin_token).status_code,
    }
    assert statuses == {"anonymous": 401, "unknown token": 401, "another org's admin": 403, "a read member": 403,
                        "a write member": 200, "the admin token": 200}  # fmt: skip
    refused = world.health(provider, world.api.new_token(outsider)).json()["error"]
    assert refused["code"] == "forbidden" and refused["type"] == "permission_error"


def test_an_unknown_provider_is_a_404_quoting_a_bounded_prefix(world: World) -> None:
    answer = world.health(world.unique("nope"))
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "provider_not_found"
    long = world.health("x" * 250)
    assert long.status_code == 404 and len(long.json()["error"]["message"]) < 200
    too_long = world.health("x" * 5000)  # Envoy's bound on a URI
    assert too_long.status_code == 414 and too_long.json()["error"]["code"] == "uri_too_long"


def test_grpc_callers_get_the_typed_answer(world: World) -> None:
    provider, model = world.provider_with_model(world.reference_url)
    assert world.chat(model).status_code == 200
    with world.stack.channel("envoy") as channel:
        stub = router_grpc.RouterServiceStub(channel)
        request = router_pb.GetProviderHealthRequest(provider=provider)
        health = stub.GetProviderHealth(request, metadata=[("authorization", f"Bearer {world.token}")], timeout=30)
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.GetProviderHealth(request, timeout=30)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (model_health,) = health.models
    assert (health.breaker_state, model_health.requests, model_health.errors) == (
        router_pb.BREAKER_STATE_CLOSED, 1, 0
    )  # fmt: skip


@given(provider=st.text(min_size=1, max_size=300))
def test_any_provider_id_is_answered_in_openais_shape(world: World, provider: str) -> None:
    answer = world.health(provider)
    assert answer.status_code in (400, 404, 414), answer.text
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_operators_list_every_providers_summary_in_pages(world: World) -> None:
    provider, model = world.provider_with_model(world.reference_url)
    assert world.chat(model).status_code == 200
    with world.http(world.admin_token) as http:
        everything = http.get("/admin/v1/providerHealth", params={"pageSize": 1000}).json()
        pages, token = [], ""
        while True:
            page = http.get("/admin/v1/providerHealth", params={"pageSize": 2, "pageToken": token})
            assert page.status_code == 200, page.text
            pages.append(page.json()["providers"])
            token = page.json()["nextPageToken"]
            if not token:
                break
        assert http.get("/admin/v1/providerHealth", params={"pageSize": -1}).json()["error"]["param"] == "page_size"
    assert everything["nextPageToken"] == "" and [p for page in pages for p in page] == everything["providers"]
    assert all(len(page) == 2 for page in pages[:-1])
    by_id = {p["provider"]: p for p in everything["providers"]}
    assert list(by_id) == sorted(by_id)
    mine = by_id[provider]
    assert (mine["requests"], mine["errors"], mine["recentRequests"], mine["models"]) == ("1", "0", 1, [])
    assert mine["breakerState"] == "BREAKER_STATE_CLOSED" and "lastError" not in mine
    with world.http(world.token) as http:
        assert http.get("/admin/v1/providerHealth").status_code == 403
    with world.http() as http:
        assert http.get("/admin/v1/providerHealth").status_code == 401


def test_a_providers_models_come_in_pages(world: World) -> None:
    provider, model = world.provider_with_model(world.reference_url)
    other = world.model()
    world.map(provider, other, "b-model")  # sorts before f"{provider}-model"
    for hub_model in (model, other):
        assert world.chat(hub_model).status_code == 200
    path = f"/api/partners/{provider}/health"
    with world.http(world.token) as http:
        first = http.get(path, params={"pageSize": 1}).json()
        second = http.get(path, params={"pageSize": 1, "pageToken": first["nextPageToken"]})
    assert [m["providerModel"] for m in first["models"]] == ["b-model"]
    assert key_after(models_listing(provider), first["nextPageToken"]) == "b-model"
    assert [m["providerModel"] for m in second.json()["models"]] == [f"{provider}-model"]
    assert second.json()["nextPageToken"] == "" and first["requests"] == second.json()["requests"] == "2"
