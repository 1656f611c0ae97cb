"""The Billing process: create_server(), serve(), main()."""

from __future__ import annotations

from pathlib import Path

from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc
from switchboard.registry.v1 import internal_service_pb2_grpc

from services.billing.config import BillingSettings
from services.billing.servicer import BillingAdminServicer, BillingServicer, LedgerServicer
from services.common.logs import configure_logging
from services.common.server import run
from services.common.service import channel, open_database, run_service

MIGRATIONS = Path(__file__).parent / "migrations"


async def serve(settings: BillingSettings) -> None:
    """Runs Billing until SIGTERM; the Registry's stub is injected here."""
    db = open_database(settings, "billing", MIGRATIONS)
    registry_channel = channel(settings.registry_address)
    registry = internal_service_pb2_grpc.InternalServiceStub(registry_channel)
    registrations = [
        (
            billing_grpc.add_BillingServiceServicer_to_server,
            BillingServicer(db, registry),
            "switchboard.billing.v1.BillingService",
        ),
        (
            billing_grpc.add_BillingAdminServiceServicer_to_server,
            BillingAdminServicer(),
            "switchboard.billing.v1.BillingAdminService",
        ),
        (
            billing_grpc.add_LedgerServiceServicer_to_server,
            LedgerServicer(),
            "switchboard.billing.v1.LedgerService",
        ),
    ]

    async def close() -> None:
        await registry_channel.close()
        db.close()

    await run_service("billing", settings, registrations, on_stop=close)


def main(argv: list[str] | None = None) -> None:
    settings = BillingSettings.from_args("python -m services.billing", argv)
    configure_logging("billing", settings.log_level)
    run(lambda: serve(settings))
