"""One at a time across processes: parallel test workers (pytest-xdist) that would install the same
package or tool at once take a lock on the machine first."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one process of this machine at a time; released when the block ends (or the process dies)."""
    path = Path(tempfile.gettempdir()) / f"switchboard-tests-{name}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
