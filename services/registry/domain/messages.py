"""Rows as the messages more than one Registry API answers with (the operators' admin API, the
callers' self-service, InternalService and the conformance check): one place builds each, so a
secret left out of one answer is left out of all."""

from __future__ import annotations

import orjson
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry.domain.prices import price_message
from services.registry.storage.tables import MembershipRow, PriceRow, ProviderRow


def provider_message(row: ProviderRow) -> admin_pb.Provider:
    """A provider row as a message, without its secrets."""
    message = admin_pb.Provider(
        id=row.id,
        org=row.org,
        base_url=row.base_url,
        tasks=orjson.loads(row.tasks),
        task_formats=orjson.loads(row.task_formats),
        request_id_header=row.request_id_header,
        billing_url=row.billing_url,
        has_api_key=bool(row.api_key),
        has_billing_authorization=bool(row.billing_authorization),
        default_rank=row.default_rank,
    )
    message.create_time.FromDatetime(row.create_time)
    return message


def membership_messages(rows: list[MembershipRow]) -> list[admin_pb.Membership]:
    return [admin_pb.Membership(org=r.org, user=r.user, role=r.role) for r in rows]


def _with_secret(message: admin_pb.Provider, row: ProviderRow, secrets: int) -> admin_pb.Provider:
    """Adds the one secret the asking service calls the provider with."""
    if secrets == internal_pb.PROVIDER_SECRETS_INFERENCE:
        message.api_key = row.api_key
    elif secrets == internal_pb.PROVIDER_SECRETS_COST_API:
        message.billing_authorization = row.billing_authorization
    return message


def provider_config(
    row: ProviderRow, secrets: int, prices: list[admin_pb.Price] | None = None
) -> internal_pb.ProviderConfig:
    """A provider as its callers need it: the one secret they call it with, and every secret
    to redact from what it sends back."""
    return internal_pb.ProviderConfig(
        provider=_with_secret(provider_message(row), row, secrets),
        prices=prices or [],
        redact=[row.api_key, row.billing_authorization],
    )


def provider_configs(
    providers: list[ProviderRow], prices: list[PriceRow], secrets: int
) -> list[internal_pb.ProviderConfig]:
    """Each provider's config with its price table."""
    by_provider: dict[str, list[admin_pb.Price]] = {}
    for price in prices:
        by_provider.setdefault(price.provider, []).append(price_message(price))
    return [provider_config(row, secrets, by_provider.get(row.id, [])) for row in providers]
