"""Health reports are applied once and never retried in vain, without a network: the Registry
remembers a report's request id (services/registry/api/health.py over a real SQLite database),
and a Router (services/router/health_reports.py) resends a report that may not have arrived as it
was, with back-off and within a bound, and drops one the Registry refuses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet
from helpers.migrations import database  # noqa: F401 (fixtures)
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.common.errors import ApiError
from services.common.health import Traffic, timestamp, traffic_message
from services.common.secrets import use_secrets_key
from services.registry.api.health import MAX_REQUEST_ID, HealthMethods
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage import health_records, queries
from services.router import health_reports
from services.router.health_reports import DROPPED, HealthReports
from services.router.measurements import Measurements

Code = grpc.StatusCode


class Health(HealthMethods):
    def __init__(self, state: RegistryState) -> None:
        self.state = state


@pytest.fixture
async def health(tmp_path: Path) -> AsyncIterator[Health]:
    async with registry_on(f"sqlite:///{tmp_path / 'registry.db'}") as methods:
        yield methods


@contextlib.asynccontextmanager
async def registry_on(url: str) -> AsyncIterator[Health]:
    use_secrets_key(Fernet.generate_key())
    migrate(url, MIGRATIONS)
    db = Database(url)
    index = await db.run(lambda s: queries.load_index(s.get_bind()))
    try:
        yield Health(RegistryState(db, index, ChangeFeed(), "admin-token"))
    finally:
        db.close()


def report(request_id: str, requests: int = 1) -> internal_pb.ReportModelHealthRequest:
    return internal_pb.ReportModelHealthRequest(
        start_time=timestamp(1.0),
        reports=[traffic_message("p", "m", Traffic(requests=requests))],
        request_id=request_id,
    )


async def test_a_report_sent_again_with_its_request_id_is_applied_once(health) -> None:
    (first,) = (await health.ReportModelHealth(report("r1"), None)).records
    (again,) = (await health.ReportModelHealth(report("r1"), None)).records
    assert (first.requests, first.version) == (again.requests, again.version) == (1, 1)
    (other,) = (await health.ReportModelHealth(report("r2"), None)).records
    (unnamed,) = (await health.ReportModelHealth(report(""), None)).records  # no id: applied each time
    (unnamed_again,) = (await health.ReportModelHealth(report(""), None)).records
    assert [r.requests for r in (other, unnamed, unnamed_again)] == [2, 3, 4]


@pytest.mark.slow  # starts PostgreSQL
async def test_two_replicas_receiving_one_report_at_once_apply_it_once(database: str) -> None:  # noqa: F811
    async with registry_on(database) as health:
        answers = await asyncio.gather(*(health.ReportModelHealth(report("r1"), None) for _ in range(4)))
    assert {answer.records[0].requests for answer in answers} == {1}


async def test_request_ids_are_forgotten_after_the_retention(health) -> None:
    now = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)
    later = now + health_records.REPORT_ID_RETENTION + timedelta(seconds=1)
    received = [
        await health.state.db.run(lambda s, at=at: _committed(s, health_records.first_receipt(s, "r", at)))
        for at in (now, now + timedelta(minutes=1), later)
    ]
    assert received == [True, False, True]


def _committed(session, result):
    session.commit()
    return result


async def test_a_request_id_over_the_cap_is_a_400(health) -> None:
    with pytest.raises(ApiError) as refused:
        await health.ReportModelHealth(report("r" * (MAX_REQUEST_ID + 1)), None)
    assert (refused.value.grpc_code, refused.value.param) == (Code.INVALID_ARGUMENT, "request_id")


class FlakyRegistry:
    """The Registry's ReportModelHealth behind a channel that fails as told: (code, applied
    first?) per call, then it answers."""

    def __init__(self, health: Health, failures: list[tuple[Code, bool]]) -> None:
        self.health, self.failures, self.sent = health, failures, []

    async def ReportModelHealth(self, request, timeout: float):  # noqa: ASYNC109 (the stub's signature)
        self.sent.append(request)
        if self.failures:
            code, applied = self.failures.pop(0)
            if applied:
                await self.health.ReportModelHealth(request, None)
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "failed")
        try:
            return await self.health.ReportModelHealth(request, None)
        except ApiError as error:
            raise grpc.aio.AioRpcError(
                error.grpc_code, grpc.aio.Metadata(), grpc.aio.Metadata(), error.message
            ) from None


@pytest.fixture
def no_back_off(monkeypatch) -> None:
    monkeypatch.setattr(health_reports, "FIRST_RETRY_SECONDS", 0.0)


def router(registry: FlakyRegistry) -> tuple[HealthReports, Measurements]:
    measurements = Measurements()
    return HealthReports(registry, measurements, 1.0), measurements


async def test_a_report_that_timed_out_after_it_was_applied_counts_once(health, no_back_off) -> None:
    registry = FlakyRegistry(health, [(Code.DEADLINE_EXCEEDED, True), (Code.UNAVAILABLE, False)])
    reports, measurements = router(registry)
    measurements.answered("p", "m")
    for _ in range(3):  # failed once applied, failed on the way, then answered
        await reports.report()
        measurements.answered("p", "m")  # new traffic waits while the report is retried
    ids = [r.request_id for r in registry.sent]
    assert ids[0] == ids[1] == ids[2] != ids[3] and len(ids) == 4  # then what waited went
    assert [r.reports[0].requests for r in registry.sent] == [1, 1, 1, 2]
    assert measurements.get("p", "m").requests == 4  # 3 reported, each once, and 1 pending
    await reports.report()
    (record,) = (await health.ListModelHealth(internal_pb.ListModelHealthRequest(), None)).records
    assert record.requests == 4


async def test_the_record_of_a_report_applied_before_it_timed_out_does_not_count_it_twice(health, no_back_off) -> None:
    """The change feed brings the record that counts the report while the report waits for its retry."""
    reports, measurements = router(FlakyRegistry(health, [(Code.DEADLINE_EXCEEDED, True)]))
    measurements.answered("p", "m")
    await reports.report()  # applied, then timed out: it waits for its retry
    listed = await health.ListModelHealth(internal_pb.ListModelHealthRequest(), None)
    measurements.apply(listed.records)  # what the feed's notice of the change does
    assert measurements.get("p", "m").requests == 1
    await reports.report()  # the retry, answered
    assert measurements.get("p", "m").requests == 1 and measurements.take_report(10) == []


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.INTERNAL])
async def test_a_retry_waits_for_its_back_off(health, code: Code) -> None:
    registry = FlakyRegistry(health, [(code, False)])
    reports, measurements = router(registry)
    measurements.answered("p", "m")
    await reports.report()
    await reports.report()  # the first retry is due a second later
    assert len(registry.sent) == 1


@pytest.mark.parametrize("code", [Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION])
async def test_a_report_the_registry_refuses_is_dropped_not_retried(health, code: Code) -> None:
    registry = FlakyRegistry(health, [(code, False)])
    reports, measurements = router(registry)
    dropped = DROPPED.values.get(("refused",), 0)
    measurements.answered("p", "m")
    await reports.report()
    await reports.report()
    assert len(registry.sent) == 1 and DROPPED.values[("refused",)] == dropped + 1
    measurements.answered("p", "m")  # later traffic is reported as usual
    await reports.report()
    (record,) = (await health.ListModelHealth(internal_pb.ListModelHealthRequest(), None)).records
    assert record.requests == 1


async def test_an_unreachable_registry_is_retried_within_a_bound_then_the_report_is_dropped(
    health, no_back_off, monkeypatch
) -> None:
    monkeypatch.setattr(health_reports, "GIVE_UP_SECONDS", 0.0)
    registry = FlakyRegistry(health, [(Code.UNAVAILABLE, False)] * 2)
    reports, measurements = router(registry)
    dropped = DROPPED.values.get(("unreachable",), 0)
    measurements.answered("p", "m")
    await reports.report()  # failed: kept for a retry
    await reports.report()  # failed again, past the bound: dropped
    assert registry.sent[0].request_id == registry.sent[1].request_id
    assert DROPPED.values[("unreachable",)] == dropped + 1
    await reports.report()
    assert len(registry.sent) == 2 and measurements.get("p", "m").requests == 0


class SlowLoads:
    """ListModelHealth whose first answer never comes: a load under way when the feed resets."""

    def __init__(self) -> None:
        self.calls = 0

    async def ListModelHealth(self, request, timeout: float):  # noqa: ASYNC109 (the stub's signature)
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()
        record = internal_pb.ModelHealth(provider="p", provider_model="m", version=self.calls, requests=self.calls)
        return internal_pb.ListModelHealthResponse(records=[record])


async def test_a_reset_while_the_records_load_loads_them_again_from_the_first_page() -> None:
    registry, measurements = SlowLoads(), Measurements()
    reports = HealthReports(registry, measurements, 1.0)
    reports.changed(None)  # the feed lost: a load begins and hangs
    for _ in range(3):
        await asyncio.sleep(0)
    reports.changed(internal_pb.WatchChangesResponse())  # connected again: notices were missed meanwhile
    for _ in range(3):
        await asyncio.sleep(0)
    assert registry.calls == 2 and measurements.get("p", "m").requests == 2
