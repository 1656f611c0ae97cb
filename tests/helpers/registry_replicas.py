"""In-process Registry replicas for tests: their states on one database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.db import Database, migrate
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage.index import RegistryIndex

ADMIN_TOKEN = "admin-token"


@contextmanager
def replica_states(directory: Path) -> Iterator[tuple[RegistryState, RegistryState]]:
    """Two Registry replicas' states on one migrated SQLite database in `directory`."""
    url = f"sqlite:///{directory / 'registry.db'}"
    migrate(url, MIGRATIONS)
    databases = [Database(url), Database(url)]
    try:
        yield tuple(RegistryState(db, RegistryIndex(), ChangeFeed(), ADMIN_TOKEN) for db in databases)
    finally:
        for db in databases:
            db.close()
