"""The Router's local copy of what it needs from the Registry.

Callers, resolutions and provider configurations are cached while the
Registry's change feed (WatchChanges) is connected; every change notice drops
the cached state, so a revoked token or a new mapping takes effect as soon as
the notice arrives. While the feed is down nothing is cached: each lookup asks
the Registry, so the Router never serves from state it cannot keep fresh.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.errors import ApiError
from services.common.pricing import Price

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT_SECONDS = 5.0
MAX_CACHED_ENTRIES = 100_000
WATCH_BACKOFF_MAX_SECONDS = 5.0
DEFAULT_REQUEST_ID_HEADER = "Inference-Id"
_INVALID_TOKEN_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}

T = TypeVar("T")
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
        )


def registry_unavailable(exc: grpc.aio.AioRpcError) -> ApiError:
    log.warning("registry call failed", extra={"code": exc.code().name})
    return ApiError(503, "the model registry is unavailable, retry shortly", code="registry_unavailable")


class Directory:
    """Cached Registry lookups, kept fresh by the change feed."""

    def __init__(self, registry: internal_grpc.InternalServiceStub) -> None:
        self.registry = registry
        self.watching = False
        self.generation = 0
        self.revision = 0
        self.changed = asyncio.Event()
        self._callers: dict[str, internal_pb.Caller | None] = {}
        self._resolutions: dict[tuple[str, ...], internal_pb.ResolveModelResponse] = {}
        self._providers: dict[str, ProviderEntry] | None = None

    def invalidate(self) -> None:
        """Drops every cached answer; lookups in flight will not store theirs."""
        self.generation += 1
        self._callers.clear()
        self._resolutions.clear()
        self._providers = None

    async def _cached(self, cache: dict, key: object, fetch: Callable[[], Awaitable[T]]) -> T:
        if self.watching and key in cache:
            return cache[key]
        generation = self.generation
        value = await fetch()
        if self.watching and generation == self.generation:
            if len(cache) >= MAX_CACHED_ENTRIES:
                cache.clear()
            cache[key] = value
        return value

    async def authenticate(self, token: str) -> internal_pb.Caller:
        """The caller of a bearer token; 401 for an unknown or revoked token."""

        async def fetch() -> internal_pb.Caller | None:
            try:
                return await self.registry.AuthenticateToken(
                    internal_pb.AuthenticateTokenRequest(token=token),
                    timeout=REGISTRY_TIMEOUT_SECONDS,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _INVALID_TOKEN_CODES or exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    return None
                raise registry_unavailable(exc) from None

        caller = await self._cached(self._callers, token, fetch)
        if caller is None:
            raise ApiError(401, "invalid or revoked API token", code="invalid_api_key")
        return caller

    async def resolve(self, model: str, user: str, task: str) -> internal_pb.ResolveModelResponse:
        request = internal_pb.ResolveModelRequest(model=model, user=user, task=task)
        return await self._cached(
            self._resolutions, ("model", model, user, task), lambda: self._call(self.registry.ResolveModel, request)
        )

    async def resolve_provider_model(
        self, provider: str, provider_model: str, user: str, task: str
    ) -> internal_pb.ResolveModelResponse:
        request = internal_pb.ResolveProviderModelRequest(
            provider=provider, provider_model=provider_model, user=user, task=task
        )
        key = ("provider", provider, provider_model, user, task)
        return await self._cached(
            self._resolutions, key, lambda: self._call(self.registry.ResolveProviderModel, request)
        )

    async def providers(self, refresh: bool = False) -> dict[str, ProviderEntry]:
        """Every provider by id, with its key and prices; `refresh` skips the cache (a provider
        the Registry just named may be newer than the change notice that will announce it)."""
        if self.watching and self._providers is not None and not refresh:
            return self._providers
        generation = self.generation
        answer = await self._call(self.registry.ListProviderConfigs, internal_pb.ListProviderConfigsRequest())
        entries = {c.provider.id: ProviderEntry.from_config(c) for c in answer.providers}
        if self.watching and generation == self.generation:
            self._providers = entries
        return entries

    async def served_models(self, user: str, model: str = "") -> internal_pb.ListServedModelsResponse:
        request = internal_pb.ListServedModelsRequest(user=user, model=model)
        return await self._call(self.registry.ListServedModels, request)

    async def _call(self, method: Callable, request: object) -> T:
        try:
            return await method(request, timeout=REGISTRY_TIMEOUT_SECONDS, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise registry_unavailable(exc) from None

    async def watch(self) -> None:
        """Follows the change feed for ever, reconnecting with backoff."""
        backoff = 0.1
        while True:
            try:
                async for change in self.registry.WatchChanges(internal_pb.WatchChangesRequest(), wait_for_ready=True):
                    self.invalidate()
                    self.revision = change.revision
                    self.watching = True
                    backoff = 0.1
                    self.changed.set()
                    self.changed = asyncio.Event()
            except grpc.aio.AioRpcError as exc:
                log.warning("registry change feed lost", extra={"code": exc.code().name})
            self.watching = False
            self.invalidate()
            await asyncio.sleep(backoff)
            backoff = min(WATCH_BACKOFF_MAX_SECONDS, backoff * 2)
