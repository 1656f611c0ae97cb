"""The Registry process: create_server(), serve(), main()."""

from __future__ import annotations

from pathlib import Path

from switchboard.registry.v1 import (
    admin_service_pb2_grpc,
    internal_service_pb2_grpc,
    registry_service_pb2_grpc,
)

from services.common.db import Database
from services.common.logs import configure_logging
from services.common.server import run
from services.common.service import open_database, run_service
from services.registry.config import RegistrySettings
from services.registry.servicer import AdminServicer, InternalServicer, RegistryServicer

MIGRATIONS = Path(__file__).parent / "migrations"


def registrations(db: Database, settings: RegistrySettings) -> list:
    """The Registry's servicers with their service names."""
    return [
        (
            registry_service_pb2_grpc.add_RegistryServiceServicer_to_server,
            RegistryServicer(db),
            "switchboard.registry.v1.RegistryService",
        ),
        (
            admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
            AdminServicer(db, settings),
            "switchboard.registry.v1.AdminService",
        ),
        (
            internal_service_pb2_grpc.add_InternalServiceServicer_to_server,
            InternalServicer(db, settings),
            "switchboard.registry.v1.InternalService",
        ),
    ]


async def serve(settings: RegistrySettings) -> None:
    """Runs the Registry until SIGTERM."""
    db = open_database(settings, "registry", MIGRATIONS)

    async def close() -> None:
        db.close()

    await run_service("registry", settings, registrations(db, settings), on_stop=close)


def main(argv: list[str] | None = None) -> None:
    settings = RegistrySettings.from_args("python -m services.registry", argv)
    configure_logging("registry", settings.log_level)
    run(lambda: serve(settings))
