"""Reconcilers of several Billing replicas claim ledger rows before asking for their cost:
two claims never hold the same request, a claim runs out, a released claim is free again,
and a settled request is never claimed. On SQLite and on PostgreSQL (8 worker threads,
FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.billing import ledger_database, record, unique
from helpers.postgres import postgres_database

from services.billing import ledger
from services.billing.servicer import ledger_row
from services.common.db import Database

ROWS = 30
PAGE = 7
CLAIMERS = 6


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{Path(tmp_path_factory.mktemp('claims')) / 'billing.db'}"
        with ledger_database(url) as database:
            yield database
        return
    with postgres_database() as url, ledger_database(url) as database:
        yield database


async def claim(db: Database, provider: str, now: float, until: float) -> list[str]:
    page = await db.run(lambda s: ledger.claim_page(s, provider, "", PAGE, now, until))
    return [request_id for request_id, _ in page]


async def claim_all(db: Database, provider: str, now: float, until: float) -> list[list[str]]:
    """Claims from several reconcilers at once, then one claimer until nothing is left."""
    pages = list(await asyncio.gather(*(claim(db, provider, now, until) for _ in range(CLAIMERS))))
    while page := await claim(db, provider, now, until):
        pages.append(page)
    return pages


def disjoint_union(pages: list[list[str]]) -> set[str]:
    claimed = [request_id for page in pages for request_id in page]
    assert len(claimed) == len(set(claimed)), "a request was claimed twice"
    return set(claimed)


async def test_concurrent_claims_never_overlap_and_run_out(db: Database) -> None:
    provider, account = unique("prov"), unique("acct")
    rows = [ledger_row(record(account, provider), datetime.now(UTC)) for _ in range(ROWS)]
    assert await db.run(lambda s: ledger.record_entries(s, rows)) == ROWS
    ids = {row["request_id"] for row in rows}
    now = time.time()
    until = now + 60

    assert disjoint_union(await claim_all(db, provider, now, until)) == ids
    assert await claim(db, provider, now + 59, until + 59) == []  # every claim still held

    settled = sorted(ids)[:5]
    assert await db.run(lambda s: ledger.settle_costs(s, [(request_id, 3) for request_id in settled])) == 5
    later = until + 1  # the claims ran out (their reconciler was killed, say)
    reclaimed = disjoint_union(await claim_all(db, provider, later, later + 60))
    assert reclaimed == ids - set(settled)

    await db.run(lambda s: ledger.release_claims(s, sorted(reclaimed), later + 60))
    assert disjoint_union(await claim_all(db, provider, later, later + 60)) == reclaimed
