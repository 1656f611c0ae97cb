"""The Router's local copy of what it needs from the Registry: callers,
resolutions and provider configurations, cached while the Registry's change
feed is connected (services/common/registry_feed.py)."""

from __future__ import annotations

from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.providers import ProviderEntry
from services.common.registry_feed import Change, FeedCache, drop, is_reset


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
