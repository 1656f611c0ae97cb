"""Billing's pure pieces and reservation expiry, without a stack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.billing import check_absurd_amounts, check_provisional_records, ledger_database, record, unique
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from switchboard.billing.v1 import billing_service_pb2 as billing_pb

from services.billing import ledger
from services.billing.limits import LimitedAccounts
from services.billing.servicer import ledger_row, parse_period
from services.billing.storage import SETTLED, LedgerEntry
from services.common.costs import InvalidCostAnswer, parse_cost_answer
from services.common.db import Database, padded_chunks
from services.common.errors import ApiError
from services.common.pricing import MAX_NANO_USD


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with ledger_database(f"sqlite:///{tmp_path / 'billing.db'}") as database:
        yield database


def test_month_bounds_cross_the_year() -> None:
    start, end = ledger.month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_batches_are_cut_into_few_statement_shapes() -> None:
    """Any batch is covered in order by slices of at most 512, each padded to a power of two with its last item."""
    shapes = set()
    for length in range(0, 2100, 7):
        items = list(range(length))
        chunks = list(padded_chunks(items))
        assert [i for chunk in chunks for i in dict.fromkeys(chunk)] == items
        shapes.update(len(chunk) for chunk in chunks)
    assert shapes <= {2**k for k in range(10)}


def test_period_parsing() -> None:
    assert parse_period("2026-02")[1:] == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert parse_period("")[0] == datetime.now(UTC).strftime("%Y-%m")
    with pytest.raises(ApiError) as error:
        parse_period("2026-00")
    assert (error.value.http_status, error.value.param) == (400, "period")


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"requests": {}}', b'{"other": []}', b"NaN", b'{"requests": [1,]}']
)
def test_unusable_answers_are_invalid_as_a_whole(body: bytes) -> None:
    with pytest.raises(InvalidCostAnswer):
        parse_cost_answer(body, {"a"})


def test_an_id_answered_twice_is_trusted_neither_time() -> None:
    answer = parse_cost_answer(
        b'{"requests": [{"requestId": "a", "costNanoUsd": 1}, {"requestId": "a", "costNanoUsd": 2},'
        b' {"requestId": "b", "costNanoUsd": 9223372036854775807}]}',
        {"a", "b"},
    )
    assert answer.costs == {"b": 2**63 - 1}
    assert [r.provider_request_id for r in answer.rejected] == ["a"]


def test_a_number_past_a_doubles_range_fails_its_entry_only() -> None:
    answer = parse_cost_answer(
        b'{"requests": [{"requestId": "a", "costNanoUsd": 1e400}, {"requestId": "b", "costNanoUsd": 7},'
        b' {"requestId": "c", "costNanoUsd": 123456789012345678901234567890}]}',
        {"a", "b", "c"},
    )
    assert answer.costs == {"b": 7}
    assert sorted(r.provider_request_id for r in answer.rejected) == ["a", "c"]


async def test_expired_reservations_stop_counting(db: Database) -> None:
    await db.run(lambda s: ledger.update_account(s, "acct", limit_nano_usd=100))
    now = datetime.now(UTC).timestamp()

    def run(request_id: str, estimate: int, at: float):
        return db.run(lambda s: ledger.reserve_spend(s, request_id, "acct", estimate, at, 900))

    assert await run("r1", 80, now) == ledger.Grant(True, 20)
    assert await run("r2", 30, now + 10) == ledger.Grant(False, 20)
    assert await run("r1", 90, now + 20) == ledger.Grant(True, 10)  # a retry replaces its own reservation
    # 15 minutes later the reservation no longer counts, and a pass purges it.
    assert await run("r3", 100, now + 20 + 901) == ledger.Grant(True, 0)
    assert await db.run(lambda s: ledger.purge_expired_reservations(s, now + 20 + 901)) == 1


class RouterSide:
    """One Router's end of WatchLimitedAccounts, driven by hand."""

    def __init__(self, limited: LimitedAccounts) -> None:
        self.acknowledgements: asyncio.Queue[billing_pb.WatchLimitedAccountsRequest] = asyncio.Queue()
        self.updates = limited.watch(self._acknowledge(), None)

    async def _acknowledge(self):
        while True:
            yield await self.acknowledgements.get()

    def ack(self, revision: int) -> None:
        self.acknowledgements.put_nowait(billing_pb.WatchLimitedAccountsRequest(applied_revision=revision))


async def test_a_limit_change_answers_once_every_router_acknowledged_it(db) -> None:
    limited = LimitedAccounts(db, ack_timeout=60)
    fast, slow = RouterSide(limited), RouterSide(limited)
    assert (await anext(fast.updates)).snapshot and (await anext(slow.updates)).snapshot
    change = asyncio.create_task(limited.changed("acme", 5_000))
    update = await anext(fast.updates)
    assert (list(update.limited), await anext(slow.updates)) == (["acme"], update)
    fast.ack(update.revision)
    await asyncio.sleep(0)
    assert not change.done()  # the slow Router has not applied it yet
    slow.ack(update.revision)
    await asyncio.wait_for(change, 10)
    assert "acme" in limited


async def test_a_router_that_does_not_acknowledge_in_time_is_dropped(db) -> None:
    limited = LimitedAccounts(db, ack_timeout=0.05)
    silent = RouterSide(limited)
    await anext(silent.updates)
    await asyncio.wait_for(limited.changed("acme", 5_000), 10)  # answers despite the silence
    assert list((await anext(silent.updates)).limited) == ["acme"]
    with pytest.raises(StopAsyncIteration):  # then the stream ends: that Router reconnects
        await anext(silent.updates)


async def test_a_streams_final_record_completes_its_provisional_one(db) -> None:
    await check_provisional_records(db, "acct")


MONTHS = [datetime(2026, 10, 31, 23, 59, tzinfo=UTC), datetime(2026, 11, 1, 0, 0, tzinfo=UTC)]
AMOUNTS = st.integers(0, 2**62)


@settings(max_examples=60, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(st.tuples(st.sampled_from(MONTHS), AMOUNTS, AMOUNTS, st.booleans()), min_size=1, max_size=12),
    costs=st.lists(st.one_of(st.none(), AMOUNTS), min_size=12, max_size=12),
    split=st.integers(1, 12),
)
def test_month_totals_equal_the_ledger_recounted(db, entries, costs, split) -> None:
    """Whatever is recorded (streams provisional, then final), in whatever batches, and settled
    (twice), each account month's running total is what its rows charge."""
    account, rows, finals = unique("acct"), [], []
    for start, estimate, final_estimate, streamed in entries:
        entry = ledger_row(record(account, estimate=max(1, estimate), start=start), start)
        rows.append(entry | {"provisional": streamed})
        if streamed:
            finals.append(entry | {"estimated_nano_usd": max(1, final_estimate), "provisional": False})
    batches = [rows[:split], rows[split:] + finals[:split], finals[split:]]
    settled = [(row["request_id"], cost) for row, cost in zip(rows, costs, strict=False) if cost is not None]
    with Session(db.engine) as session:
        for batch in batches:
            ledger.record_entries(session, batch)
        ledger.settle_costs(session, settled)
        ledger.settle_costs(session, [(request_id, cost + 1) for request_id, cost in settled])  # charged once
        stored = session.exec(select(LedgerEntry).where(LedgerEntry.account == account)).all()
        for month in MONTHS:
            recounted = sum(
                (r.cost_nano_usd if r.state == SETTLED else r.estimated_nano_usd)
                for r in stored
                if ledger.month_of(r.start_time) == ledger.month_of(month)
            )
            assert ledger.month_spend(session, account, month) == min(recounted, MAX_NANO_USD)


INT64 = st.integers(1, MAX_NANO_USD)


@settings(max_examples=40, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amounts=st.lists(st.tuples(INT64, st.one_of(st.none(), st.integers(0, MAX_NANO_USD))), min_size=1, max_size=8))
async def test_every_sum_is_exact_and_saturated_whatever_the_amounts(db, amounts) -> None:
    await check_absurd_amounts(db, unique("acct"), amounts)
