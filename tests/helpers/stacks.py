"""Stacks for the tests: Envoy and the three services on free loopback ports, SQLite under a
temporary directory seeded from one migrated template (every stack starts on the newest schema
without running the migrations again), and how to reach a running stack."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import grpc
import httpx
import pytest

from edge.limits import CLIENT_BUDGET_ENV, EDGE_BUDGET_ENV
from helpers.clients import http_client
from helpers.locks import machine_lock, worker_number
from helpers.waiting import eventually
from services.billing.server import MIGRATIONS as BILLING_MIGRATIONS
from services.common.auth import SERVICE_CREDENTIAL_KEY
from services.common.db import migrate
from services.common.secrets import private_directory, private_file
from services.common.service import channel
from services.demo import start_demo
from services.launcher import Stack, UpOptions, free_port, start_stack
from services.registry.server import MIGRATIONS as REGISTRY_MIGRATIONS

DATABASES = {"registry": REGISTRY_MIGRATIONS, "billing": BILLING_MIGRATIONS}
# Stacks starting at once on this machine: a start is mostly CPU (Envoy's start; a worker's first also
# starts the fork server, which imports the services' code), so
# parallel workers take turns in this many lanes (one per core) instead of slowing each other's.
STARTS_AT_ONCE = 2
# Every test's client is 127.0.0.1: budgets for large bodies (edge/limits.py) that the whole
# session cannot use up, which every stack but the demo's has unless a test asks for its own.
NEVER_USED_UP_BUDGETS = {CLIENT_BUDGET_ENV: "1024,1024", EDGE_BUDGET_ENV: "1024,1024"}
# Ledger records sent to Billing every 0.1 s, not the default 0.5 s: many tests wait for a record.
PROMPT_LEDGER = {"SWITCHBOARD_LEDGER_SEND_INTERVAL_SECONDS": "0.1"}
# A reservation that Billing does not answer within its timeout (0.5 s by default) lets the request proceed
# unchecked: on a machine the suite keeps busy that turned expected 402s into 200s. The tests' stacks wait
# 10 s; the tests of a hung Billing set the default again.
PATIENT_RESERVATIONS = {"SWITCHBOARD_BILLING_TIMEOUT_SECONDS": "10"}
TEST_SETTINGS = {**PROMPT_LEDGER, **PATIENT_RESERVATIONS}
# Shared stacks' fixture -> the modules that use it: each group runs on one worker, one module after the other
# (tests/helpers/scheduling.py, tests/conftest.py), so its stack starts once per run, not once per worker.
SHARED_STACK_USERS = {
    "shared_demo": ["test_answer_metadata", "test_clients", "test_errors_grpc", "test_secrets_stack", "test_tasks"],
    "postgres_stack": ["test_money_bounds", "test_postgres", "test_registry_names"],
    "quiet_stack": ["test_log_floods", "test_stream_closing"],
}
GROUPS = {f"tests/{module}.py": fixture for fixture, modules in SHARED_STACK_USERS.items() for module in modules}
# The Router's gauge while its stream of Billing's limited accounts is up (docs/operations.md).
ROUTER_FOLLOWS_BILLING = "switchboard_router_limit_feed_following 1.0"
# Where each process's log ended at some moment (RunningStack.log_marks).
LogMarks = dict[str, int]
# Readiness deadline of a test's stack: it only bounds a failing start, and a machine shared with
# other runs can make a sound start slow.
READY_SECONDS = 180.0


class PresentCredential(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the service credential to every call of a blocking channel."""

    def __init__(self, credential: str) -> None:
        self.entry = (SERVICE_CREDENTIAL_KEY, credential)

    def _with_credential(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        # grpc hands interceptors a namedtuple of the call's details
        return details._replace(metadata=[*(details.metadata or ()), self.entry])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_credential(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_credential(details), request)


@dataclass
class RunningStack:
    """A started stack and how to reach it."""

    stack: Stack
    base_url: str
    admin_token: str

    def address(self, name: str) -> str:
        """host:port of "envoy", "registry", "router" or "billing"."""
        return self.stack.addresses[name]

    def http(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for Envoy's port, with a bearer token when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http_client(base_url=self.base_url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.http(self.admin_token)

    def channel(self, name: str = "envoy", *, internal: bool = True) -> grpc.Channel:
        """A (blocking) gRPC channel to Envoy or to one service directly; a channel to a
        service presents the service credential (its internal services need it) unless
        `internal` is False."""
        channel = grpc.insecure_channel(self.address(name))
        if name == "envoy" or not internal:
            return channel
        return grpc.intercept_channel(channel, PresentCredential(self.service_credential))

    def aio_channel(self, name: str) -> grpc.aio.Channel:
        """An asyncio channel to one service, presenting the service credential."""
        return channel(self.address(name), self.service_credential)

    @property
    def service_credential(self) -> str:
        return self.stack.env["SWITCHBOARD_SERVICE_CREDENTIAL"]

    def logs(self, since: LogMarks | None = None) -> str:
        """Everything the stack's processes logged so far, or since `since` (log_marks())."""
        return "".join(self.log(path.stem, since) for path in self._log_files())

    def log(self, process: str, since: LogMarks | None = None) -> str:
        """What one process ("router", "registry", ...) logged so far, or since `since` (log_marks())."""
        with (self.stack.data_dir / "logs" / f"{process}.log").open("rb") as log:
            log.seek((since or {}).get(process, 0))
            return log.read().decode(errors="replace")

    def log_marks(self) -> LogMarks:
        """Where each process's log ends now: what a module sharing the stack logs comes after."""
        return {path.stem: path.stat().st_size for path in self._log_files()}

    def _log_files(self) -> list[Path]:
        return sorted((self.stack.data_dir / "logs").glob("*.log"))


class DemoStack(NamedTuple):
    """A started demo stack: the stack, Envoy's URL, the admin token and the lines the demo printed."""

    stack: Stack
    base_url: str
    admin_token: str
    lines: str


class Stacks:
    """Starts stacks, each in a data directory of its own that starts as a copy of one migrated
    template (the services' own migration then finds nothing to do); stops what it started."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._template: Path | None = None
        self._shared: dict[tuple[object, ...], SharedStack] = {}

    def data_dir(self, name: str = "stack") -> Path:
        """A new data directory holding the migrated Registry and Billing SQLite databases."""
        if self._template is None:
            self._template = self._tmp.mktemp("template")
            for service, migrations in DATABASES.items():
                migrate(f"sqlite:///{self._template / f'{service}.db'}", migrations)
        data_dir = self._tmp.mktemp(name)
        private_directory(data_dir)
        for service in DATABASES:
            copy = data_dir / f"{service}.db"
            private_file(copy)  # the mode the services give their databases, before the bytes land
            shutil.copyfile(self._template / f"{service}.db", copy)
        return data_dir

    def start(self, **env: str) -> RunningStack:
        """A stack with the tests' settings, overridden by `env`."""
        token = "test-admin-" + secrets.token_hex(16)
        port = free_port()
        # Health probes off unless a test turns them on: the providers most tests register are
        # unreachable on purpose, and probes would turn their live mappings to error mid-session.
        settings = {
            "SWITCHBOARD_ADMIN_TOKEN": token, "SWITCHBOARD_PROBES_ENABLED": "false", **NEVER_USED_UP_BUDGETS,
            **TEST_SETTINGS, **env,
        }  # fmt: skip
        options = UpOptions(port, self.data_dir(), "", demo=False, environment=settings, ready_seconds=READY_SECONDS)
        stack, admin_token, _ = _start(options)
        return RunningStack(stack, f"http://127.0.0.1:{port}", admin_token)

    @contextmanager
    def demo(self, name: str = "demo", **env: str) -> Iterator[DemoStack]:
        """A stack with the demo's provider, catalog and user, as `switchboard up --demo` starts
        it (its settings overridden by `env`); stopped afterwards."""
        demo = self._start_demo(name, **env)
        try:
            yield demo
        finally:
            demo.stack.stop()

    def _start_demo(self, name: str, **env: str) -> DemoStack:
        port = free_port()
        settings = {**TEST_SETTINGS, **env}
        options = UpOptions(port, self.data_dir(name), "", demo=True, environment=settings, ready_seconds=READY_SECONDS)
        stack, admin_token, _ = _start(options)
        try:
            base_url = f"http://127.0.0.1:{port}"
            return DemoStack(stack, base_url, admin_token, start_demo(stack, base_url, admin_token))
        except BaseException:
            stack.stop()
            raise

    @contextmanager
    def shared(self, fixture: str, **env: str) -> Iterator[RunningStack]:
        """The stack of these settings (as `start`'s) that the modules using `fixture` share (they use
        names of their own): started on first use, stopped by `stop_idle` once no module uses it and
        the next test does not use `fixture`, or at the session's end."""
        with self._sharing(fixture, lambda: self.start(**env), "stack", *sorted(env.items())) as running:
            yield running

    @contextmanager
    def shared_demo(self, fixture: str) -> Iterator[DemoStack]:
        """The demo stack (as `demo`'s) that the modules using `fixture` share, as `shared` shares a stack."""
        with self._sharing(fixture, lambda: self._start_demo("demo"), "demo") as demo:
            yield demo

    @contextmanager
    def _sharing(self, fixture: str, start: Callable[[], Running], *key: object) -> Iterator[Running]:
        shared = self._shared.get((fixture, *key))
        if shared is None:
            shared = self._shared[(fixture, *key)] = SharedStack(fixture, start())
        shared.users += 1
        try:
            yield shared.running
        finally:
            shared.users -= 1

    def stop_idle(self, next_fixtures: Collection[str]) -> None:
        """Stops the shared stacks no module uses now and the next test (its `next_fixtures`) does not ask for."""
        for key, shared in list(self._shared.items()):
            if not shared.users and shared.fixture not in next_fixtures:
                del self._shared[key]
                shared.running.stack.stop()

    def stop_shared(self) -> None:
        """Stops the shared stacks."""
        while self._shared:
            self._shared.popitem()[1].running.stack.stop()


Running = TypeVar("Running", RunningStack, DemoStack)


@dataclass
class SharedStack:
    """A stack shared by the modules that use one fixture, and how many of them use it now."""

    fixture: str
    running: RunningStack | DemoStack
    users: int = 0


def _start(options: UpOptions) -> tuple[Stack, str, str]:
    """start_stack in this worker's lane of stack starts; returns once the Router follows Billing's limits."""
    with machine_lock(f"stack-start-{worker_number() % STARTS_AT_ONCE}"):
        started = start_stack(options)
    try:
        _follow_billing(started[0])
    except BaseException:
        started[0].stop()
        raise
    return started


def _follow_billing(stack: Stack) -> None:
    """Waits until the Router follows Billing's limited accounts. The Router starts first (it imports
    least) and its first connection to Billing is refused: its channel tries again after gRPC's
    reconnection backoff (about a second), which can come after the stack is ready. Until then a
    limited account's reservation fails at once (UNAVAILABLE) and the request proceeds unchecked."""
    if metrics := stack.metrics.get("router"):  # no Prometheus endpoints: nothing tells
        eventually(lambda: ROUTER_FOLLOWS_BILLING in httpx.get(metrics, timeout=10).text, "the Router following")
