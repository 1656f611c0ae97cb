"""An API token's `allowedModels` on the provider-named routes (docs/api-keys.md): there the request's
`model` is the provider's own model id, so the list is checked against the hub model the provider's
mapping of that id stands for, never against the id itself (a provider may name its model of one hub
model with another hub model's id). The catalog routes check the requested model as before; the
other errors keep their order (expiry first, a model the provider lacks still `model_not_supported`)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from google.protobuf import timestamp_pb2
from helpers.upstream import JsonHandler, serving
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.counters import MemoryCounters
from services.common.errors import ApiError
from services.demo import AdminApi
from services.router.key_limits import KeyLimits

MESSAGES = [{"role": "user", "content": "hi"}]


class EchoingModel(JsonHandler):
    """A provider that answers every chat with the model id it was sent as the content."""

    def do_POST(self) -> None:
        asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        message = {"role": "assistant", "content": asked["model"]}
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": asked["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self.send(200, json.dumps(body).encode())


@dataclass
class World:
    """Provider `provider` names its model of hub model `expensive` with the hub id of `cheap`,
    and serves `cheap` itself as `cheap-upstream`."""

    stack: object
    api: AdminApi
    user: str
    provider: str
    cheap: str
    expensive: str

    def token(self, *allowed: str, **limits: object) -> str:
        body = {"name": f"t-{secrets.token_hex(4)}", "limits": {"allowedModels": list(allowed), **limits}}
        return self.api.call("POST", f"/admin/v1/users/{self.user}/tokens", body)["token"]

    def chat(self, token: str, model: str, provider: str = "") -> httpx.Response:
        path = f"/{provider}/v1/chat/completions" if provider else "/v1/chat/completions"
        with self.stack.http(token) as http:
            return http.post(path, json={"model": model, "messages": MESSAGES})


@pytest.fixture(scope="module")
def world(stack) -> Iterator[World]:
    api, name = AdminApi(stack.base_url, stack.admin_token), secrets.token_hex(4)
    org, user, provider = f"org-allowed-{name}", f"user-allowed-{name}", f"p-allowed-{name}"
    api.ensure_member(org, user)
    cheap, expensive = f"{org}/cheap", f"{org}/expensive"
    entries = [
        {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]} for model in (cheap, expensive)
    ]
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": entries})
    with serving(EchoingModel) as upstream:
        api.ensure_provider({"id": provider, "org": org, "base_url": upstream, "api_key": secrets.token_hex(16),
                             "tasks": ["conversational"]})  # fmt: skip
        for hub_model, provider_model in ((expensive, cheap), (cheap, "cheap-upstream")):
            mapping = {
                "task": "conversational",
                "hfModel": hub_model,
                "providerModel": provider_model,
                "status": "live",
            }
            api.call("POST", f"/api/partners/{provider}/models", mapping)
        yield World(stack, api, user, provider, cheap, expensive)


def refused(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, answer.text
    return error["message"]


def served(answer: httpx.Response) -> str:
    """What the provider was asked for (it echoes the model id it was sent)."""
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["message"]["content"]


def test_a_provider_model_named_like_an_allowed_hub_model_is_refused_when_it_serves_another(world) -> None:
    token = world.token(world.cheap)
    message = refused(world.chat(token, world.cheap, world.provider), 403, "model_not_allowed")
    asked = f"provider {world.provider}'s {world.cheap}"
    assert message == f"this API token may not call {asked}, which serves {world.expensive}"
    assert served(world.chat(token, "cheap-upstream", world.provider)) == "cheap-upstream"  # the provider's cheap


def test_the_provider_id_of_an_allowed_hub_model_is_served_on_the_provider_route_counted_once(world) -> None:
    token = world.token(world.expensive, requestsPerMinute=2)
    answer = world.chat(token, world.cheap, world.provider)
    assert served(answer) == world.cheap  # the provider's own id for the expensive model, sent as it is
    assert answer.headers["x-ratelimit-remaining-requests"] == "1"  # one request, counted once
    refused(world.chat(token, "cheap-upstream", world.provider), 403, "model_not_allowed")


def test_a_model_the_provider_lacks_keeps_its_error_on_the_provider_route(world) -> None:
    token = world.token(world.cheap)
    message = refused(world.chat(token, "no-such-model", world.provider), 400, "model_not_supported")
    assert message == f"model no-such-model not supported by provider {world.provider}"
    refused(world.chat(token, world.cheap, f"{world.provider}-none"), 404, "provider_not_found")


def test_the_catalog_route_checks_the_requested_model_as_before(world) -> None:
    token = world.token(world.cheap)
    assert served(world.chat(token, world.cheap)) == "cheap-upstream"
    assert served(world.chat(token, f"{world.cheap}:{world.provider}")) == "cheap-upstream"
    message = refused(world.chat(token, world.expensive), 403, "model_not_allowed")
    assert message == f"this API token may not call {world.expensive}"
    assert served(world.chat(world.token(world.expensive), world.expensive)) == world.cheap


def limited(**limits: object) -> internal_pb.Caller:
    """A key that may call hub model org/a alone, with these limits besides."""
    own = admin_pb.ApiTokenLimits(allowed_models=["org/a"], **limits)
    return internal_pb.Caller(user="u", token_id="t", limits=own)


async def test_a_provider_named_call_checks_expiry_first_and_its_hub_model_once_resolved() -> None:
    limits = KeyLimits(MemoryCounters())
    caller = limited(requests_per_minute=5)
    grant = await limits.admit(caller, None)  # the provider's own id is not checked against the list
    assert grant.admission.requests_remaining == 4
    limits.allow_provider_model(caller, "org/a", "p", "org/b")
    for hub_model in ("org/b", ""):  # another hub model; a mapping standing for no one hub model
        with pytest.raises(ApiError) as raised:
            limits.allow_provider_model(caller, hub_model, "p", "org/a")
        assert (raised.value.http_status, raised.value.code) == (403, "model_not_allowed")
    expired = limited(requests_per_minute=5, expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) - 1))
    with pytest.raises(ApiError) as raised:
        await limits.admit(expired, None)
    assert (raised.value.http_status, raised.value.code) == (401, "api_key_expired")
