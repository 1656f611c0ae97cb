"""The Router process: serve(), main(). The Registry's and Billing's stubs are injected here."""

from __future__ import annotations

import asyncio
import logging

from switchboard.billing.v1 import billing_service_pb2_grpc
from switchboard.registry.v1 import internal_service_pb2_grpc
from switchboard.router.v1 import router_service_pb2_grpc

from services.common.counters import counters_from_url
from services.common.logs import configure_logging
from services.common.server import run
from services.common.service import channel, run_service
from services.common.telemetry import REGISTRY_CALLS, CountingCalls, configure_tracing, watch_router
from services.router.anonymous import AnonymousClients
from services.router.breaker import Breakers
from services.router.config import RouterSettings
from services.router.directory import Directory
from services.router.health_reports import HealthReports
from services.router.key_limits import KeyLimits
from services.router.measurements import Measurements
from services.router.servicer import RouterServicer
from services.router.spending import Spending
from services.router.spool import Spool
from services.router.upstream import Upstreams

log = logging.getLogger(__name__)


async def serve(settings: RouterSettings) -> None:
    """Runs the Router until SIGTERM: change feed, ledger records' spool, upstream pool, gRPC server."""
    credential = settings.service_credential_value()
    registry_channel = channel(settings.registry_address, credential, [CountingCalls(REGISTRY_CALLS)])
    billing_channel = channel(settings.billing_address, credential)
    directory = Directory(internal_service_pb2_grpc.InternalServiceStub(registry_channel))
    billing = billing_service_pb2_grpc.LedgerServiceStub(billing_channel)
    spool = Spool(
        billing,
        settings.data_dir.resolve() / "router-ledger-spool",
        settings.ledger_batch_size,
        send_interval=settings.ledger_send_interval_seconds,
    )
    spending = Spending(
        billing,
        settings.billing_timeout_seconds,
        Breakers(settings.billing_breaker_failures, settings.billing_breaker_cooldown_seconds),
    )
    measurements = Measurements()
    health_reports = HealthReports(directory.registry, measurements, settings.health_report_interval_seconds)
    directory.health_listener = health_reports.changed
    upstreams = Upstreams(
        Breakers(settings.breaker_failures, settings.breaker_cooldown_seconds),
        settings.upstream_connect_timeout_seconds,
        settings.upstream_timeout_seconds,
        settings.stream_idle_timeout_seconds,
        settings.max_answer_bytes,
        measurements,
    )
    watch_router(upstreams.breakers, spool, spending)
    counters = counters_from_url(settings.counter_store_url, settings.counter_store_timeout_seconds)
    servicer = RouterServicer(
        directory, upstreams, spending, spool, measurements, settings.hub_url, settings.anonymous_account,
        KeyLimits(counters),
        AnonymousClients(settings.anonymous_limits()),
    )  # fmt: skip
    spool.load_spool()  # here, not in its sender: a data directory it cannot use fails the start
    loops = (directory.watch(), spool.run(), spending.watch(), health_reports.run())
    background = [asyncio.create_task(task) for task in loops]
    for task in background:
        task.add_done_callback(_report_failure)
    registrations = [
        (
            router_service_pb2_grpc.add_RouterServiceServicer_to_server,
            servicer,
            "switchboard.router.v1.RouterService",
        )
    ]

    async def close() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)  # a failed one was logged when it failed
        await spool.close()
        await counters.close()
        await upstreams.close()
        await registry_channel.close()
        await billing_channel.close()

    # Envoy sends the public port's reflection and health calls here (DISCOVERY_CLUSTER).
    await run_service("router", settings, registrations, on_stop=close, public_catalog=True)


def _report_failure(task: asyncio.Task) -> None:
    """A background loop that ended with an error, logged when it does (not at the stop)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        name = task.get_coro().__qualname__
        log.error("a background task of the Router failed", exc_info=error, extra={"task": name})


def main(argv: list[str] | None = None) -> None:
    settings = RouterSettings.from_args("python -m services.router", argv)
    configure_logging("router", settings.log_level)
    configure_tracing("router")
    run(lambda: serve(settings))
