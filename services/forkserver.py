"""Starting a service without paying for its imports again: a fork server.

A service process spends most of its start importing (grpc, protobuf, SQLAlchemy, SQLModel,
pydantic: about 0.5-0.8 CPU-s each for the Registry and Billing). The launcher starts a fork server,
which imports the services' code once and then forks each service from itself: a start costs a
fork, and the children share the imported code's pages.

The server (`python -m services.forkserver`) reads one JSON request per line on stdin and answers
each, by its id, on stdout with the child's pid; when a child ends it writes its exit code (as
`Popen.returncode` has it: negative for a signal). The child runs the module as `python -m` would
(`__main__`, its argv, environment and working directory, its own log as stdout and stderr, `ps`
showing its command line), so it exits, runs its atexit handlers and re-raises SIGINT as a fresh
interpreter does. It dies with the server (PR_SET_PDEATHSIG); the server ignores the signals a
terminal or `kill` sends to a whole process group and exits when its stdin closes: the launcher is gone.

What a child takes from the server rather than from its own request: what Python and its libraries
read from the environment as they start (`AT_START_PREFIXES`: a launcher keeps one server per set of
those values), the hash seed (one per server), and the code as it was when the server imported it
(a service restarted after an upgrade on disk needs a new launcher).

The server creates no thread, channel or event loop before it forks: forking then is safe for
gRPC. The launcher side, `ForkServer`, gives each child a `ForkedProcess` that answers what the
launcher asks of a `subprocess.Popen`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import setproctitle

# What the server imports before its first fork: each service's entry and what it loads at start.
PRELOAD = (
    "services.registry.server",
    "services.billing.server",
    "services.router.server",
    "services.reference_provider.app",
)
FORKED_PACKAGE = "services."  # the modules it may run: this package's own
REPLY_TIMEOUT_SECONDS = 30.0
ORPHANS_GRACE_SECONDS = 10.0  # after the server's end (their SIGTERM), before SIGKILL
# Environment variables read as a Python process starts (PYTHONHASHSEED, MALLOC_ARENA_MAX, ...) or as
# its libraries import (GRPC_*, PROTOCOL_BUFFERS_*, PROMETHEUS_*): a server's children have its values.
AT_START_PREFIXES = ("PYTHON", "MALLOC_", "GRPC_", "PROTOCOL_BUFFERS_", "PROMETHEUS_")
# A group's signals the server ignores (it ends when its stdin closes); a child has the defaults back.
GROUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Start:
    """One child to fork: run `module` as `__main__` with `argv` (the command line it stands for)."""

    id: int  # its answer's
    argv: list[str]
    module: str
    env: dict[str, str]
    cwd: str
    log_path: str
    umask: int


def forkable_module(argv: list[str]) -> str | None:
    """The module of a `python -m services.…` command line, which the fork server can run; else None."""
    if len(argv) >= 3 and argv[:2] == [sys.executable, "-m"] and argv[2].startswith(FORKED_PACKAGE):
        return argv[2]
    return None


# The server: one process, one thread, forking.


def serve() -> None:
    """Imports the services, then forks a child per request until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the launcher's to handle
    for group_signal in GROUP_SIGNALS:
        signal.signal(group_signal, signal.SIG_IGN)
    for module in PRELOAD:
        # One that fails to import is left to its child, which then fails the same way in its own log.
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    # What is imported lives as long as a child: its collector need never walk it (a child inherits
    # every service's imports, and a full collection would walk them all), nor write to its pages.
    gc.freeze()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    start = _fork_until_a_child(wake_read)
    if start is None:
        return
    signal.set_wakeup_fd(-1)
    os.close(wake_read)
    os.close(wake_write)
    _become(start)


def _fork_until_a_child(wake_read: int) -> Start | None:
    """The server's loop. In the server it returns None once stdin closes; in a child, its Start."""
    pending = b""
    server = os.getpid()
    while True:
        readable, _, _ = select.select([0, wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
            _report_ended()
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)  # no file object: a child's would close its new stdin when collected
        if not chunk:
            return None
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            start = Start(**json.loads(line))
            try:
                pid = os.fork()
            except OSError as exc:  # e.g. out of processes: this start fails, the server goes on
                _write({"id": start.id, "error": f"cannot fork {start.module}: {exc.strerror}"})
                continue
            if pid == 0:
                _die_with(server)
                return start
            _write({"id": start.id, "pid": pid})


def die_with_parent() -> None:
    """SIGTERM to this process when its parent (the thread that forked it) ends."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _die_with(server: int) -> None:
    """In a child: SIGTERM when the server ends; it may have ended already."""
    die_with_parent()
    if os.getppid() != server:
        os._exit(1)


def _report_ended() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write({"ended": pid, "code": os.waitstatus_to_exitcode(status)})


def _write(message: dict[str, int | str]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


def _become(start: Start) -> None:
    """In the forked child: what a fresh `python -m <module>` would have been, then the module."""
    # A process group of its own: a terminal's Ctrl-C (SIGINT to the whole foreground group) reaches the
    # launcher, which stops the services in order, and not every service at once.
    os.setpgid(0, 0)
    for default in (signal.SIGCHLD, *GROUP_SIGNALS):
        signal.signal(default, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log = os.open(start.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(source, target)
    os.close(log)
    os.close(null)
    # `ps` shows the command line the child stands for; set before the environment changes, since
    # setproctitle checks where the environment lies.
    setproctitle.setproctitle(" ".join(start.argv))
    os.umask(start.umask)
    os.chdir(start.cwd)
    os.environ.clear()
    os.environ.update(start.env)
    sys.argv = [start.module, *start.argv[3:]]
    runpy.run_module(start.module, run_name="__main__", alter_sys=True)


# The launcher's side.


class ForkedProcess:
    """A child of the fork server, with what the launcher uses of a `subprocess.Popen`."""

    def __init__(self, pid: int, ended: threading.Condition) -> None:
        self.pid = pid
        self.args: list[str] = []
        self.returncode: int | None = None
        self._ended = ended

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._ended:
            if not self._ended.wait_for(lambda: self.returncode is not None, timeout):
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # ended, its report on the way
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """A fork server, started with `env`: asked for each child, told of each end."""

    def __init__(self, env: dict[str, str]) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "services.forkserver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self._writing = threading.Lock()
        self._changed = threading.Condition()  # an answer came, a child ended, or the server ended
        self._children: dict[int, ForkedProcess] = {}  # running, by pid
        self._answers: dict[int, ForkedProcess | str] = {}  # by request id, not yet taken: a child, or why none
        self._abandoned: set[int] = set()  # requests whose spawn gave up waiting: their children are killed
        self._next_id = 0
        self._ended = False
        threading.Thread(target=self._read, args=(self._server.stdout,), daemon=True, name="forkserver").start()

    def alive(self) -> bool:
        return not self._ended and self._server.poll() is None

    def stop(self) -> None:
        """Ends the server (its children are the launcher's to stop first) and waits for it."""
        if self._server.stdin is not None:
            with contextlib.suppress(OSError):
                self._server.stdin.close()
        try:
            self._server.wait(timeout=REPLY_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: Path | None, log_path: Path, umask: int
    ) -> ForkedProcess:
        """Forks a child that runs `argv` (a `python -m services.…` command line) in `cwd` (by default
        the launcher's current directory, as Popen's); OSError when the server cannot."""
        module = forkable_module(argv)
        if module is None:
            raise ValueError(f"not a service the fork server runs: {argv[:3]}")
        with self._changed:
            self._next_id += 1
            request = self._next_id
        start = Start(request, argv, module, env, str(cwd or os.getcwd()), str(log_path), umask)
        try:
            with self._writing:
                assert self._server.stdin is not None
                self._server.stdin.write(json.dumps(start.__dict__).encode() + b"\n")
                self._server.stdin.flush()
        except OSError:
            raise OSError("the fork server ended") from None
        with self._changed:
            try:
                if not self._changed.wait_for(lambda: request in self._answers or self._ended, REPLY_TIMEOUT_SECONDS):
                    raise OSError(f"the fork server did not answer within {REPLY_TIMEOUT_SECONDS:.0f}s")
                if request not in self._answers:
                    raise OSError("the fork server ended")
            except BaseException:  # a timeout, or Ctrl-C while waiting: its child, if one comes, is killed
                self._abandoned.add(request)
                raise
            answer = self._answers.pop(request)
        if isinstance(answer, str):
            raise OSError(answer)
        answer.args = argv
        return answer

    def _read(self, replies: IO[bytes]) -> None:
        """The server's answers and reports, in its order; whatever ends this, no child outlives it."""
        try:
            for line in replies:
                self._take(json.loads(line))
        finally:
            self._end_orphans()

    def _take(self, message: dict) -> None:
        with self._changed:
            if "ended" in message:
                if ended := self._children.pop(message["ended"], None):  # an unknown pid must not stop the reader
                    ended.returncode = message["code"]
            else:
                answer = message.get("error") or ForkedProcess(message["pid"], self._changed)
                if isinstance(answer, ForkedProcess):
                    self._children[answer.pid] = answer
                if message["id"] in self._abandoned:
                    self._abandoned.discard(message["id"])
                    if isinstance(answer, ForkedProcess):
                        answer.kill()
                else:
                    self._answers[message["id"]] = answer
            self._changed.notify_all()

    def _end_orphans(self) -> None:
        """The server ended, or its answers cannot be read: its children get SIGTERM at its end (the
        server is killed if need be), and SIGKILL if they still run after ORPHANS_GRACE_SECONDS."""
        with self._changed:
            self._ended = True
            orphans, self._children = list(self._children.values()), {}
            self._changed.notify_all()
        if self._server.poll() is None:
            self._server.kill()
        deadline = time.monotonic() + ORPHANS_GRACE_SECONDS
        for child in orphans:
            while _running(child.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            child.returncode = -signal.SIGTERM
            if _running(child.pid):
                os.kill(child.pid, signal.SIGKILL)
                child.returncode = -signal.SIGKILL
        with self._changed:
            self._changed.notify_all()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _at_start(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, value) for name, value in env.items() if name.startswith(AT_START_PREFIXES)))


_servers: dict[tuple[tuple[str, str], ...], ForkServer] = {}
_servers_lock = threading.Lock()


def fork_server(env: dict[str, str]) -> ForkServer:
    """The fork server for children with this environment: one per set of the values read at start
    (`AT_START_PREFIXES`) in this launcher process, started at its first use (and again if it died)."""
    key = _at_start(env)
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive():
            plain = {name: value for name, value in os.environ.items() if not name.startswith(AT_START_PREFIXES)}
            server = _servers[key] = ForkServer({**plain, **dict(key)})
        return server


def stop_fork_servers() -> None:
    """Ends this process's fork servers: `switchboard up` leaves no process behind."""
    with _servers_lock:
        while _servers:
            _servers.popitem()[1].stop()


if __name__ == "__main__":
    serve()
