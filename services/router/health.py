"""The providers' measured health as this Router replica saw it (GetProviderHealth for partners,
ListProviderHealth for operators): services/router/measurements.py's figures and the breakers."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1 import router_service_pb2 as router_pb

from services.common.accounts import WRITE_ROLES
from services.common.auth import bearer_token
from services.common.errors import not_found, permission_denied
from services.router.breaker import HALF_OPEN, OPEN, Breakers
from services.router.directory import Directory, ProviderEntry
from services.router.measurements import WINDOW_MINUTES, ErrorRecord, Measurements, Stats
from services.router.upstream import Upstreams

BREAKER_STATES = {OPEN: router_pb.BREAKER_STATE_OPEN, HALF_OPEN: router_pb.BREAKER_STATE_HALF_OPEN}
SHOWN_ID_CHARS = 96  # of a provider id quoted in an error


def _timestamp(unix_seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(unix_seconds * 1e9))
    return stamp


def _error(record: ErrorRecord) -> router_pb.ProviderError:
    return router_pb.ProviderError(
        time=_timestamp(record.unix_seconds),
        provider_status=record.provider_status,
        code=record.code,
        reason=record.reason,
        message=record.message,
    )


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
        # at most 1: a stream that began in a minute now out of the window may break within it
        error_rate=min(1.0, recent_errors / recent_requests) if recent_requests else 0.0,
        time_to_first_token_ms=stats.ttft_ms,
        throughput_tokens_per_second=stats.tokens_per_second,
        last_errors=[_error(record) for record in stats.last_errors],
    )


def provider_health(provider: str, measurements: Measurements, breakers: Breakers) -> router_pb.ProviderHealth:
    """One provider's figures since this replica started, its models by provider model id."""
    state, failures = breakers.state(provider)
    minute = measurements.minute()
    models = sorted(measurements.of_provider(provider).items())
    return router_pb.ProviderHealth(
        provider=provider,
        breaker_state=BREAKER_STATES.get(state, router_pb.BREAKER_STATE_CLOSED),
        consecutive_failures=failures,
        models=[_model_health(model, stats, minute) for model, stats in models],
        start_time=_timestamp(measurements.started),
        window_seconds=WINDOW_MINUTES * 60,
    )


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
        entry = (await self.directory.providers()).get(provider_id)
        if entry is None:
            entry = (await self.directory.providers(refresh=True)).get(provider_id)
        if entry is None:
            raise not_found("PROVIDER_NOT_FOUND", f"provider {provider_id[:SHOWN_ID_CHARS]!r} does not exist")
        return entry

    async def GetProviderHealth(
        self, request: router_pb.GetProviderHealthRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.ProviderHealth:
        """401 without a valid token, 404 for an unknown provider, 403 unless the caller may read it."""
        caller = await self._caller_of(context)
        entry = await self._provider(request.provider)
        if not may_read_health(caller, entry):
            raise permission_denied(
                "FORBIDDEN",
                f"reading the health of provider {entry.id!r} needs the write or admin role in org {entry.org!r}",
            )
        return provider_health(entry.id, self.measurements, self.upstreams.breakers)

    async def ListProviderHealth(
        self, request: router_pb.ListProviderHealthRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.ListProviderHealthResponse:
        """The admin token only: 401 without a valid token, 403 with any other."""
        if not (await self._caller_of(context)).admin:
            raise permission_denied("FORBIDDEN", "this call needs the admin token")
        providers = sorted(await self.directory.providers())
        breakers = self.upstreams.breakers
        return router_pb.ListProviderHealthResponse(
            providers=[provider_health(p, self.measurements, breakers) for p in providers]
        )
