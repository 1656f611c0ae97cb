"""The shared health record without a network: how reports combine (services/common/health.py),
a Router's view and its reports (services/router/measurements.py), and the Registry's records on
a real SQLite database: summed across replicas, versioned, paged, pushed on the change feed."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.common.errors import ApiError
from services.common.health import (
    ALPHA,
    LAST_ERRORS,
    WINDOW_MINUTES,
    ErrorRecord,
    Figures,
    Traffic,
    add,
    timestamp,
    traffic_message,
)
from services.common.secrets import use_secrets_key
from services.registry.api.health import MAX_REPORTS, HealthMethods
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage import health_records, queries
from services.router.measurements import Measurements


def error(at: float, message: str = "failed") -> ErrorRecord:
    return ErrorRecord(at, 503, "UNAVAILABLE", "UPSTREAM_HTTP_ERROR", message)


def test_reports_add_up_and_count_from_the_earliest_start() -> None:
    first = Traffic(requests=3, errors=1, latency_samples=2, ttft_ms_sum=300.0, minutes={100: [3, 1]})
    second = Traffic(requests=2, rejected=1, skipped=4, latency_samples=1, ttft_ms_sum=50.0, minutes={101: [2, 0]})
    figures = add(add(Figures(), first, 20.0, 101), second, 10.0, 101)
    assert (figures.requests, figures.errors, figures.rejected, figures.skipped) == (5, 1, 1, 4)
    assert figures.start_time == 10.0 and figures.samples == 3 and figures.recent(101) == (5, 1)
    assert figures.ttft_ms == 150.0 + ALPHA * (50.0 - 150.0)  # the first batch's mean, then one sample moves it


def test_a_batch_of_samples_moves_the_average_as_that_many_samples_of_its_mean() -> None:
    figures = add(Figures(), Traffic(throughput_samples=1, throughput_sum=100.0), 1.0, 0)
    moved = add(figures, Traffic(throughput_samples=3, throughput_sum=600.0), 1.0, 0)
    one_by_one = 100.0
    for _ in range(3):
        one_by_one += ALPHA * (200.0 - one_by_one)
    assert math.isclose(moved.tokens_per_second, one_by_one) and moved.throughput_samples == 4


def test_old_minutes_leave_and_errors_stay_newest_first_and_bounded() -> None:
    old = add(Figures(), Traffic(requests=1, minutes={0: [1, 0]}, last_errors=[error(5.0, "old")]), 1.0, 0)
    newer = Traffic(
        requests=1, minutes={WINDOW_MINUTES: [1, 1]}, last_errors=[error(float(t)) for t in (9, 8, 7, 6, 5)]
    )
    figures = add(old, newer, 1.0, WINDOW_MINUTES)
    assert figures.minutes == {WINDOW_MINUTES: [1, 1]} and figures.requests == 2
    assert [e.unix_seconds for e in figures.last_errors] == [9.0, 8.0, 7.0, 6.0, 5.0]
    assert len(figures.last_errors) == LAST_ERRORS and "old" not in [e.message for e in figures.last_errors]


counts = st.integers(0, 1000)
traffic = st.builds(
    Traffic, requests=counts, errors=counts, rejected=counts, skipped=counts,
    minutes=st.dictionaries(st.integers(0, 3), st.lists(counts, min_size=2, max_size=2), max_size=3),
)  # fmt: skip


@given(st.lists(traffic, max_size=6))
def test_reports_sent_apart_or_merged_count_the_same(reports: list[Traffic]) -> None:
    """A failed report's traffic goes with the next one: the counts may not depend on it."""
    apart, merged = Figures(), Traffic()
    for report in reports:
        apart = add(apart, report, 1.0, 3)
        merged.merge(report)
    together = add(Figures(), merged, 1.0, 3)
    fields = ("requests", "errors", "rejected", "skipped")
    assert [getattr(apart, f) for f in fields] == [getattr(together, f) for f in fields]
    assert apart.recent(3) == together.recent(3)


def record(provider: str, model: str, version: int, requests: int) -> internal_pb.ModelHealth:
    return internal_pb.ModelHealth(
        provider=provider, provider_model=model, version=version, requests=requests, start_time=timestamp(1.0)
    )


def test_a_router_shows_the_shared_record_with_its_unreported_traffic() -> None:
    measurements = Measurements()
    measurements.apply([record("p", "m", 2, 10)])
    measurements.answered("p", "m")
    assert measurements.get("p", "m").requests == 11
    measurements.apply([record("p", "m", 1, 99)])  # older than the one known: ignored
    assert measurements.get("p", "m").requests == 11
    taken = measurements.take_report(10)
    assert [(p, m, t.requests) for p, m, t in taken] == [("p", "m", 1)]
    measurements.report_ended(taken, [record("p", "m", 3, 11)])  # the answer counts the report
    assert measurements.get("p", "m").requests == 11 and measurements.take_report(10) == []


def test_a_record_that_comes_while_a_report_is_under_way_waits_for_the_reports_answer() -> None:
    """The change feed may bring the record that counts a report before the report's own answer
    does (or, for a report that timed out after it was applied, long before its retry is answered):
    the traffic the report carries is shown once, as under way, until that answer comes."""
    measurements = Measurements()
    measurements.apply([record("p", "m", 1, 5)])
    measurements.answered("p", "m")
    taken = measurements.take_report(10)
    measurements.apply([record("p", "m", 2, 6)])  # the feed: the report applied
    assert measurements.get("p", "m").requests == 6
    measurements.apply([record("p", "m", 3, 9)])  # then another replica's report
    measurements.apply([record("p", "m", 2, 6)])  # an older one after it: ignored
    assert measurements.get("p", "m").requests == 6
    measurements.report_ended(taken, [record("p", "m", 2, 6)])
    assert measurements.get("p", "m").requests == 9  # the newest record known


def test_a_failed_reports_traffic_goes_with_the_next_one() -> None:
    measurements = Measurements()
    measurements.answered("p", "m")
    taken = measurements.take_report(10)
    measurements.answered("p", "m")  # while the report is under way
    assert measurements.take_report(10) == []  # one report of a provider model at a time
    measurements.report_ended(taken, None)
    assert measurements.get("p", "m").requests == 2
    assert [(p, m, t.requests) for p, m, t in measurements.take_report(10)] == [("p", "m", 2)]


def test_a_report_takes_at_most_the_cap() -> None:
    measurements = Measurements()
    for number in range(5):
        measurements.skipped("p", f"m{number}")
    assert len(measurements.take_report(3)) == 3 and len(measurements.take_report(3)) == 2


class Health(HealthMethods):
    def __init__(self, state: RegistryState) -> None:
        self.state = state


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[tuple[Health, RegistryState]]:
    use_secrets_key(Fernet.generate_key())
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, MIGRATIONS)
    db = Database(url)
    index = await db.run(lambda s: queries.load_index(s.get_bind()))
    state = RegistryState(db, index, ChangeFeed(), "admin-token")
    try:
        yield Health(state), state
    finally:
        db.close()


def report(start: float, *entries: tuple[str, str, Traffic]) -> internal_pb.ReportModelHealthRequest:
    return internal_pb.ReportModelHealthRequest(
        start_time=timestamp(start), reports=[traffic_message(p, m, t) for p, m, t in entries]
    )


async def test_two_replicas_reports_make_one_record_pushed_on_the_feed(registry) -> None:
    health, state = registry
    revision = state.feed.revision
    notices = state.feed.watch()
    assert (await anext(notices)).kind == internal_pb.CHANGE_KIND_UNSPECIFIED
    first = await health.ReportModelHealth(report(200.0, ("p", "m", Traffic(requests=2, errors=1))), None)
    second = await health.ReportModelHealth(report(100.0, ("p", "m", Traffic(requests=3, skipped=1))), None)
    (after_first,), (after_second,) = first.records, second.records
    assert (after_first.version, after_second.version) == (1, 2)
    assert (after_second.requests, after_second.errors, after_second.skipped) == (5, 1, 1)
    assert after_second.start_time.seconds == 100
    pushed = [await asyncio.wait_for(anext(notices), 5) for _ in range(2)]
    assert [n.kind for n in pushed] == [internal_pb.CHANGE_KIND_HEALTH] * 2
    assert [n.message().health for n in pushed] == [[after_first], [after_second]]
    assert state.feed.revision == revision  # health notices leave the cached state's revision alone
    await notices.aclose()


async def test_probes_add_to_the_same_record(registry) -> None:
    health, state = registry
    await health.ReportModelHealth(report(1.0, ("p", "m", Traffic(requests=1))), None)
    (probed,) = await state.db.run(lambda s: _commit(s, health_records.add_probes(s, {("p", "m"): "HTTP 503"}, 50.0)))
    assert (probed.requests, probed.probes, probed.probe_failures, probed.last_probe_failure) == (1, 1, 1, "HTTP 503")
    assert probed.last_probe_time.seconds == 50 and probed.version == 2


def _commit(session, result):
    session.commit()
    return result


async def test_the_records_come_in_pages(registry) -> None:
    health, _ = registry
    entries = [(f"p{n % 3}", f"m{n}", Traffic(requests=1)) for n in range(7)]
    await health.ReportModelHealth(report(1.0, *entries), None)
    seen, token = [], ""
    while True:
        page = await health.ListModelHealth(internal_pb.ListModelHealthRequest(page_size=3, page_token=token), None)
        seen += [(r.provider, r.provider_model) for r in page.records]
        if not (token := page.next_page_token):
            break
    assert seen == sorted((p, m) for p, m, _ in entries)


@pytest.mark.parametrize(
    "request_",
    [
        report(1.0, ("p", "m", Traffic(requests=-1))),
        report(1.0, ("p", "", Traffic())),
        report(1.0, ("", "m", Traffic())),
        report(1.0, ("p", "m", Traffic(latency_samples=1, ttft_ms_sum=math.nan))),
        report(1.0, *[("p", f"m{n}", Traffic()) for n in range(MAX_REPORTS + 1)]),
    ],
    ids=["negative", "no model", "no provider", "nan", "too many"],
)
async def test_a_bad_report_is_a_400_and_changes_nothing(registry, request_) -> None:
    health, _ = registry
    with pytest.raises(ApiError) as refused:
        await health.ReportModelHealth(request_, None)
    assert refused.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert (await health.ListModelHealth(internal_pb.ListModelHealthRequest(), None)).records == []


@given(st.lists(st.tuples(st.floats(0.001, 5), st.integers(0, 500)), max_size=8), st.booleans(), st.booleans())
def test_the_ranking_of_a_changed_entry_is_the_views(samples: list, shared: bool, under_way: bool) -> None:
    """ranking() computes a changed entry's averages alone: the same as the full view's."""
    measurements = Measurements()
    if shared:
        measurements.apply([internal_pb.ModelHealth(provider="p", provider_model="m", version=1, latency_samples=3,
                                                    time_to_first_token_ms=80.0, throughput_samples=2,
                                                    throughput_tokens_per_second=40.0)])  # fmt: skip
    for number, (seconds, tokens) in enumerate(samples):
        measurements.observe("p", "m", seconds, tokens, 2 * seconds)
        if under_way and number == len(samples) // 2:
            measurements.take_report(10)
    ranked = measurements.ranking("p", "m")
    figures = measurements.get("p", "m")
    viewed = None if figures is None or figures.samples == 0 else (figures.tokens_per_second, figures.ttft_ms)
    assert ranked == viewed and measurements.ranking("p", "m") == viewed
