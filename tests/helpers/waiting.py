"""Waiting for what happens in other processes: one poll with a deadline for the whole suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE_SECONDS = 60.0  # bounds a failing wait only: a test never depends on how fast something happens
POLL_SECONDS = 0.05


def eventually(
    check: Callable[[], T], what: str | Callable[[], str] = "the condition", *, seconds: float = DEADLINE_SECONDS
) -> T:
    """check()'s first truthy answer, polled; fails when none came within `seconds`, saying `what` (a
    callable is asked at the failure, so it can tell what was there then)."""
    deadline = time.monotonic() + seconds
    while not (answer := check()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what() if callable(what) else what}"
        time.sleep(POLL_SECONDS)
    return answer
