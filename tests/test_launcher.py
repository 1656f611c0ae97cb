"""`switchboard up`: readiness line, clean stop, a crashed child reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.launcher import free_port

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


def _as_background_job() -> None:
    """Starts the launcher as a shell starts a background job: with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def launcher(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "SWITCHBOARD_ADMIN_TOKEN": ""}
    env.pop("SWITCHBOARD_ADMIN_TOKEN")
    process = subprocess.Popen(
        [SWITCHBOARD, "up", "--http-port", str(port), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_as_background_job,
    )
    try:
        yield process, port, tmp_path / "data"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_ready(process: subprocess.Popen) -> str:
    deadline = time.monotonic() + DEADLINE_SECONDS
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("ready: "):
            return line.strip()
    pytest.fail(f"no ready line: {''.join(lines)} {process.stderr.read() if process.poll() is not None else ''}")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_serves_and_stops_without_orphans(launcher, stop_signal: signal.Signals) -> None:
    process, port, data_dir = launcher
    assert wait_ready(process) == f"ready: http://127.0.0.1:{port}"
    assert httpx.get(f"http://127.0.0.1:{port}/v1/providers", timeout=10).status_code == 200
    token_file = data_dir / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    children = descendants(process.pid)
    assert len(children) >= 4
    process.send_signal(stop_signal)
    assert process.wait(timeout=30) == 0
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []


def test_a_crashed_child_is_named_and_stops_the_rest(launcher) -> None:
    process, _, _ = launcher
    wait_ready(process)
    children = descendants(process.pid)
    router = next(pid for pid in children if "services.router" in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(router, signal.SIGKILL)
    assert process.wait(timeout=30) == 1
    assert "router exited" in process.stderr.read()
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []


def test_router_replicas_share_the_load(tmp_path: Path) -> None:
    from services.launcher import UpOptions, start_stack

    stack, _, _ = start_stack(UpOptions(free_port(), tmp_path / "data", "", demo=False, router_replicas=2))
    try:
        assert {"router", "router-2"} <= set(stack.addresses)
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
