"""A throwaway PostgreSQL cluster for tests: Debian's postgresql package,
installed with apt-get when missing (CI runs as root on a fresh machine),
started on a free loopback port, removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.installs import apt_install, can_apt_install
from services.launcher import free_port

READY_DEADLINE_SECONDS = 60


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _install() -> Path:
    """Debian's postgresql package, or a skip saying why it cannot be had."""
    if _bin_dir() is None:
        if not can_apt_install():
            pytest.skip("PostgreSQL is not installed and apt-get cannot install it here (needs root)")
        apt_install("postgresql")
    bin_dir = _bin_dir()
    assert bin_dir is not None, "postgresql installed but initdb not found"
    return bin_dir


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops and removes the cluster at the end."""
    bin_dir = _install()
    base = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))  # outside pytest's 0700 tree: postgres must enter it
    data, sockets = base / "pgdata", base / "pgsock"
    for directory in (data, sockets):
        directory.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        _as_postgres([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_ready(bin_dir, port, server)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(bin_dir: Path, port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with status {server.returncode}")
        probe = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("postgres not ready in time")
