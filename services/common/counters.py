"""Counters that hold across Router replicas: the per-minute rates and period budgets of API
keys (services/router/key_limits.py; docs/api-keys.md).

Two stores with one behaviour: `MemoryCounters` (one process; the default, nothing to run)
and `RedisCounters` (every replica on one Redis; SWITCHBOARD_COUNTER_STORE_URL). One call
admits a request (`admit`: budget and tokens checked, a request taken) and one records what
it used (`record`, sent in the background), each a single atomic step (a Lua script on Redis), so concurrent replicas
never both take the last request of a minute.

Rates are GCRA (the generic cell rate algorithm): a limit of N per minute lets N through at
once, then one each 60/N seconds; a key's state is one number, its theoretical arrival time
(TAT). Requests are taken when admitted; tokens are only known after the answer, so they are
added by `record` and admission refuses while the minute's tokens are used up: the overshoot
is at most the tokens of the requests in flight when the limit was reached. Redis's clock
(TIME) decides the rates, so replicas' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

WINDOW_MS = 60_000.0  # the rates are per minute
EXPIRY_SLACK_MS = 1_000  # a key outlives its last use by this much
STORE_TIMEOUT_SECONDS = 0.5
MAX_MEMORY_KEYS = 100_000  # the in-process store prunes spent keys beyond this
MAX_QUEUED_USAGE = 100_000  # usage records waiting for Redis; beyond, they are dropped (and counted)

# Why admit refused: the request outcome codes `Admission.refused` holds.
REQUESTS, TOKENS, BUDGET = "requests", "tokens", "budget"


class StoreUnavailable(Exception):
    """The counter store did not answer in time (or at all)."""


@dataclass(frozen=True)
class CounterKeys:
    """A key's counters: its request rate, token rate and the current budget period's spending."""

    requests: str
    tokens: str
    budget: str


@dataclass(frozen=True)
class Limits:
    """The numbers one admission holds a key to (0: no limit of that kind)."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    budget_nano_usd: int = 0


@dataclass(frozen=True)
class Admission:
    """The store's verdict: "" or the limit that refused; milliseconds until a retry can pass;
    what is left of each rate and when it is full again; the period's spending so far."""

    refused: str = ""
    retry_after_ms: float = 0.0
    requests_remaining: int = 0
    requests_reset_ms: float = 0.0
    tokens_remaining: int = 0
    tokens_reset_ms: float = 0.0
    spent_nano_usd: int = 0


@dataclass(frozen=True)
class Usage:
    """What one answered request used, to add to its key's counters."""

    keys: CounterKeys
    tokens_per_minute: int
    tokens: int
    spent_nano_usd: int
    budget_ttl_s: int


class Counters(Protocol):
    async def admit(self, keys: CounterKeys, limits: Limits) -> Admission: ...

    def record(self, usage: Usage) -> None:
        """Adds the usage now or soon, off the answer's path; never raises."""

    async def flush(self) -> None:
        """Returns once every usage recorded so far is counted (or lost)."""

    async def close(self) -> None: ...


def _step(limit: int) -> float:
    return WINDOW_MS / limit


class MemoryCounters:
    """The counters of one process (nothing shared): the single-replica default."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._rates: dict[str, float] = {}  # key -> TAT in ms
        self._sums: dict[str, tuple[int, float]] = {}  # key -> (sum, expiry in ms)

    def _now(self) -> float:
        return self._clock() * 1000

    async def admit(self, keys: CounterKeys, limits: Limits) -> Admission:
        now = self._now()
        spent = 0
        if limits.budget_nano_usd:
            spent, expires = self._sums.get(keys.budget, (0, now + 1))
            spent = spent if expires > now else 0
            if spent >= limits.budget_nano_usd:
                return Admission(BUDGET, spent_nano_usd=spent)
        tokens_left, tokens_reset = 0, 0.0
        if limits.tokens_per_minute:
            step = _step(limits.tokens_per_minute)
            tat = max(self._rates.get(keys.tokens, now), now)
            if tat + step - now > WINDOW_MS:
                return Admission(TOKENS, tat + step - WINDOW_MS - now)
            tokens_left, tokens_reset = int((WINDOW_MS - (tat - now)) / step), tat - now
        requests_left, requests_reset = 0, 0.0
        if limits.requests_per_minute:
            step = _step(limits.requests_per_minute)
            tat = max(self._rates.get(keys.requests, now), now) + step
            if tat - now > WINDOW_MS:
                return Admission(REQUESTS, tat - WINDOW_MS - now)
            self._set_rate(keys.requests, tat, now)
            requests_left, requests_reset = int((WINDOW_MS - (tat - now)) / step), tat - now
        return Admission("", 0.0, requests_left, requests_reset, tokens_left, tokens_reset, spent)

    def record(self, usage: Usage) -> None:
        now, keys = self._now(), usage.keys
        if usage.tokens_per_minute and usage.tokens > 0:
            tat = max(self._rates.get(keys.tokens, now), now) + usage.tokens * _step(usage.tokens_per_minute)
            self._set_rate(keys.tokens, tat, now)
        if usage.spent_nano_usd > 0:
            total, expires = self._sums.get(keys.budget, (0, 0.0))
            self._sums[keys.budget] = ((total if expires > now else 0) + usage.spent_nano_usd,
                                       now + usage.budget_ttl_s * 1000)  # fmt: skip

    async def flush(self) -> None:
        return None

    def _set_rate(self, key: str, tat: float, now: float) -> None:
        if len(self._rates) >= MAX_MEMORY_KEYS:  # TATs in the past say nothing: drop them
            self._rates = {k: v for k, v in self._rates.items() if v > now}
            self._sums = {k: v for k, v in self._sums.items() if v[1] > now}
        self._rates[key] = tat

    async def close(self) -> None:
        return None


# KEYS: requests, tokens, budget. ARGV: requests/min, tokens/min, budget, window ms, slack ms.
# Returns {refused (0 none, 1 requests, 2 tokens, 3 budget), retry ms, requests left, requests
# reset ms, tokens left, tokens reset ms, spent}; Redis truncates the numbers to integers.
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rpm, tpm, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, slack = tonumber(ARGV[4]), tonumber(ARGV[5])
local spent = 0
if budget > 0 then
  spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if spent >= budget then return {3, 0, 0, 0, 0, 0, spent} end
end
local tokens_left, tokens_reset = 0, 0
if tpm > 0 then
  local step = window / tpm
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or now), now)
  if tat + step - now > window then return {2, math.ceil(tat + step - window - now), 0, 0, 0, 0, spent} end
  tokens_left, tokens_reset = math.floor((window - (tat - now)) / step), math.ceil(tat - now)
end
local requests_left, requests_reset = 0, 0
if rpm > 0 then
  local step = window / rpm
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + step
  if tat - now > window then return {1, math.ceil(tat - window - now), 0, 0, 0, 0, spent} end
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now + slack))
  requests_left, requests_reset = math.floor((window - (tat - now)) / step), math.ceil(tat - now)
end
return {0, 0, requests_left, requests_reset, tokens_left, tokens_reset, spent}
"""
# KEYS: tokens, budget. ARGV: tokens/min, tokens used, nano-USD spent, budget ttl s, window ms, slack ms.
SETTLE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tpm, tokens, spent = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 and tokens > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + tokens * tonumber(ARGV[5]) / tpm
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now + tonumber(ARGV[6])))
end
if spent > 0 then
  redis.call('INCRBY', KEYS[2], spent)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 0
"""
REFUSALS = {1: REQUESTS, 2: TOKENS, 3: BUDGET}


class RedisCounters:
    """The counters of every replica, in one Redis (redis://host:port/db)."""

    def __init__(self, url: str, timeout_s: float = STORE_TIMEOUT_SECONDS) -> None:
        from redis import asyncio as aioredis  # only deployments with a shared store load it

        self._errors = (aioredis.RedisError, OSError, TimeoutError, asyncio.TimeoutError)
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._timeout = timeout_s
        self._admit = self._redis.register_script(ADMIT_SCRIPT)
        self._settle = self._redis.register_script(SETTLE_SCRIPT)
        self._queue: deque[Usage] = deque()
        self._sender: asyncio.Task | None = None
        self.lost = 0  # usage records dropped because the store was away (or the queue full)

    async def _run(self, script, keys: list[str], args: list) -> list:
        try:
            async with asyncio.timeout(self._timeout):
                return await script(keys=keys, args=args)
        except self._errors as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def admit(self, keys: CounterKeys, limits: Limits) -> Admission:
        args = [
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.budget_nano_usd,
            WINDOW_MS,
            EXPIRY_SLACK_MS,
        ]
        refused, retry, *rest = await self._run(self._admit, [keys.requests, keys.tokens, keys.budget], args)
        return Admission(REFUSALS.get(int(refused), ""), float(retry), *(int(n) for n in rest))

    def record(self, usage: Usage) -> None:
        """Queued and sent by one background task, in order; lost (and counted) when the store is away."""
        if len(self._queue) >= MAX_QUEUED_USAGE:
            self.lost += 1
            return
        self._queue.append(usage)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self._queue:
            usage = self._queue.popleft()
            args = [usage.tokens_per_minute, usage.tokens, usage.spent_nano_usd, usage.budget_ttl_s, WINDOW_MS,
                    EXPIRY_SLACK_MS]  # fmt: skip
            try:
                await self._run(self._settle, [usage.keys.tokens, usage.keys.budget], args)
            except StoreUnavailable as exc:
                self.lost += 1 + len(self._queue)
                self._queue.clear()
                log.warning("counter store unavailable: usage not counted", extra={"error": str(exc)})

    async def flush(self) -> None:
        if self._sender is not None:
            await self._sender

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), self._timeout * 4)
        await self._redis.aclose()


def counters_from_url(url: str, timeout_s: float = STORE_TIMEOUT_SECONDS) -> Counters:
    """The store a Router is configured with: Redis for a redis:// URL, else this process's memory."""
    return RedisCounters(url, timeout_s) if url else MemoryCounters()
