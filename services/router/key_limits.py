"""An API key's own limits, enforced by the Router before it calls a provider (docs/api-keys.md).

The Registry hands them over with the caller (Caller.limits, cached with it and dropped by
the change feed when the token is revoked). Expiry (401) and the model allow-list (403) need
no store; requests and tokens per minute (429) and the budget (402) are counters shared by
every replica (services/common/counters.py). The account's own spending limit is checked
after these, by Billing's reservation: each level is checked.

When the counter store does not answer, each kind of limit fails its own way: rates fail
open (the request is served, uncounted: an outage of the store must not take the API down),
the budget fails closed (503: money is not spent unmetered). After a failure the store is
not asked again for STORE_COOLDOWN_SECONDS, so an outage costs one timeout per cooldown,
not one per request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1.answer_metadata_pb2 import RateLimits, RateLimitState

from services.common.counters import (
    BUDGET,
    REQUESTS,
    Admission,
    CounterKeys,
    Counters,
    Limits,
    StoreUnavailable,
    Usage,
)
from services.common.errors import ApiError, Code, api_key_expired, permission_denied, unavailable
from services.common.registry_feed import token_expiry
from services.common.telemetry import ROUTER, LoopCounter

log = logging.getLogger(__name__)

STORE_COOLDOWN_SECONDS = 1.0
RATE_LIMITS_KEY = "switchboard-rate-limits-bin"  # RateLimits, with an answer's headers or a refusal's trailers
MAX_PLANS = 100_000  # tokens whose limits are worked out and kept; beyond, they are worked out again
NO_LIMITS = Limits()
PERIOD_SLACK_SECONDS = 86_400  # a budget's counter outlives its period by a day
STORE_FAILURES = LoopCounter(
    ROUTER,
    "switchboard_router_key_limits_store_failures",
    "API-key limit checks the counter store did not answer, by what the Router did: "
    "served_uncounted (rates fail open), refused (budgets fail closed)",
    ("outcome",),
)


def period_start(period: str, now: datetime) -> datetime:
    """The start of the UTC day, ISO week (Monday) or month that `now` is in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return day


def next_period_start(period: str, start: datetime) -> datetime:
    """The start of the period after the one starting at `start`."""
    if period == "monthly":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + timedelta(days=7 if period == "weekly" else 1)


def period_seconds(period: str) -> int:
    return {"daily": 86_400, "weekly": 7 * 86_400}.get(period, 31 * 86_400)


@dataclass(frozen=True)
class Grant:
    """An admitted request of a key with counted limits: what to settle, what to tell the caller."""

    keys: CounterKeys
    limits: Limits
    budget_ttl_s: int
    admission: Admission | None  # None: the store was away, nothing was counted

    def metadata(self) -> list[tuple[str, bytes]]:
        """The key's rates after this request (RateLimits: OpenAI's rate-limit headers on REST)."""
        admission, rates = self.admission, RateLimits()
        if admission is None:
            return []
        for state, limit, remaining, reset_ms in (
            (
                rates.requests,
                self.limits.requests_per_minute,
                admission.requests_remaining,
                admission.requests_reset_ms,
            ),
            (rates.tokens, self.limits.tokens_per_minute, admission.tokens_remaining, admission.tokens_reset_ms),
        ):
            if limit:  # never negative on the wire: the edge reads the varints as unsigned
                state.limit, state.remaining, state.reset_millis = limit, max(0, remaining), math.ceil(max(0, reset_ms))
        return [(RATE_LIMITS_KEY, rates.SerializeToString())] if rates.ListFields() else []


@dataclass
class _Plan:
    """A token's limits as admission reads them, worked out once per token and its limits (an
    update comes as a new Caller from the Registry) and per budget period."""

    expiry: float | None
    allowed: frozenset[str]
    limits: Limits
    period: str
    prefix: str  # of the token's counters' keys
    budget_ttl_s: int
    source: bytes  # the limits it was worked out from
    period_end: float = 0.0  # the current budget period's key holds until then
    keys: CounterKeys | None = None
    caller: internal_pb.Caller | None = None  # the last Caller seen with these limits

    @classmethod
    def of(cls, caller: internal_pb.Caller, source: bytes) -> _Plan:
        own = caller.limits
        expiry = token_expiry(caller)
        limits = Limits(own.requests_per_minute, own.tokens_per_minute, own.budget_nano_usd)
        ttl = period_seconds(own.budget_period) + PERIOD_SLACK_SECONDS
        prefix = f"sb:key:{caller.token_id}"
        return cls(expiry, frozenset(own.allowed_models), limits, own.budget_period, prefix, ttl, source)

    def keys_at(self, now: float) -> CounterKeys:
        """The counters' keys; the budget's names the period `now` is in."""
        if self.keys is None or now >= self.period_end:
            budget = ""
            if self.limits.budget_nano_usd:
                start = period_start(self.period, datetime.fromtimestamp(now, UTC))
                self.period_end = next_period_start(self.period, start).timestamp()
                budget = f"{self.prefix}:budget:{int(start.timestamp())}"
            else:
                self.period_end = float("inf")
            self.keys = CounterKeys(f"{self.prefix}:rpm", f"{self.prefix}:tpm", budget)
        return self.keys


class KeyLimits:
    """Admits a key's requests against its limits and records what they used."""

    def __init__(self, counters: Counters, clock: Callable[[], float] = time.time) -> None:
        self.counters = counters
        self.clock = clock
        self._down_until = 0.0
        self._plans: dict[str, _Plan] = {}

    def _plan(self, caller: internal_pb.Caller) -> _Plan:
        plan = self._plans.get(caller.token_id)
        if plan is not None and plan.caller is caller:  # the Directory's cached Caller: unchanged
            return plan
        source = caller.limits.SerializeToString(deterministic=True)
        if plan is None or plan.source != source:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[caller.token_id] = _Plan.of(caller, source)
        plan.caller = caller
        return plan

    async def admit(self, caller: internal_pb.Caller, model: str | None) -> Grant | None:
        """None for a key without counted limits; 401 expired, 403 model not allowed, 402 over
        budget, 429 over a rate (with RetryInfo and the RateLimits metadata). A `model` of None
        (a provider-named call, whose hub model is known once resolved) leaves the allow-list to
        allow_provider_model."""
        if not caller.HasField("limits"):
            return None
        plan, now = self._plan(caller), self.clock()
        if plan.expiry is not None and now >= plan.expiry:
            raise api_key_expired()
        if model is not None and not _listed(plan.allowed, model):
            raise _not_allowed(model[:200])
        if plan.limits == NO_LIMITS:
            return None
        keys = plan.keys_at(now)
        admission = await self._ask(keys, plan.limits)
        grant = Grant(keys, plan.limits, plan.budget_ttl_s, admission)
        if admission is not None and admission.refused:
            raise _refusal(grant, admission)
        return grant

    def allow_provider_model(self, caller: internal_pb.Caller, hub_model: str, provider: str, model: str) -> None:
        """403 unless the key's allow-list names the hub model that the provider's mapping of its
        own `model` stands for: that id may be another hub model's name. A mapping that stands for
        no one hub model (a tag-filter's: hub_model is empty) is refused to a key with a list."""
        if not caller.HasField("limits"):
            return
        allowed = self._plan(caller).allowed
        if allowed and hub_model not in allowed:
            asked = f"provider {provider}'s {model[:200]}"
            raise _not_allowed(f"{asked}, which serves {hub_model[:200]}" if hub_model else asked)

    async def _ask(self, keys: CounterKeys, limits: Limits) -> Admission | None:
        """The store's verdict; when it is away, None for rates (fail open) or a 503 for a budget."""
        if time.monotonic() >= self._down_until:
            try:
                return await self.counters.admit(keys, limits)
            except StoreUnavailable as exc:
                self._down_until = time.monotonic() + STORE_COOLDOWN_SECONDS
                log.warning("counter store unavailable", extra={"error": str(exc)})
        if limits.budget_nano_usd:
            STORE_FAILURES.inc(labels=("refused",))
            raise unavailable(
                "LIMITS_UNAVAILABLE", "this API token's budget cannot be checked right now, retry shortly"
            )
        STORE_FAILURES.inc(labels=("served_uncounted",))
        return None

    def settle(self, grant: Grant | None, tokens: int, nano_usd: int) -> None:
        """Records what an answered request used (off the answer's path: lost when the store is away)."""
        if grant is None or grant.admission is None:
            return
        limits = grant.limits
        if limits.tokens_per_minute or limits.budget_nano_usd:
            spent = nano_usd if limits.budget_nano_usd else 0
            self.counters.record(Usage(grant.keys, limits.tokens_per_minute, tokens, spent, grant.budget_ttl_s))


def _listed(allowed: frozenset[str], model: str) -> bool:
    """Whether a key's allow-list (none: every model) lets a request's `model` through, with or
    without its `:policy`/`:provider` suffix."""
    return not allowed or model in allowed or model.rpartition(":")[0] in allowed


def _not_allowed(shown: str) -> ApiError:
    return permission_denied("MODEL_NOT_ALLOWED", f"this API token may not call {shown}", "model")


def _refusal(grant: Grant, admission: Admission) -> ApiError:
    if admission.refused == BUDGET:
        return ApiError(
            Code.RESOURCE_EXHAUSTED, "INSUFFICIENT_QUOTA",
            f"this API token's budget of {grant.limits.budget_nano_usd} nano-USD for the period is spent",
        )  # fmt: skip
    kind = "requests" if admission.refused == REQUESTS else "tokens"
    limit = grant.limits.requests_per_minute if kind == "requests" else grant.limits.tokens_per_minute
    retry = max(1, math.ceil(admission.retry_after_ms / 1000))
    state = RateLimitState(limit=limit, remaining=0, reset_millis=math.ceil(admission.retry_after_ms))
    headers = {RATE_LIMITS_KEY: RateLimits(**{kind: state}).SerializeToString()}
    message = f"rate limit of {limit} {kind} per minute reached for this API token: retry after {retry}s"
    return ApiError(Code.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", message, headers=headers, retry_seconds=retry)
