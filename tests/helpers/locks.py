"""Taking turns across processes: parallel test workers (pytest-xdist) that would install the same
package or tool at once, or start stacks in the same lane, take a lock on the machine first."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one process of this machine at a time; released when the block ends (or the process dies)."""
    path = (
        Path(tempfile.gettempdir()) / f"switchboard-tests-{os.getuid()}-{name}.lock"
    )  # another user's file may not be writable
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def worker_number() -> int:
    """This pytest-xdist worker's number (gw0 is 0); 0 in a run without workers."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
