"""API keys' own limits in process (services/router/key_limits.py over services/common/counters.py):
the same rules on the in-memory store and on a real Redis, a budget's reset at its period's
boundary with an injected clock, and what each kind of limit does when the store is away.
The two-replica stack test is tests/test_key_limits_stack.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from helpers.redis_server import RedisServer, redis_server
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1.answer_metadata_pb2 import RateLimits

from services.common.counters import MemoryCounters, RedisCounters
from services.common.errors import ApiError
from services.router import key_limits
from services.router.key_limits import RATE_LIMITS_KEY, Grant, KeyLimits, next_period_start, period_start

pytestmark = pytest.mark.slow  # starts redis-server

SUNDAY_EVENING = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC).timestamp()


class Clock:
    """An injected wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def caller(token_id: str, **limits: object) -> internal_pb.Caller:
    return internal_pb.Caller(user="u", token_id=token_id, limits=admin_pb.ApiTokenLimits(**limits))


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis) -> AsyncIterator[object]:
    counters = MemoryCounters() if request.param == "memory" else RedisCounters(redis.url)
    yield counters
    await counters.close()


_ids = iter(range(10**6))


def fresh_id() -> str:
    return f"test{next(_ids)}-{id(object())}"


def rates(grant: Grant | ApiError) -> RateLimits:
    """The rates a grant's answer or a refusal tells the caller (OpenAI's x-ratelimit-* on REST)."""
    sent = grant.headers if isinstance(grant, ApiError) else dict(grant.metadata())
    return RateLimits.FromString(sent[RATE_LIMITS_KEY])


async def refusal(limits: KeyLimits, who: internal_pb.Caller, model: str = "org/m") -> ApiError:
    with pytest.raises(ApiError) as raised:
        await limits.admit(who, model)
    return raised.value


async def test_a_burst_gets_exactly_the_requests_per_minute_then_429s_with_retry_after(store) -> None:
    # The clock stands still: on a busy machine the burst could take a second of real time.
    limits, who = KeyLimits(store, Clock(time.time())), caller(fresh_id(), requests_per_minute=10)
    grants = [await limits.admit(who, "org/m") for _ in range(10)]
    assert [rates(g).requests.remaining for g in grants] == list(range(9, -1, -1))
    assert rates(grants[0]).requests.limit == 10
    for _ in range(20):
        error = await refusal(limits, who)
        assert (error.http_status, error.code) == (429, "rate_limit_exceeded")
        assert error.retry_seconds == 6  # one request frees every 60 / 10 s
        assert (rates(error).requests.remaining, rates(error).requests.limit) == (0, 10)


async def test_tokens_per_minute_refuse_once_the_minutes_tokens_are_used(store) -> None:
    limits, who = KeyLimits(store), caller(fresh_id(), tokens_per_minute=1000)
    grant = await limits.admit(who, "org/m")
    assert rates(grant).tokens.remaining == 1000
    limits.settle(grant, 999, 0)
    await limits.counters.flush()
    grant = await limits.admit(who, "org/m")  # 1 token left: a request may start
    limits.settle(grant, 500, 0)  # and overshoot by what it used (the in-flight bound)
    await limits.counters.flush()
    error = await refusal(limits, who)
    assert error.http_status == 429 and "1000 tokens per minute" in error.message
    assert 29 <= error.retry_seconds <= 31  # 500 tokens over: half a minute


async def test_a_budget_is_spent_then_refused_with_402_then_reset_at_the_period_boundary(store) -> None:
    clock = Clock(SUNDAY_EVENING)
    limits = KeyLimits(store, clock)
    who = caller(fresh_id(), budget_nano_usd=1_000, budget_period="daily")
    for _ in range(2):
        limits.settle(await limits.admit(who, "org/m"), 10, 600)
        await limits.counters.flush()
    error = await refusal(limits, who)
    assert (error.http_status, error.code) == (402, "insufficient_quota") and "1000 nano-USD" in error.message
    clock.now += 1  # Monday 00:00:00 UTC: a new day, and a new ISO week
    assert await limits.admit(who, "org/m") is not None
    weekly = caller(fresh_id(), budget_nano_usd=1, budget_period="weekly")
    clock.now = SUNDAY_EVENING - 6 * 86_400  # the Monday before
    limits.settle(await limits.admit(weekly, "org/m"), 0, 1)
    await limits.counters.flush()
    clock.now = SUNDAY_EVENING  # the same week: still spent
    assert (await refusal(limits, weekly)).http_status == 402


async def test_expired_keys_and_models_outside_the_allow_list_are_refused(store) -> None:
    clock = Clock(SUNDAY_EVENING)
    limits = KeyLimits(store, clock)
    who = caller(fresh_id(), allowed_models=["org/a", "org/b"])
    who.limits.expire_time.FromSeconds(int(SUNDAY_EVENING) + 60)
    assert await limits.admit(who, "org/a") is None  # nothing counted: no store call
    assert await limits.admit(who, "org/b:cheapest") is None
    error = await refusal(limits, who, "org/c")
    assert (error.http_status, error.code, error.param) == (403, "model_not_allowed", "model")
    clock.now += 60
    error = await refusal(limits, who, "org/a")
    assert (error.http_status, error.code) == (401, "api_key_expired")


async def test_with_the_store_stopped_rates_fail_open_and_budgets_fail_closed(redis, monkeypatch) -> None:
    monkeypatch.setattr(key_limits, "STORE_COOLDOWN_SECONDS", 0.0)
    counters = RedisCounters(redis.url)
    limits = KeyLimits(counters)
    rated = caller(fresh_id(), requests_per_minute=1, tokens_per_minute=10)
    budgeted = caller(fresh_id(), requests_per_minute=1000, budget_nano_usd=10**9, budget_period="monthly")
    assert (await limits.admit(rated, "org/m")).admission is not None
    redis.stop()
    try:
        for _ in range(3):  # over the rate, but nothing can count it: served
            grant = await limits.admit(rated, "org/m")
            assert grant.admission is None and grant.metadata() == []
            limits.settle(grant, 10, 0)
        error = await refusal(limits, budgeted)
        assert (error.http_status, error.code) == (503, "limits_unavailable")
    finally:
        redis.start()
        await counters.close()
    counters = RedisCounters(redis.url)  # the store is back (empty: it keeps nothing on disk)
    try:
        assert (await KeyLimits(counters).admit(budgeted, "org/m")).admission is not None
    finally:
        await counters.close()


def test_periods_start_on_utc_days_iso_weeks_and_months() -> None:
    now = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)  # a Sunday
    assert period_start("daily", now) == datetime(2026, 12, 6, tzinfo=UTC)
    assert period_start("weekly", now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert period_start("monthly", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_period_start("monthly", datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_period_start("monthly", datetime(2026, 11, 1, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_period_start("weekly", datetime(2026, 11, 30, tzinfo=UTC)) == datetime(2026, 12, 7, tzinfo=UTC)
