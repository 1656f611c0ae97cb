"""Exponential backoff, the one helper every retry loop uses: reconnecting feeds, the
ledger's sender, the reconciler's cost API calls and the launcher's restarts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """The wait after each failure doubles from `initial` up to `maximum`; a success resets it."""

    initial: float
    maximum: float
    delay: float = 0.0  # the wait after the latest failure; 0.0 after a success
    failures: int = 0  # failures in a row

    def failed(self) -> float:
        """Records a failure; returns how long to wait before the next try."""
        self.failures += 1
        self.delay = min(self.maximum, max(self.initial, self.delay * 2))
        return self.delay

    def reset(self) -> None:
        """Records a success: the next failure waits `initial` again."""
        self.delay = 0.0
        self.failures = 0
