"""gRPC discovery a client meets (issue 21, point 5): health's Watch streams status changes, and
reflection serves every type an error's details are made of, on Envoy's public port and on every
service's own port."""

from __future__ import annotations

import queue
import signal
import threading

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

pytestmark = pytest.mark.slow

PORTS = ("envoy", "router", "registry", "billing")
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
DETAIL_TYPES = ("google.rpc.Status", "google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo",
                "google.rpc.QuotaFailure", "google.rpc.PreconditionFailure", "google.rpc.Help")  # fmt: skip


@pytest.fixture(scope="module")
def sb(make_stack):
    return make_stack()


def watch(channel: grpc.Channel, service: str = "") -> tuple[queue.Queue, grpc.Future]:
    """Health/Watch in a thread: the statuses as they come, then the call's end code."""
    statuses: queue.Queue = queue.Queue()
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service), timeout=120)

    def read() -> None:
        try:
            for answer in call:
                statuses.put(answer.status)
        except grpc.RpcError as error:
            statuses.put(error.code())

    threading.Thread(target=read, daemon=True).start()
    return statuses, call


@pytest.mark.parametrize("port", PORTS)
def test_reflection_resolves_every_error_detail_type(sb, port: str) -> None:
    with sb.channel(port) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        for name in DETAIL_TYPES:
            assert pool.FindMessageTypeByName(name).full_name == name


def test_an_errors_details_decode_with_reflected_types_only(sb) -> None:
    """What grpcurl does: an error's grpc-status-details-bin read with the types reflection serves."""
    with sb.channel("envoy") as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        list_models = channel.unary_unary("/switchboard.router.v1.RouterService/ListModels")
        with pytest.raises(grpc.RpcError) as raised:
            list_models(b"", metadata=[("authorization", "Bearer sb-unknown-token")], timeout=15)
        status_type, info_type = (pool.FindMessageTypeByName(f"google.rpc.{n}") for n in ("Status", "ErrorInfo"))
    details = dict(raised.value.trailing_metadata())["grpc-status-details-bin"]
    status = message_factory.GetMessageClass(status_type).FromString(details)
    info = message_factory.GetMessageClass(info_type)()
    assert status.details[0].Unpack(info) and info.domain == "switchboard" and info.reason


@pytest.mark.parametrize("port", PORTS)
def test_health_watch_answers_serving_on_every_port(sb, port: str) -> None:
    with sb.channel(port) as channel:
        statuses, call = watch(channel)
        assert statuses.get(timeout=30) == SERVING
        call.cancel()


def test_health_watch_streams_the_change_when_the_router_stops(sb) -> None:
    """Watched through Envoy's public port and on the Router's own port: SERVING, then
    NOT_SERVING once the Router is told to stop (it drains before it exits)."""
    with sb.channel("envoy") as public, sb.channel("router") as own:
        watched = [watch(public), watch(own, "switchboard.router.v1.RouterService")]
        assert [statuses.get(timeout=30) for statuses, _ in watched] == [SERVING, SERVING]
        router = next(c for c in sb.stack.children if c.name == "router")
        router.process.send_signal(signal.SIGTERM)
        assert [statuses.get(timeout=30) for statuses, _ in watched] == [NOT_SERVING, NOT_SERVING]
        router.process.wait(timeout=60)
