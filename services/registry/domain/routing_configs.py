"""The provider configs a routing resolution carries (InternalService.ResolveModel's routing
view), kept in memory per provider so that a resolution is answered without a database read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry.domain.messages import provider_configs
from services.registry.domain.state import RegistryState
from services.registry.storage import queries
from services.registry.storage.index import IndexedProvider


@dataclass(frozen=True)
class RoutingConfig:
    """A provider's config as the Router calls it, read for one entry of the index: it holds
    while the index holds that entry (a change of the provider or its prices replaces it)."""

    entry: IndexedProvider
    config: internal_pb.ProviderConfig  # its prices are in `prices`
    prices: dict[str, admin_pb.Price]

    def priced(self, models: Iterable[str]) -> internal_pb.ProviderConfig:
        """The config with the prices of these provider models only."""
        return internal_pb.ProviderConfig(
            provider=self.config.provider,
            redact=self.config.redact,
            prices=[self.prices[model] for model in sorted(models) if model in self.prices],
        )


class RoutingConfigs:
    """The provider configs resolutions carry, read from the database once per change of their
    provider, so that a resolution is answered from memory."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self._read: dict[str, RoutingConfig] = {}

    async def priced(self, models: dict[str, set[str]]) -> list[internal_pb.ProviderConfig]:
        """The config of each of these providers that exists, priced for its provider models."""
        providers = self.state.index.providers
        if any(provider not in providers for provider in models):
            await self.state.catch_up()  # one created on another replica a moment ago
        current = {provider: providers[provider] for provider in sorted(models) if provider in providers}
        stale = [p for p, entry in current.items() if p not in self._read or self._read[p].entry is not entry]
        if stale:
            await self._read_again(stale, current)
        return [self._read[p].priced(models[p]) for p in current if p in self._read]

    async def _read_again(self, stale: list[str], current: dict[str, IndexedProvider]) -> None:
        rows = await self.state.db.run(lambda session: queries.config_rows(session, stale))
        for provider in stale:
            self._read.pop(provider, None)
        for config in provider_configs(*rows, internal_pb.PROVIDER_SECRETS_INFERENCE):
            prices = {price.provider_model: price for price in config.prices}
            config.ClearField("prices")
            self._read[config.provider.id] = RoutingConfig(current[config.provider.id], config, prices)
        for gone in [p for p in self._read if p not in self.state.index.providers]:
            del self._read[gone]
