"""The fork server (services/forkserver.py): a forked service is what `python -m` would have started,
the launcher reads its end as from a Popen, and none outlives the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.waiting import eventually

from services.demo import reference_provider_argv, reference_provider_secrets
from services.forkserver import ForkedProcess, ForkServer, fork_server, forkable_module
from services.launcher import free_port, http_ok

pytestmark = pytest.mark.e2e  # starts processes


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    """A fork server of this module's own, so that signalling it touches no other test's stacks: started
    once (each start imports the services' code), for the tests that leave it as they found it."""
    server = ForkServer(dict(os.environ))
    yield server
    server.stop()


@pytest.fixture
def own_server() -> Iterator[ForkServer]:
    """A fork server of the test's own: for the tests that kill it or count its children."""
    server = ForkServer(dict(os.environ))
    yield server
    server.stop()


def start_provider(server: ForkServer, tmp_path: Path, api_key: str = "k" * 24) -> tuple[ForkedProcess, str]:
    port = free_port()
    env = {**os.environ, **reference_provider_secrets(api_key)}
    child = server.spawn(reference_provider_argv(port), env, tmp_path, tmp_path / "provider.log", umask=0o077)
    url = f"http://127.0.0.1:{port}"
    eventually(http_ok(f"{url}/health"), "the provider's /health")
    return child, url


def status_field(pid: int, name: str) -> str:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{name}:"))


def test_only_this_packages_modules_run_as_python_dash_m_are_forked() -> None:
    assert forkable_module([sys.executable, "-m", "services.router", "--port", "1"]) == "services.router"
    assert forkable_module([sys.executable, "-m", "bench.stub"]) is None
    assert forkable_module(["/usr/bin/envoy", "-c", "services.yaml"]) is None
    assert forkable_module([sys.executable, "services/router/__main__.py"]) is None


def test_a_forked_service_has_its_own_command_line_environment_directory_and_umask(
    server: ForkServer, tmp_path: Path
) -> None:
    child, url = start_provider(server, tmp_path)
    argv = reference_provider_argv(int(url.rsplit(":", 1)[1]))
    assert Path(f"/proc/{child.pid}/cmdline").read_bytes().rstrip(b"\0").decode() == " ".join(argv)
    assert Path(f"/proc/{child.pid}/cwd").resolve() == tmp_path.resolve()
    assert status_field(child.pid, "Umask") == "0077"
    # Its API key came from the environment it was given, not the server's.
    refused = httpx.post(f"{url}/v1/chat/completions", json={}, timeout=30)
    assert refused.status_code == 401
    assert child.poll() is None
    child.terminate()
    assert child.wait(timeout=30) == 0  # the provider's own clean stop on SIGTERM


def test_exit_codes_read_as_a_popens(server: ForkServer, tmp_path: Path) -> None:
    def run(*args: str) -> ForkedProcess:
        return server.spawn(
            [sys.executable, "-m", "services.router", *args], dict(os.environ), None, tmp_path / "r.log", 0o077
        )

    assert run("--help").wait(timeout=30) == 0
    assert run("--no-such-option").wait(timeout=30) == 2  # argparse's usage error
    assert "usage: python -m services.router" in (tmp_path / "r.log").read_text()  # its output, in its log
    missing = server.spawn(
        [sys.executable, "-m", "services.no_such_service"], dict(os.environ), None, tmp_path / "m.log", 0o077
    )
    assert missing.wait(timeout=30) == 1  # as `python -m` fails: status 1, the error in its own log
    assert "No module named services.no_such_service" in (tmp_path / "m.log").read_text()
    child, _ = start_provider(server, tmp_path)
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL
    running, _ = start_provider(server, tmp_path)
    with pytest.raises(subprocess.TimeoutExpired):
        running.wait(timeout=0.1)
    running.kill()
    running.wait(timeout=30)


def test_children_started_from_several_threads_at_once_each_get_their_own(server: ForkServer, tmp_path: Path) -> None:
    started: list[ForkedProcess] = []

    def start(number: int) -> None:
        argv = [sys.executable, "-m", "services.router", "--help"]
        started.append(server.spawn(argv, dict(os.environ), None, tmp_path / f"{number}.log", 0o077))

    threads = [threading.Thread(target=start, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len({child.pid for child in started}) == 8
    assert [child.wait(timeout=60) for child in started] == [0] * 8


def server_children(server: ForkServer) -> set[int]:
    pid = server._server.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_no_child_outlives_its_server(own_server: ForkServer, tmp_path: Path) -> None:
    server = own_server
    child, _ = start_provider(server, tmp_path)
    assert int(status_field(child.pid, "PPid")) == server._server.pid
    server._server.kill()
    assert child.wait(timeout=30) == -signal.SIGTERM  # what it was sent as the server ended
    assert not Path(f"/proc/{child.pid}").exists() or status_field(child.pid, "State").startswith("Z")
    assert not server.alive()
    with pytest.raises(OSError, match="fork server ended"):
        start_provider(server, tmp_path)


def test_signals_to_a_whole_process_group_leave_the_server_to_its_launcher(server: ForkServer, tmp_path: Path) -> None:
    """`kill -- -PGID`, `timeout` or a hangup reach the launcher's group: the launcher stops the
    services in order; the server goes on until its stdin closes."""
    child, _ = start_provider(server, tmp_path)
    assert os.getpgid(child.pid) == child.pid  # not in the launcher's group
    for group_signal in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGINT):
        os.kill(server._server.pid, group_signal)
    assert server.alive() and child.poll() is None
    child.terminate()
    assert child.wait(timeout=30) == 0


def test_a_spawn_that_gave_up_waiting_gets_no_later_childs_answer(
    own_server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer belongs to its request: a spawn that stopped waiting (a timeout, a Ctrl-C) leaves no
    answer for the next one, and its child, when it comes, is killed."""
    server = own_server
    monkeypatch.setattr("services.forkserver.REPLY_TIMEOUT_SECONDS", 0.1)
    os.kill(server._server.pid, signal.SIGSTOP)  # it answers only once it runs again
    with pytest.raises(OSError, match="did not answer"):
        start_provider(server, tmp_path)
    monkeypatch.undo()
    os.kill(server._server.pid, signal.SIGCONT)
    argv = [sys.executable, "-m", "services.router", "--no-such-option"]
    assert server.spawn(argv, dict(os.environ), None, tmp_path / "r.log", 0o077).wait(timeout=30) == 2
    eventually(lambda: server_children(server) == set(), "the abandoned child killed")


def test_a_child_starts_where_the_launcher_is_unless_told(
    server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # after the server started: Popen's cwd=None is the launcher's directory now
    child = server.spawn(reference_provider_argv(free_port()), dict(os.environ), None, tmp_path / "p.log", 0o077)
    eventually(lambda: Path(f"/proc/{child.pid}/cwd").resolve() == tmp_path.resolve(), "the child in tmp_path")
    child.kill()
    child.wait(timeout=30)


def test_children_of_other_interpreter_settings_get_a_server_of_their_own() -> None:
    """What Python reads as it starts (here its hash seed) is the server's: a stack that sets it gets its own."""
    plain = fork_server(dict(os.environ))
    seeded = fork_server({**os.environ, "PYTHONHASHSEED": "7"})
    try:
        assert seeded is not plain
        assert seeded is fork_server({**os.environ, "PYTHONHASHSEED": "7", "SWITCHBOARD_PORT": "1"})
    finally:
        seeded.stop()
