"""The gRPC server every service runs: health, reflection, error mapping, graceful stop."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from functools import cache
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, text_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from services.common.errors import ApiError, Code, internal_error, invalid_argument
from services.common.surface import DESCRIPTOR, PUBLIC_SERVICES

log = logging.getLogger(__name__)

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# What an error's grpc-status-details-bin is made of (google.rpc.Status of ErrorInfo, BadRequest,
# ...): reflection serves them, so a client such as grpcurl can print an error's details.
ERROR_DETAIL_MODULES = (status_pb2, error_details_pb2)

# (add_XServicer_to_server, servicer, full service name)
Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]


class _Guarding:
    """The server as a generated add_*Servicer_to_server sees it: every method handler registered
    through it is wrapped once by the error mapping (_guarded), which turns ApiError into a rich
    gRPC status (the same for every caller: Envoy makes REST answers of it) and any other exception
    into a bare INTERNAL error (logged, never shown). Wrapped at registration, not by an
    interceptor: a server without interceptors skips grpc.aio's interceptor chain on every call."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_GuardedGeneric(handler) for handler in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        guarded = {name: _guarded(handler, f"/{service}/{name}") for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, guarded)


class _GuardedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are guarded, each wrapped once."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            known = self._guarded[method] = (handler, _guarded(handler, method))
        return known[1]


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    if handler.request_deserializer is not None:
        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
    if handler.unary_unary:
        return handler._replace(unary_unary=_guard_unary(handler.unary_unary, method))
    if handler.unary_stream:
        return handler._replace(unary_stream=_guard_stream(handler.unary_stream, method))
    return handler


class _Undecodable:
    """Stands for a request whose bytes are not the message, e.g. a string field that
    is not UTF-8 (the transcoder passes `%ff` in a path through as a raw byte)."""


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """gRPC answers a deserializer's exception with a bare UNKNOWN status; this lets
    the guard answer a 400 instead."""

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return _Undecodable()

    return tolerant


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise invalid_argument("INVALID_ENCODING", "the request is not valid: a text field is not valid UTF-8")


async def abort_with(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    """Ends the call with the error's status and trailing metadata."""
    await context.abort(error.grpc_code, error.message, trailing_metadata=error.trailing_metadata())


async def _raise_as_status(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, ApiError):
        await abort_with(context, exc)
    if isinstance(exc, NotImplementedError):
        error = ApiError(Code.UNIMPLEMENTED, "NOT_IMPLEMENTED", f"{method} is not implemented yet")
        await abort_with(context, error)
    log.exception("unexpected error", extra={"method": method})
    await abort_with(context, internal_error())


def _guard_unary(behavior: Callable, method: str) -> Callable:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _check_decoded(request)
            return await behavior(request, context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            await _raise_as_status(context, exc, method)

    return guarded


def _guard_stream(behavior: Callable, method: str) -> Callable:
    if not inspect.isasyncgenfunction(behavior):  # it writes its answers (context.write), e.g. health's Watch
        return _guard_unary(behavior, method)

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _check_decoded(request)
            # Closed here, in this task, when the caller goes: never left to the garbage collector,
            # whose aclose() runs in another task (and may find the generator still running).
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except Exception as exc:
            if _is_abort(exc):
                raise
            await _raise_as_status(context, exc, method)

    return guarded


def _is_abort(exc: BaseException) -> bool:
    """context.abort() raises an exception that must travel on unchanged."""
    return isinstance(exc, grpc.aio.AbortError)


def create_server(
    registrations: Iterable[Registration],
    host: str,
    port: int,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    *,
    public_catalog: bool = False,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server with the servicers, health checking and reflection; returns the bound port.
    `interceptors` run before the error mapping (e.g. the service credential check); none by
    default, so a call goes straight to its guarded handler.
    With `public_catalog`, reflection lists and describes every public service, not only
    this server's own: Envoy sends the public port's reflection calls to this server."""
    server = grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # Envoy caps request headers (MAX_REQUEST_HEADERS_KB, path included) well below this,
            # so metadata is never refused as RESOURCE_EXHAUSTED; gRPC's default is 8 KiB.
            ("grpc.max_metadata_size", 256 * 1024),
            ("grpc.absolute_max_metadata_size", 256 * 1024),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ],
    )
    guarding = _Guarding(server)
    health_servicer = health.aio.HealthServicer()
    names = [REFLECTION_V1, reflection.SERVICE_NAME, health.SERVICE_NAME]
    for add, servicer, name in registrations:
        add(servicer, guarding)
        names.append(name)
    if public_catalog:
        names += [name for name in PUBLIC_SERVICES if name not in names]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, guarding)
    _add_reflection(guarding, names, _public_pool() if public_catalog else _own_pool())
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound, health_servicer


def _file_proto(module: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def _reflection_v1_file() -> bytes:
    """grpc.reflection.v1 is v1alpha under a new package name (same messages, same field
    numbers; grpcio-reflection ships only v1alpha): its file is v1alpha's, renamed."""
    text = text_format.MessageToString(_file_proto(reflection_pb2))
    text = text.replace("reflection.v1alpha", "reflection.v1").replace("reflection/v1alpha/", "reflection/v1/")
    return text_format.Parse(text, descriptor_pb2.FileDescriptorProto()).SerializeToString()


@cache
def _own_pool() -> descriptor_pool.DescriptorPool:
    """The process's own descriptors (its generated modules, the error details among them), and
    reflection v1's."""
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(_reflection_v1_file())
    return pool


@cache
def _public_pool() -> descriptor_pool.DescriptorPool:
    """The public surface only: the descriptor set Envoy transcodes with, its internal
    services taken out (a file that declares one describes only its public ones)."""
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes()).file:
        public = [s for s in proto.service if f"{proto.package}.{s.name}" in PUBLIC_SERVICES]
        del proto.service[:]
        proto.service.extend(public)
        pool.AddSerializedFile(proto.SerializeToString())
    for module in (health_pb2, reflection_pb2, *ERROR_DETAIL_MODULES):
        _add_with_dependencies(pool, module.DESCRIPTOR)
    pool.AddSerializedFile(_reflection_v1_file())
    return pool


def _add_with_dependencies(pool: descriptor_pool.DescriptorPool, file: descriptor.FileDescriptor) -> None:
    """Adds a file the pool lacks, after the files it imports."""
    try:
        pool.FindFileByName(file.name)
        return
    except KeyError:
        pass
    for dependency in file.dependencies:
        _add_with_dependencies(pool, dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.AddSerializedFile(proto.SerializeToString())


def _add_reflection(server: _Guarding, names: list[str], pool: descriptor_pool.DescriptorPool) -> None:
    """Reflection v1alpha and v1, one servicer behind both (their wire forms are equal)."""
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler})]
    )


async def serve(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_names: Iterable[str],
    grace_seconds: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_draining: Callable[[], None] | None = None,
) -> None:
    """Starts the server, reports SERVING, and on SIGTERM/SIGINT drains calls and stops."""
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra={"grace_seconds": grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    if on_draining is not None:
        on_draining()
    await server.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Runs a service's async main on uvloop. Once it has stopped cleanly (calls drained,
    databases and channels closed) the process exits after its exit handlers (logging,
    exporters): the interpreter's final collection of gRPC's objects would take most of a
    second more and save nothing."""
    import uvloop

    uvloop.run(main())
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
