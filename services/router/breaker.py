"""A circuit breaker per provider: skip a provider that keeps failing, then probe it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# A breaker's state as states() reports it (the Prometheus gauge's values).
CLOSED, OPEN, HALF_OPEN = 0, 1, 2


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class Breakers:
    """Closed → open after `threshold` consecutive failures; after `cooldown` seconds one
    probe goes through (half-open): success closes it, failure opens it again."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.clock = clock
        self._states: dict[str, _State] = {}

    def allow(self, provider: str) -> bool:
        """Whether to try the provider now; claims the single probe of a half-open breaker."""
        state = self._states.get(provider)
        if state is None or state.failures < self.threshold:
            return True
        if state.probing or self.clock() < state.open_until:
            return False
        state.probing = True
        return True

    def is_open(self, provider: str) -> bool:
        state = self._states.get(provider)
        return state is not None and state.failures >= self.threshold

    def states(self) -> dict[str, int]:
        """0 closed, 1 open, 2 half-open (a probe is out), for every provider that failed since its
        last success; the others are closed."""
        return {provider: self._code(state) for provider, state in list(self._states.items())}

    def state(self, provider: str) -> tuple[int, int]:
        """(state as in states(), failures in a row since its last success) of one provider."""
        state = self._states.get(provider)
        return (CLOSED, 0) if state is None else (self._code(state), state.failures)

    def _code(self, state: _State) -> int:
        if state.failures < self.threshold:
            return CLOSED
        return HALF_OPEN if state.probing else OPEN

    def succeeded(self, provider: str) -> None:
        self._states.pop(provider, None)

    def failed(self, provider: str) -> None:
        state = self._states.setdefault(provider, _State())
        state.failures += 1
        state.probing = False
        if state.failures >= self.threshold:
            state.open_until = self.clock() + self.cooldown

    def released(self, provider: str) -> None:
        """The attempt ended without a verdict on the provider (e.g. the caller left)."""
        state = self._states.get(provider)
        if state is not None:
            state.probing = False
