"""What the Router measured of each (provider, provider model) since it started: time to first
token and output throughput (moving averages), attempts, errors and refusals (totals and a
recent window), and the last few errors.

Recording runs on every attempt, so it is kept cheap: two dict lookups (no tuple key is built),
integer increments on preallocated per-minute buckets, and no lock (the event loop is the only
writer). Only an error allocates, for its record.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

ALPHA = 0.2  # weight of the newest sample in the moving averages
WINDOW_MINUTES = 5  # the recent window: this many whole minutes, the current one included
LAST_ERRORS = 5  # errors kept per provider model
MAX_ERROR_TEXT = 300  # characters of an error's message kept, after redaction
UNAVAILABLE = "UNAVAILABLE"  # the gRPC code of a provider's own failure


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One failed or refused attempt; `message` is already redacted and bounded."""

    unix_seconds: float
    provider_status: int
    code: str
    reason: str
    message: str


@dataclass(slots=True)
class Stats:
    """The figures of one provider model. `minutes`, `recent_requests` and `recent_errors`
    are WINDOW_MINUTES buckets indexed by minute modulo WINDOW_MINUTES; a bucket whose minute
    is not the current one is stale and reset before use."""

    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    samples: int = 0
    requests: int = 0
    errors: int = 0
    rejected: int = 0
    skipped: int = 0
    minutes: list[int] = field(default_factory=lambda: [-1] * WINDOW_MINUTES)
    recent_requests: list[int] = field(default_factory=lambda: [0] * WINDOW_MINUTES)
    recent_errors: list[int] = field(default_factory=lambda: [0] * WINDOW_MINUTES)
    last_errors: deque[ErrorRecord] = field(default_factory=lambda: deque(maxlen=LAST_ERRORS))

    def bucket(self, minute: int) -> int:
        """The index of the current minute's bucket, reset when it held an older minute."""
        index = minute % WINDOW_MINUTES
        if self.minutes[index] != minute:
            self.minutes[index] = minute
            self.recent_requests[index] = self.recent_errors[index] = 0
        return index

    def recent(self, minute: int) -> tuple[int, int]:
        """(requests, errors) within the window that ends with `minute`."""
        requests = errors = 0
        for index, bucket_minute in enumerate(self.minutes):
            if minute - WINDOW_MINUTES < bucket_minute <= minute:
                requests += self.recent_requests[index]
                errors += self.recent_errors[index]
        return requests, errors


class Measurements:
    """Per (provider, provider model) figures, fed by every attempt and every answered request."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._stats: dict[str, dict[str, Stats]] = {}  # provider -> provider model -> figures
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = wall_clock()
        self._minute = -1
        self._minute_ends = float("-inf")  # when self._minute ends on `clock`

    def minute(self) -> int:
        """The current minute of `clock`; divided out only once a minute (a compare otherwise)."""
        now = self.clock()
        if now >= self._minute_ends:
            self._minute = int(now // 60)
            self._minute_ends = (self._minute + 1) * 60.0
        return self._minute

    def _of(self, provider: str, model: str) -> Stats:
        models = self._stats.get(provider)
        stats = None if models is None else models.get(model)
        return self._add(provider, model) if stats is None else stats

    def _add(self, provider: str, model: str) -> Stats:
        stats = self._stats.setdefault(provider, {})[model] = Stats()
        return stats

    def observe(self, provider: str, model: str, ttft_seconds: float, tokens: int, generation_seconds: float) -> None:
        stats = self._of(provider, model)
        ttft_ms = ttft_seconds * 1000
        # Throughput over the whole answer time: a unary answer has no token timing.
        throughput = tokens / max(generation_seconds, 1e-3) if tokens > 0 else 0.0
        if stats.samples == 0:
            stats.ttft_ms, stats.tokens_per_second = ttft_ms, throughput
        else:
            stats.ttft_ms += ALPHA * (ttft_ms - stats.ttft_ms)
            if throughput:
                stats.tokens_per_second += ALPHA * (throughput - stats.tokens_per_second)
        stats.samples += 1

    def answered(self, provider: str, model: str) -> None:
        """An attempt got a valid answer (or the start of one)."""
        stats = self._of(provider, model)
        stats.requests += 1
        stats.recent_requests[stats.bucket(self.minute())] += 1

    def skipped(self, provider: str, model: str) -> None:
        """A request passed the provider by: its breaker was open."""
        self._of(provider, model).skipped += 1

    def failed(self, provider: str, model: str, error: ErrorRecord, *, counted: bool = False) -> None:
        """An attempt failed on the provider's side; `counted` when the attempt was counted as a
        request already (a stream that broke after it began)."""
        stats = self._of(provider, model)
        index = stats.bucket(self.minute())
        if not counted:
            stats.requests += 1
            stats.recent_requests[index] += 1
        stats.errors += 1
        stats.recent_errors[index] += 1
        stats.last_errors.appendleft(error)

    def rejected(self, provider: str, model: str, error: ErrorRecord) -> None:
        """The provider refused the request as bad: a request, not an error of the provider."""
        stats = self._of(provider, model)
        stats.requests += 1
        stats.rejected += 1
        stats.recent_requests[stats.bucket(self.minute())] += 1
        stats.last_errors.appendleft(error)

    def error(
        self, provider_status: int, code: str, reason: str, message: str, redact: Callable[[str], str]
    ) -> ErrorRecord:
        """An error record stamped now; the message redacted first, then cut (a cut first could
        leave part of a secret the redactor no longer recognizes), its control characters made
        spaces (JSON would print each as six)."""
        text = "".join(c if c.isprintable() else " " for c in redact(message)[:MAX_ERROR_TEXT])
        return ErrorRecord(self.wall_clock(), provider_status, code, reason, text)

    def get(self, provider: str, model: str) -> Stats | None:
        models = self._stats.get(provider)
        return None if models is None else models.get(model)

    def of_provider(self, provider: str) -> dict[str, Stats]:
        """The provider's models with figures (a copy: the caller may await while reading)."""
        return dict(self._stats.get(provider, {}))

    def ranking(self, provider: str, model: str) -> tuple[float, float] | None:
        """(throughput, ttft_ms) for ordering, or None when unmeasured (called per candidate: inlined)."""
        models = self._stats.get(provider)
        stats = None if models is None else models.get(model)
        return None if stats is None or stats.samples == 0 else (stats.tokens_per_second, stats.ttft_ms)
