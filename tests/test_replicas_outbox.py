"""The Registry's one write path: a write and its change record commit together, the
writer applies the change itself, and its follower applies what the writer could not
(its apply failed or was cancelled after the commit), never a change twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.registry.domain import state as state_module
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.replicas import ReplicaFollower
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage import queries
from services.registry.storage.tables import UserRow


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryState]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, MIGRATIONS)
    db = Database(url)
    index = await db.run(lambda session: queries.load_index(session.get_bind()))
    yield RegistryState(db, index, ChangeFeed(), "admin-token")
    db.close()


def create_user(name: str):
    return lambda session: queries.create_account(session, UserRow(name=name))


async def test_a_write_applied_here_is_not_applied_again(registry: RegistryState) -> None:
    follower = ReplicaFollower(registry)
    await registry.write(create_user("ann"), internal_pb.CHANGE_KIND_IDENTITY, "ann")
    assert ("ann" in registry.index.users, registry.feed.revision) == (True, 1)
    await follower.catch_up()
    assert registry.feed.revision == 1  # no second notice


async def test_the_follower_applies_a_committed_write_its_writer_could_not(
    registry: RegistryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = ReplicaFollower(registry)
    read_change = state_module.read_change

    def unreadable(*args: object) -> None:
        raise OSError("the database went away after the commit")

    monkeypatch.setattr(state_module, "read_change", unreadable)
    with pytest.raises(OSError):
        await registry.write(create_user("bob"), internal_pb.CHANGE_KIND_IDENTITY, "bob")
    assert "bob" not in registry.index.users  # committed, with its change record, but not applied
    monkeypatch.setattr(state_module, "read_change", read_change)
    await follower.catch_up()
    assert ("bob" in registry.index.users, registry.feed.revision) == (True, 1)
