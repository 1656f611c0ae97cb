"""Stacks.shared (tests/helpers/stacks.py), without processes: a shared stack starts once for its
settings and stops only when no module uses it and the next test does not ask for its fixture."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from helpers.stacks import RunningStack, Stacks


@dataclass
class FakeStack:
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Stacks.start, recording the settings of each start instead of starting processes."""
    calls: list[dict[str, str]] = []

    def start(_stacks: Stacks, **env: str) -> RunningStack:
        calls.append(env)
        return RunningStack(FakeStack(), "", "")  # type: ignore[arg-type]

    monkeypatch.setattr(Stacks, "start", start)
    return calls


def test_a_shared_stack_starts_once_per_fixture_and_settings(tmp_path_factory, started) -> None:
    stacks = Stacks(tmp_path_factory)
    with stacks.shared("f", A="1") as first, stacks.shared("f", A="1") as again:
        assert again is first
    with stacks.shared("f", A="2") as other, stacks.shared("g", A="1") as another:
        assert len({id(first), id(other), id(another)}) == 3
    assert started == [{"A": "1"}, {"A": "2"}, {"A": "1"}]


def test_a_shared_stack_stops_when_unused_and_the_next_test_does_not_ask_for_it(tmp_path_factory, started) -> None:
    stacks = Stacks(tmp_path_factory)
    with stacks.shared("f") as running:
        stacks.stop_idle(set())
        assert not running.stack.stopped  # a module still uses it
    stacks.stop_idle({"f"})
    assert not running.stack.stopped  # the next test asks for it
    stacks.stop_idle({"g"})
    assert running.stack.stopped
    with stacks.shared("f") as again:
        assert again is not running and len(started) == 2
    stacks.stop_shared()
    assert again.stack.stopped
