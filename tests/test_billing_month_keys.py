"""Billing 0011: month totals keyed in UTC. 0005 and 0008 keyed each ledger row's month on
PostgreSQL with to_char(start_time, 'YYYY-MM'), which formats start_time (a timestamptz) in the
session's TimeZone: on a server whose TimeZone is not UTC a request near a month's end or start
was counted in the neighbouring month, while Billing keys months in UTC (ledger.month_of). 0011
recounts them in UTC; on SQLite the keys were UTC already and it changes nothing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from helpers.billing import record, unique
from helpers.migrations import BILLING_MIGRATIONS, execute, upgrade
from helpers.postgres import postgres_database
from sqlmodel.sql.sqltypes import UTCDateTime

from services.billing import ledger
from services.billing.servicer import ledger_row
from services.common.db import Database, make_engine

SATURATED = 2**63 - 1
KIRITIMATI, LOS_ANGELES = "Pacific/Kiritimati", "America/Los_Angeles"  # UTC+14 and UTC-8 in winter
# A ledger row before 0005 (0004's columns), written as Billing wrote them: start_time a UTC instant.
LEDGER_0004 = sa.table(
    "ledger",
    *(sa.column(name) for name in ("request_id", "provider_request_id", "provider", "model", "provider_model")),
    *(sa.column(name) for name in ("task", "caller", "account", "input_tokens", "output_tokens", "images")),
    *(sa.column(name) for name in ("estimated_nano_usd", "cost_nano_usd", "state", "reason", "provisional")),
    sa.column("start_time", UTCDateTime()),
    sa.column("end_time", UTCDateTime()),
)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(KIRITIMATI, marks=pytest.mark.slow),  # PostgreSQL runs as a process of its own
        pytest.param(LOS_ANGELES, marks=pytest.mark.slow),
    ]
)
def server(request, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh database's URL and the time zone its sessions format times in."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}", "UTC"
        return
    with postgres_database() as url:
        execute(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET timezone TO '{request.param}'")  # next sessions
        yield url, request.param


def test_month_totals_are_keyed_in_utc_whatever_the_servers_time_zone(server: tuple[str, str]) -> None:
    url, zone = server
    first, second, third = unique("user"), unique("user"), unique("user")
    upgrade(url, BILLING_MIGRATIONS, "0004")
    if url.startswith("postgresql"):
        assert execute(url, "SHOW TimeZone") == [(zone,)]
        kind = "SELECT data_type FROM information_schema.columns WHERE table_name = 'ledger' AND column_name = :c"
        assert execute(url, kind, [{"c": "start_time"}]) == [("timestamp with time zone",)]
    before = [  # (account, start, estimate, settled cost)
        (first, utc(1, 31, 23, 30), 1_000, None),  # January in UTC and Los Angeles, February in Kiritimati
        (first, utc(2, 1, 3), 500, 70),  # February in UTC and Kiritimati, January in Los Angeles
        (first, utc(3, 31, 20), 40, 30),  # March's only request; April in Kiritimati
        (first, utc(4, 1, 2), 3, None),  # April's only request; March in Los Angeles
        (second, utc(3, 10, 12), 11, None),  # mid-month: the same month everywhere
        (third, utc(5, 31, 22), 13, None),  # June in Kiritimati: a total of a month without requests...
        (third, utc(7, 1, 1), 17, None),  # ... and in Los Angeles
    ]
    _insert_0004(url, before)
    upgrade(url, BILLING_MIGRATIONS, "0010")  # 0005 and 0008 count the totals, in the session's time zone
    # Billing at 0010 records and settles requests, keying their months in UTC.
    late = record(first, estimate=7, start=utc(1, 31, 23, 45))
    # two saturated estimates: a total past 2^63, kept exactly (0005's SUM overflows on SQLite)
    huge = [record(first, estimate=SATURATED, start=utc(2, day, 12)) for day in (15, 16)]
    settled = [(late.request_id, 5), (_request_id(first, 0), 900)]
    db = Database(url)
    try:
        rows = [ledger_row(entry, utc(2, 1, 0)) for entry in (late, *huge)]
        asyncio.run(db.run(lambda s: ledger.record_entries(s, rows)))
        asyncio.run(db.run(lambda s: ledger.settle_costs(s, settled)))
    finally:
        db.close()
    # Stored: the rows from before keyed in the server's zone, later changes in UTC.
    keyed = defaultdict(int)
    for account, start, estimate, cost in before:
        keyed[account, _month(start, zone)] += estimate if cost is None else cost
    keyed[first, "2026-01"] += 5  # late, settled at 5
    keyed[first, "2026-02"] += 2 * SATURATED
    keyed[first, "2026-01"] += 900 - 1_000  # the first request settled: its charge moved in UTC's January
    assert _stored(url) == {key: total for key, total in keyed.items() if total}
    right = _recounted(url)
    assert right == {
        (first, "2026-01"): 905,
        (first, "2026-02"): 70 + 2 * SATURATED,
        (first, "2026-03"): 30,
        (first, "2026-04"): 3,
        (second, "2026-03"): 11,
        (third, "2026-05"): 13,
        (third, "2026-07"): 17,
    }
    assert (_stored(url) == right) == (zone == "UTC")  # Kiritimati and Los Angeles: wrong before 0011

    upgrade(url, BILLING_MIGRATIONS, "head")
    assert _stored(url) == right
    assert _month_spends(url, right) == {key: min(total, SATURATED) for key, total in right.items()}
    written = _versions(url)
    _downgrade(url, "0010")  # 0011 again: nothing changes, nothing is written
    assert execute(url, "SELECT version_num FROM billing_alembic_version") == [("0010",)]
    upgrade(url, BILLING_MIGRATIONS, "head")
    assert _stored(url) == right
    assert _versions(url) == written


def _downgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(BILLING_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(config, revision)


def _request_id(account: str, index: int) -> str:
    return f"{account}-{index}"


def _insert_0004(url: str, rows: list[tuple[str, datetime, int, int | None]]) -> None:
    values = [
        {
            "request_id": _request_id(account, index), "provider_request_id": f"p-{index}", "provider": "prov",
            "model": "org/model", "provider_model": "org/model-prov", "task": "conversational", "caller": account,
            "account": account, "input_tokens": 1, "output_tokens": 1, "images": 0, "estimated_nano_usd": estimate,
            "cost_nano_usd": cost, "state": "pending" if cost is None else "settled", "reason": "",
            "provisional": False, "start_time": start, "end_time": start,
        }
        for index, (account, start, estimate, cost) in enumerate(rows)
    ]  # fmt: skip
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.insert(LEDGER_0004), values)
    finally:
        engine.dispose()


def _month(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m")


def _stored(url: str) -> dict[tuple[str, str], int]:
    """The month totals, exact (carry * 2^62 + low)."""
    rows = execute(url, "SELECT account, month, charged_nano_usd, charged_carry FROM month_totals")
    return {(account, month): carry * ledger.CARRY + low for account, month, low, carry in rows}


def _versions(url: str) -> dict[tuple[str, str], str]:
    """Each month total's row version on PostgreSQL (xmin: the transaction that last wrote it)."""
    if not url.startswith("postgresql"):
        return {}
    return {(a, m): xmin for a, m, xmin in execute(url, "SELECT account, month, xmin::text FROM month_totals")}


def _recounted(url: str) -> dict[tuple[str, str], int]:
    """The totals as Billing keys them (ledger.month_of), recounted from the ledger in Python."""
    totals = defaultdict(int)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            for row in connection.execute(sa.select(ledger.LEDGER)):
                charged = row.cost_nano_usd if row.state == "settled" else row.estimated_nano_usd
                totals[row.account, ledger.month_of(row.start_time)] += charged
    finally:
        engine.dispose()
    return dict(totals)


def _month_spends(url: str, months: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """What Billing reads for each month (ledger.month_spend: spending limits, this month's spending)."""
    db = Database(url)
    try:
        return {
            (account, month): asyncio.run(
                db.run(lambda s, a=account, m=month: ledger.month_spend(s, a, datetime.fromisoformat(f"{m}-15T00:00Z")))
            )
            for account, month in months
        }
    finally:
        db.close()
