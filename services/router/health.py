"""The providers' measured health (GetProviderHealth for partners, ListProviderHealth for
operators): the shared records as services/router/measurements.py shows them, and this
replica's breakers.

Both answer in pages bounded in bytes as Envoy writes them, like the Registry's listings (whose
page sizes and `fitted`, services/common/paging.py, they share)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1 import router_service_pb2 as router_pb

from services.common.accounts import WRITE_ROLES
from services.common.auth import bearer_token, require_admin
from services.common.errors import not_found, permission_denied
from services.common.health import timestamp as _timestamp
from services.common.paging import fitted, key_after, next_page_token, page_size
from services.router.breaker import HALF_OPEN, OPEN, Breakers
from services.router.directory import Directory, ProviderEntry
from services.router.measurements import WINDOW_MINUTES, ErrorRecord, Measurements, Stats
from services.router.upstream import Upstreams

BREAKER_STATES = {OPEN: router_pb.BREAKER_STATE_OPEN, HALF_OPEN: router_pb.BREAKER_STATE_HALF_OPEN}
SHOWN_ID_CHARS = 96  # of a provider id quoted in an error


def _error(record: ErrorRecord) -> router_pb.ProviderError:
    return router_pb.ProviderError(
        time=_timestamp(record.unix_seconds),
        provider_status=record.provider_status,
        code=record.code,
        reason=record.reason,
        message=record.message,
    )


def _rate(errors: int, requests: int) -> float:
    # at most 1: a stream that began in a minute now out of the window may break within it
    return min(1.0, errors / requests) if requests else 0.0


def _model_health(provider_model: str, stats: Stats, minute: int) -> router_pb.ProviderModelHealth:
    recent_requests, recent_errors = stats.recent(minute)
    return router_pb.ProviderModelHealth(
        provider_model=provider_model,
        requests=stats.requests,
        errors=stats.errors,
        rejected=stats.rejected,
        skipped=stats.skipped,
        recent_requests=recent_requests,
        recent_errors=recent_errors,
        error_rate=_rate(recent_errors, recent_requests),
        time_to_first_token_ms=stats.ttft_ms,
        throughput_tokens_per_second=stats.tokens_per_second,
        last_errors=[_error(record) for record in stats.last_errors],
        probes=stats.probes,
        probe_failures=stats.probe_failures,
        last_probe_time=_timestamp(stats.last_probe_time) if stats.last_probe_time else None,
        last_probe_failure=stats.last_probe_failure,
    )


def provider_summary(provider: str, measurements: Measurements, breakers: Breakers) -> router_pb.ProviderHealth:
    """The provider's breaker and its models' totals, without the models."""
    state, failures = breakers.state(provider)
    minute = measurements.minute()
    all_stats = measurements.of_provider(provider).values()
    recent = [stats.recent(minute) for stats in all_stats]
    recent_requests, recent_errors = sum(r for r, _ in recent), sum(e for _, e in recent)
    newest = max((s.last_errors[0] for s in all_stats if s.last_errors), key=lambda e: e.unix_seconds, default=None)
    return router_pb.ProviderHealth(
        provider=provider,
        breaker_state=BREAKER_STATES.get(state, router_pb.BREAKER_STATE_CLOSED),
        consecutive_failures=failures,
        start_time=_timestamp(measurements.start_time(provider)),
        window_seconds=WINDOW_MINUTES * 60,
        requests=sum(s.requests for s in all_stats),
        errors=sum(s.errors for s in all_stats),
        rejected=sum(s.rejected for s in all_stats),
        skipped=sum(s.skipped for s in all_stats),
        recent_requests=recent_requests,
        recent_errors=recent_errors,
        error_rate=_rate(recent_errors, recent_requests),
        last_error=None if newest is None else _error(newest),
    )


def _page(entries: list, size: int) -> tuple[list, bool]:
    """The first entries that fit one answer, at most `size`; whether more follow."""
    kept = fitted(entries[:size])
    return kept, len(kept) < len(entries)


PROVIDERS_LISTING = "providerHealth"


def models_listing(provider: str) -> str:
    """The name a provider's models pages carry in their page tokens."""
    return f"providerHealth/{provider}"


def _after(keys: Iterable[str], listing: str, token: str) -> list[str]:
    """The keys after the page token of `listing`, in order (400 for a token it did not issue)."""
    last = key_after(listing, token)
    return sorted(k for k in keys if k > last)


def provider_health(
    provider: str, measurements: Measurements, breakers: Breakers, size: int = 100, token: str = ""
) -> router_pb.ProviderHealth:
    """The provider's summary with a page of its models, by provider model id."""
    health = provider_summary(provider, measurements, breakers)
    all_stats, minute = measurements.of_provider(provider), measurements.minute()
    # one past the page, to know whether more follow
    listing = models_listing(provider)
    candidates = [_model_health(m, all_stats[m], minute) for m in _after(all_stats, listing, token)[: size + 1]]
    models, more = _page(candidates, size)
    health.models.extend(models)
    health.next_page_token = next_page_token(listing, models[-1].provider_model) if more else ""
    return health


def may_read_health(caller: internal_pb.Caller, provider: ProviderEntry) -> bool:
    """The admin token, and write or admin members of the provider's org."""
    return caller.admin or any(m.org == provider.org and m.role in WRITE_ROLES for m in caller.memberships)


class ProviderHealthMethods:
    """RouterService's health RPCs; the servicer that mixes this in sets these attributes."""

    directory: Directory
    upstreams: Upstreams
    measurements: Measurements

    async def _caller_of(self, context: grpc.aio.ServicerContext) -> internal_pb.Caller:
        """The caller of a valid token; 401 otherwise."""
        return await self.directory.authenticate(bearer_token(context))

    async def _provider(self, provider_id: str) -> ProviderEntry:
        """The provider (the cache refreshed once when it does not know it); 404 otherwise."""
        entry = (await self.directory.knowing([provider_id])).get(provider_id)
        if entry is None:
            raise not_found("PROVIDER_NOT_FOUND", f"provider {provider_id[:SHOWN_ID_CHARS]!r} does not exist")
        return entry

    async def GetProviderHealth(
        self, request: router_pb.GetProviderHealthRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.ProviderHealth:
        """401 without a valid token, 404 for an unknown provider, 403 unless the caller may read it."""
        caller = await self._caller_of(context)
        size = page_size(request.page_size)
        entry = await self._provider(request.provider)
        if not may_read_health(caller, entry):
            raise permission_denied(
                "FORBIDDEN",
                f"reading the health of provider {entry.id!r} needs the write or admin role in org {entry.org!r}",
            )
        return provider_health(entry.id, self.measurements, self.upstreams.breakers, size, request.page_token)

    async def ListProviderHealth(
        self, request: router_pb.ListProviderHealthRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.ListProviderHealthResponse:
        """The admin token only: 401 without a valid token, 403 with any other."""
        require_admin((await self._caller_of(context)).admin)
        size = page_size(request.page_size)
        ids = _after(await self.directory.providers(), PROVIDERS_LISTING, request.page_token)[: size + 1]
        breakers = self.upstreams.breakers
        providers, more = _page([provider_summary(p, self.measurements, breakers) for p in ids], size)
        return router_pb.ListProviderHealthResponse(
            providers=providers,
            next_page_token=next_page_token(PROVIDERS_LISTING, providers[-1].provider) if more else "",
        )
