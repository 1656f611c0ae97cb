"""The launcher's supervision decisions, step by step with a given clock: restarts after a
growing, capped backoff; a reset once a child has served a while; a readiness deadline."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.backoff import Backoff
from services.launcher import (
    HEALTHY_AFTER_SECONDS,
    READY_DEADLINE_SECONDS,
    RESTART_BACKOFF_INITIAL_SECONDS,
    RESTART_BACKOFF_MAX_SECONDS,
    Child,
    Stack,
)

pytestmark = pytest.mark.e2e  # starts processes

CRASH = [sys.executable, "-c", "raise SystemExit(3)"]
SERVE = [sys.executable, "-c", "import time; time.sleep(3600)"]


@given(
    initial=st.floats(0.001, 10),
    factor=st.floats(1, 1000),
    failures=st.integers(1, 80),
)
def test_backoff_doubles_from_initial_up_to_its_maximum_and_resets(
    initial: float, factor: float, failures: int
) -> None:
    backoff = Backoff(initial, initial * factor)
    delays = [backoff.failed() for _ in range(failures)]
    assert delays[0] == initial
    assert all(later == min(initial * factor, earlier * 2) for earlier, later in itertools.pairwise(delays))
    assert backoff.failures == failures
    backoff.reset()
    assert (backoff.failed(), backoff.failures) == (initial, 1)


@pytest.fixture
def stack(tmp_path: Path):
    started = Stack(tmp_path, dict(os.environ))
    try:
        yield started
    finally:
        started.stop()


def exited(child: Child) -> Child:
    child.process.wait(timeout=60)
    return child


def test_a_crashing_child_is_restarted_after_a_growing_capped_backoff(stack: Stack) -> None:
    said: list[str] = []
    child = exited(stack.start("crasher", CRASH, lambda: True))
    now = 0.0
    expected = Backoff(RESTART_BACKOFF_INITIAL_SECONDS, RESTART_BACKOFF_MAX_SECONDS)
    for restart in range(1, 11):
        stack.supervise_once(now, said.append)  # notices the exit: a restart is due after the backoff
        delay = expected.failed()
        assert said[-1].endswith(f"restarting crasher in {delay:.1f}s (restart {restart})")
        assert said[-1].startswith("crasher exited with status 3; last lines of ")
        first_pid = child.process.pid
        stack.supervise_once(now + delay / 2, said.append)  # not yet
        assert child.process.pid == first_pid
        now += delay
        stack.supervise_once(now, said.append)  # due: started again
        assert exited(child).process.pid != first_pid
    assert child.backoff.delay == RESTART_BACKOFF_MAX_SECONDS  # 0.2 * 2**9 > 30: capped


def test_a_child_that_served_a_while_starts_from_the_first_delay_again(stack: Stack) -> None:
    said: list[str] = []
    child = stack.start("server", SERVE, lambda: True)
    child.backoff.failed(), child.backoff.failed()  # as after two crashes
    stack.supervise_once(child.started_at, said.append)
    assert said == ["server is back (restart 2, ready after 0.0s)"]
    stack.supervise_once(child.started_at + HEALTHY_AFTER_SECONDS / 2, said.append)
    assert child.backoff.failures == 2  # not long enough yet
    stack.supervise_once(child.started_at + HEALTHY_AFTER_SECONDS, said.append)
    assert (child.backoff.failures, child.backoff.delay) == (0, 0.0)


def test_a_restarted_child_not_ready_by_the_deadline_is_killed_and_retried(stack: Stack) -> None:
    said: list[str] = []
    child = stack.start("stuck", SERVE, lambda: False)
    stack.supervise_once(child.started_at + READY_DEADLINE_SECONDS / 2, said.append)
    assert child.process.poll() is None and said == []
    stack.supervise_once(child.started_at + READY_DEADLINE_SECONDS + 1, said.append)
    assert child.process.returncode == -9
    assert said == [f"stuck was not ready within {READY_DEADLINE_SECONDS:.0f}s\nrestarting stuck in 0.2s (restart 1)"]
