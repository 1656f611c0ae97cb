"""`switchboard up`: readiness line, clean stop, crashed children restarted, a taken port refused."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers.clients import http_client
from helpers.waiting import eventually

from services.demo import ORG as DEMO_ORG
from services.demo import AdminApi
from services.launcher import Stack, free_port

pytestmark = pytest.mark.e2e  # starts processes

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
DEADLINE_SECONDS = 90


def descendants(pid: int) -> set[int]:
    """Every process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# Starts the launcher as a shell starts a background job: with SIGINT ignored, which stays ignored
# across exec. A shell does it, not a preexec_fn: that would fork() this process, and gRPC's fork
# handlers can deadlock a process with channels.
AS_BACKGROUND_JOB = ["sh", "-c", "trap '' INT; exec \"$@\"", "background-job"]


def launcher_log(data_dir: Path) -> str:
    """What the launcher wrote on stderr (its own log: failures, restarts)."""
    return (data_dir.parent / "launcher.stderr").read_text()


@pytest.fixture
def start_up(tmp_path: Path):
    """Starts `switchboard up` as an operator runs it (stderr to a file beside its data
    directory): start_up(*options, port=..., data_dir=...) -> (process, port, data_dir).
    Every one started is stopped at the end."""
    started: list[subprocess.Popen] = []
    env = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": ""}
    env.pop("SWITCHBOARD_ADMIN_TOKEN")

    def start(
        *options: str, port: int = 0, data_dir: Path | None = None, own_group: bool = False
    ) -> tuple[subprocess.Popen, int, Path]:
        port = port or free_port()
        data_dir = data_dir or tmp_path / f"up-{len(started)}" / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(data_dir.parent / "launcher.stderr", "w") as stderr:
            process = subprocess.Popen(
                [
                    *(["setsid"] if own_group else []),  # a process group of its own, as a terminal's job has
                    *AS_BACKGROUND_JOB,
                    SWITCHBOARD,
                    "up",
                    "--http-port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                    *options,
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        started.append(process)
        return process, port, data_dir

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def launcher(start_up):
    return start_up()


def wait_ready(process: subprocess.Popen) -> list[str]:
    """The lines `switchboard up` printed up to and including its last ready line."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("ready: ") and "--demo" not in process.args:
            return lines
        if line.startswith("  try: curl -s") and "chat/completions" in line:  # the demo's last line
            return lines
    pytest.fail(f"no ready line: {lines}")


def logged_at(log: Path, message: str) -> str:
    """When the service's log first says `message` (ISO time, sortable)."""
    return next(json.loads(line)["time"] for line in log.read_text().splitlines() if f'"message":"{message}"' in line)


def test_ctrl_c_at_a_terminal_stops_the_services_in_order(start_up) -> None:
    """A terminal's Ctrl-C signals its whole foreground process group: the launcher alone takes it,
    so the Routers stop while Billing still runs (their last ledger send reaches it), then Billing."""
    process, _, data_dir = start_up(own_group=True)
    wait_ready(process)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=DEADLINE_SECONDS) == 0
    logs = data_dir / "logs"
    assert logged_at(logs / "router.log", "stopped") <= logged_at(logs / "billing.log", "stopping")
    assert logged_at(logs / "billing.log", "stopped") <= logged_at(logs / "registry.log", "stopping")


def child_pid(launcher_pid: int, module: str) -> int | None:
    """The pid of the launcher's child running `python -m services.<module>`, if one runs."""
    for pid in descendants(launcher_pid):
        try:
            # a forked service's title is its command line in one string (services/forkserver.py)
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if f"services.{module}".encode() in argv and alive(pid):
            return pid
    return None


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_serves_and_stops_without_orphans(launcher, stop_signal: signal.Signals) -> None:
    process, port, data_dir = launcher
    assert wait_ready(process)[0] == f"ready: http://127.0.0.1:{port}"
    assert httpx.get(f"http://127.0.0.1:{port}/v1/providers", timeout=10).status_code == 200
    token_file = data_dir / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    children = descendants(process.pid)
    assert len(children) >= 4
    process.send_signal(stop_signal)
    assert process.wait(timeout=DEADLINE_SECONDS) == 0
    # The launcher waits for every child before it exits: none is left running.
    assert [pid for pid in children if alive(pid)] == []


def test_a_second_signal_does_not_cut_the_stop_short(launcher) -> None:
    process, _port, data_dir = launcher
    wait_ready(process)
    children = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGINT)  # an impatient second Ctrl-C
    assert process.wait(timeout=DEADLINE_SECONDS) == 0
    assert "Traceback" not in (data_dir.parent / "launcher.stderr").read_text()
    assert [pid for pid in children if alive(pid)] == []


def test_killed_children_come_back_and_requests_succeed_again(start_up) -> None:
    # One Router: the child killed below is then the one named "router" (with one per core, the
    # default, it could be "router-2", and the launcher's lines would name that one).
    process, port, data_dir = start_up("--demo", "--router-workers", "1")
    lines = wait_ready(process)
    token = next(line.split()[-1] for line in lines if line.startswith("demo token"))
    base = f"http://127.0.0.1:{port}"
    client = http_client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    chat = {"model": "demo/chat-model", "messages": [{"role": "user", "content": "Hello!"}]}

    def chat_ok() -> bool:
        return client.post("/v1/chat/completions", json=chat).status_code == 200

    def usage_ok() -> bool:  # answered by Billing itself
        return client.get("/v1/billing/usage", params={"account": "demo"}).status_code == 200

    assert chat_ok() and usage_ok()

    billing = child_pid(process.pid, "billing")
    os.kill(billing, signal.SIGKILL)
    assert chat_ok()  # Billing away or back: chat is served either way (billed later from the spool)
    eventually(
        lambda: child_pid(process.pid, "billing") not in (None, billing),
        "a new Billing process",
        seconds=DEADLINE_SECONDS,
    )
    eventually(usage_ok, "Billing answers again", seconds=DEADLINE_SECONDS)

    router = child_pid(process.pid, "router")
    os.kill(router, signal.SIGKILL)
    eventually(
        lambda: child_pid(process.pid, "router") not in (None, router), "a new Router process", seconds=DEADLINE_SECONDS
    )
    eventually(chat_ok, "chat answered again", seconds=DEADLINE_SECONDS)

    # The launcher's own readiness poll may see a child back after callers do.
    eventually(
        lambda: "switchboard: router is back" in launcher_log(data_dir),
        "the launcher saw the Router back",
        seconds=DEADLINE_SECONDS,
    )
    log = launcher_log(data_dir)
    for name in ("billing", "router"):
        assert f"switchboard: {name} was killed by SIGKILL" in log
        assert f"restarting {name} in 0.2s (restart 1)" in log
        assert f"switchboard: {name} is back (restart 1, " in log
    assert process.poll() is None  # the launcher itself kept running throughout


def test_a_second_up_on_a_taken_port_exits_with_a_clear_message(start_up) -> None:
    process, port, _ = start_up()
    wait_ready(process)
    second, _, second_dir = start_up(port=port)
    assert second.wait(timeout=DEADLINE_SECONDS) == 1
    message = launcher_log(second_dir).strip()
    assert message == (
        f"switchboard: port {port} on 127.0.0.1 is already in use (Address already in use); is another stack running?"
    )
    assert not second_dir.exists()  # refused before starting anything
    # The first stack still answers, alone.
    assert httpx.get(f"http://127.0.0.1:{port}/v1/providers", timeout=10).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_port_held_with_reuseport_is_refused(host: str) -> None:
    """A listener that set SO_REUSEPORT (as Envoy's does) would let a second Envoy share the port."""
    from services.launcher import PortInUse, check_port_free

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUse, match=f"^port {port} on {host} is already in use"):
            check_port_free(host, port)
    check_port_free(host, port)  # free again once the holder closed


def test_the_stacks_http_port_is_never_chosen_for_a_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy binds the HTTP port last: until then it is free, and the stack's other ports are chosen
    among free ones (a chance collision made Envoy fail to start)."""
    from services import launcher

    with socket.socket() as probe:  # a port free now: the HTTP port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(launcher, "FREE_PORTS", range(port, port + 1))
    monkeypatch.setattr(launcher, "_handed_out", set())
    monkeypatch.setattr(launcher, "private_directory", lambda path: 1 / 0)  # stops it after the port check
    with pytest.raises(ZeroDivisionError):
        launcher.start_stack(launcher.UpOptions(port, tmp_path / "data", "", demo=False))
    with pytest.raises(OSError, match="no free port"):  # the only one left is the HTTP port
        launcher.free_port()


def test_router_workers_default_to_one_per_core_when_key_limits_are_counted_in_one_store(monkeypatch, capsys) -> None:
    """Without the shared counter store each worker would count API keys' limits on its own (N times the
    limit): one worker then, unless asked for more, which is warned about."""
    from services.cli import COUNTER_STORE_ENV, build_parser, up_options

    monkeypatch.setenv(COUNTER_STORE_ENV, "redis://127.0.0.1:9/0")
    assert up_options(build_parser().parse_args(["up"])).router_replicas == (os.cpu_count() or 1)
    monkeypatch.delenv(COUNTER_STORE_ENV)
    assert up_options(build_parser().parse_args(["up"])).router_replicas == 1
    assert capsys.readouterr().err == ""
    assert up_options(build_parser().parse_args(["up", "--router-workers", "3"])).router_replicas == 3
    assert "3 times its limits" in capsys.readouterr().err


def test_router_replicas_share_the_load(tmp_path: Path) -> None:
    from services.launcher import UpOptions, start_stack

    stack, _, _ = start_stack(UpOptions(free_port(), tmp_path / "data", "", demo=False, router_replicas=2))
    try:
        assert {"router", "router-2"} <= set(stack.addresses)
        # Each worker has a spool, a journal and a metrics endpoint of its own.
        spools = [stack.data_dir / "router-ledger-spool", stack.data_dir / "router-2" / "router-ledger-spool"]
        assert all(any(spool.iterdir()) for spool in spools)
        assert stack.metrics["router"] != stack.metrics["router-2"]
        for name in ("router", "router-2"):
            assert "switchboard_router_ledger_spool_records" in httpx.get(stack.metrics[name], timeout=10).text
        base = f"http://{stack.addresses['envoy']}"
        for _ in range(20):
            assert httpx.get(f"{base}/v1/providers", timeout=10).status_code == 200
        clusters = httpx.get(f"http://{stack.addresses['envoy_admin']}/clusters", timeout=10).text
        for name in ("router", "router-2"):
            served = f"router::{stack.addresses[name]}::rq_success::"
            line = next(line for line in clusters.splitlines() if line.startswith(served))
            assert int(line.rsplit("::", 1)[1]) > 0, name
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("settings", "argv", "named"),
    [
        ("services.billing.config:BillingSettings", ["--reconcile-batch-size", "0"], "reconcile_batch_size"),
        ("services.router.config:RouterSettings", ["--billing-timeout-seconds", "-1"], "billing_timeout_seconds"),
        ("services.registry.config:RegistrySettings", ["--probe-interval-seconds", "0"], "probe_interval_seconds"),
        ("services.registry.config:RegistrySettings", ["--port", "70000"], "port"),
    ],
)
def test_a_setting_out_of_its_range_stops_the_start_naming_it(
    settings: str, argv: list[str], named: str, capsys
) -> None:
    """Not a service that starts and then never bills, never probes or probes every 50 ms."""
    module, _, name = settings.partition(":")
    with pytest.raises(SystemExit) as exited:
        getattr(importlib.import_module(module), name).from_args("service", argv)
    assert exited.value.code == 2 and named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"), [(["--http-port", "70000"], "not a port"), (["--host", "no.such.host.invalid"], "cannot listen")]
)
def test_switchboard_up_with_an_impossible_address_says_so(argv: list[str], said: str, tmp_path: Path) -> None:
    up = subprocess.run([sys.executable, "-m", "services.cli", "up", "--data-dir", str(tmp_path), *argv],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert up.returncode == 1 and said in up.stderr and "Traceback" not in up.stderr, up.stderr


@pytest.mark.parametrize(("grace", "waited"), [(None, 10.0), ("2", 10.0), ("30", 35.0)])
def test_a_stop_waits_out_the_childrens_own_shutdown_grace(grace: str | None, waited: float, tmp_path: Path) -> None:
    """A child given 30 s to finish its calls in flight is not killed at 10 s."""
    env = {"SWITCHBOARD_SHUTDOWN_GRACE_SECONDS": grace} if grace else {}
    assert Stack(tmp_path, env).stop_grace() == waited


def test_a_stop_lets_a_call_in_flight_through_envoy_finish(start_up) -> None:
    """Envoy drains before its SIGTERM: a chat answered 2 s after Ctrl-C still reaches its caller."""
    process, port, data_dir = start_up("--demo")
    lines = wait_ready(process)
    token = next(line.split()[-1] for line in lines if line.startswith("demo token"))
    reference = next(line.split(" at ")[1].split(";")[0] for line in lines if "reference provider" in line)
    api = AdminApi(f"http://127.0.0.1:{port}", (data_dir / "admin-token").read_text().strip())
    slow = f"{reference}/knobs/latency=2000"  # the demo's provider, answering 2 s late (its key kept)
    api.ensure_provider({"id": "demo", "org": DEMO_ORG, "base_url": slow})
    chat = {"model": "demo/chat-model", "messages": [{"role": "user", "content": "Hi"}]}
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, f"http://127.0.0.1:{port}/v1/chat/completions", json=chat,
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
        time.sleep(1)  # the call is under way (the provider answers after 2 s)
        process.send_signal(signal.SIGINT)
        assert answer.result().status_code == 200, answer.result().text
    assert process.wait(timeout=DEADLINE_SECONDS) == 0
