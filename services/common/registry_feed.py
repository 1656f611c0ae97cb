"""Registry answers cached while the Registry's change feed is connected.

Every change notice (WatchChanges) names what it touched (a user, tokens,
a provider, hub models) and drops the cached answers for those keys, so a
revoked token, a changed membership or a new mapping takes effect as soon as
the notice arrives while every other answer stays cached. The first notice of
a stream (a reset) drops everything. While the feed is down nothing is
cached: each lookup asks the Registry, so no service answers from state it
cannot keep fresh. The Router (callers, resolutions, providers) and Billing
(callers) both use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.backoff import Backoff
from services.common.errors import ApiError, api_key_expired, relayed, unauthenticated, unavailable

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT_SECONDS = 5.0
MAX_CACHED_ENTRIES = 100_000
WATCH_BACKOFF_MAX_SECONDS = 5.0
# The Registry's answers for a token it does not know (or a malformed one).
_INVALID_TOKEN_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)

# The notices a health listener gets: the records changed, and the stream's first (load them all).
_HEALTH_LISTENS_TO = (internal_pb.CHANGE_KIND_HEALTH, internal_pb.CHANGE_KIND_UNSPECIFIED)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
Change = internal_pb.WatchChangesResponse


def is_reset(change: Change | None) -> bool:
    """No change named (the feed was lost) or the stream's first notice: drop everything."""
    return change is None or change.kind == internal_pb.CHANGE_KIND_UNSPECIFIED


def drop(cache: dict[K, V], stale: Callable[[K, V], bool]) -> None:
    """Removes the entries the predicate calls stale."""
    for key in [key for key, value in cache.items() if stale(key, value)]:
        del cache[key]


def registry_error(exc: grpc.aio.AioRpcError) -> ApiError:
    """The caller's error for a failed Registry call: the Registry's own verdict on the
    request (e.g. 400, 404) passed on as it is; only an unreachable Registry is a 503."""
    return relayed(
        exc, "registry", unavailable("REGISTRY_UNAVAILABLE", "the model registry is unavailable, retry shortly")
    )


def token_expiry(caller: internal_pb.Caller) -> float | None:
    """When the caller's API token expires (seconds since the epoch); None: never."""
    limits = caller.limits
    if not limits.HasField("expire_time"):
        return None
    return limits.expire_time.seconds + limits.expire_time.nanos / 1e9


class FeedCache:
    """Cached Registry lookups, kept fresh by the change feed; callers by token."""

    def __init__(self, registry: internal_grpc.InternalServiceStub, kinds: tuple[int, ...] = ()) -> None:
        self.registry = registry
        self.kinds = kinds  # the change kinds the feed is asked for (none: every kind)
        self.watching = False
        self.generation = 0
        self.revision = 0
        self.changed = asyncio.Event()
        self._callers: dict[bytes, internal_pb.Caller | None] = {}
        # Gets the health notices, which touch no cached answer, and the resets (the Router's).
        self.health_listener: Callable[[Change], None] | None = None

    def invalidate(self, change: Change | None = None) -> None:
        """Drops the cached answers the change touched (all of them for a reset);
        lookups in flight, which may have read the state before it, will not store theirs."""
        self.generation += 1
        if is_reset(change):
            self._callers.clear()
        elif change.kind == internal_pb.CHANGE_KIND_IDENTITY:
            digests = {bytes.fromhex(token_hash) for token_hash in change.token_hashes}
            drop(
                self._callers, lambda key, caller: key in digests or (caller is not None and caller.user == change.key)
            )

    def _cached_now(self, cache: dict[K, V], key: K) -> V | None:
        """The cached answer for the key, if any (None while the feed is down): read before a
        lookup's fetch is even built, as most lookups hit."""
        return cache.get(key) if self.watching else None

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

    async def authenticate(self, token: str, fresh: bool = False) -> internal_pb.Caller:
        """The caller of a bearer token; 401 for an unknown or revoked token. `fresh`: asked of
        the Registry, past the cache (which forgets it, as the token's change notice would)."""
        key = hashlib.sha256(token.encode()).digest()  # the cache never holds tokens themselves
        if fresh:
            self.generation += 1  # a lookup in flight may have read the state before this one
            self._callers.pop(key, None)
        caller = self._cached_now(self._callers, key)
        if caller is None:  # not cached (or cached as unknown: _fetched_caller says so again)
            caller = await self._fetched_caller(token, key)
        expiry = token_expiry(caller)
        if expiry is not None and time.time() >= expiry:  # for every use (a cached caller outlives it)
            raise api_key_expired()
        return caller

    async def _fetched_caller(self, token: str, key: bytes) -> internal_pb.Caller:
        """authenticate's lookup when the cache does not hold a known caller for the token."""

        async def fetch() -> internal_pb.Caller | None:
            try:
                return await self.registry.AuthenticateToken(
                    internal_pb.AuthenticateTokenRequest(token=token),
                    timeout=REGISTRY_TIMEOUT_SECONDS,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _INVALID_TOKEN_CODES:
                    return None
                raise registry_error(exc) from None

        caller = await self._cached(self._callers, key, fetch)
        if caller is None:
            raise unauthenticated("INVALID_API_KEY", "invalid or revoked API token")
        return caller

    async def call(self, method: Callable, request: object) -> T:
        """A Registry call with the usual deadline; its failure as registry_error says."""
        try:
            return await method(request, timeout=REGISTRY_TIMEOUT_SECONDS, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise registry_error(exc) from None

    async def watch(self) -> None:
        """Follows the change feed for ever, reconnecting with backoff."""
        backoff = Backoff(0.1, WATCH_BACKOFF_MAX_SECONDS)
        while True:
            try:
                request = internal_pb.WatchChangesRequest(kinds=self.kinds)
                async for change in self.registry.WatchChanges(request, wait_for_ready=True):
                    if change.kind != internal_pb.CHANGE_KIND_HEALTH:
                        self.invalidate(change)
                    if self.health_listener is not None and change.kind in _HEALTH_LISTENS_TO:
                        self.health_listener(change)
                    self.revision = change.revision
                    self.watching = True
                    backoff.reset()
                    self.changed.set()
                    self.changed = asyncio.Event()
            except grpc.aio.AioRpcError as exc:
                log.warning("registry change feed lost", extra={"code": exc.code().name})
            self.watching = False
            self.invalidate()
            await asyncio.sleep(backoff.failed())
