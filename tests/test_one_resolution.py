"""One answer per question (issue 23): a request whose resolution the Router has not cached
makes one Registry call, whose answer carries the providers it names (no provider table read
beside it), and a change of one of those providers reaches the next request. Counted by the
Router's own metric of its Registry calls, through the real stack."""

from __future__ import annotations

import json
import secrets
import time
import uuid

import grpc
import httpx
import pytest
from helpers.upstream import JsonHandler, serving
from helpers.waiting import eventually
from prometheus_client.parser import text_string_to_metric_families
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.demo import AdminApi

pytestmark = pytest.mark.slow
CALLS = "switchboard_router_registry_calls_total"
# The Router's own timer sends these (the shared health), whatever the requests: not counted.
BACKGROUND = frozenset({"ReportModelHealth", "ListModelHealth"})
DEADLINE_SECONDS = 30.0


class Answering(JsonHandler):
    """A provider that answers every chat with the path it was called on as the content."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = {"role": "assistant", "content": self.path}
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "upstream-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self.send(200, json.dumps(body).encode())


class Counted:
    """Chat requests of one caller, each with the Registry calls the Router made for it."""

    def __init__(self, stack, token: str) -> None:
        self.stack, self.token = stack, token
        self.metrics = stack.stack.metrics["router"]

    def calls(self) -> dict[str, float]:
        text = httpx.get(self.metrics, timeout=10).text
        return {
            sample.labels["method"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == CALLS and sample.labels["method"] not in BACKGROUND
        }

    def chat(self, model: str) -> tuple[httpx.Response, dict[str, float]]:
        """The answer, and the Registry calls by method made while it was made."""
        before = self.calls()
        with self.stack.http(self.token) as http:
            answer = http.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
            )
        after = self.calls()
        return answer, {method: n - before.get(method, 0) for method, n in after.items() if n > before.get(method, 0)}


@pytest.fixture(scope="module")
def upstream():
    with serving(Answering) as url:
        yield url


def registered(api: AdminApi, name: str, base_url: str, mapped: bool = True) -> str:
    """A provider of the org `org-<name>` with a key, two prices and (`mapped`) a live mapping of
    the model `org-<name>/chat`; its id."""
    org, provider, model = f"org-{name}", f"p-{name}-{secrets.token_hex(2)}", f"org-{name}/chat"
    api.ensure_provider(
        {"id": provider, "org": org, "base_url": base_url, "api_key": secrets.token_hex(16),
         "billing_authorization": f"Bearer {secrets.token_hex(16)}", "tasks": ["conversational"]}
    )  # fmt: skip
    prices = [{"provider_model": m, "input_token_nano_usd": 7} for m in ("other-model", "upstream-model")]
    api.call("PUT", f"/admin/v1/providers/{provider}/prices", {"prices": prices})
    if mapped:
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        mapping = {"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live"}
        api.call("POST", f"/api/partners/{provider}/models", mapping)
    return provider


def test_a_cold_request_asks_the_registry_once_and_a_provider_change_reaches_the_next(stack, upstream) -> None:
    api, name = AdminApi(stack.base_url, stack.admin_token), uuid.uuid4().hex[:8]
    user, model = f"user-{name}", f"org-{name}/chat"
    api.ensure_member(f"org-{name}", user)
    counted = Counted(stack, api.new_token(user))
    provider = registered(api, name, f"{upstream}/first")

    # The caller known to the Router (every notice of the writes above arrived: none drops it again).
    deadline = time.monotonic() + DEADLINE_SECONDS
    while "AuthenticateToken" in counted.chat(f"org-{name}/nothing")[1]:
        assert time.monotonic() < deadline, "the Router keeps asking who the caller is"

    answer, calls = counted.chat(model)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "/first/v1/chat/completions"
    assert calls == {"ResolveModel": 1}  # one answer: the candidates and the provider to call them on
    answer, calls = counted.chat(model)
    assert answer.status_code == 200 and calls == {}  # cached

    api.call("PATCH", f"/admin/v1/providers/{provider}", {"base_url": f"{upstream}/second"})
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (content := answer.json()["choices"][0]["message"]["content"]) == "/first/v1/chat/completions":
        assert time.monotonic() < deadline, "the provider's change never reached a request"
        answer, calls = counted.chat(model)
        assert answer.status_code == 200, answer.text
    assert content == "/second/v1/chat/completions"
    assert calls == {"ResolveModel": 1}  # the change dropped the resolution that carried the provider


def test_the_routing_view_carries_the_providers_it_names_with_the_candidates_prices(stack) -> None:
    api, name = AdminApi(stack.base_url, stack.admin_token), uuid.uuid4().hex[:8]
    api.ensure_member(f"org-{name}", f"user-{name}")
    serving_one, named_one = (
        registered(api, name, "http://127.0.0.1:9"),
        registered(api, name, "http://127.0.0.1:9", False),
    )
    request = internal_pb.ResolveModelRequest(
        model=f"org-{name}/chat", task="conversational", view=internal_pb.RESOLUTION_VIEW_ROUTING,
        named_providers=[named_one, f"nobody-{name}"],
    )  # fmt: skip
    with stack.channel("registry") as channel:
        internal = internal_grpc.InternalServiceStub(channel)
        answer = internal.ResolveModel(request, timeout=10)
        assert [c.provider for c in answer.candidates] == [serving_one]
        configs = {c.provider.id: c for c in answer.provider_configs}
        assert sorted(configs) == sorted([serving_one, named_one])  # an unknown id is left out, not refused
        assert [p.provider_model for p in configs[serving_one].prices] == ["upstream-model"]
        assert list(configs[named_one].prices) == []  # no candidate of its
        for config in configs.values():
            assert config.provider.api_key and not config.provider.billing_authorization  # the Router's secret
            assert len(config.redact) == 2
        basic = internal_pb.ResolveModelRequest(model=request.model, task="conversational")
        assert not internal.ResolveModel(basic, timeout=10).provider_configs

        prices = {"prices": [{"provider_model": "upstream-model", "input_token_nano_usd": 9}]}
        api.call("PUT", f"/admin/v1/providers/{serving_one}/prices", prices)  # answered once applied here
        again = {c.provider.id: c for c in internal.ResolveModel(request, timeout=10).provider_configs}
        assert [p.input_token_nano_usd for p in again[serving_one].prices] == [9]
        provider_request = internal_pb.ResolveProviderModelRequest(
            provider=serving_one, provider_model="upstream-model", task="conversational",
            view=internal_pb.RESOLUTION_VIEW_ROUTING,
        )  # fmt: skip
        by_provider = internal.ResolveProviderModel(provider_request, timeout=10)
        assert [c.provider.id for c in by_provider.provider_configs] == [serving_one]


def test_a_provider_the_router_lacks_is_read_alone_and_found_at_once(stack, upstream) -> None:
    """GET /v1/providers/{id} of a provider created a moment ago answers it (the change notice may
    not have reached the Router yet); an id the Router's table lacks costs one Registry call, which
    asks for the ids the Router lacks alone (the Registry answers those and no other)."""
    api, name = AdminApi(stack.base_url, stack.admin_token), uuid.uuid4().hex[:8]
    api.ensure_member(f"org-{name}", f"user-{name}")
    provider = registered(api, name, f"{upstream}/first", mapped=False)
    counted = Counted(stack, "")
    with stack.http() as http:
        assert http.get(f"/v1/providers/{provider}").json()["id"] == provider

        def calls_for_an_unknown_id() -> int:
            """Registry calls of one GET of an unknown id, the table cached (until the notices of the
            writes above arrive, one may drop the table, and the next GET reads it again)."""
            assert http.get("/v1/providers").status_code == 200
            before = counted.calls().get("ListProviderConfigs", 0)
            assert http.get(f"/v1/providers/nobody-{name}").status_code == 404
            return counted.calls().get("ListProviderConfigs", 0) - before

        eventually(lambda: calls_for_an_unknown_id() == 1, "one Registry call for an unknown provider id")
    with stack.channel("registry") as channel:
        internal = internal_grpc.InternalServiceStub(channel)
        request = internal_pb.ListProviderConfigsRequest(provider_ids=[provider, f"nobody-{name}"])
        assert [c.provider.id for c in internal.ListProviderConfigs(request, timeout=10).providers] == [provider]
        too_many = internal_pb.ListProviderConfigsRequest(provider_ids=[f"p{i}" for i in range(101)])
        with pytest.raises(grpc.RpcError) as refused:
            internal.ListProviderConfigs(too_many, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
