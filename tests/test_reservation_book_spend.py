"""The book's grants once recorded (services/billing/book.py): a recorded grant's estimate is in
the month total, so it leaves its slice for good (amount and granted alike) and spending from
memory stays bounded by the budget; an account pushed over its budget by a cost above the
estimate gets nothing more from memory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.billing import ledger_database, record, unique
from sqlalchemy import select

from services.billing import ledger
from services.billing.reservations import Reservations
from services.billing.servicer import ledger_row
from services.billing.storage import Lease
from services.common.db import Database

TTL = 900.0
LIMIT, ESTIMATE, ASKS = 1_000, 10, 400


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with ledger_database(f"sqlite:///{tmp_path / 'billing.db'}") as database:
        yield database


async def record_through(reservations: Reservations, db: Database, account: str, request_id: str, estimate: int):
    """As RecordRequests does: the entry is stored, then its grant is consumed by the book."""
    entry = record(account, estimate=estimate)
    entry.request_id = request_id
    await db.run(lambda s: ledger.record_entries(s, [ledger_row(entry, datetime.now(UTC))]))
    reservations.consume([request_id])


def counted(db: Database, account: str) -> int:
    """What the database counts against the account: spent, reserved and leased."""
    now = datetime.now(UTC)
    reserved = db.read(lambda s: ledger.reserved_spend(s, account, now.timestamp()))
    return reserved + db.read(lambda s: ledger.month_spend(s, account, now))


@pytest.mark.parametrize("rounds", ["none", "awaited", "concurrent"])
async def test_recorded_grants_never_free_their_money_again(db: Database, rounds: str) -> None:
    """Grant, record, forget in a loop (with no rounds, with a round every 20 grants, with rounds
    running while grants are recorded): exactly the limit is granted, then every ask is refused."""
    account = unique("spender")
    await db.run(lambda s: ledger.update_account(s, account, limit_nano_usd=LIMIT))
    reservations = Reservations(db, TTL, sync_seconds=3600)
    running: list[asyncio.Task] = []
    outcomes = []
    try:
        for number in range(ASKS):
            request_id = unique(f"ask-{number}")
            (grant,) = await reservations.reserve([ledger.Ask(request_id, account, ESTIMATE)])
            outcomes.append(grant.granted)
            if grant.granted:
                await record_through(reservations, db, account, request_id, ESTIMATE)
            if rounds != "none" and number % 20 == 19:
                round_ = asyncio.ensure_future(reservations.round(everyone=True))
                if rounds == "awaited":
                    await round_
                else:
                    running.append(round_)
                    await asyncio.sleep(0)  # the round is in flight while the next grants are recorded
        await asyncio.gather(*running)
        await reservations.round(everyone=True)
        granted = LIMIT // ESTIMATE
        assert outcomes == [True] * granted + [False] * (ASKS - granted)
        assert counted(db, account) <= LIMIT  # the lease shrank with what was recorded
    finally:
        await reservations.close()


def leased(db: Database, reservations: Reservations, account: str) -> int:
    """The amount of the process's lease row on the account."""
    query = select(Lease.amount_nano_usd).where(Lease.account == account, Lease.holder == reservations.holder)
    return db.read(lambda s: s.connection().execute(query).scalar_one())


class Gated:
    """The database, with its transactions held until the test opens the gate (a round in flight)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.gate = asyncio.Event()

    async def run(self, work):
        await self.gate.wait()
        return await self.db.run(work)


async def test_a_grant_recorded_while_a_round_runs_is_not_put_back_by_it(db: Database) -> None:
    """Recorded (stored, then consumed) while a round that still counts it is in flight: the
    renewed slice leaves it out, so the budget is granted exactly once."""
    account = unique("meanwhile")
    await db.run(lambda s: ledger.update_account(s, account, limit_nano_usd=LIMIT))
    reservations = Reservations(db, TTL, sync_seconds=3600)
    try:
        first = [ledger.Ask(unique("first"), account, ESTIMATE)]
        assert (await reservations.reserve(first))[0].granted  # a row; the round leases a slice
        asks = [ledger.Ask(unique("slice"), account, ESTIMATE) for _ in range(5)]
        assert all(g.granted for g in await reservations.reserve(asks))  # from memory
        for ask in first + asks:
            entry = record(account, estimate=ESTIMATE)
            entry.request_id = ask.request_id
            await db.run(lambda s, e=entry: ledger.record_entries(s, [ledger_row(e, datetime.now(UTC))]))
        held, gated = reservations.book.slices[account], Gated(db)
        reservations.db = gated
        in_flight = asyncio.ensure_future(reservations.round(everyone=True))
        for _ in range(3):
            await asyncio.sleep(0)
        assert held.round is not None  # the round counts the grants (its transaction waits at the gate)
        reservations.consume([ask.request_id for ask in first + asks])
        gated.gate.set()
        await in_flight
        reservations.db = db
        # The row still counts them until the next round.
        assert held.amount == leased(db, reservations, account) - ESTIMATE * len(asks)
        outcomes = [(await reservations.reserve([ledger.Ask(unique("more"), account, ESTIMATE)]))[0].granted
                    for _ in range(LIMIT // ESTIMATE)]  # fmt: skip
        assert outcomes.count(True) == LIMIT // ESTIMATE - len(first + asks)
    finally:
        await reservations.close()


@pytest.mark.parametrize("ended_by", ["release", "record"])
async def test_a_request_ended_while_its_ask_waits_for_a_round_leaves_no_reservation(
    db: Database, ended_by: str
) -> None:
    """A busy Billing: the caller gave up waiting for its ask's round (the Router's deadline) and the
    request was released (not served) or recorded (served unchecked) before that round decided the
    ask. The round grants it, and then its row goes: nothing stays reserved for the reservation TTL."""
    account, request_id = unique("late"), unique("late-ask")
    await db.run(lambda s: ledger.update_account(s, account, limit_nano_usd=LIMIT))
    reservations, gated = Reservations(db, TTL, sync_seconds=3600), Gated(db)
    reservations.db = gated
    try:
        asking = asyncio.ensure_future(reservations.reserve([ledger.Ask(request_id, account, ESTIMATE)]))
        for _ in range(3):
            await asyncio.sleep(0)
        asking.cancel()  # the round goes on: its transaction waits at the gate
        reservations.ending([request_id])  # as ReleaseReservation and RecordRequests do, before the database
        if ended_by == "release":
            reservations.forget([request_id])
            await db.run(lambda s: ledger.release_reservation(s, request_id))
        else:
            await record_through(reservations, db, account, request_id, ESTIMATE)
        gated.gate.set()
        await reservations.round()
        rows = db.read(lambda s: s.connection().execute(select(ledger.RESERVATIONS.c.request_id)).scalars().all())
        assert request_id not in rows
        spent = db.read(lambda s: ledger.month_spend(s, account, datetime.now(UTC)))
        assert spent == (ESTIMATE if ended_by == "record" else 0)
    finally:
        reservations.db = db
        await reservations.close()


async def test_an_account_over_its_budget_gets_nothing_more_from_memory(db: Database) -> None:
    """A recorded cost above its estimate pushes the account over its budget: the next round keeps
    the slice's holds counted but grants nothing more from it (nor does any later round)."""
    account = unique("overspent")
    await db.run(lambda s: ledger.update_account(s, account, limit_nano_usd=100_000))
    reservations = Reservations(db, TTL, sync_seconds=3600)
    try:
        assert (await reservations.reserve([ledger.Ask(unique("first"), account, ESTIMATE)]))[0].granted
        held = reservations.book.slices[account]
        assert held.free > 0  # leased: the next grant comes from memory
        pushed, kept = unique("pushed"), unique("kept")
        grants = await reservations.reserve(
            [ledger.Ask(pushed, account, ESTIMATE), ledger.Ask(kept, account, ESTIMATE)]
        )
        assert [g.granted for g in grants] == [True, True]
        await record_through(reservations, db, account, pushed, 200_000)  # costs far more than its estimate
        await reservations.round(everyone=True)
        over = reservations.book.slices[account]
        assert over.room < 0 and over.valid_until <= reservations.clock()  # stale at once: the database decides
        await reservations.round(everyone=True)  # over the budget: it keeps nothing to grant meanwhile
        assert leased(db, reservations, account) == ESTIMATE  # `kept`, and no free part any more
        for _ in range(2):
            (grant,) = await reservations.reserve([ledger.Ask(unique("more"), account, 1)])
            assert not grant.granted
            await reservations.round(everyone=True)
        assert counted(db, account) >= 200_000 + ESTIMATE * 2  # the first (a row) and `kept` stay counted
    finally:
        await reservations.close()


async def test_concurrent_limit_changes_keep_the_account_frozen_until_the_last_ends(db: Database) -> None:
    """Two limit changes at once: the first to finish leaves the account frozen for the other."""
    account = unique("changing")
    await db.run(lambda s: ledger.update_account(s, account, limit_nano_usd=LIMIT))
    reservations = Reservations(db, TTL, sync_seconds=3600)
    gates = [asyncio.Event(), asyncio.Event()]
    try:
        changes = [asyncio.ensure_future(reservations.limit_changed(account, gate.wait)) for gate in gates]
        await asyncio.sleep(0)
        assert reservations.book.frozen[account] == 2
        gates[0].set()
        await changes[0]
        assert account in reservations.book.frozen  # the second change still runs
        gates[1].set()
        await changes[1]
        assert account not in reservations.book.frozen
    finally:
        await reservations.close()
