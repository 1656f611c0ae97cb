"""The Registry process: create_server(), serve(), main()."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

from switchboard.registry.v1 import (
    account_service_pb2_grpc,
    admin_service_pb2_grpc,
    internal_service_pb2_grpc,
    registry_service_pb2_grpc,
)

from services.common.db import open_database
from services.common.logs import configure_logging
from services.common.secrets import secrets_key, use_secrets_key
from services.common.server import Registration, run
from services.common.service import run_service
from services.common.telemetry import configure_tracing, watch_registry
from services.registry.api.accounts import AccountServicer
from services.registry.api.admin import AdminServicer
from services.registry.api.internal import InternalServicer
from services.registry.api.partners import RegistryServicer
from services.registry.config import RegistrySettings
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.conformance import Checker, HttpClient
from services.registry.domain.probes import Prober
from services.registry.domain.replicas import ReplicaFollower
from services.registry.domain.state import RegistryState
from services.registry.storage.queries import load_index

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def registrations(state: RegistryState, checker: Checker) -> list[Registration]:
    """The Registry's servicers with their service names."""
    return [
        (
            registry_service_pb2_grpc.add_RegistryServiceServicer_to_server,
            RegistryServicer(state, checker),
            "switchboard.registry.v1.RegistryService",
        ),
        (
            admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
            AdminServicer(state),
            "switchboard.registry.v1.AdminService",
        ),
        (
            account_service_pb2_grpc.add_AccountServiceServicer_to_server,
            AccountServicer(state),
            "switchboard.registry.v1.AccountService",
        ),
        (
            internal_service_pb2_grpc.add_InternalServiceServicer_to_server,
            InternalServicer(state),
            "switchboard.registry.v1.InternalService",
        ),
    ]


async def serve(settings: RegistrySettings) -> None:
    """Loads the index from the database, then runs the Registry until SIGTERM."""
    use_secrets_key(secrets_key(settings.data_dir))  # provider secrets are encrypted at rest
    db = open_database(settings, "registry", MIGRATIONS)
    started = time.monotonic()
    index = await db.run(lambda session: load_index(session.get_bind()))
    # The index lives as long as the process: keep its millions of objects out
    # of the collector's generations so collections stay short on the hot path.
    gc.freeze()
    log.info(
        "index loaded",
        extra={
            "models": len(index.catalog),
            "mappings": len(index.mappings),
            "providers": len(index.providers),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    state = RegistryState(db, index, ChangeFeed(), settings.admin_token.get_secret_value())
    watch_registry(index, state.feed)
    replicas = ReplicaFollower(state)
    state.catch_up = replicas.catch_up
    follower = asyncio.create_task(replicas.run())
    http = HttpClient()  # opened by the first check or probe
    prober = Prober(state, http, settings.probes())
    prober.start()

    async def close() -> None:
        follower.cancel()
        await prober.close()
        await http.close()
        db.close()

    checker = Checker(http, settings.conformance_call_seconds)
    await run_service("registry", settings, registrations(state, checker), on_stop=close, on_draining=state.feed.close)


def main(argv: list[str] | None = None) -> None:
    settings = RegistrySettings.from_args("python -m services.registry", argv)
    configure_logging("registry", settings.log_level)
    configure_tracing("registry")
    run(lambda: serve(settings))
