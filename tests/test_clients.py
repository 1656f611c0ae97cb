"""Clients people already use, unchanged, through the real Envoy port of a demo stack:
gRPC server reflection (with no generated code of ours) and health, the `openai` and
`huggingface_hub` SDKs with hub ids they send as `org%2Fname`, and path variables
with any escape in them."""

from __future__ import annotations

import io
import json
import queue
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import grpc
import openai
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from helpers.clients import http_client
from helpers.node import NODE_DIR, node_with_packages
from helpers.stacks import DemoStack
from huggingface_hub import InferenceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.envoy import DESCRIPTOR, PUBLIC_SERVICES
from services.demo import CHAT_MODEL, IMAGE_MODEL, MAPPINGS, PROVIDER
from services.launcher import Stack

pytestmark = pytest.mark.slow

DISCOVERY = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "grpc.health.v1.Health"}
REFLECTION_METHOD = "/grpc.reflection.{}.ServerReflection/ServerReflectionInfo"
MESSAGES = [{"role": "user", "content": "say hello"}]


@dataclass
class Demo:
    stack: Stack
    base_url: str
    admin_token: str
    token: str  # the demo user's

    @property
    def grpc_address(self) -> str:
        return self.stack.addresses["envoy"]

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.token, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def demo(shared_demo: DemoStack) -> Demo:
    stack, base_url, admin_token, lines = shared_demo
    token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
    return Demo(stack, base_url, admin_token, token)


@pytest.fixture(scope="module")
def envoy_channel(demo: Demo) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(demo.grpc_address) as channel:
        yield channel


def declared_methods() -> dict[str, set[str]]:
    """Each public service's methods as the descriptor set declares them (no generated code)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes()).file
    return {
        f"{proto.package}.{service.name}": {method.name for method in service.method}
        for proto in files
        for service in proto.service
        if f"{proto.package}.{service.name}" in PUBLIC_SERVICES
    }


# --- gRPC reflection and health on the public port ---------------------------------------------


def test_reflection_lists_and_describes_every_public_service_and_no_internal_one(envoy_channel) -> None:
    database = ProtoReflectionDescriptorDatabase(envoy_channel)
    assert set(database.get_services()) == set(PUBLIC_SERVICES) | DISCOVERY
    pool = descriptor_pool.DescriptorPool(database)
    described = {name: {m.name for m in pool.FindServiceByName(name).methods} for name in PUBLIC_SERVICES}
    assert described == declared_methods()
    for internal in ("switchboard.registry.v1.InternalService", "switchboard.billing.v1.LedgerService"):
        with pytest.raises(KeyError):
            pool.FindServiceByName(internal)


def reflected_call(channel: grpc.Channel, method_name: str, *, streaming: bool = False) -> tuple[type, Callable]:
    """A request class and a callable for "package.Service.Method", built only from what
    reflection through Envoy describes."""
    service_name, method = method_name.rsplit(".", 1)
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    descriptor = pool.FindServiceByName(service_name).methods_by_name[method]
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    answer_class = message_factory.GetMessageClass(descriptor.output_type)
    kind = channel.unary_stream if streaming else channel.unary_unary
    call = kind(
        f"/{service_name}/{method}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=answer_class.FromString,
    )
    return request_class, call


def test_a_method_built_from_reflected_descriptors_answers(demo: Demo, envoy_channel) -> None:
    request_class, list_models = reflected_call(envoy_channel, "switchboard.router.v1.RouterService.ListModels")
    answer = list_models(request_class(), metadata=[("authorization", f"Bearer {demo.token}")], timeout=15)
    assert {CHAT_MODEL, IMAGE_MODEL} <= {model.id for model in answer.data}


def test_a_native_server_stream_flows_through_envoy(demo: Demo, envoy_channel) -> None:
    request_class, chat = reflected_call(
        envoy_channel, "switchboard.router.v1.RouterService.CreateChatCompletion", streaming=True
    )
    body = json.dumps({"model": CHAT_MODEL, "messages": MESSAGES, "stream": True}).encode()
    request = request_class(body={"content_type": "application/json", "data": body})
    events = [m.data for m in chat(request, metadata=[("authorization", f"Bearer {demo.token}")], timeout=30)]
    assert len(events) > 2 and events[-1].strip() == b"data: [DONE]"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_both_reflection_versions_answer_and_a_closed_stream_ends_ok(envoy_channel, version: str) -> None:
    """The caller closes its side after one request (grpcurl does): the answer still comes,
    and the call ends OK, not UNIMPLEMENTED, and is not held behind a body buffer."""
    call = envoy_channel.stream_stream(
        REFLECTION_METHOD.format(version),
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="switchboard.router.v1.RouterService"),
    ]
    answers = list(call(iter(requests), timeout=15))
    assert {s.name for s in answers[0].list_services_response.service} == set(PUBLIC_SERVICES) | DISCOVERY
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in answers[1].file_descriptor_response.file_descriptor_proto
    ]
    assert "switchboard/router/v1/router_service.proto" in {f.name for f in files}


def test_an_open_reflection_stream_answers_before_the_caller_closes_it(envoy_channel) -> None:
    """A bidi stream flows request by request: each answer is read before the next request
    is sent, so a stream held until the caller closes its side would end in a deadline."""
    call = envoy_channel.stream_stream(
        REFLECTION_METHOD.format("v1"),
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    outbox: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
    answers = call(iter(outbox.get, None), timeout=15)
    for symbol in ("grpc.health.v1.Health", "switchboard.billing.v1.BillingService"):
        outbox.put(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        assert next(answers).original_request.file_containing_symbol == symbol
    outbox.put(None)
    assert list(answers) == []
    assert answers.code() == grpc.StatusCode.OK


def test_health_answers_serving_on_the_public_port(envoy_channel) -> None:
    stub = health_pb2_grpc.HealthStub(envoy_channel)
    for name in ("", "switchboard.router.v1.RouterService"):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=15)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# --- SDKs with slash ids -------------------------------------------------------------------------


def test_openai_retrieves_a_model_whose_id_has_a_slash(demo: Demo) -> None:
    # The SDK sends GET /v1/models/demo%2Fchat-model.
    client = demo.openai()
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL
    assert {CHAT_MODEL, IMAGE_MODEL} <= {model.id for model in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("demo/no-such-model")


def test_huggingface_hub_chat_and_text_to_image_with_an_escaped_hub_id(demo: Demo) -> None:
    from PIL import Image

    chat = InferenceClient(base_url=f"{demo.base_url}/v1", api_key=demo.token)
    answer = chat.chat_completion(messages=MESSAGES, model=CHAT_MODEL, max_tokens=20)
    assert answer.model == CHAT_MODEL and "say hello" in answer.choices[0].message.content
    # Hugging Face's route with the hub id as one escaped segment: POST /models/demo%2Fimage-model.
    images = InferenceClient(base_url=f"{demo.base_url}/models/{quote(IMAGE_MODEL, safe='')}", api_key=demo.token)
    image = images.text_to_image("a mountain", width=48, height=40)
    assert isinstance(image, Image.Image) and image.size == (48, 40)
    image.save(io.BytesIO(), format="PNG")


# --- escapes in path variables ----------------------------------------------------------------


def escaped_variants(text: str) -> st.SearchStrategy[str]:
    """Every way to write `text` in a path segment: each character as it is (where it may
    stand unescaped) or percent-escaped in upper or lower case hex."""

    def one(char: str) -> st.SearchStrategy[str]:
        escaped = "".join(f"%{b:02X}" for b in char.encode())
        spellings = [escaped, escaped.lower()]
        if char != "/":
            spellings.append(char)
        return st.sampled_from(spellings)

    return st.tuples(*(one(c) for c in text)).map("".join)


SUITE = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SUITE
@given(path=st.sampled_from(["/v1/models/{}", "/admin/v1/models/{}"]), written=escaped_variants(CHAT_MODEL))
def test_any_escape_of_a_hub_id_reaches_the_service_decoded(demo: Demo, path: str, written: str) -> None:
    with http_client(base_url=demo.base_url, headers={"Authorization": f"Bearer {demo.admin_token}"}) as http:
        answer = http.get(path.format(written))
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == CHAT_MODEL


@SUITE
@given(written=escaped_variants(PROVIDER))
def test_any_escape_in_a_single_segment_variable_is_decoded(demo: Demo, written: str) -> None:
    with http_client(base_url=demo.base_url, headers={"Authorization": f"Bearer {demo.admin_token}"}) as http:
        answer = http.get(f"/admin/v1/providers/{written}")
    assert answer.status_code == 200, answer.text


RESERVED = ":/?#[]@!$&'()*+,;=% "


@SUITE
@given(name=st.text(alphabet=st.sampled_from(RESERVED + "abcé😀"), min_size=1, max_size=12))
def test_a_name_with_reserved_characters_arrives_as_it_was_meant(demo: Demo, name: str) -> None:
    """Fully escaped, any name reaches the service decoded exactly once (`%25` is a `%`)."""
    with http_client(base_url=demo.base_url, headers={"Authorization": f"Bearer {demo.admin_token}"}) as http:
        answer = http.get(f"/admin/v1/providers/{quote(name, safe='')}")
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["message"] == f"provider {name!r} does not exist"


@pytest.mark.parametrize("written", ["%", "%2", "%zz", "%g1", "a%2", "%%2F", "%C3", "%c3%28", "%FF", "%00"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/demo/{}"),
        ("GET", "/admin/v1/providers/{}"),
        ("GET", "/v1/providers/{}"),
        ("POST", "/models/demo%2F{}"),
        ("POST", "/{}/v1/chat/completions"),
    ],
)
def test_an_invalid_escape_is_a_4xx_not_a_5xx(demo: Demo, method: str, path: str, written: str) -> None:
    body = {"inputs": "a cat", "model": CHAT_MODEL, "messages": MESSAGES} if method == "POST" else None
    token = demo.admin_token if path.startswith("/admin/") else demo.token
    with http_client(base_url=demo.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        answer = http.request(method, path.format(written), json=body)
    assert answer.status_code in (400, 404), answer.text
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


# --- Node clients ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/node's packages installed."""
    return node_with_packages()


def test_node_openai_and_grpc_js_clients_through_envoy(demo: Demo, node: str) -> None:
    argv = [demo.base_url, demo.grpc_address, demo.token, demo.admin_token, CHAT_MODEL, PROVIDER]
    run = subprocess.run(
        [node, str(NODE_DIR / "clients.mjs"), *argv], capture_output=True, text=True, timeout=120, cwd=NODE_DIR
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    answer = "Reference answer to: say hello"
    assert result["openai"]["chat"] == {"model": CHAT_MODEL, "content": answer}
    assert result["openai"]["stream"]["content"] == answer and result["openai"]["stream"]["chunks"] > 1
    # The demo may list aliases beside its catalog: the two clients see the same list.
    assert {CHAT_MODEL, IMAGE_MODEL} <= set(result["openai"]["models"])
    assert result["openai"]["retrieved"] == CHAT_MODEL
    assert result["grpc"]["router_models"] == result["openai"]["models"]
    assert result["grpc"]["registry_mappings"] == sorted(m["providerModel"] for m in MAPPINGS)
