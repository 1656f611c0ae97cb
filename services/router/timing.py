"""The Server-Timing header of every inference answer: Switchboard's own share of the time
(`router`) and the providers' (`upstream`, every attempt included), so callers and browser
devtools see where an answer's time went."""

from __future__ import annotations

import time

from services.common.errors import ApiError

SERVER_TIMING = "server-timing"


def server_timing(started: float, upstream_seconds: float) -> tuple[str, str]:
    """The header for a call that began at `started` (time.monotonic()) and waited
    `upstream_seconds` for providers."""
    own = max(0.0, time.monotonic() - started - upstream_seconds)
    return SERVER_TIMING, f"router;dur={own * 1000:.2f}, upstream;dur={upstream_seconds * 1000:.2f}"


def timed(error: ApiError, started: float, upstream_seconds: float = 0.0) -> ApiError:
    """The error with the header (unless it has one already: the first to time it knew the most)."""
    if SERVER_TIMING not in error.headers:
        error.headers = {**error.headers, SERVER_TIMING: server_timing(started, upstream_seconds)[1]}
    return error
