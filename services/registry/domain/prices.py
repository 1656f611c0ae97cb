"""A provider's price table: written by the operators (PUT /admin/v1/providers/{provider}/prices)
and by the provider's own partners (PUT /api/partners/{provider}/prices), read by the Routers
(ProviderConfig.prices) for estimates, :cheapest, max_price and /v1/models."""

from __future__ import annotations

from sqlmodel import Session
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry.domain.state import RegistryState
from services.registry.domain.validation import (
    MAX_NANO_USD,
    MAX_PRICES,
    check_count,
    check_provider_model,
    check_range,
    check_unique,
)
from services.registry.storage import queries
from services.registry.storage.tables import PriceRow

# nano-USD amounts of a price; unit_nano_usd is per unit of the mapped task (services/common/tasks.py).
AMOUNTS = ("input_token_nano_usd", "output_token_nano_usd", "request_nano_usd", "image_nano_usd", "unit_nano_usd")


def price_message(row: PriceRow) -> admin_pb.Price:
    return admin_pb.Price(provider_model=row.provider_model, **{name: getattr(row, name) for name in AMOUNTS})


def price_row(provider: str, position: int, price: admin_pb.Price) -> PriceRow:
    check_provider_model(price.provider_model, f"prices[{position}].providerModel")
    for name in AMOUNTS:
        check_range(getattr(price, name), 0, MAX_NANO_USD, f"prices[{position}].{name}")
    return PriceRow(provider=provider, provider_model=price.provider_model, **{n: getattr(price, n) for n in AMOUNTS})


async def replace_prices(
    state: RegistryState, request: admin_pb.UpdateProviderPricesRequest
) -> admin_pb.ProviderPrices:
    """Replaces the (existing) provider's whole price table; every Router hears of it."""
    check_count(request.prices, MAX_PRICES, "prices")
    rows = [price_row(request.provider, i, price) for i, price in enumerate(request.prices)]
    check_unique((r.provider_model for r in rows), "prices", "provider model")

    def replace(session: Session) -> None:
        session.execute(PriceRow.__table__.delete().where(PriceRow.provider == request.provider))
        queries.insert(session, *rows)

    await state.write(replace, internal_pb.CHANGE_KIND_PROVIDER, request.provider)
    return admin_pb.ProviderPrices(provider=request.provider, prices=[price_message(r) for r in rows])
