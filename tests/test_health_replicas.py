"""One health record shared by every Router replica: two Routers behind one Envoy show the same
health figures on the health pages (partners' and operators') and in /v1/models, whichever
replica answers, once their batched reports reached the Registry.

The Registry probes each mapping once (the next probe is an hour later): the probes' outcomes
are in the same records. Both replicas serve traffic of their own (chats sent straight to each over gRPC): a model
served by a provider that is down (a chat that tries it fails over) and by the reference
provider. The breaker is each replica's own (it reacts to that replica's failures
at once, docs/provider-selection.md), so breaker fields are left out of the comparison.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import orjson
import pytest
from google.api import httpbody_pb2
from google.protobuf import json_format
from helpers.clients import http_client
from helpers.registry import unique
from helpers.waiting import eventually
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, UpOptions, free_port, hosts_failing_health, http_ok, start_stack

pytestmark = pytest.mark.slow

REPLICAS = ("router", "router-2")
CHATS_PER_REPLICA = 3
PROVIDER_KEY = "shared-health-key-" + uuid.uuid4().hex
LOCAL_FIELDS = ("breakerState", "consecutiveFailures")  # each replica's own breaker
T = TypeVar("T")


def as_message(answer: dict, message: T) -> dict:
    """A REST answer as MessageToDict prints its message."""
    return json_format.MessageToDict(json_format.ParseDict(answer, message))


@dataclass
class World:
    stack: Stack
    base_url: str
    token: str  # a write member of the providers' org
    admin_token: str
    model: str
    down: str  # tried first, unreachable
    up: str  # the reference provider

    def rpc(self, replica: str, method: str, request: object, token: str | None = None) -> object:
        metadata = [("authorization", f"Bearer {token or self.token}")]
        with grpc.insecure_channel(self.stack.addresses[replica]) as channel:
            answer = getattr(router_grpc.RouterServiceStub(channel), method)(request, metadata=metadata, timeout=30)
            return list(answer) if method == "CreateChatCompletion" else answer

    def chat(self, replica: str) -> None:
        body = orjson.dumps({"model": self.model, "messages": [{"role": "user", "content": "hi"}]})
        request = router_pb.CreateChatCompletionRequest(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=body)
        )
        self.rpc(replica, "CreateChatCompletion", request)

    def health(self, replica: str, provider: str) -> dict:
        answer = self.rpc(replica, "GetProviderHealth", router_pb.GetProviderHealthRequest(provider=provider))
        return {k: v for k, v in json_format.MessageToDict(answer).items() if k not in LOCAL_FIELDS}

    def listing(self, replica: str) -> list[dict]:
        answer = self.rpc(replica, "ListProviderHealth", router_pb.ListProviderHealthRequest(), self.admin_token)
        providers = json_format.MessageToDict(answer)["providers"]
        return [{k: v for k, v in p.items() if k not in LOCAL_FIELDS} for p in providers]

    def models(self, replica: str) -> dict:
        answer = json_format.MessageToDict(self.rpc(replica, "GetModel", router_pb.GetModelRequest(id=self.model)))
        return {p["provider"]: p for p in answer["providers"]}

    def seen_by(self, replica: str) -> dict:
        return {
            "health": [self.health(replica, p) for p in (self.down, self.up)],
            "listing": self.listing(replica),
            "models": self.models(replica),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    port = free_port()
    environment = {
        # One probe of each mapping when it is created, the next an hour later: each record shows it.
        "SWITCHBOARD_PROBE_INTERVAL_SECONDS": "3600",
        "SWITCHBOARD_HEALTH_REPORT_INTERVAL_SECONDS": "0.2",
    }
    options = UpOptions(port, tmp_path_factory.mktemp("stack"), "", demo=False, router_replicas=2,
                        environment=environment)  # fmt: skip
    stack, admin_token, _ = start_stack(options)
    # A started stack is balanced: Envoy calls both workers (its first health check of one may come
    # before that one serves; the start waits for the next).
    assert not hosts_failing_health(stack.addresses["envoy_admin"])
    try:
        # Chosen once the stack's own ports are bound: else one of its servers could take it first.
        provider_port = free_port()
        provider_url = f"http://127.0.0.1:{provider_port}"
        stack.start(
            "reference_provider", reference_provider_argv(provider_port), http_ok(f"{provider_url}/health"),
            env=reference_provider_secrets(api_key=PROVIDER_KEY),
        )  # fmt: skip
        stack.wait_ready()
        base_url = f"http://127.0.0.1:{port}"
        api = AdminApi(base_url, admin_token)
        org, user = unique("org"), unique("user")
        api.ensure_member(org, user)
        model, down, up = f"{org}/{unique('m')}", unique("down"), unique("up")
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        for rank, (provider, url) in enumerate(((down, f"http://127.0.0.1:{free_port()}"), (up, provider_url))):
            api.ensure_provider({"id": provider, "org": org, "base_url": url, "api_key": PROVIDER_KEY,
                                 "tasks": ["conversational"], "default_rank": rank})  # fmt: skip
            mapping = {"task": "conversational", "hfModel": model, "providerModel": f"{provider}-m", "status": "live"}
            api.call("POST", f"/api/partners/{provider}/models", mapping)
        yield World(stack, base_url, api.new_token(user), admin_token, model, down, up)
    finally:
        stack.stop()


def test_health_figures_are_equal_whichever_replica_answers(world: World) -> None:
    for replica in REPLICAS:
        for _ in range(CHATS_PER_REPLICA):
            world.chat(replica)
    total = str(CHATS_PER_REPLICA * len(REPLICAS))

    def agreed() -> dict | None:
        seen = [world.seen_by(replica) for replica in REPLICAS]
        _, up = seen[0]["health"]
        probed = all(h["models"][0].get("probes") == "1" for h in seen[0]["health"] if h.get("models"))
        return seen[0] if up.get("requests") == total and probed and all(s == seen[0] for s in seen) else None

    figures = eventually(agreed, "both replicas show every replica's traffic")
    down, up = figures["health"]
    (down_model,) = down["models"]
    assert down_model["errors"] == down_model["requests"] and down_model["lastErrors"][0] == down["lastError"]
    assert PROVIDER_KEY not in orjson.dumps(figures).decode()
    assert (down_model["probeFailures"], "probeFailures" in up["models"][0]) == ("1", False)  # the probes' outcomes
    assert down_model["lastProbeFailure"] and down_model["lastProbeTime"]
    (up_model,) = up["models"]
    assert up_model["timeToFirstTokenMs"] > 0 and up_model["throughputTokensPerSecond"] > 0
    shown = figures["models"][world.up]
    assert (shown["first_token_latency_ms"], shown["throughput"]) == (
        up_model["timeToFirstTokenMs"], up_model["throughputTokensPerSecond"],
    )  # fmt: skip

    # Through Envoy, whichever replica each request reaches: the same answers again (read as
    # the messages they transcode, so that fields Envoy prints at their defaults compare).
    with http_client(base_url=world.base_url, headers={"Authorization": f"Bearer {world.token}"}) as http:
        for _ in range(4):
            for provider, expected in ((world.down, down), (world.up, up)):
                page = as_message(http.get(f"/api/partners/{provider}/health").json(), router_pb.ProviderHealth())
                assert {k: v for k, v in page.items() if k not in LOCAL_FIELDS} == expected
            model = as_message(http.get(f"/v1/models/{world.model}").json(), router_pb.Model())
            assert {p["provider"]: p for p in model["providers"]} == figures["models"]


def test_a_hung_worker_gets_no_calls_once_envoy_sees_it(world: World) -> None:
    """A Router worker that stops answering (SIGSTOP: its sockets stay open) fails Envoy's health
    checks and leaves the round robin: every call through Envoy is answered by the other worker,
    none waits on the hung one. It comes back once it answers again."""
    hung = next(child for child in world.stack.children if child.name == "router-2")
    admin = world.stack.addresses["envoy_admin"]
    os.kill(hung.process.pid, signal.SIGSTOP)
    try:
        hung_host = f"router::{world.stack.addresses['router-2']}"
        eventually(lambda: hosts_failing_health(admin) == {hung_host}, "router-2 unhealthy")
        with http_client(base_url=world.base_url, headers={"Authorization": f"Bearer {world.token}"}) as http:
            for _ in range(6):
                assert http.get(f"/v1/models/{world.model}", timeout=5).status_code == 200
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
    eventually(lambda: not hosts_failing_health(admin), "router-2 healthy again")
