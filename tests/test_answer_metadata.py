"""What the Router tells a caller besides the answer, end to end: native gRPC callers read it as
typed binary metadata (AnswerTiming, RateLimits), REST callers as headers that Envoy writes
(envoy/answers.lua), and Envoy's own refusals carry Server-Timing's `edge` entry. The Lua itself
is tested without a stack in tests/test_edge_answers.py."""

from __future__ import annotations

import re

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2
from helpers.edge import CHAT, MIB, raw_exchange, request_head
from helpers.registry import unique
from helpers.stacks import DemoStack, RunningStack
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc
from switchboard.router.v1.answer_metadata_pb2 import AnswerTiming

from edge import limits as edge
from services.demo import CHAT_MODEL
from services.router.timing import TIMING_KEY

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Hello!"}]
EDGE_TIMING = re.compile(r"edge;dur=(\d+\.\d\d)")


@pytest.fixture(scope="module")
def demo(shared_demo: DemoStack) -> tuple[str, str]:
    """The demo stack's Envoy address and its demo token."""
    stack, base_url, admin_token, lines = shared_demo
    token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
    return RunningStack(stack, base_url, admin_token).address("envoy"), token


def chat(model: str) -> router_pb.CreateChatCompletionRequest:
    body = orjson.dumps({"model": model, "messages": MESSAGES})
    return router_pb.CreateChatCompletionRequest(body=httpbody_pb2.HttpBody(content_type="application/json", data=body))


def test_a_native_grpc_caller_reads_the_answers_timing_as_typed_metadata(demo) -> None:
    address, token = demo
    with grpc.insecure_channel(address) as channel:
        call = router_grpc.RouterServiceStub(channel).CreateChatCompletion(
            chat(CHAT_MODEL), metadata=[("authorization", f"Bearer {token}")], timeout=30
        )
        list(call)
        timing = AnswerTiming.FromString(dict(call.initial_metadata())[TIMING_KEY])
    assert timing.upstream_micros > 0 and timing.router_micros >= 0


def test_a_native_grpc_error_carries_its_timing_in_the_trailers(demo) -> None:
    address, token = demo
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
        stub = router_grpc.RouterServiceStub(channel)
        list(stub.CreateChatCompletion(chat(unique("no/such")), metadata=[("authorization", f"Bearer {token}")]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert AnswerTiming.FromString(dict(raised.value.trailing_metadata())[TIMING_KEY]).router_micros >= 0


def test_a_rest_caller_sees_server_timing_and_none_of_the_typed_metadata(demo) -> None:
    address, token = demo
    answer = httpx.post(f"http://{address}{CHAT}", headers={"Authorization": f"Bearer {token}"},
                        json={"model": CHAT_MODEL, "messages": MESSAGES}, timeout=30)  # fmt: skip
    assert answer.status_code == 200 and answer.headers["server-timing"].startswith("router;dur=")
    assert not [name for name in answer.headers if name.startswith("switchboard-") or name.endswith("-bin")]


def edge_timing(head: str) -> float:
    """The one Server-Timing entry of an Envoy refusal: the edge's."""
    values = [line.partition(":")[2].strip() for line in head.split("\r\n") if line.startswith("server-timing:")]
    assert len(values) == 1 and EDGE_TIMING.fullmatch(values[0]), values
    return float(EDGE_TIMING.fullmatch(values[0]).group(1))


@pytest.mark.parametrize(
    ("head", "body", "status"),
    [
        (request_head(CHAT, 8 * MIB - 256, "not-a-token"), b"x" * 65536, 401),  # the gate asked the Registry
        (request_head("/v1/models", edge.SMALL_BODY_BYTES + 1, method="GET"), b"x", 413),  # over the route's cap
        (request_head("/v1/billing/accounts/demo/limit", 14, method="PUT"), b'{"bogus": 1}\r\n', 400),  # strict
    ],
)
def test_envoys_own_refusals_carry_the_edges_timing(stack, head: bytes, body: bytes, status: int) -> None:
    answered, answer_head, _ = raw_exchange(stack, head, body)
    assert answered == status
    assert edge_timing(answer_head) >= 0
