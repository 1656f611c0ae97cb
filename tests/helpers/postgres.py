"""Throwaway PostgreSQL databases for tests, on one cluster per test process: Debian's postgresql
package, installed with apt-get when missing (CI runs as root on a fresh machine), started on a free
loopback port on first use, removed when the process exits."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
import sqlalchemy as sa

from helpers.installs import apt_install, can_apt_install
from helpers.waiting import eventually
from services.common.db import make_engine
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


class _Cluster(NamedTuple):
    server: subprocess.Popen
    base: Path
    url: str  # its "postgres" database


_cluster: _Cluster | None = None  # this process's cluster, started on first use


def _server_url() -> str:
    """The URL of this process's cluster (started on first use, stopped when the process exits):
    initdb is the expensive part of a cluster, and a database of its own isolates a test as well."""
    global _cluster
    if _cluster is None:
        _cluster = _start_cluster()
        atexit.register(_stop_cluster, _cluster)
    return _cluster.url


def _start_cluster() -> _Cluster:
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
    # every database of the process's tests on one server: room for the connections of several stacks
    server = subprocess.Popen(
        _as_postgres([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cluster = _Cluster(server, base, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    try:
        _wait_ready(bin_dir, port, server)
    except BaseException:
        _stop_cluster(cluster)
        raise
    return cluster


def _stop_cluster(cluster: _Cluster) -> None:
    """A fast shutdown (SIGINT: clients cut off, no waiting for them to leave), sent to the postmaster
    itself: runuser passes SIGTERM on (a smart shutdown) and kills its child 2 s later, which was
    each worker's last 2 s."""
    try:
        postmaster = int((cluster.base / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT)
    except (OSError, ValueError, IndexError):  # gone already, or never wrote its pid: runuser passes SIGTERM on
        cluster.server.terminate()
    cluster.server.wait(timeout=30)
    shutil.rmtree(cluster.base, ignore_errors=True)


def _admin(statement: str) -> None:
    engine = make_engine(_server_url())
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def shared_postgres_database(name: str) -> str:
    """The SQLAlchemy URL of this process's database called `name`, created on first use and kept."""
    if name not in _shared_databases:
        _admin(f"CREATE DATABASE {name}")
        _shared_databases.add(name)
    return _cluster_url(name)


_shared_databases: set[str] = set()


@contextmanager
def postgres_database() -> Iterator[str]:
    """Yields the SQLAlchemy URL of a fresh, empty database; drops it at the end."""
    name = "t" + uuid.uuid4().hex[:12]
    _admin(f"CREATE DATABASE {name}")
    try:
        yield _cluster_url(name)
    finally:
        _admin(f"DROP DATABASE {name} WITH (FORCE)")


def _cluster_url(database: str) -> str:
    return _server_url().rsplit("/", 1)[0] + f"/{database}"


def _wait_ready(bin_dir: Path, port: int, server: subprocess.Popen) -> None:
    def ready() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with status {server.returncode}")
        probe = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        return probe.returncode == 0

    eventually(ready, "postgres to accept connections", seconds=READY_DEADLINE_SECONDS)
