"""A throwaway Redis for tests (the counter store of API keys' limits across Router replicas):
Debian's redis-server, installed with apt-get when missing (CI runs as root on a fresh
machine), started on a free loopback port without persistence, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.installs import debian_commands
from services.launcher import free_port

READY_DEADLINE_SECONDS = 30


def _install() -> str:
    """The redis-server binary, or a skip (a failure on CI) saying why it cannot be had."""
    return debian_commands("redis-server", ("redis-server",), "redis-server")


@dataclass
class RedisServer:
    """A running redis-server: its URL; stop() and start() again on the same port."""

    binary: str
    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory)]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        while not _answers(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server not ready in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server; stopped and its directory removed at the end."""
    server = RedisServer(_install(), free_port(), Path(tempfile.mkdtemp(prefix="switchboard-redis-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
