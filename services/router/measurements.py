"""Measured time to first token and output throughput per (provider, provider model)."""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.2  # weight of the newest sample in the moving averages


@dataclass
class Stats:
    """Exponentially weighted moving averages of one provider model."""

    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    samples: int = 0


class Measurements:
    """EWMA of time to first token and output throughput, fed by every answered request."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], Stats] = {}

    def observe(self, provider: str, model: str, ttft_seconds: float, tokens: int, generation_seconds: float) -> None:
        stats = self._stats.get((provider, model))
        if stats is None:
            stats = self._stats[(provider, model)] = Stats()
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

    def get(self, provider: str, model: str) -> Stats | None:
        return self._stats.get((provider, model))

    def ranking(self, provider: str, model: str) -> tuple[float, float] | None:
        """(throughput, ttft_ms) for ordering, or None when unmeasured."""
        stats = self._stats.get((provider, model))
        return None if stats is None else (stats.tokens_per_second, stats.ttft_ms)
