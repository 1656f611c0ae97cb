"""What an idle service does in the background: the Registry's follower reads the change log only
when its scalar mark moved and backs off while nothing changes (yet still applies a change committed
late below the newest revision it saw), and the Router's spool sleeps without a timer until a record
comes (bench/run.py idle measures what a whole idle stack costs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.registry.domain import replicas
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.replicas import ReplicaFollower
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage import queries
from services.registry.storage.tables import ChangeRow, UserRow
from services.router.spool import FLUSH_INTERVAL_SECONDS, Spool

IDENTITY = internal_pb.CHANGE_KIND_IDENTITY


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, MIGRATIONS)
    db = Database(url)
    yield db
    db.close()


async def replica(db: Database) -> RegistryState:
    index = await db.run(lambda session: queries.load_index(session.get_bind()))
    return RegistryState(db, index, ChangeFeed(), "admin-token")


def user_committed_at(revision: int, name: str) -> Callable:
    """Another replica's write of a user, its change record at `revision`."""

    def work(session) -> None:
        queries.create_account(session, UserRow(name=name))
        session.add(ChangeRow(revision=revision, origin="another-replica", kind=IDENTITY, key=name))
        session.commit()

    return work


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The revisions the follower read the change log from, one per read."""
    seen: list[int] = []
    changes_since = queries.changes_since

    def counted(session, revision: int, limit: int = 1000):
        seen.append(revision)
        return changes_since(session, revision, limit)

    monkeypatch.setattr(queries, "changes_since", counted)
    return seen


async def test_an_idle_follower_reads_only_the_mark_and_backs_off_to_its_bound(
    database: Database, reads: list[int]
) -> None:
    writer, reader = await replica(database), await replica(database)
    follower = ReplicaFollower(reader)
    await writer.write(lambda s: queries.create_account(s, UserRow(name="ann")), IDENTITY, "ann")
    await follower.poll()
    await follower.poll()  # the look-back window moved with the newest revision: read once more
    assert "ann" in reader.index.users and follower.pause == replicas.POLL_SECONDS
    read_before = len(reads)
    pauses = []
    for _ in range(4):
        await follower.poll()
        pauses.append(follower.pause)
    assert len(reads) == read_before  # nothing new: no read of the changes
    assert pauses == [0.4, replicas.IDLE_POLL_SECONDS, replicas.IDLE_POLL_SECONDS, replicas.IDLE_POLL_SECONDS]
    await writer.write(lambda s: queries.create_account(s, UserRow(name="bob")), IDENTITY, "bob")
    await follower.poll()
    assert "bob" in reader.index.users and follower.pause == replicas.POLL_SECONDS


async def test_a_change_committed_late_below_the_newest_revision_is_still_applied(database: Database) -> None:
    reader = await replica(database)
    follower = ReplicaFollower(reader)
    await database.run(user_committed_at(10, "late-high"))
    await follower.poll()
    await follower.poll()
    assert "late-high" in reader.index.users and follower.newest == 10
    await follower.poll()  # idle now
    # PostgreSQL can make a transaction's revision visible after a higher one: the mark moves all the same
    await database.run(user_committed_at(7, "late-low"))
    await follower.poll()
    assert "late-low" in reader.index.users


async def test_a_change_made_after_every_change_was_pruned_reaches_the_other_replica(database: Database) -> None:
    writer, reader = await replica(database), await replica(database)
    follower = ReplicaFollower(reader)
    for name in ("ann", "bob", "cat"):
        await writer.write(lambda s, name=name: queries.create_account(s, UserRow(name=name)), IDENTITY, name)
    await follower.poll()
    await follower.poll()
    an_hour_later = datetime.now(UTC) + replicas.KEEP_CHANGES
    await database.run(lambda session: queries.prune_changes(session, an_hour_later))  # as the follower prunes
    await follower.poll()
    # SQLite numbers a row one past the largest kept: had every row gone, this change would reuse revision 1
    await writer.write(lambda s: queries.create_account(s, UserRow(name="dan")), IDENTITY, "dan")
    await follower.poll()
    assert "dan" in reader.index.users


class _Billing:
    """Billing's ledger as the spool calls it: every call's request ids."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.called = asyncio.Event()

    async def RecordRequests(self, request, **_options) -> billing_pb.RecordRequestsResponse:
        self.calls.append([r.request_id for r in request.records])
        self.called.set()
        return billing_pb.RecordRequestsResponse(stored_count=len(request.records))


async def test_an_idle_spool_sleeps_until_a_record_comes_then_sends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing = _Billing()
    spool = Spool(billing, tmp_path, 100)
    flushes = []
    spool_pending = spool.spool_pending

    async def counted() -> None:
        flushes.append(len(spool.pending))
        await spool_pending()

    monkeypatch.setattr(spool, "spool_pending", counted)
    sender = asyncio.create_task(spool.run())
    try:
        await asyncio.sleep(FLUSH_INTERVAL_SECONDS * 5)
        assert flushes == []  # several flush intervals went by with nothing to do: no wake-up
        spool.record(billing_pb.LedgerRecord(request_id="r0"))
        spool.record(billing_pb.LedgerRecord(request_id="r1"))
        await asyncio.wait_for(billing.called.wait(), 60)
        assert billing.calls == [["r0", "r1"]] and flushes[0] == 2  # both flushed together
        sent = len(flushes)
        await asyncio.sleep(FLUSH_INTERVAL_SECONDS * 5)
        assert len(flushes) == sent  # asleep again once everything was sent
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
