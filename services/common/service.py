"""Running one service process: channels to the others, the server, a clean stop
(a service with a database opens it with services.common.db.open_database)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

import grpc

from services.common.auth import INTERNAL_SERVICES, ServiceCredentialCheck, presenting_credential
from services.common.config import ServiceSettings
from services.common.server import Registration, create_server, serve
from services.common.telemetry import REGISTRIES, client_interceptors, serve_metrics, server_interceptors, stop_tracing

log = logging.getLogger(__name__)


def channel(address: str, credential: str, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    """A channel to another service, presenting the service credential on every call (and
    passing each through `interceptors`); calls on it carry their own deadlines."""
    return grpc.aio.insecure_channel(
        address,
        interceptors=[*presenting_credential(credential), *client_interceptors(), *interceptors],
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # A peer that restarts is found again within ~2 s, not after gRPC's default backoff (up to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )


async def run_service(
    name: str,
    settings: ServiceSettings,
    registrations: Iterable[Registration],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_draining: Callable[[], None] | None = None,
    *,
    public_catalog: bool = False,
) -> None:
    """Serves the registrations until SIGTERM, then drains and calls on_stop.
    on_draining runs when the drain starts (e.g. to end open streams). With
    public_catalog, reflection covers every public service (see create_server)."""
    registrations = list(registrations)
    # Only a service that serves an internal one pays for the check on every call.
    serves_internal = any(name in INTERNAL_SERVICES for *_, name in registrations)
    checks = [ServiceCredentialCheck(settings.service_credential_value())] if serves_internal else []
    server, port, health = create_server(
        registrations, settings.host, settings.port, [*server_interceptors(), *checks], public_catalog=public_catalog
    )
    log.info("listening", extra={"service": name, "address": f"{settings.host}:{port}"})
    metrics_port = serve_metrics(REGISTRIES[name], settings.host, settings.metrics_port)
    if metrics_port:
        log.info("metrics", extra={"service": name, "url": f"http://{settings.host}:{metrics_port}/metrics"})

    async def stop() -> None:
        if on_stop is not None:
            await on_stop()
        await asyncio.to_thread(stop_tracing)  # the last spans are sent

    await serve(server, health, [r[2] for r in registrations], settings.shutdown_grace_seconds, stop, on_draining)
