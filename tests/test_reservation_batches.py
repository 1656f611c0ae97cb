"""A batch of reservations is decided in order, as one reservation at a time would be: a retry
replaces its own earlier reservation, a refused retry keeps it, and an account without a limit is
granted whatever it asks. Then the batcher: concurrent reservations through Reservations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.billing import ledger_database

from services.billing import ledger
from services.billing.reservations import Reservations
from services.common.db import Database

Ask = ledger.Ask


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with ledger_database(f"sqlite:///{tmp_path / 'billing.db'}") as database:
        yield database


async def test_one_batch_decides_in_order_as_single_reservations_would(db: Database) -> None:
    await db.run(lambda s: ledger.update_account(s, "acct", limit_nano_usd=100))
    asks = [Ask("r1", "acct", 80), Ask("r2", "acct", 30), Ask("r1", "acct", 90), Ask("r3", "acct", 20),
            Ask("r1", "acct", 200), Ask("free", "other", 10**15)]  # fmt: skip
    now = time.time()
    grants = await db.run(lambda s: ledger.reserve_batch(s, asks, now, 900))
    assert grants == [
        ledger.Grant(True, 20),
        ledger.Grant(False, 20),
        ledger.Grant(True, 10),  # r1's 80 replaced by 90
        ledger.Grant(False, 10),
        ledger.Grant(False, 100),  # refused: r1 keeps its 90
        ledger.Grant(True, -1),
    ]
    assert await db.run(lambda s: ledger.reserved_spend(s, "acct", now)) == 90
    again = await db.run(lambda s: ledger.reserve_batch(s, [Ask("r1", "acct", 100), Ask("r4", "acct", 1)], now, 900))
    assert again == [ledger.Grant(True, 0), ledger.Grant(False, 0)]


async def test_concurrent_reservations_through_the_batcher_never_pass_the_budget(db: Database) -> None:
    await db.run(lambda s: ledger.update_account(s, "acct", included_credits_nano_usd=2_000, limit_nano_usd=8_500))
    reservations = Reservations(db, ttl_seconds=900)
    calls = [reservations.reserve([Ask(f"r{i}-{j}", "acct", 1_000) for j in range(i % 3 + 1)]) for i in range(30)]
    grants = [grant for answer in await asyncio.gather(*calls) for grant in answer]
    assert len(grants) == sum(i % 3 + 1 for i in range(30))
    assert sum(g.granted for g in grants) == 10  # 10 * 1,000 <= 10,500 < 11 * 1,000
    assert await reservations.reserve([]) == []
    assert await db.run(lambda s: ledger.reserved_spend(s, "acct", time.time())) == 10_000
