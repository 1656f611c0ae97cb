"""The Router's health figures without a network: the recent window on a fake clock, the bound
and order of the last errors, redaction before the cut, and the breaker states as the API shows them."""

from __future__ import annotations

from collections import Counter

from helpers.edge import envoy_message_bytes
from hypothesis import given
from hypothesis import strategies as st
from switchboard.router.v1 import router_service_pb2 as router_pb

from services.common.paging import MAX_PAGE_BYTES, key_after
from services.common.secrets import Redactor
from services.router.breaker import Breakers
from services.router.health import models_listing, provider_health
from services.router.measurements import LAST_ERRORS, MAX_ERROR_TEXT, WINDOW_MINUTES, Measurements


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failure(measurements: Measurements, message: str = "HTTP 503") -> None:
    error = measurements.error(503, "UNAVAILABLE", "UPSTREAM_HTTP_ERROR", message, str)
    measurements.failed("p", "m", error)


def recent(measurements: Measurements) -> tuple[int, int]:
    return measurements.get("p", "m").recent(measurements.minute())


def test_the_window_holds_exactly_the_last_whole_minutes() -> None:
    clock = Clock()
    measurements = Measurements(clock)
    for at, failed in ((0.0, True), (59.9, False), (60.0, False), (239.0, True)):
        clock.now = at
        if failed:
            failure(measurements)
        else:
            measurements.answered("p", "m")
    assert recent(measurements) == (4, 2)
    clock.now = 299.9  # still minute 4: minutes 0 to 4 are in the window
    assert recent(measurements) == (4, 2)
    clock.now = 300.0  # minute 5: minute 0 (two requests, one error) leaves it
    assert recent(measurements) == (2, 1)
    clock.now = 60.0 * (3 + WINDOW_MINUTES)  # minute 8: minutes 4 to 8, so minute 3's failure (239 s) left too
    assert recent(measurements) == (0, 0)
    stats = measurements.get("p", "m")
    assert (stats.requests, stats.errors, stats.rejected, stats.skipped) == (4, 2, 0, 0)


def test_a_bucket_is_reused_for_a_later_minute_without_its_old_counts() -> None:
    clock = Clock()
    measurements = Measurements(clock)
    failure(measurements)
    clock.now = 60.0 * WINDOW_MINUTES  # the same bucket, five minutes on
    measurements.answered("p", "m")
    assert recent(measurements) == (1, 0)


def test_last_errors_are_bounded_and_newest_first() -> None:
    measurements = Measurements(Clock())
    for number in range(LAST_ERRORS + 2):
        failure(measurements, f"failure {number}")
    messages = [e.message for e in measurements.get("p", "m").last_errors]
    assert messages == [f"failure {n}" for n in range(LAST_ERRORS + 1, 1, -1)]


def test_a_stream_that_broke_is_one_request_and_one_error() -> None:
    measurements = Measurements(Clock())
    measurements.answered("p", "m")
    error = measurements.error(0, "UNAVAILABLE", "STREAM_INTERRUPTED", "broke", str)
    measurements.failed("p", "m", error, counted=True)
    stats = measurements.get("p", "m")
    assert (stats.requests, stats.errors, *recent(measurements)) == (1, 1, 1, 1)


def test_failures_alone_do_not_rank_a_provider_model_as_measured() -> None:
    measurements = Measurements(Clock())
    failure(measurements)
    assert measurements.ranking("p", "m") is None
    measurements.observe("p", "m", 0.25, 10, 0.5)
    assert measurements.ranking("p", "m") == (20.0, 250.0)


secrets = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=64)


@given(secret=secrets, before=st.text(max_size=400), after=st.text(max_size=400))
def test_an_error_message_is_redacted_before_it_is_cut(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    record = Measurements().error(500, "UNAVAILABLE", "UPSTREAM_HTTP_ERROR", before + secret + after, redactor.text)
    assert secret not in record.message and len(record.message) <= MAX_ERROR_TEXT and record.message.isprintable()
    one_line = "".join(c if c.isprintable() else " " for c in before + secret + after)
    assert record.message == redactor.text(one_line)[:MAX_ERROR_TEXT]


def test_breaker_states_as_the_api_shows_them() -> None:
    clock = Clock()
    breakers, measurements = Breakers(2, 10.0, clock), Measurements(clock)

    def shown() -> tuple[int, int]:
        health = provider_health("p", measurements, breakers)
        return health.breaker_state, health.consecutive_failures

    assert shown() == (router_pb.BREAKER_STATE_CLOSED, 0)
    breakers.failed("p")
    assert shown() == (router_pb.BREAKER_STATE_CLOSED, 1)
    breakers.failed("p")
    assert shown() == (router_pb.BREAKER_STATE_OPEN, 2)
    clock.now = 10.0
    assert breakers.allow("p")  # the cooldown is over: this request is the probe
    assert shown() == (router_pb.BREAKER_STATE_HALF_OPEN, 2)
    breakers.succeeded("p")
    assert shown() == (router_pb.BREAKER_STATE_CLOSED, 0)


EVENTS = ("answered", "failed", "rejected", "skipped", "broke")


@given(st.lists(st.tuples(st.floats(0, 200, allow_nan=False), st.sampled_from(EVENTS)), max_size=60))
def test_totals_and_window_match_a_plain_recount(events: list[tuple[float, str]]) -> None:
    """Whatever the order and spacing of events, the figures equal a recount of the events."""
    clock = Clock()
    measurements = Measurements(clock)
    seen: list[tuple[int, str]] = []  # (minute, event)
    for advance, event in events:
        clock.now += advance
        error = measurements.error(0, "UNAVAILABLE", "X", event, str)
        if event == "answered":
            measurements.answered("p", "m")
        elif event == "skipped":
            measurements.skipped("p", "m")
        elif event == "rejected":
            measurements.rejected("p", "m", error)
        else:
            measurements.failed("p", "m", error, counted=event == "broke")
        seen.append((int(clock.now // 60), event))
    stats = measurements.get("p", "m")
    if stats is None:
        assert not events
        return
    count = Counter(event for _, event in seen)
    assert stats.requests == count["answered"] + count["failed"] + count["rejected"]
    assert (stats.errors, stats.rejected, stats.skipped) == (count["failed"] + count["broke"], count["rejected"],
                                                             count["skipped"])  # fmt: skip
    now = measurements.minute()
    window = [event for minute, event in seen if now - WINDOW_MINUTES < minute <= now]
    recent_count = Counter(window)
    expected = (recent_count["answered"] + recent_count["failed"] + recent_count["rejected"],
                recent_count["failed"] + recent_count["broke"])  # fmt: skip
    assert stats.recent(now) == expected
    kept = [event for _, event in seen if event not in ("answered", "skipped")][::-1][:LAST_ERRORS]
    assert [e.message for e in stats.last_errors] == kept


def test_the_error_rate_is_capped_when_an_older_stream_breaks_in_the_window() -> None:
    clock = Clock()
    measurements = Measurements(clock)
    measurements.answered("p", "m")  # stream A begins in minute 0
    clock.now = 60.0 * WINDOW_MINUTES
    measurements.answered("p", "m")  # stream B begins; minute 0 has left the window
    for _ in range(2):  # both break now
        measurements.failed("p", "m", measurements.error(0, "UNAVAILABLE", "STREAM_INTERRUPTED", "", str), counted=True)
    (health,) = provider_health("p", measurements, Breakers(5, 10.0, clock)).models
    assert (health.recent_requests, health.recent_errors, health.error_rate) == (1, 2, 1.0)


def many_models(count: int, errors_each: int, message: str = "failed") -> Measurements:
    clock = Clock()
    measurements = Measurements(clock, clock)
    for number in range(count):
        clock.now = float(number)
        measurements.answered("p", f"m{number:04}")
        for _ in range(errors_each):
            measurements.failed("p", f"m{number:04}", measurements.error(503, "UNAVAILABLE", "X", message, str))
    return measurements


def test_models_come_in_pages_with_the_totals_of_all() -> None:
    measurements, breakers = many_models(25, 1), Breakers(5, 10.0)
    seen, token = [], ""
    while True:
        page = provider_health("p", measurements, breakers, size=10, token=token)
        assert (page.requests, page.errors, page.recent_requests, page.recent_errors) == (50, 25, 50, 25)
        assert page.error_rate == 0.5 and page.last_error.message == "failed"
        assert page.last_error.time.seconds == 24  # the newest: m0024's, at 24 s on the test's clock
        seen += [m.provider_model for m in page.models]
        token = page.next_page_token
        if not token:
            break
        assert len(page.models) == 10 and key_after(models_listing("p"), token) == page.models[-1].provider_model
    assert seen == [f"m{n:04}" for n in range(25)]


def test_a_page_holds_fewer_models_than_asked_when_their_answer_would_be_too_large() -> None:
    measurements = many_models(400, LAST_ERRORS, '\u00e9"<' * (MAX_ERROR_TEXT // 3))  # Envoy writes '<' in 6 bytes
    page = provider_health("p", measurements, Breakers(5, 10.0), size=1000)
    assert 0 < len(page.models) < 400
    assert key_after(models_listing("p"), page.next_page_token) == page.models[-1].provider_model
    assert envoy_message_bytes(page) <= MAX_PAGE_BYTES
    rest = provider_health("p", measurements, Breakers(5, 10.0), size=1000, token=page.next_page_token)
    assert rest.models[0].provider_model > page.models[-1].provider_model


def test_a_secret_written_with_a_control_character_for_its_space_is_redacted() -> None:
    """The message is made one line before it is redacted: the other way round, a tab written in
    place of a key's space hid it from the redactor and then became that space."""
    secret = "sk spaced " + "k" * 20
    record = Measurements().error(
        500, "UNAVAILABLE", "X", "bad key " + secret.replace(" ", "\t"), Redactor([secret]).text
    )
    assert "[redacted]" in record.message and secret not in record.message
