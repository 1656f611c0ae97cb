"""The Router's local copy of what it needs from the Registry: callers,
resolutions and provider configurations, cached while the Registry's change
feed is connected (services/common/registry_feed.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.pricing import Price
from services.common.providers import DEFAULT_REQUEST_ID_HEADER
from services.common.registry_feed import Change, FeedCache, drop, is_reset
from services.common.secrets import NO_SECRETS, Redactor

_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True)
class ProviderEntry:
    """A provider as the hot path needs it; its request headers (with the key) are built once."""

    id: str
    base_url: str
    headers: dict[str, str] = field(repr=False)
    request_id_header: str
    tasks: tuple[str, ...]
    default_rank: int
    prices: dict[str, Price]

    # The request id header as a gRPC metadata key (Envoy passes it on as that HTTP header).
    request_id_metadata_key: str = DEFAULT_REQUEST_ID_HEADER.lower()
    # Scrubs every secret of the provider from what it sends back.
    redactor: Redactor = field(default=NO_SECRETS, repr=False, compare=False)
    # The org whose write members manage the provider.
    org: str = ""

    @classmethod
    def from_config(cls, config: internal_pb.ProviderConfig) -> ProviderEntry:
        p = config.provider
        prices = {
            price.provider_model: Price(
                price.input_token_nano_usd, price.output_token_nano_usd, price.request_nano_usd, price.image_nano_usd
            )
            for price in config.prices
        }
        header = p.request_id_header or DEFAULT_REQUEST_ID_HEADER
        key = header.lower() if _METADATA_KEY.fullmatch(header.lower()) else DEFAULT_REQUEST_ID_HEADER.lower()
        return cls(
            id=p.id,
            base_url=p.base_url.rstrip("/"),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {p.api_key}"} if p.api_key else {}),
            },
            request_id_header=header,
            tasks=tuple(p.tasks),
            default_rank=p.default_rank,
            prices=prices,
            request_id_metadata_key=key,
            redactor=Redactor([p.api_key, *config.redact]),
            org=p.org,
        )


def _resolution_touched(key: tuple[str, ...], change: Change) -> bool:
    """Whether a cached resolution, ("model", model, user, task) or ("provider", provider,
    provider model, user, task), may read differently after the change."""
    if change.kind == internal_pb.CHANGE_KIND_IDENTITY:
        return key[-2] == change.key  # the user's memberships decide what staging they see
    if key[0] == "model":
        return change.all_models or key[1] in change.models
    return key[1] == change.key and change.kind != internal_pb.CHANGE_KIND_MODEL


class Directory(FeedCache):
    """The Router's cached Registry lookups: callers, resolutions, providers."""

    def __init__(self, registry: internal_grpc.InternalServiceStub) -> None:
        self._resolutions: dict[tuple[str, ...], internal_pb.ResolveModelResponse] = {}
        self._providers: dict[str, ProviderEntry] | None = None
        super().__init__(registry)

    def invalidate(self, change: Change | None = None) -> None:
        super().invalidate(change)
        if is_reset(change):
            self._resolutions.clear()
            self._providers = None
            return
        if change.kind == internal_pb.CHANGE_KIND_PROVIDER:
            self._providers = None
        drop(self._resolutions, lambda key, _: _resolution_touched(key, change))

    async def resolve(self, model: str, user: str, task: str) -> internal_pb.ResolveModelResponse:
        request = internal_pb.ResolveModelRequest(model=model, user=user, task=task)
        return await self._cached(
            self._resolutions, ("model", model, user, task), lambda: self.call(self.registry.ResolveModel, request)
        )

    async def resolve_provider_model(
        self, provider: str, provider_model: str, user: str, task: str
    ) -> internal_pb.ResolveModelResponse:
        request = internal_pb.ResolveProviderModelRequest(
            provider=provider, provider_model=provider_model, user=user, task=task
        )
        key = ("provider", provider, provider_model, user, task)
        return await self._cached(
            self._resolutions, key, lambda: self.call(self.registry.ResolveProviderModel, request)
        )

    async def providers(self, refresh: bool = False) -> dict[str, ProviderEntry]:
        """Every provider by id, with its key and prices; `refresh` skips the cache (a provider
        the Registry just named may be newer than the change notice that will announce it)."""
        if self.watching and self._providers is not None and not refresh:
            return self._providers
        generation = self.generation
        request = internal_pb.ListProviderConfigsRequest(secrets=internal_pb.PROVIDER_SECRETS_INFERENCE)
        answer = await self.call(self.registry.ListProviderConfigs, request)
        entries = {c.provider.id: ProviderEntry.from_config(c) for c in answer.providers}
        if self.watching and generation == self.generation:
            self._providers = entries
        return entries

    async def served_models(self, user: str, model: str = "") -> internal_pb.ListServedModelsResponse:
        request = internal_pb.ListServedModelsRequest(user=user, model=model)
        return await self.call(self.registry.ListServedModels, request)
