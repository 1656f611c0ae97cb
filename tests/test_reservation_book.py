"""The in-memory book of reservations (services/billing/book.py) and its leases: two Billing
"replicas" (two Reservations, two holders) on one database, driven by hypothesis through reserves,
retries, records (through either replica), releases, rounds, limit changes, crashes and the clock.

What must hold: no grant ever takes an account's holds (live grants of both replicas, in memory
or as rows) plus what it recorded over its budget; the database never counts less than that
(whatever a replica decides in memory is covered by its lease); and once everything is recorded
or released and the slices went idle, nothing is left held: the whole rest of the budget can be
reserved again, exactly.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.billing import ledger_database, unique
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import func, select

from services.billing import ledger
from services.billing.book import CHECK_SECONDS, IDLE_SECONDS
from services.billing.reservations import Reservations
from services.billing.storage import Reservation
from services.common.db import Database

TTL = 900.0
LEASE = 2.0
ACCOUNTS = ("alpha", "beta")
BUDGETS = (0, 30_000, 300_000, 3_000_000)  # 0: no limit
ESTIMATES = (1, 70, 900)
STEPS = (0.1, 1.0, LEASE + 0.5, IDLE_SECONDS + LEASE + 1)


class Clock:
    """Wall-clock time as the replicas see it; the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def replicas(db: Database, clock: Clock) -> list[Reservations]:
    # Rounds run when the test says (the background sync never comes round within a test).
    return [Reservations(db, TTL, clock=clock, lease_seconds=LEASE, sync_seconds=3600) for _ in range(2)]


class BookMachine(RuleBasedStateMachine):
    """The model: each live hold (request id -> account, estimate, its replica, its expiry),
    what each account recorded, and each account's budget."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.replicas = replicas(db, self.clock)
        self.ids = (unique(f"req-{n}") for n in itertools.count())
        self.accounts = [unique(name) for name in ACCOUNTS]  # one database for every run
        self.budgets = dict.fromkeys(self.accounts, 0)
        self.holds: dict[str, tuple[str, int, int, float]] = {}
        self.recorded = dict.fromkeys(self.accounts, 0)
        self.crashed = False

    def run(self, work):
        return self.loop.run_until_complete(work)

    def held(self, account: str) -> int:
        live = sum(e for a, e, _, expires in self.holds.values() if a == account and expires > self.clock.now)
        return live + self.recorded[account]

    # --- rules -----------------------------------------------------------------------------

    @rule(account=st.sampled_from(range(2)), budget=st.sampled_from(BUDGETS), via=st.sampled_from(range(2)))
    def change_limit(self, account: int, budget: int, via: int) -> None:
        name, other = self.accounts[account], self.replicas[1 - via]

        async def change() -> None:
            await self.db.run(lambda s: ledger.update_account(s, name, limit_nano_usd=budget))
            await other.round(everyone=True)  # the other replica's next sync

        self.run(self.replicas[via].limit_changed(name, change))
        self.budgets[name] = budget

    @rule(
        account=st.sampled_from(range(2)),
        via=st.sampled_from(range(2)),
        estimates=st.lists(st.sampled_from(ESTIMATES), min_size=1, max_size=6),
    )
    def reserve(self, account: int, via: int, estimates: list[int]) -> None:
        name = self.accounts[account]
        asks = [ledger.Ask(next(self.ids), name, estimate) for estimate in estimates]
        grants = self.run(self.replicas[via].reserve(asks))
        assert len(grants) == len(asks)
        for ask, grant in zip(asks, grants, strict=True):
            if grant.granted:
                self.holds[ask.request_id] = (name, ask.estimate, via, self.clock.now + TTL)
        self.check_granted(name, grants)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), estimate=st.sampled_from(ESTIMATES))
    def retry(self, data: st.DataObject, estimate: int) -> None:
        """The same request id asked again (of the replica that granted it): a grant replaces the hold."""
        request_id = data.draw(st.sampled_from(sorted(self.holds)))
        name, _, via, _ = self.holds[request_id]
        (grant,) = self.run(self.replicas[via].reserve([ledger.Ask(request_id, name, estimate)]))
        if grant.granted:
            self.holds[request_id] = (name, estimate, via, self.clock.now + TTL)
        self.check_granted(name, [grant])

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), via=st.sampled_from(range(2)))
    def record(self, data: st.DataObject, via: int) -> None:
        """Served: recorded through either replica (as RecordRequests does: through the one that
        granted it, its slice consumes the grant)."""
        request_id = data.draw(st.sampled_from(sorted(self.holds)))
        name, estimate, _, _ = self.holds.pop(request_id)
        row = {"request_id": request_id, "provider_request_id": "p-" + request_id, "provider": "prov",
               "model": "m", "provider_model": "m", "task": "conversational", "caller": name, "account": name,
               "start_time": datetime.fromtimestamp(self.clock.now, UTC), "end_time": datetime.fromtimestamp(
                   self.clock.now, UTC), "input_tokens": 1, "output_tokens": 1, "images": 0, "unit": "", "units": 0,
               "estimated_nano_usd": estimate, "cost_nano_usd": None, "state": "pending", "reason": "",
               "provisional": False, "first_token_ms": 0}  # fmt: skip
        self.run(self.db.run(lambda s: ledger.record_entries(s, [row])))
        self.replicas[via].consume([request_id])
        self.recorded[name] += estimate

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """No provider answered: released (as ReleaseReservation does) at the replica that granted it."""
        request_id = data.draw(st.sampled_from(sorted(self.holds)))
        _, _, via, _ = self.holds.pop(request_id)
        self.replicas[via].forget([request_id])
        self.run(self.db.run(lambda s: ledger.release_reservation(s, request_id)))

    @rule(via=st.sampled_from(range(2)))
    def sync(self, via: int) -> None:
        self.run(self.replicas[via].round(everyone=True))

    @rule(seconds=st.sampled_from(STEPS))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(via=st.sampled_from(range(2)))
    def crash(self, via: int) -> None:
        """A replica dies without handing anything back and starts again (a new holder): what it
        granted stays counted (its leases) until it would have expired."""
        for task in (self.replicas[via]._writer, self.replicas[via]._syncer):
            if task is not None:
                task.cancel()
        self.replicas[via] = replicas(self.db, self.clock)[via]
        self.crashed = True

    # --- what must hold --------------------------------------------------------------------

    def check_granted(self, name: str, grants: list[ledger.Grant]) -> None:
        assert all(g.remaining_nano_usd >= 0 for g in grants if g.granted and self.budgets[name])
        if self.budgets[name] and any(g.granted for g in grants):
            assert self.held(name) <= self.budgets[name], "granted over the budget"

    @invariant()
    def the_database_counts_at_least_what_is_held(self) -> None:
        for name in self.accounts:
            assert self.counted(name, spent=True) >= self.held(name)

    def counted(self, name: str, spent: bool) -> int:
        """What the database counts against the account: reserved and leased (and what it spent)."""
        now = self.clock.now
        moment = datetime.fromtimestamp(now, UTC)
        reserved = self.db.read(lambda s: ledger.reserved_spend(s, name, now))
        return reserved + (self.db.read(lambda s: ledger.month_spend(s, name, moment)) if spent else 0)

    def teardown(self) -> None:
        try:
            self.nothing_is_lost()
        finally:
            for replica in self.replicas:
                self.run(replica.close())
            self.loop.close()

    def nothing_is_lost(self) -> None:
        """Release what is held; once the slices went idle, the rest of each budget is free, exactly."""
        for request_id, (_, _, via, _) in list(self.holds.items()):
            self.replicas[via].forget([request_id])
            self.run(self.db.run(lambda s, r=request_id: ledger.release_reservation(s, r)))
        self.holds.clear()
        if self.crashed:  # a dead replica's leases count until its grants would have expired
            self.clock.now += TTL + LEASE
        # Idle, and late enough that grants recorded through the other replica are looked up.
        self.clock.now += max(IDLE_SECONDS + LEASE, CHECK_SECONDS) + 1
        for _ in range(2):  # idle: the free part goes back; then the empty lease goes
            for replica in self.replicas:
                self.run(replica.round(everyone=True))
        for name in self.accounts:
            assert self.counted(name, spent=False) == 0
            rest = self.budgets[name] - self.recorded[name]
            if self.budgets[name] and rest > 0:
                ask = ledger.Ask(next(self.ids), name, rest)
                assert self.run(self.replicas[0].reserve([ask])) == [ledger.Grant(True, 0)]
                over = ledger.Ask(next(self.ids), name, 1)
                assert self.run(self.replicas[1].reserve([over])) == [ledger.Grant(False, 0)]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with ledger_database(f"sqlite:///{tmp_path / 'billing.db'}") as database:
        yield database


BOOK_RUNS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_two_replicas_never_grant_over_a_budget_and_lose_nothing(db: Database) -> None:
    run_state_machine_as_test(lambda: BookMachine(db), settings=BOOK_RUNS)


def rows(db: Database, account: str) -> int:
    """The account's reservation rows (live or not)."""
    query = select(func.count()).select_from(Reservation).where(Reservation.account == account)
    return db.read(lambda s: s.connection().execute(query).scalar_one())


async def test_a_large_budget_is_granted_from_memory_once_leased(db: Database) -> None:
    """A few transactions lease a slice; then asks need none; a lower limit revokes the slice."""
    await db.run(lambda s: ledger.update_account(s, "big", limit_nano_usd=10**12))
    reservations = Reservations(db, TTL, sync_seconds=3600)
    try:
        for call in range(5):
            assert all(g.granted for g in await reservations.reserve([ledger.Ask(f"w{call}-{i}", "big", 1_000)
                                                                     for i in range(10)]))  # fmt: skip
        warm = rows(db, "big")
        for call in range(10):
            grants = await reservations.reserve([ledger.Ask(f"r{call}-{i}", "big", 1_000) for i in range(10)])
            assert all(g.granted and g.remaining_nano_usd > 0 for g in grants)
        assert rows(db, "big") == warm  # decided from the slice
        assert reservations.book.slices["big"].granted == 150_000 - warm * 1_000
        await db.run(lambda s: ledger.update_account(s, "big", limit_nano_usd=100_000))
        await reservations.limit_changed("big", lambda: asyncio.sleep(0))
        assert "big" not in reservations.book.slices  # handed back: its grants are rows now
        now = reservations.clock()
        assert await db.run(lambda s: ledger.reserved_spend(s, "big", now)) == 150_000
        assert rows(db, "big") == 150
        assert await reservations.reserve([ledger.Ask("late", "big", 1)]) == [ledger.Grant(False, 0)]
    finally:
        await reservations.close()


async def test_a_retry_granted_from_the_slice_stays_counted_when_the_slice_goes_back(db: Database) -> None:
    """A request id reserved in the database (a row), asked again and granted from the slice: when
    the slice is handed back (the limit went), the larger of the two stays counted."""
    await db.run(lambda s: ledger.update_account(s, "retried", limit_nano_usd=30_000))
    reservations = Reservations(db, TTL, sync_seconds=3600)
    try:
        assert (await reservations.reserve([ledger.Ask("again", "retried", 10)]))[0].granted  # a row, and a slice
        assert (await reservations.reserve([ledger.Ask("again", "retried", 70)]))[0].granted  # from the slice
        assert reservations.book.slices["retried"].granted == 70

        async def unlimited() -> None:
            await db.run(lambda s: ledger.update_account(s, "retried", limit_nano_usd=0))

        await reservations.limit_changed("retried", unlimited)
        assert "retried" not in reservations.book.slices
        now = reservations.clock()
        assert await db.run(lambda s: ledger.reserved_spend(s, "retried", now)) == 70
    finally:
        await reservations.close()
