"""The Billing process: create_server(), serve(), main()."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.billing import ledger
from services.billing.access import Authenticator
from services.billing.config import BillingSettings
from services.billing.limits import LimitedAccounts
from services.billing.reconciler import CostApi, Reconciler, ReconcilerSettings
from services.billing.reservations import Reservations
from services.billing.servicer import BillingAdminServicer, BillingServicer, LedgerServicer
from services.common.db import open_database
from services.common.logs import configure_logging
from services.common.registry_feed import FeedCache
from services.common.secrets import Redactor
from services.common.server import run
from services.common.service import channel, run_service
from services.common.telemetry import configure_tracing, watch_billing

FEED_KINDS = (internal_pb.CHANGE_KIND_IDENTITY,)  # Billing caches callers only: no health notices

MIGRATIONS = Path(__file__).parent / "migrations"
REGISTRY_TIMEOUT = 10.0


def registry_cost_apis(registry: internal_grpc.InternalServiceStub):
    """The providers' cost APIs, as the Registry knows them now (billing authorizations included).
    The redactor of a set of secrets is kept while a provider has them (building one takes
    milliseconds, and every pass lists every provider); rotated secrets go with the next listing."""
    request = internal_pb.ListProviderConfigsRequest(secrets=internal_pb.PROVIDER_SECRETS_COST_API)
    kept: dict[tuple[str, ...], Redactor] = {}

    async def cost_apis() -> list[CostApi]:
        answer = await registry.ListProviderConfigs(request, timeout=REGISTRY_TIMEOUT)
        configs = [(c.provider, tuple(c.redact)) for c in answer.providers if c.provider.billing_url]
        redactors = {secrets: kept[secrets] if secrets in kept else Redactor(secrets) for _, secrets in configs}
        kept.clear()
        kept.update(redactors)
        return [CostApi(p.id, p.billing_url, p.billing_authorization, redactors[secrets]) for p, secrets in configs]

    return cost_apis


def reconciler_settings(settings: BillingSettings) -> ReconcilerSettings:
    return ReconcilerSettings(
        interval_seconds=settings.reconcile_interval_seconds,
        batch_size=settings.reconcile_batch_size,
        concurrency=settings.reconcile_concurrency,
        timeout_seconds=settings.cost_api_timeout_seconds,
        backoff_max_seconds=settings.cost_api_backoff_max_seconds,
        unpriced_after_seconds=settings.unpriced_after_seconds,
        reservation_ttl_seconds=settings.reservation_ttl_seconds,
    )


async def serve(settings: BillingSettings) -> None:
    """Runs Billing until SIGTERM; the Registry's stub is injected here."""
    db = open_database(settings, "billing", MIGRATIONS)
    registry_channel = channel(settings.registry_address, settings.service_credential_value())
    registry = internal_grpc.InternalServiceStub(registry_channel)
    admin_token = settings.admin_token.get_secret_value()
    reconciler = Reconciler(db, registry_cost_apis(registry), reconciler_settings(settings))
    callers = FeedCache(registry, kinds=FEED_KINDS)
    auth = Authenticator(callers, admin_token)
    limited = LimitedAccounts(db)
    reservations = Reservations(db, settings.reservation_ttl_seconds)
    registrations = [
        (
            billing_grpc.add_BillingServiceServicer_to_server,
            BillingServicer(db, auth, limited, reservations),
            "switchboard.billing.v1.BillingService",
        ),
        (
            billing_grpc.add_BillingAdminServiceServicer_to_server,
            BillingAdminServicer(db, reconciler, limited, auth, reservations),
            "switchboard.billing.v1.BillingAdminService",
        ),
        (
            billing_grpc.add_LedgerServiceServicer_to_server,
            LedgerServicer(db, limited, reservations),
            "switchboard.billing.v1.LedgerService",
        ),
    ]
    watch_billing(lambda: db.read(ledger.count_pending))
    feed = asyncio.create_task(callers.watch())

    async def close() -> None:
        feed.cancel()
        await reconciler.close()
        await limited.close()
        await reservations.close()
        await registry_channel.close()
        db.close()

    await limited.start()
    await reconciler.start()
    await run_service("billing", settings, registrations, on_stop=close, on_draining=limited.close_watchers)


def main(argv: list[str] | None = None) -> None:
    settings = BillingSettings.from_args("python -m services.billing", argv)
    configure_logging("billing", settings.log_level)
    configure_tracing("billing")
    run(lambda: serve(settings))
