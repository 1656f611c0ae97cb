"""Billing keeps a ledger record's times within its own clock (docs/money.md): a Router with a wrong
clock, or a forged record, cannot charge a future month; a record arriving late keeps its past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from helpers.billing import record

from services.billing.servicer import ledger_row

NOW = datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def times(start: datetime | Timestamp | None, end: datetime | Timestamp | None) -> tuple[datetime, datetime]:
    """The stored start and end of a record with these times (None: unset) received at NOW."""
    entry = record("acct")
    for field, value in (("start_time", start), ("end_time", end)):
        entry.ClearField(field)
        if isinstance(value, Timestamp):
            getattr(entry, field).CopyFrom(value)
        elif value is not None:
            getattr(entry, field).FromDatetime(value)
    row = ledger_row(entry, NOW)
    return row["start_time"], row["end_time"]


def test_a_record_from_the_future_is_charged_now_not_in_a_later_month() -> None:
    next_month = NOW + timedelta(days=3)
    assert times(next_month, next_month + SECOND) == (NOW, NOW)
    assert times(NOW + SECOND, None) == (NOW, NOW)


def test_an_end_is_never_before_its_start_nor_after_now() -> None:
    start = NOW - timedelta(minutes=5)
    assert times(start, start - timedelta(days=40)) == (start, start)
    assert times(start, NOW + timedelta(days=40)) == (start, NOW)


def test_a_late_record_keeps_its_past() -> None:
    """A spool held while Billing was down delivers last month's requests now: they stay last month's."""
    start = NOW - timedelta(days=45)
    assert times(start, start + 3 * SECOND) == (start, start + 3 * SECOND)
    assert times(start, None) == (start, start)


def test_an_unset_start_is_now() -> None:
    assert times(None, None) == (NOW, NOW)


def test_a_time_no_datetime_holds_is_read_as_unset_not_an_error() -> None:
    """Beyond year 9999 or before year 1: a forged record is stored, not a failure of its whole batch."""
    start = NOW - timedelta(hours=1)
    beyond, before = Timestamp(seconds=10**12), Timestamp(seconds=-(10**12))
    assert times(beyond, beyond) == (NOW, NOW)
    assert times(start, before) == (start, start)
    assert times(start, Timestamp(seconds=int(start.timestamp()), nanos=-1)) == (start, start)
