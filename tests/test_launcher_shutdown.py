"""Stops that do not wait out their grace: open feeds are ended first, abandoned or
in-flight provider answers do not keep the reference provider alive."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from helpers.clients import http_client
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.auth import SERVICE_CREDENTIAL_KEY
from services.demo import reference_provider_argv
from services.launcher import Stack, free_port, http_ok

pytestmark = pytest.mark.e2e  # starts processes

DEADLINE_SECONDS = 60
# A grace far longer than the deadline: a stop that waited it out would fail the test.
LONG_GRACE_SECONDS = "3600"


@pytest.fixture
def stack(tmp_path: Path):
    started = Stack(tmp_path, {**os.environ, "SWITCHBOARD_SERVICE_CREDENTIAL": "test-credential"})
    try:
        yield started
    finally:
        started.stop()


def test_registry_ends_open_change_feeds_when_it_stops(stack: Stack) -> None:
    port = free_port()
    registry = stack.start_service("registry", port, "--shutdown-grace-seconds", LONG_GRACE_SECONDS)
    stack.wait_ready()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        feed = internal_grpc.InternalServiceStub(channel).WatchChanges(
            internal_pb.WatchChangesRequest(),
            metadata=[(SERVICE_CREDENTIAL_KEY, "test-credential")],
            timeout=DEADLINE_SECONDS,
        )
        first = next(feed)
        assert first.kind == internal_pb.CHANGE_KIND_UNSPECIFIED  # the reset every feed starts with
        registry.process.terminate()
        assert list(feed) == []  # the stream ended: no exception, no cancellation
        assert feed.code() == grpc.StatusCode.OK
    assert registry.process.wait(timeout=DEADLINE_SECONDS) == 0


def received(url: str, path: str) -> None:
    """Returns once the provider has the request (it records it before sleeping)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while httpx.get(f"{url}/debug/last-request", timeout=10).json().get("path") != path:
        assert time.monotonic() < deadline, f"the provider never received {path}"
        time.sleep(0.05)


def test_billing_ends_open_limit_feeds_when_it_stops(stack: Stack) -> None:
    """A Router's WatchLimitedAccounts stream (its side still open) ends when Billing stops."""
    port = free_port()
    registry = f"127.0.0.1:{free_port()}"  # nobody there: Billing starts without its Registry
    billing = stack.start_service(
        "billing", port, "--registry-address", registry, "--shutdown-grace-seconds", LONG_GRACE_SECONDS
    )
    stack.wait_ready()
    router_done = threading.Event()

    def acknowledgements():  # the Router's side stays open until the test is over
        router_done.wait(DEADLINE_SECONDS)
        yield from ()

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        feed = billing_grpc.LedgerServiceStub(channel).WatchLimitedAccounts(
            acknowledgements(), metadata=[(SERVICE_CREDENTIAL_KEY, "test-credential")], timeout=DEADLINE_SECONDS
        )
        assert next(feed).snapshot
        billing.process.terminate()
        try:
            assert list(feed) == []
            assert feed.code() == grpc.StatusCode.OK
        finally:
            router_done.set()
    assert billing.process.wait(timeout=DEADLINE_SECONDS) == 0


@pytest.mark.parametrize("abandoned", [False, True], ids=["in-flight", "abandoned"])
def test_reference_provider_stops_with_slow_answers_pending(stack: Stack, abandoned: bool) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = stack.start("reference_provider", reference_provider_argv(port), http_ok(f"{url}/health"))
    stack.wait_ready()
    slow_path = "/knobs/latency=3600000/v1/chat/completions"  # an hour: longer than any deadline here
    slow = url + slow_path
    body = {"messages": [{"role": "user", "content": "x"}]}
    outcome: list[str] = []

    def ask() -> None:
        with http_client(timeout=DEADLINE_SECONDS) as client:
            try:
                client.post(slow, json=body)
                outcome.append("answered")
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

    if abandoned:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(slow, json=body, timeout=0.5)  # the caller gives up: nothing is in flight
    else:
        caller = threading.Thread(target=ask)
        caller.start()
        received(url, slow_path)
    provider.process.terminate()
    assert provider.process.wait(timeout=DEADLINE_SECONDS) == 0
    if not abandoned:
        caller.join(DEADLINE_SECONDS)
        assert outcome == ["RemoteProtocolError"]  # cut short, not answered after an hour


# A child that writes its name to the file `log` when it gets SIGTERM, then exits.
NOTE_SIGTERM = (
    "import signal, sys, time\n"
    "def leave(*_):\n"
    "    open(sys.argv[2], 'a').write(sys.argv[1] + '\\n')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, leave)\n"
    "open(sys.argv[2] + '.' + sys.argv[1], 'w').close()\n"
    "while True: time.sleep(1)\n"
)


@pytest.mark.parametrize("restarted", [(), ("billing", "registry")], ids=["as-started", "after-restarts"])
def test_a_stack_stops_envoy_first_then_the_routers_then_billing_then_the_registry(
    tmp_path: Path, restarted: tuple[str, ...]
) -> None:
    """Also after services were stopped and started again (appended to the children): a Billing
    started again still stops after the Routers, whose last ledger send it must receive. The demo's
    provider, started last, stops last: the Routers' answers and Billing's cost calls reach it."""
    stack = Stack(tmp_path, dict(os.environ))
    log = tmp_path / "stopped"
    names = ["registry", "billing", "router", "router-2", "envoy", "provider"]  # start_stack's order, then the demo's
    try:
        for name in [*names, *restarted]:
            if name in restarted and any(child.name == name for child in stack.children):
                old = next(child for child in stack.children if child.name == name)
                old.process.kill()  # gone without a note
                old.process.wait(timeout=DEADLINE_SECONDS)
                stack.children.remove(old)
            marker = Path(f"{log}.{name}")
            argv = [sys.executable, "-c", NOTE_SIGTERM, name, str(log)]
            stack.start(name, argv, marker.exists, outside=name == "provider")
        stack.wait_ready(DEADLINE_SECONDS)
    finally:
        stack.stop()
    stopped = log.read_text().split()
    assert stopped[0] == "envoy"
    assert sorted(stopped[1:3]) == ["router", "router-2"]  # replicas stop together
    assert stopped[3:] == ["billing", "registry", "provider"]
