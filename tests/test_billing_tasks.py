"""Billing per task: each record's unit and units stored, records without an estimate charged
per unit, and usage reports grouped by task (requests, units with the unit's name, cost)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from helpers.billing import ledger_database, record, unique
from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from services.billing import ledger
from services.billing.servicer import ledger_row, usage_message
from services.billing.units import DEFAULT_UNIT_NANO_USD, default_estimate, record_units
from services.common.db import Database
from services.common.pricing import MAX_NANO_USD
from services.common.tasks import SERVED_TASKS

TASKS = list(SERVED_TASKS)


def task_record(account: str, task: str, units: int, estimate: int) -> billing_pb.LedgerRecord:
    entry = record(account, estimate=estimate)
    entry.task, entry.unit, entry.units = task, SERVED_TASKS[task].unit, units
    return entry


served_records = st.lists(
    st.tuples(st.sampled_from(TASKS), st.integers(0, 10**6), st.integers(0, 10**9)), min_size=1, max_size=30
)


@pytest.fixture(scope="module")
def tasks_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One migrated ledger for the module's examples (each example's records are its own account's)."""
    with ledger_database(f"sqlite:///{tmp_path_factory.mktemp('tasks') / 'billing.db'}") as db:
        yield db


@settings(max_examples=30)
@given(served=served_records)
def test_usage_by_task_adds_up_the_records_of_each_task(tasks_db: Database, served) -> None:
    """Per task: as many requests as records, their units summed under the task's unit, and the
    charge of each (its estimate, or its units at the unit's default price when it had none)."""
    account, now = unique("user"), datetime.now(UTC)
    records = [task_record(account, task, units, estimate) for task, units, estimate in served]
    rows = [ledger_row(r, now) for r in records]
    asyncio.run(tasks_db.run(lambda s: ledger.record_entries(s, rows)))
    start, end = ledger.month_bounds(now)
    report = asyncio.run(tasks_db.run(lambda s: ledger.usage_report(s, account, start, end)))
    message = usage_message(account, "2026-12", report)
    lines = {line.task: line for line in message.by_task}
    expected_requests = Counter(task for task, _, _ in served)
    assert set(lines) == set(expected_requests)
    for task, line in lines.items():
        mine = [(u, e) for t, u, e in served if t == task]
        assert line.requests == expected_requests[task]
        assert line.unit == SERVED_TASKS[task].unit
        assert line.units == sum(u for u, _ in mine)
        charges = [e if e > 0 else default_estimate(task, line.unit, u) for u, e in mine]
        assert line.pending_nano_usd_exact == min(sum(charges), MAX_NANO_USD)
    assert sum(line.requests for line in message.by_task) == message.requests == len(records)


@given(unit=st.sampled_from(list(DEFAULT_UNIT_NANO_USD)), units=st.integers(0, 2**62))
def test_a_record_without_an_estimate_is_charged_per_unit_and_never_zero(unit: str, units: int) -> None:
    charged = default_estimate("text-to-speech", unit, units)
    assert 0 < charged <= MAX_NANO_USD
    if units:
        assert charged == min(units * DEFAULT_UNIT_NANO_USD[unit], MAX_NANO_USD)


def test_a_record_without_a_unit_counts_its_tokens_or_images() -> None:
    chat, image, other = record("a"), record("a"), record("a")
    image.task, image.images = "text-to-image", 2
    other.task = "other"
    assert [record_units(r) for r in (chat, image, other)] == [("token", 30), ("image", 2), ("", 0)]
    chat.unit, chat.units = "request", -5
    assert record_units(chat) == ("request", 0)


def test_a_record_with_an_unknown_unit_is_refused(tmp_path: Path) -> None:
    entry = record("someone")
    entry.unit = "furlong"
    with pytest.raises(Exception, match="unit must be one of"):
        ledger_row(entry, datetime.now(UTC))


@pytest.mark.slow
def test_the_usage_report_over_rest_and_grpc_groups_by_task(stack) -> None:
    account = unique("user")
    records = [
        task_record(account, "automatic-speech-recognition", 61, 6_100_000),
        task_record(account, "automatic-speech-recognition", 9, 0),  # charged per unit: 9 s
        task_record(account, "text-to-speech", 1200, 18_000_000),
        record(account, estimate=500),  # a chat record from before units
    ]
    with stack.channel("billing") as channel:
        stored = billing_grpc.LedgerServiceStub(channel).RecordRequests(
            billing_pb.RecordRequestsRequest(records=records), timeout=10
        )
        assert stored.stored_count == 4
        typed = billing_grpc.BillingServiceStub(channel).GetUsage(
            billing_pb.GetUsageRequest(account=account),
            timeout=10,
            metadata=[("authorization", f"Bearer {stack.admin_token}")],
        )
    with stack.admin() as http:
        answer = http.get("/v1/billing/usage", params={"account": account})
    assert answer.status_code == 200, answer.text
    by_task = {line["task"]: line for line in answer.json()["byTask"]}
    asr = by_task["automatic-speech-recognition"]
    assert (asr["unit"], asr["units"], asr["requests"]) == ("audio_second", "70", 2)
    assert asr["pendingNanoUsdExact"] == str(6_100_000 + 9 * DEFAULT_UNIT_NANO_USD["audio_second"])
    assert (by_task["text-to-speech"]["unit"], by_task["text-to-speech"]["units"]) == ("character", "1200")
    # no unit: counted in its task's unit from what it carries (10 input and 20 output tokens)
    assert (by_task["conversational"]["unit"], by_task["conversational"]["units"]) == ("token", "30")
    assert {line.task: (line.unit, line.units) for line in typed.by_task} == {
        task: (line["unit"], int(line["units"])) for task, line in by_task.items()
    }


@pytest.mark.slow
def test_a_record_with_an_unknown_unit_is_an_invalid_argument(stack) -> None:
    entry = record(unique("user"))
    entry.unit = "furlong"
    with stack.channel("billing") as channel, pytest.raises(grpc.RpcError) as error:
        billing_grpc.LedgerServiceStub(channel).RecordRequests(
            billing_pb.RecordRequestsRequest(records=[entry]), timeout=10
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
