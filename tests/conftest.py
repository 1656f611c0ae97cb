"""Fixtures that start the real stack: Envoy and the three services on free
loopback ports, SQLite under a temporary directory. Everything started is
stopped at the end."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from hypothesis import settings

from services.common.auth import SERVICE_CREDENTIAL_KEY
from services.common.service import channel
from services.demo import start_demo
from services.edge.limits import CLIENT_BUDGET_ENV, EDGE_BUDGET_ENV
from services.launcher import Stack, UpOptions, free_port, start_stack

# Fixtures that start processes (Envoy, the services, a provider): a test that uses one, directly or
# through another fixture, is marked e2e, and so is every test marked slow. `-m "not e2e"` is the fast lane.
PROCESS_FIXTURES = frozenset({"make_stack", "stack"})


def _starts_processes(item: pytest.Item) -> bool:
    if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow"):
        return True
    callspec = getattr(item, "callspec", None)  # a test run on SQLite and on a PostgreSQL cluster
    return callspec is not None and "postgresql" in callspec.params.values()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _starts_processes(item):
            item.add_marker(pytest.mark.e2e)


# Tests never depend on timing: no hypothesis example fails for being slow on a busy machine.
settings.register_profile("switchboard", deadline=None)
# CI runs the same examples every time (a failure there is reproducible, never a coin toss);
# a developer's run explores new ones.
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "switchboard")


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
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

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

    def logs(self) -> str:
        """Everything the stack's processes logged so far."""
        return "".join(p.read_text(errors="replace") for p in (self.stack.data_dir / "logs").glob("*.log"))


@pytest.fixture(scope="session")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningStack]]:
    """Starts a fresh stack per call (own data directory); stops them all at the end."""
    started: list[Stack] = []

    def make(**env: str) -> RunningStack:
        data_dir: Path = tmp_path_factory.mktemp("stack")
        token = "test-admin-" + secrets.token_hex(16)
        port = free_port()
        # Health probes off unless a test turns them on: the providers most tests register are
        # unreachable on purpose, and probes would turn their live mappings to error mid-session.
        # Every test's client is 127.0.0.1: budgets for large bodies (services/edge/limits.py)
        # that the whole session cannot use up, unless a test asks for its own.
        budget = {CLIENT_BUDGET_ENV: "1024,1024", EDGE_BUDGET_ENV: "1024,1024"}
        settings = {"SWITCHBOARD_ADMIN_TOKEN": token, "SWITCHBOARD_PROBES_ENABLED": "false", **budget, **env}
        stack, admin_token, _ = start_stack(UpOptions(port, data_dir, "", demo=False, environment=settings))
        started.append(stack)
        return RunningStack(stack, f"http://127.0.0.1:{port}", admin_token)

    yield make
    for stack in started:
        stack.stop()


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., RunningStack]) -> RunningStack:
    """One stack shared by the whole session; tests use unique names."""
    return make_stack()


@contextmanager
def demo_stack(data_dir: Path) -> Iterator[tuple[Stack, str, str, str]]:
    """A stack with the demo's provider, catalog and user: (stack, base URL, admin token,
    the lines the demo prints); stopped afterwards."""
    port = free_port()
    stack, admin_token, _ = start_stack(UpOptions(port, data_dir, "", demo=True))
    try:
        base_url = f"http://127.0.0.1:{port}"
        yield stack, base_url, admin_token, start_demo(stack, base_url, admin_token)
    finally:
        stack.stop()
