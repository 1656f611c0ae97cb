"""The ledger's transactions on PostgreSQL, where Database runs 8 worker
threads: reservations racing a limit still serialise on the account row, and
duplicate records are counted once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from helpers.billing import check_absurd_amounts, check_provisional_records, ledger_database, record, unique
from helpers.postgres import postgres_database

from services.billing import ledger
from services.billing.servicer import ledger_row
from services.common.db import Database

pytestmark = pytest.mark.e2e  # starts a PostgreSQL cluster


@pytest.fixture(scope="module")
def pg_db() -> Iterator[Database]:
    with postgres_database() as url, ledger_database(url) as database:
        yield database


async def test_fifty_concurrent_reservations_on_postgres(pg_db: Database) -> None:
    account = unique("pg-acct")
    await pg_db.run(lambda s: ledger.update_account(s, account, included_credits_nano_usd=500, limit_nano_usd=10_000))
    now = time.time()

    def reserve(request_id: str):
        return pg_db.run(lambda s: ledger.reserve_spend(s, request_id, account, 1_000, now, 900))

    grants = await asyncio.gather(*(reserve(unique("req")) for _ in range(50)))
    assert sum(g.granted for g in grants) == 10  # 10 * 1,000 <= 10,500 < 11 * 1,000
    assert all(g.remaining_nano_usd >= 0 for g in grants)


async def test_duplicate_records_are_stored_once_on_postgres(pg_db: Database) -> None:
    account = unique("pg-acct")
    now = datetime.now(UTC)
    rows = [ledger_row(record(account), now) for _ in range(20)]
    assert await pg_db.run(lambda s: ledger.record_entries(s, rows + rows[:5])) == 20
    assert await pg_db.run(lambda s: ledger.record_entries(s, rows)) == 0
    costs = [(row["request_id"], 7) for row in rows]
    assert await pg_db.run(lambda s: ledger.settle_costs(s, costs)) == 20
    assert await pg_db.run(lambda s: ledger.settle_costs(s, costs)) == 0


async def test_a_streams_final_record_completes_its_provisional_one_on_postgres(pg_db: Database) -> None:
    await check_provisional_records(pg_db, unique("pg-acct"))


@pytest.mark.parametrize(
    "amounts",
    [
        [(2**63 - 1, None), (2**63 - 1, None)],  # two saturated estimates: SUM(bigint) past int64
        [(2**62, 2**62), (2**62, None), (2**62 + 1, 3)],
        [(1, 2**63 - 1), (2**63 - 1, 2**63 - 1), (5, None)],
    ],
)
async def test_every_sum_is_exact_and_saturated_on_postgres(pg_db: Database, amounts) -> None:
    await check_absurd_amounts(pg_db, unique("pg-acct"), amounts)
