"""The timing of every inference answer: Switchboard's own share of the time (`router`) and the
providers' (`upstream`, every attempt included), sent as typed metadata (AnswerTiming) that
Envoy presents to REST callers as their timing header (envoy/answers.lua), so callers and browser devtools see where an
answer's time went."""

from __future__ import annotations

import time
from types import TracebackType

from switchboard.router.v1.answer_metadata_pb2 import AnswerTiming

from services.common.errors import ApiError
from services.common.telemetry import InferenceMeasure

TIMING_KEY = "switchboard-timing-bin"


def answer_timing(started: float, upstream_seconds: float) -> tuple[str, bytes]:
    """The metadata for a call that began at `started` (time.monotonic()) and waited
    `upstream_seconds` for providers."""
    own = max(0.0, time.monotonic() - started - upstream_seconds)
    timing = AnswerTiming(router_micros=round(own * 1e6), upstream_micros=round(upstream_seconds * 1e6))
    return TIMING_KEY, timing.SerializeToString()


def timed(error: ApiError, started: float, upstream_seconds: float = 0.0) -> ApiError:
    """The error with the timing (unless it has one already: the first to time it knew the most)."""
    if TIMING_KEY not in error.headers:
        error.headers = {**error.headers, TIMING_KEY: answer_timing(started, upstream_seconds)[1]}
    return error


class TimedMeasure(InferenceMeasure):
    """An inference call's measure; an ApiError the call ends with carries the call's timing first."""

    __slots__ = ()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if isinstance(error, ApiError):
            timed(error, self.started)
        super().__exit__(kind, error, trace)
