"""The Router's local copy of what it needs from the Registry: callers,
resolutions and provider configurations, cached while the Registry's change
feed is connected (services/common/registry_feed.py). A resolution is one
Registry answer that carries the providers it names, so a request never
stitches it together with a provider table read at another moment."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.providers import ProviderEntry, Route
from services.common.registry_feed import Change, FeedCache, drop, is_reset
from services.router.selection import routes_of


@dataclass(frozen=True)
class Resolved:
    """A resolution and the providers it names (its candidates' and the named ones that exist), by id."""

    answer: internal_pb.ResolveModelResponse
    providers: dict[str, ProviderEntry]
    _routes: dict[str, list[Route]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, answer: internal_pb.ResolveModelResponse) -> Resolved:
        providers = {c.provider.id: ProviderEntry.from_config(c) for c in answer.provider_configs}
        answer.ClearField("provider_configs")  # kept once, as entries: the answer holds no key
        return cls(answer, providers)

    def routes(self, hub_url: str) -> list[Route]:
        """The candidates as routes (selection.routes_of), made once: a cached resolution serves
        many requests. Shared by them, so never changed (selection makes lists of its own)."""
        routes = self._routes.get(hub_url)
        if routes is None:
            routes = self._routes[hub_url] = routes_of(self.answer.candidates, self.providers, hub_url)
        return routes


def _resolution_touched(key: tuple, change: Change) -> bool:
    """Whether a cached resolution, ("model", model, [named providers,] user, task) or ("provider",
    provider, provider model, user, task), may read differently after the change."""
    if change.kind == internal_pb.CHANGE_KIND_IDENTITY:
        return key[-2] == change.key  # the user's memberships decide what staging they see
    if key[0] == "model":
        return change.all_models or key[1] in change.models
    return key[1] == change.key and change.kind != internal_pb.CHANGE_KIND_MODEL


def _names_provider(key: tuple, resolved: Resolved, change: Change) -> bool:
    """Whether a provider change is one of a provider the cached resolution carries or named
    (one that did not exist then may now)."""
    named = key[2] if key[0] == "model" and len(key) == 5 else ()
    return change.kind == internal_pb.CHANGE_KIND_PROVIDER and (change.key in resolved.providers or change.key in named)


class Directory(FeedCache):
    """The Router's cached Registry lookups: callers, resolutions, providers."""

    def __init__(self, registry: internal_grpc.InternalServiceStub) -> None:
        self._resolutions: dict[tuple, Resolved] = {}
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
        drop(
            self._resolutions,
            lambda key, resolved: _resolution_touched(key, change) or _names_provider(key, resolved, change),
        )

    async def resolve(self, model: str, user: str, task: str, named: Iterable[str] = ()) -> Resolved:
        """The model's candidates for the caller, with the providers they and `named` (the ids
        the request names) stand for: one Registry answer."""
        key = ("model", model, tuple(sorted(set(named))) if named else (), user, task)
        cached = self._cached_now(self._resolutions, key)
        return cached if cached is not None else await self._fetched_resolution(key)

    async def _fetched_resolution(self, key: tuple) -> Resolved:
        """resolve's lookup when the cache does not hold the answer (a method of its own: resolve
        then keeps no closure's cells)."""
        _, model, named, user, task = key

        async def fetch() -> Resolved:
            request = internal_pb.ResolveModelRequest(
                model=model, user=user, task=task, view=internal_pb.RESOLUTION_VIEW_ROUTING, named_providers=named
            )
            return Resolved.of(await self.call(self.registry.ResolveModel, request))

        return await self._cached(self._resolutions, key, fetch)

    async def resolve_provider_model(self, provider: str, provider_model: str, user: str, task: str) -> Resolved:
        """The provider's mapping of its own model id for the caller, with the provider."""

        async def fetch() -> Resolved:
            request = internal_pb.ResolveProviderModelRequest(
                provider=provider,
                provider_model=provider_model,
                user=user,
                task=task,
                view=internal_pb.RESOLUTION_VIEW_ROUTING,
            )
            return Resolved.of(await self.call(self.registry.ResolveProviderModel, request))

        return await self._cached(self._resolutions, ("provider", provider, provider_model, user, task), fetch)

    async def providers(self) -> dict[str, ProviderEntry]:
        """Every provider by id, with its key and prices (listings, and telling a request's
        unknown providers apart when its resolution failed)."""
        if self.watching and self._providers is not None:
            return self._providers
        generation = self.generation
        entries = await self._configs()
        if self.watching and generation == self.generation:
            self._providers = entries
        return entries

    async def knowing(self, ids: Iterable[str]) -> dict[str, ProviderEntry]:
        """The provider table, with those of the ids it lacks that exist: a provider just created
        may be newer than the change notice that will announce it. Only the missing ids are read,
        so an id nobody registered costs one indexed lookup, not the whole table."""
        known = await self.providers()
        missing = sorted({i for i in ids if i and i not in known})
        if not missing:
            return known
        generation = self.generation
        found = await self._configs(missing)
        if not found:
            return known
        merged = {**known, **found}
        if self._providers is known and generation == self.generation:
            self._providers = merged  # the listings show it too, before its notice comes
        return merged

    async def _configs(self, ids: list[str] | None = None) -> dict[str, ProviderEntry]:
        request = internal_pb.ListProviderConfigsRequest(
            secrets=internal_pb.PROVIDER_SECRETS_INFERENCE, provider_ids=ids
        )
        answer = await self.call(self.registry.ListProviderConfigs, request)
        return {c.provider.id: ProviderEntry.from_config(c) for c in answer.providers}

    async def served_models(self, user: str, model: str = "") -> internal_pb.ListServedModelsResponse:
        request = internal_pb.ListServedModelsRequest(user=user, model=model)
        return await self.call(self.registry.ListServedModels, request)
