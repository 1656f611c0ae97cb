"""The ledger queries behind the console, on SQLite and PostgreSQL alike: the daily usage
series groups by the UTC day of a request's start (whatever the session's time zone),
each request in exactly one of settled / pending / unpriced; reconciliation counts per
provider. And the series message: every day present, oldest first, sums exact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers.billing import ledger_database, record, unique
from helpers.postgres import postgres_database
from sqlalchemy import text

from services.billing import ledger
from services.billing.console import DAY_SLICES, PERIOD_SLICES, daily_usage_message, series_bounds
from services.billing.servicer import ledger_row
from services.common.db import Database

DAY = date(2026, 3, 14)
LATE = datetime(2026, 3, 14, 23, 59, 59, 999_000, tzinfo=UTC)  # the last moment of DAY
NEXT = datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC)  # the first of the next day


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("ledger") / "billing.db"
        with ledger_database(f"sqlite:///{path}") as database:
            yield database
        return
    with postgres_database() as url, ledger_database(url) as database:
        yield database


async def store(db: Database, *records) -> None:
    now = datetime.now(UTC)
    rows = [ledger_row(r, now) for r in records]
    assert await db.run(lambda s: ledger.record_entries(s, rows)) == len(rows)


async def test_requests_are_summed_per_utc_day_model_and_provider_in_exactly_one_state(db: Database) -> None:
    account, p1, p2 = unique("acct"), unique("p1"), unique("p2")
    settled = record(account, p1, estimate=100, model="m/a", start=LATE)
    waiting = record(account, p1, estimate=200, model="m/a", start=LATE)
    unpriced = record(account, p2, provider_request_id="", estimate=300, model="m/b", start=LATE)
    next_day = record(account, p2, estimate=400, model="m/a", start=NEXT)
    too_late = record(account, p2, estimate=500, model="m/a", start=NEXT + timedelta(days=1))
    elsewhere = record(unique("other"), p1, estimate=600, model="m/a", start=LATE)
    await store(db, settled, waiting, unpriced, next_day, too_late, elsewhere)
    assert await db.run(lambda s: ledger.settle_costs(s, [(settled.request_id, 7_000)])) == 1

    start, end = datetime(2026, 3, 14, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC)
    rows = await db.run(lambda s: ledger.daily_usage(s, account, start, end))
    assert sorted(rows, key=lambda r: (r.day, r.model, r.provider)) == [
        ledger.DayUsage("2026-03-14", "m/a", p1, (7_000, 200, 0, 2)),
        ledger.DayUsage("2026-03-14", "m/b", p2, (0, 0, 300, 1)),
        ledger.DayUsage("2026-03-15", "m/a", p2, (0, 400, 0, 1)),
    ]
    counts = await db.run(ledger.reconciliation_counts)
    assert (counts[p1], counts[p2]) == ((2, 0), (2, 1))  # elsewhere's request waits too


async def test_the_day_is_the_utc_day_whatever_the_sessions_time_zone(db: Database) -> None:
    account = unique("tz")
    await store(db, record(account, unique("p"), estimate=1, start=LATE))
    zoned = db.engine.dialect.name == "postgresql"  # SQLite sessions have no time zone

    def in_tokyo(session):
        if zoned:
            session.execute(text("SET TIME ZONE 'Asia/Tokyo'"))  # 08:59 on the 15th there
        try:
            return ledger.daily_usage(session, account, LATE - timedelta(hours=1), NEXT)
        finally:
            if zoned:
                session.execute(text("SET TIME ZONE 'UTC'"))

    assert [r.day for r in await db.run(in_tokyo)] == ["2026-03-14"]


def test_the_series_message_has_every_day_oldest_first_with_exact_sums() -> None:
    rows = [
        ledger.DayUsage("2026-03-14", "m/a", "p1", (7_000, 200, 0, 2)),
        ledger.DayUsage("2026-03-14", "m/b", "p2", (0, 0, 300, 1)),
        ledger.DayUsage("2026-03-16", "m/a", "p2", (2**63 - 1, 400, 0, 1)),
    ]
    answer = daily_usage_message("acct", DAY - timedelta(days=1), 4, rows)
    assert (answer.start_date, answer.end_date) == ("2026-03-13", "2026-03-16")
    assert [d.date for d in answer.days] == ["2026-03-13", "2026-03-14", "2026-03-15", "2026-03-16"]
    sums = [(d.total.settled_nano_usd, d.total.pending_nano_usd, d.total.unpriced_nano_usd, d.total.requests)
            for d in answer.days]  # fmt: skip
    assert sums == [(0, 0, 0, 0), (7_000, 200, 300, 3), (0, 0, 0, 0), (2**63 - 1, 400, 0, 1)]
    total = answer.total
    assert (total.settled_nano_usd, total.pending_nano_usd, total.unpriced_nano_usd, total.requests) == (
        2**63 - 1,  # saturates, never wraps
        600,
        300,
        4,
    )
    assert [(s.model, s.requests) for s in answer.by_model] == [("m/a", 3), ("m/b", 1)]
    assert [(s.provider, s.settled_nano_usd) for s in answer.by_provider] == [("p1", 7_000), ("p2", 2**63 - 1)]
    assert [(s.model, s.provider) for s in answer.days[1].by_model] == [("m/a", ""), ("m/b", "")]
    assert answer.days[0].by_model == [] and answer.days[2].by_provider == []


def amounts(usage_slice) -> tuple[int, int, int, int]:
    return (
        usage_slice.settled_nano_usd,
        usage_slice.pending_nano_usd,
        usage_slice.unpriced_nano_usd,
        usage_slice.requests,
    )


def test_breakdowns_list_the_largest_models_and_providers_and_sum_the_rest() -> None:
    """DAY_SLICES + 5 models on one day and PERIOD_SLICES + 5 providers over two: the largest
    are listed by key, the others summed, and listed plus others make the total."""
    rows = [ledger.DayUsage("2026-03-14", f"m/{n:03d}", "p", (n, 0, 0, 1)) for n in range(DAY_SLICES + 5)]
    rows += [ledger.DayUsage("2026-03-15", "m/x", f"p{n:03d}", (0, n, 1, 2)) for n in range(PERIOD_SLICES + 5)]
    answer = daily_usage_message("acct", DAY, 2, rows)
    first = answer.days[0]
    assert [s.model for s in first.by_model] == [f"m/{n:03d}" for n in range(5, DAY_SLICES + 5)]
    assert amounts(first.other_models) == (sum(range(5)), 0, 0, 5)
    assert amounts(first.other_providers) == (0, 0, 0, 0) and [s.provider for s in first.by_provider] == ["p"]
    second, rest = answer.days[1], PERIOD_SLICES + 5 - DAY_SLICES  # the day's providers not listed
    assert [s.provider for s in second.by_provider] == [f"p{n:03d}" for n in range(rest, PERIOD_SLICES + 5)]
    assert amounts(second.other_providers) == (0, sum(range(rest)), rest, 2 * rest)
    # the period lists up to PERIOD_SLICES: the 15 day-one models, and the largest providers
    assert len(answer.by_model) == DAY_SLICES + 6 and amounts(answer.other_models) == (0, 0, 0, 0)
    assert len(answer.by_provider) == PERIOD_SLICES
    for message in (first, second, answer):
        listed = [amounts(s) for s in message.by_model] + [amounts(message.other_models)]
        assert tuple(map(sum, zip(*listed, strict=True))) == amounts(message.total)
        listed = [amounts(s) for s in message.by_provider] + [amounts(message.other_providers)]
        assert tuple(map(sum, zip(*listed, strict=True))) == amounts(message.total)


def test_the_series_ends_with_todays_utc_day_whatever_the_clocks_zone() -> None:
    tokyo_morning = datetime(2026, 3, 15, 8, 0, tzinfo=timezone(timedelta(hours=9)))  # 23:00 UTC on the 14th
    assert series_bounds(1, tokyo_morning) == (DAY, datetime(2026, 3, 14, tzinfo=UTC), NEXT)
    first, start, end = series_bounds(90, LATE)
    assert (first, start, end) == (DAY - timedelta(days=89), datetime(2025, 12, 15, tzinfo=UTC), NEXT)
