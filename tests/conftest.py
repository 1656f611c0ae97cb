"""The stack fixtures: one stack shared by the whole session (tests use their own names), one
demo stack shared by the tests that only read it or use their own names, and `make_stack` for a
module's own stacks (stopped when the module ends). Tests that start processes are marked e2e:
`-m "not e2e"` is the fast lane. The tools themselves live in tests/helpers/."""

from __future__ import annotations

import gc
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.locks import worker_number
from helpers.postgres import shared_postgres_database
from helpers.stacks import GROUPS, DemoStack, RunningStack, Stacks
from hypothesis import settings

from services import launcher
from services.forkserver import stop_fork_servers

# Bytecode caches are written even where PYTHONDONTWRITEBYTECODE is set (they are git-ignored): every
# stack starts four Python processes and every worker rewrites each test module's assertions, and
# compiling the same sources anew each time cost ~0.2 s of CPU per service process and ~2.5 s per
# collection. The test modules' caches (pytest's) and the services' (their processes inherit this
# environment) are written on first use and read after.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Fixtures that start processes (Envoy, the services, a provider): a test that uses one, directly or
# through another fixture, is marked e2e, and so is every test marked slow. `-m "not e2e"` is the fast lane.
PROCESS_FIXTURES = frozenset({"make_stack", "stack", "shared_demo", "stacks", "postgres_stack", "quiet_stack"})


def _starts_processes(item: pytest.Item) -> bool:
    if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow"):
        return True
    callspec = getattr(item, "callspec", None)  # a test run on SQLite and on a PostgreSQL cluster
    return callspec is not None and "postgresql" in callspec.params.values()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _starts_processes(item):
            item.add_marker(pytest.mark.e2e)
    # Modules that start processes first: they take longest, and parallel workers that take them
    # last would end the run one module at a time.
    starting = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in starting)
    # The modules sharing a stack (GROUPS) one after the other, where the first of them was: it starts once.
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(_group(item), index)
    items.sort(key=lambda item: first[_group(item)])


def _group(item: pytest.Item) -> str:
    """The item's group of modules sharing a stack, or its module."""
    module = item.nodeid.split("::")[0]
    return GROUPS.get(module, module)


# A module marked e2e as a whole, recognised from its text without importing it.
E2E_MODULE = re.compile(r"^pytestmark = pytest\.mark\.e2e\b", re.MULTILINE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fast lane does not collect modules marked e2e as a whole: their imports were most of its
    collection time."""
    fast_lane = config.option.markexpr.replace(" ", "") == "note2e"
    if fast_lane and collection_path.suffix == ".py" and E2E_MODULE.search(collection_path.read_text()):
        return True
    return None


# The whole suite (`pytest` without paths or -m, as the README and CI run it) runs on parallel workers, each
# taking whole modules (so a module's stack starts once): its stack tests mostly wait on processes, so
# one worker more than the 2 cores. `-n N` chooses (`-n 0`: one process); `pytest tests/test_x.py`
# runs in one process.
WHOLE_SUITE_WORKERS = 3


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """The whole suite on WHOLE_SUITE_WORKERS workers unless -n (or -p no:xdist) says otherwise."""
    whole_suite = config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.option.markexpr
    if not whole_suite or not config.pluginmanager.hasplugin("xdist") or "PYTEST_XDIST_WORKER" in os.environ:
        return  # a worker never starts workers of its own
    if config.option.numprocesses is None:
        config.option.numprocesses = WHOLE_SUITE_WORKERS
        if config.option.dist == "no":
            config.option.dist = "loadscope"
            config.option.loadscopereorder = False  # in collection order: modules that start processes first


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown under -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """loadscope hands out whole modules, and each group of modules sharing a stack as one (helpers/scheduling.py)."""
    if config.option.dist != "loadscope":
        return None
    from helpers.scheduling import ModulesAndGroups  # imports xdist: only where xdist schedules

    return ModulesAndGroups(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """On parallel workers (pytest-xdist), each worker chooses free ports from a slice of its own."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        ports = launcher.below_ephemeral_ports()[worker_number() :: count]
        os.environ[launcher.FREE_PORTS_ENV] = f"{ports.start}:{ports.stop}:{ports.step}"  # and the stacks it starts
        launcher.FREE_PORTS = ports


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (test modules, items, strategies) lives to the session's end: the
    collector need never walk it again, and its young generation is collected a tenth as often
    (tests allocate millions of short-lived objects: Hypothesis, Schemathesis, clients)."""
    gc.freeze()
    gc.set_threshold(7_000, *gc.get_threshold()[1:])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The fork server this process's stacks were forked from ends with it (and is counted in its CPU)."""
    stop_fork_servers()


# Tests never depend on timing: no hypothesis example fails for being slow on a busy machine.
settings.register_profile("switchboard", deadline=None)
# CI runs the same examples every time (a failure there is reproducible, never a coin toss);
# a developer's run explores new ones.
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "switchboard")


STACKS = pytest.StashKey[Stacks]()


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Stacks]:
    """Starts stacks in data directories copied from one migrated template."""
    stacks = pytestconfig.stash[STACKS] = Stacks(tmp_path_factory)
    yield stacks
    stacks.stop_shared()
    del pytestconfig.stash[STACKS]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a module's fixtures were torn down: the shared stacks that neither the next test nor the
    next test's group of modules (GROUPS, run one after the other) asks for stop."""
    yield
    if (stacks := item.config.stash.get(STACKS, None)) is not None:
        stacks.stop_idle({*getattr(nextitem, "fixturenames", ()), _group(nextitem)} if nextitem else set())


@pytest.fixture(scope="module")
def make_stack(stacks: Stacks) -> Iterator[Callable[..., RunningStack]]:
    """Starts a fresh stack per call (own data directory, the tests' settings overridden by the
    call's); stops the module's stacks when the module ends."""
    started: list[RunningStack] = []

    def make(**env: str) -> RunningStack:
        started.append(stacks.start(**env))
        return started[-1]

    yield make
    for running in started:
        running.stack.stop()


@pytest.fixture(scope="session")
def stack(stacks: Stacks) -> Iterator[RunningStack]:
    """One stack shared by the whole session; tests use unique names."""
    running = stacks.start()
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
def postgres_stack(stacks: Stacks) -> Iterator[RunningStack]:
    """A stack on PostgreSQL (one cluster per worker) shared by the modules that use names of their own:
    tests/helpers/scheduling.py runs them on one worker, one after the other."""
    with stacks.shared("postgres_stack", SWITCHBOARD_DATABASE_URL=shared_postgres_database("stack")) as running:
        yield running


@pytest.fixture(scope="module")
def quiet_stack(stacks: Stacks) -> Iterator[RunningStack]:
    """A stack shared by the modules that assert its logs hold no error (their own traffic logs none), run
    one after the other like the other groups: no other module's failures reach those logs."""
    with stacks.shared("quiet_stack") as running:
        yield running


@pytest.fixture(scope="module")
def shared_demo(stacks: Stacks) -> Iterator[DemoStack]:
    """One demo stack shared by the tests that only read the demo's catalog and user or use names of
    their own (tests/helpers/scheduling.py runs their modules one after the other); a test that changes
    the demo's own data starts its own (`stacks.demo`)."""
    with stacks.shared_demo("shared_demo") as demo:
        yield demo
