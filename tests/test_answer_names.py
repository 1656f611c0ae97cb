"""Which provider served an answer and the Router's request id, end to end (issue 23: the edge owns
presentation). The Router sends them as gRPC metadata of its own names, `switchboard-provider` and
`switchboard-request-id`, which native gRPC callers read; Envoy alone presents them to REST callers
as `x-inference-provider` and `x-request-id` (envoy/answers.lua), on answers, streams and error
answers. A caller's own metadata of any of these names never comes back."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2
from helpers.edge import access_log_lines
from helpers.upstream import JsonHandler, serving
from helpers.waiting import eventually
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common.provider_api import PROVIDER_METADATA_KEY
from services.common.surface import ANSWER_METADATA_IN_TRAILERS, ANSWER_METADATA_KEY
from services.demo import AdminApi
from services.router.request_ids import REQUEST_ID_METADATA_KEY

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]
JSON = "application/json"
REST_NAMES = ("x-inference-provider", "x-request-id")
OWN_NAMES = (PROVIDER_METADATA_KEY, REQUEST_ID_METADATA_KEY)
FORGED = [(name, "forged") for name in (*REST_NAMES, *OWN_NAMES)]
UPSTREAM_ID = "upstream-id-1"  # the provider's own request id, under both of its header names


class Provider(JsonHandler):
    """Answers a chat (as a stream when asked) on /ok/…, refuses it with a 400 on /refuse/…;
    every answer carries its request id as `Inference-Id` and as `X-Request-Id`."""

    def do_POST(self) -> None:
        asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path.startswith("/refuse/"):
            self.answer(400, {"error": {"message": "no such thing", "type": "invalid_request_error"}})
            return
        message = {"role": "assistant", "content": "hello"}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        chat = {"id": "c-1", "object": "chat.completion", "created": 0, "model": "upstream-model", "usage": usage}
        if not asked.get("stream"):
            self.answer(200, {**chat, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
            return
        chunk = {**chat, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": message}]}
        events = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        self.answer(200, events, "text/event-stream")

    def answer(self, status: int, body: dict | bytes, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data)))):
            self.send_header(name, value)
        for name in ("Inference-Id", "X-Request-Id"):
            self.send_header(name, UPSTREAM_ID)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class World:
    stack: object
    api: AdminApi
    upstream: str
    org: str
    token: str

    def model(self, path: str, request_id_header: str = "Inference-Id") -> tuple[str, str]:
        """A chat model served by a new provider at `path` of the upstream: (model, provider)."""
        name = secrets.token_hex(4)
        org, provider, model = self.org, f"p-names-{name}", f"{self.org}/chat-{name}"
        self.api.ensure_provider(
            {"id": provider, "org": org, "base_url": f"{self.upstream}{path}", "api_key": secrets.token_hex(16),
             "tasks": ["conversational"], "request_id_header": request_id_header}
        )  # fmt: skip
        prices = [{"provider_model": "upstream-model", "input_token_nano_usd": 7}]
        self.api.call("PUT", f"/admin/v1/providers/{provider}/prices", {"prices": prices})
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        self.api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        mapping = {"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live"}
        self.api.call("POST", f"/api/partners/{provider}/models", mapping)
        return model, provider

    def rest(self, model: str, stream: bool = False, forged: bool = False) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **(dict(FORGED) if forged else {})}
        body = {"model": model, "messages": MESSAGES, "stream": stream}
        return httpx.post(f"{self.stack.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    def grpc_call(self, model: str, channel: grpc.Channel, stream: bool = False):
        """A native gRPC chat through Envoy, with forged metadata of every name; the call, read to its end."""
        data = orjson.dumps({"model": model, "messages": MESSAGES, "stream": stream})
        body = httpbody_pb2.HttpBody(content_type="application/json", data=data)
        request = router_pb.CreateChatCompletionRequest(body=body)
        metadata = [("authorization", f"Bearer {self.token}"), *FORGED]
        call = router_grpc.RouterServiceStub(channel).CreateChatCompletion(request, metadata=metadata, timeout=30)
        list(call)
        return call


@pytest.fixture(scope="module")
def world(stack) -> Iterator[World]:
    api, user = AdminApi(stack.base_url, stack.admin_token), f"user-names-{secrets.token_hex(4)}"
    api.ensure_member(f"org-{user}", user)
    with serving(Provider) as upstream:
        yield World(stack, api, upstream, f"org-{user}", api.new_token(user))


def values(headers: httpx.Headers | list[tuple[str, str]], name: str) -> list[str]:
    pairs = headers.multi_items() if isinstance(headers, httpx.Headers) else headers
    return [value for key, value in pairs if key.lower() == name]


def own_names_of(headers: httpx.Headers) -> list[str]:
    return [name for name in headers if name.startswith("switchboard-")]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_rest_caller_sees_the_provider_and_the_request_id_once_whatever_it_sent(world, stream: bool) -> None:
    model, provider = world.model("/ok")
    answer = world.rest(model, stream=stream, forged=True)
    assert answer.status_code == 200, answer.text
    assert values(answer.headers, "x-inference-provider") == [provider]
    (request_id,) = values(answer.headers, "x-request-id")
    assert uuid.UUID(request_id).version == 7 and values(answer.headers, "inference-id") == [UPSTREAM_ID]
    assert own_names_of(answer.headers) == []


def test_a_rest_caller_sees_which_provider_refused(world) -> None:
    model, provider = world.model("/refuse")
    answer = world.rest(model, forged=True)
    assert answer.status_code == 400 and "no such thing" in answer.json()["error"]["message"]
    assert values(answer.headers, "x-inference-provider") == [provider]
    assert own_names_of(answer.headers) == []


def test_a_provider_whose_request_id_header_is_x_request_id_comes_after_the_routers(world) -> None:
    model, _ = world.model("/ok", request_id_header="X-Request-Id")
    answer = world.rest(model)
    assert answer.status_code == 200, answer.text
    (joined,) = values(answer.headers, "x-request-id")  # one header, as Envoy joins two values
    ours, theirs = joined.split(",")
    assert uuid.UUID(ours).version == 7 and theirs == UPSTREAM_ID
    with grpc.insecure_channel(world.stack.address("envoy")) as channel:
        metadata = list(world.grpc_call(model, channel).initial_metadata())
    assert uuid.UUID(values(metadata, REQUEST_ID_METADATA_KEY)[0]).version == 7
    assert values(metadata, "x-request-id") == [UPSTREAM_ID]  # the provider's, passed on as it named it


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_native_grpc_caller_reads_the_routers_own_names_and_nothing_it_sent(world, stream: bool) -> None:
    model, provider = world.model("/ok")
    with grpc.insecure_channel(world.stack.address("envoy")) as channel:
        metadata = list(world.grpc_call(model, channel, stream).initial_metadata())
    assert values(metadata, PROVIDER_METADATA_KEY) == [provider]
    (request_id,) = values(metadata, REQUEST_ID_METADATA_KEY)
    assert uuid.UUID(request_id).version == 7
    assert [key for key, _ in metadata if key in REST_NAMES] == []


def test_a_native_grpc_caller_asking_for_trailers_still_reads_the_names_first(world) -> None:
    """A REST call's unary answer carries its metadata in its trailers because the edge asks for it
    (surface.py), not because of the transcoder's mark on the call; the edge removes a caller's own
    ask, so a native caller reads the names first and the access log finds them there."""
    model, provider = world.model("/ok")
    data = orjson.dumps({"model": model, "messages": MESSAGES})
    request = router_pb.CreateChatCompletionRequest(body=httpbody_pb2.HttpBody(content_type=JSON, data=data))
    metadata = [
        ("authorization", f"Bearer {world.token}"),
        ("x-envoy-original-path", "/v1/chat/completions"),
        (ANSWER_METADATA_KEY, ANSWER_METADATA_IN_TRAILERS),
    ]
    with grpc.insecure_channel(world.stack.address("envoy")) as channel:
        call = router_grpc.RouterServiceStub(channel).CreateChatCompletion(request, metadata=metadata, timeout=30)
        list(call)
        assert values(list(call.initial_metadata()), PROVIDER_METADATA_KEY) == [provider]


def test_a_native_grpc_caller_reads_which_provider_refused_in_the_trailers(world) -> None:
    model, provider = world.model("/refuse")
    with grpc.insecure_channel(world.stack.address("envoy")) as channel, pytest.raises(grpc.RpcError) as raised:
        world.grpc_call(model, channel)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = list(raised.value.trailing_metadata())
    assert values(trailers, PROVIDER_METADATA_KEY) == [provider]
    assert [key for key, _ in trailers if key in REST_NAMES] == []


def test_envoys_access_log_records_the_request_id_and_provider_of_both_kinds_of_caller(world) -> None:
    model, provider = world.model("/ok")
    rest_id = world.rest(model).headers["x-request-id"]
    joining, joining_provider = world.model("/ok", request_id_header="X-Request-Id")
    joined_id = world.rest(joining).headers["x-request-id"].split(",")[0]  # ours, then the provider's
    with grpc.insecure_channel(world.stack.address("envoy")) as channel:
        grpc_id = dict(world.grpc_call(model, channel).initial_metadata())[REQUEST_ID_METADATA_KEY]

    def all_logged() -> dict[str, str] | None:
        seen = {line["request_id"]: line["provider"] for line in access_log_lines(world.stack)}
        return seen if {rest_id, joined_id, grpc_id} <= seen.keys() else None

    found = eventually(all_logged, "every call in Envoy's access log, under the ledger's request id")
    assert (found[rest_id], found[joined_id], found[grpc_id]) == (provider, joining_provider, provider)
