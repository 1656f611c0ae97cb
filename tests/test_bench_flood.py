"""bench/flood.py without a stack: the worst-case bodies are what they claim to be, and the
verdicts and ratios are computed as the table says."""

import json

from bench.flood import (
    CAP_EDGE,
    ENVOY_CAP,
    MODEL_CHARS,
    PROVIDER_IDS,
    TAG_COUNT,
    FloodReport,
    Tally,
    flood_cases,
)
from bench.load import Measurement
from bench.targets import Target

TARGET = Target(
    "switchboard",
    {"chat": "http://127.0.0.1:1/v1/chat/completions"},
    {"chat": "bench/chat-x"},
    "Bearer t",
    providers={"chat": "bench-chat-x"},
)


def _cases() -> dict[str, dict]:
    return {case.name: {"size": len(case.body), "json": json.loads(case.body)} for case in flood_cases(TARGET)}


def test_bodies_straddle_envoys_cap_by_exactly_the_edge() -> None:
    cases = _cases()
    assert ENVOY_CAP == 8 * 1024 * 1024
    for route in ("chat", "partners"):
        assert cases[f"{route}-8mib-under"]["size"] == ENVOY_CAP - CAP_EDGE
        assert cases[f"{route}-8mib-over"]["size"] == ENVOY_CAP + CAP_EDGE


def test_tag_filter_repeats_only_its_last_tag() -> None:
    body = _cases()["tags-40k"]
    tags = body["json"]["tags"]
    assert len(tags) == TAG_COUNT
    assert len(set(tags)) == TAG_COUNT - 1
    assert tags[-1] == tags[0]
    assert 380_000 <= body["size"] <= 410_000


def test_long_model_and_provider_list() -> None:
    cases = _cases()
    assert len(cases["model-20k"]["json"]["model"]) == MODEL_CHARS
    assert len(cases["provider-3k"]["json"]["provider"].split()) == PROVIDER_IDS


def test_only_client_errors_pass() -> None:
    assert Tally(outcomes={"400": 3, "413": 1}).all_4xx()
    assert not Tally(outcomes={"400": 3, "504": 1}).all_4xx()
    assert not Tally(outcomes={"400": 3, "timeout": 1}).all_4xx()
    assert not Tally().all_4xx()


def _m(rps: float, p50: float) -> Measurement:
    return Measurement(requests=10, ok=10, bad=0, rps=rps, p50_ms=p50, p99_ms=p50 * 2)


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    report = FloodReport(3, 1.0, 4, [], quiet=[_m(100, 10), _m(200, 10), _m(100, 20)])
    report.flood = [_m(50, 40), _m(20, 20), _m(100, 20)]
    assert report.ratio("rps") == 0.5  # 0.5, 0.1, 1.0
    assert report.ratio("p50_ms") == 2.0  # 4.0, 2.0, 1.0
