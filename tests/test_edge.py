"""The edge holds no one's memory for free (issue 24, finding 4; issue 22, flood isolation and
tracing), through the real Envoy: large bodies need a known token before they are buffered, each
route's body cap, a deadline for a body to arrive, a per-client budget for large bodies, the
overload manager Envoy starts with, and tracing that is off (no tracer) unless configured."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.edge import BACKENDS, CHAT, MIB, exchange, hcm_of, raw_exchange, rendered, request_head, yaml_of
from helpers.envoy import assert_envoy_accepts
from helpers.registry import create_user, error_of, unique
from helpers.stacks import RunningStack, Stacks
from helpers.waiting import eventually
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision

from edge import limits as edge
from edge.envoy import EnvoyPorts, render
from services.common import telemetry
from services.launcher import UpOptions, free_port, start_stack

pytestmark = pytest.mark.slow

LUA = "envoy.filters.http.lua"


@pytest.fixture(scope="module")
def caller(stack) -> str:
    """A user's token."""
    with stack.admin() as admin:
        return create_user(admin, None, None)[1]


@pytest.fixture(scope="module")
def tight(make_stack):
    """A stack with a 1 s body deadline and a per-client budget of 12 MiB (refilled at 1 MiB/s)."""
    return make_stack(**{edge.BODY_DEADLINE_ENV: "1", edge.CLIENT_BUDGET_ENV: "12,1", edge.HEAP_ENV: "512"})


# --- authentication before a large body is buffered --------------------------------------------


@pytest.mark.parametrize("token", [None, "not-a-token", "sb-" + "0" * 40])
def test_a_large_body_without_a_known_token_is_refused_before_it_is_read(stack, token: str | None) -> None:
    # 8 MiB declared, 64 KiB sent, then the client waits: the answer comes without the rest.
    status, error = exchange(stack, request_head(CHAT, 8 * MIB - 256, token), b"x" * 65536)
    assert status == 401
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")


def test_a_large_body_of_unknown_length_needs_a_known_token_too(stack) -> None:
    status, error = exchange(stack, request_head(CHAT, None, "not-a-token"), b"10000\r\n" + b"x" * 4096)
    assert (status, error["code"]) == (401, "invalid_api_key")


def test_a_large_body_with_a_known_token_reaches_the_service(stack, caller: str) -> None:
    body = {"model": unique("no-such/model"), "messages": [{"role": "user", "content": "x" * 200_000}]}
    with stack.http(caller) as client:
        error = error_of(client.post(CHAT, json=body), 404)  # the Router's answer: past the gate
    assert error["code"] == "model_not_found"


def test_a_small_body_with_a_bad_token_gets_the_services_answer(stack) -> None:
    with stack.http("not-a-token") as client:
        error = error_of(client.post(CHAT, json={"model": "a/b", "messages": []}), 401)
    assert error["type"] == "authentication_error"


@pytest.fixture(scope="module")
def anonymous(stacks: Stacks) -> Iterator[RunningStack]:
    """A stack in anonymous mode (inference calls without a token are billed to an account)."""
    port = free_port()
    options = UpOptions(port, stacks.data_dir("anonymous"), "", demo=False, anonymous_account="anonymous")
    stack, admin_token, _ = start_stack(options)
    try:
        yield RunningStack(stack, f"http://127.0.0.1:{port}", admin_token)
    finally:
        stack.stop()


def test_in_anonymous_mode_a_large_inference_body_needs_no_token_but_others_do(anonymous) -> None:
    body = json.dumps({"model": unique("no-such/model"), "messages": [{"role": "user", "content": "x" * 100_000}]})
    status, error = exchange(anonymous, request_head(CHAT, len(body)), body.encode())
    assert (status, error["code"]) == (404, "model_not_found")  # past the gate: the Router's answer
    path = f"/api/partners/{unique('p')}/models"
    status, error = exchange(anonymous, request_head(path, 100_000), b"{")
    assert (status, error["code"]) == (401, "invalid_api_key")  # refused before the body is read
    status, error = exchange(anonymous, request_head(CHAT, 100_000, "hf_sb_not-a-token"), b"{")
    assert (status, error["code"]) == (401, "invalid_api_key")  # a wrong Switchboard token is no anonymous call


def test_anonymous_mode_lets_large_bodies_without_a_token_on_inference_routes_only() -> None:
    config = rendered(edge=edge.EdgeLimits(anonymous=True))
    gates = {_route_key(r): r["metadata"]["filter_metadata"][edge.GATE_FILTER] for r in _routes(config)}
    assert gates["POST /v1/chat/completions"]["anonymous"] is True
    assert gates["POST /api/partners/{provider}/models"]["anonymous"] is False
    assert not any(g["anonymous"] for g in _gates(rendered()))


# --- body caps, per route -----------------------------------------------------------------------


def test_a_declared_body_over_the_routes_cap_is_a_413_before_it_is_read(stack, caller: str) -> None:
    path = f"/api/partners/{unique('p')}/models"
    status, error = exchange(stack, request_head(path, edge.TYPED_BODY_BYTES + 1, caller), b"{")
    assert (status, error["code"]) == (413, "body_too_large")
    assert str(edge.TYPED_BODY_BYTES) in error["message"]


def test_a_body_of_unknown_length_ends_at_its_cap_or_its_deadline(tight, caller_tight: str) -> None:
    """Past the gate's token check Envoy streams the body into the buffer filter; one that outgrows
    the route's cap is then held by flow control, not refused: the body deadline ends it."""
    path = f"/api/partners/{unique('p')}/models"
    chunk = b"x" * (256 * 1024)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(9))  # 2.25 MiB, no length given
    status, error = exchange(tight, request_head(path, None, caller_tight), chunks)
    assert (status, error["code"]) in ((413, "body_too_large"), (408, "request_timeout"))


def test_a_body_of_exactly_the_cap_passes_and_one_byte_more_is_a_413(stack) -> None:
    status, _ = exchange(stack, request_head("/no/such/route", edge.SMALL_BODY_BYTES), b"x" * edge.SMALL_BODY_BYTES)
    assert status == 404  # the fallback route's own answer: the body was taken
    head = request_head("/v1/models", edge.SMALL_BODY_BYTES + 1, method="GET")
    status, error = exchange(stack, head, b"x")
    assert (status, error["code"]) == (413, "body_too_large")


def test_every_route_has_a_body_cap_from_its_kind() -> None:
    config = rendered()
    caps = {_route_key(r): _cap(r) for r in _routes(config)}
    assert caps["POST /v1/chat/completions"] == edge.FREE_BODY_BYTES
    assert caps["POST /models/{model=**}"] == edge.FREE_BODY_BYTES
    assert caps["POST /api/partners/{provider}/models"] == edge.TYPED_BODY_BYTES
    assert caps["POST /admin/v1/models:batchUpsert"] == edge.FREE_BODY_BYTES
    assert caps["GET /v1/models"] == edge.SMALL_BODY_BYTES
    every = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for route in every["route_config"]["virtual_hosts"][0]["routes"]:
        per_filter = route["typed_per_filter_config"]["envoy.filters.http.buffer"]
        assert per_filter.get("disabled") or per_filter["buffer"]["max_request_bytes"] <= edge.FREE_BODY_BYTES


# --- the body deadline and the per-client budget ------------------------------------------------


def test_a_body_that_stops_arriving_gets_a_408_in_openais_shape(tight, caller_tight: str) -> None:
    status, error = exchange(tight, request_head(CHAT, 1000, caller_tight), b'{"model": "a/b", ')
    assert status == 408
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")


@pytest.mark.parametrize(("body_deadline", "headers_deadline"), [(30, "10s"), (10, "10s"), (4, "4s"), (1, "1s")])
def test_the_headers_deadline_is_ten_seconds_or_the_body_deadline_if_shorter(body_deadline, headers_deadline) -> None:
    hcm = hcm_of(rendered(edge=edge.EdgeLimits(body_deadline_seconds=body_deadline)))
    assert (hcm["request_headers_timeout"], hcm["request_timeout"]) == (headers_deadline, f"{body_deadline}s")


def test_headers_that_never_finish_get_a_408_within_the_body_deadline(tight) -> None:
    """The headers' own deadline (10 s) is never longer than the whole request's: here 1 s."""
    status, head, body = raw_exchange(tight, b"GET /v1/models HTTP/1.1\r\nHost: a\r\n")
    assert status == 408
    assert "content-type: application/json" in head
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_timeout"
    assert re.search(r"\r\nserver-timing: edge;dur=\d+\.\d\d(\r\n|$)", head)


def test_a_held_large_body_is_ended_by_the_deadline_too(tight, caller_tight: str) -> None:
    status, error = exchange(tight, request_head(CHAT, 900 * 1024, caller_tight), b"x" * 300_000)
    assert (status, error["code"]) == (408, "request_timeout")


def test_past_its_budget_a_client_gets_429s_in_openais_shape(tight, caller_tight: str) -> None:
    # A budget of 12 MiB: three held bodies of 6 MiB each cannot all start; the one over is a 429.
    head = request_head(CHAT, 6 * MIB, caller_tight)
    host, port = tight.address("envoy").split(":")
    held = [socket.create_connection((host, int(port)), timeout=60) for _ in range(2)]
    try:
        # Both held at once and counted together: the 1 MiB/s refill lets a body on 6 s after the first
        # decision, so the steps from it to the third body's decision are as few as they can be.
        counted = budget_decisions(tight) + len(held)
        for sock in held:
            sock.sendall(head + b"x" * 1000)
        eventually(lambda: budget_decisions(tight) >= counted, "the budget to count the held bodies")
        status, error = exchange(tight, head, b"x" * 1000)
    finally:
        for sock in held:
            sock.close()
    assert status == 429
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert "large request bodies" in error["message"]


def budget_decisions(stack) -> int:
    """How many requests the per-client budget let on or refused so far."""
    stats = httpx.get(f"http://{stack.address('envoy_admin')}/stats?filter=client_large_bodies", timeout=30).text
    values = dict(line.split(": ") for line in stats.splitlines() if ": " in line)
    prefix = "client_large_bodies.http_local_rate_limit."
    return int(values.get(prefix + "ok", 0)) + int(values.get(prefix + "rate_limited", 0))


@pytest.fixture(scope="module")
def caller_tight(tight) -> str:
    with tight.admin() as admin:
        return create_user(admin, None, None)[1]


# --- the configuration Envoy starts with -------------------------------------------------------


def test_envoy_accepts_the_config_with_the_overload_manager(tmp_path: Path) -> None:
    limits = edge.EdgeLimits.from_environment({edge.HEAP_ENV: "256", edge.CONNECTIONS_ENV: "500"})
    config = tmp_path / "envoy.yaml"
    config.write_text(render(EnvoyPorts(8080, 9901, backends=BACKENDS, edge=limits)))
    assert_envoy_accepts(config)
    overload = yaml_of(config.read_text())["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in overload["resource_monitors"]}
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 256 * MIB
    assert (
        monitors["envoy.resource_monitors.global_downstream_max_connections"]["max_active_downstream_connections"]
        == 500
    )
    actions = {a["name"] for a in overload["actions"]}
    assert {
        "envoy.overload_actions.shrink_heap",
        "envoy.overload_actions.reduce_timeouts",
        "envoy.overload_actions.reset_high_memory_stream",
        "envoy.overload_actions.stop_accepting_requests",
    } <= actions


def test_the_running_envoy_watches_its_heap(tight) -> None:
    stats = httpx.get(f"http://{tight.address('envoy_admin')}/stats?filter=overload", timeout=30).text
    assert "overload.envoy.resource_monitors.fixed_heap.pressure" in stats
    assert "overload.envoy.overload_actions.stop_accepting_requests.active: 0" in stats


def test_budgets_per_client_and_for_all_clients_follow_the_settings() -> None:
    limits = edge.EdgeLimits.from_environment({edge.CLIENT_BUDGET_ENV: "16,4", edge.EDGE_BUDGET_ENV: "128,8"})
    hcm = hcm_of(rendered(edge=limits))
    (budget,) = [f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.local_ratelimit"]
    buckets = {tuple(e["key"] for e in d["entries"]): d["token_bucket"] for d in budget["descriptors"]}
    assert buckets[("remote_address", "body")]["max_tokens"] == 16 * MIB
    assert buckets[("remote_address", "body")]["tokens_per_fill"] == MIB  # every 0.25 s
    assert buckets[("body",)]["max_tokens"] == 128 * MIB
    assert buckets[("body",)]["tokens_per_fill"] == 2 * MIB


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_limit_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        edge.EdgeLimits.from_environment({edge.HEAP_ENV: value})


# --- tracing ------------------------------------------------------------------------------------


def test_with_tracing_off_envoy_has_no_tracer() -> None:
    text = render(EnvoyPorts(8080, 9901, backends=BACKENDS))
    assert "envoy.tracers" not in text and "opentelemetry_collector" not in text
    hcm = hcm_of(yaml_of(text))
    assert "tracing" not in hcm


def test_with_tracing_on_envoy_samples_new_traces_at_the_ratio() -> None:
    hcm = hcm_of(rendered(otlp_endpoint="http://127.0.0.1:4318", trace_ratio=0.25))
    assert hcm["tracing"]["random_sampling"]["value"] == 25.0
    assert "sampler" not in hcm["tracing"]["provider"]["typed_config"]  # Envoy's own: a parent's flag decides
    assert EnvoyPorts(1, 2).trace_ratio == telemetry.DEFAULT_TRACE_RATIO


def test_the_default_ratio_applies_unless_the_environment_sets_one() -> None:
    assert telemetry.trace_ratio({}) == telemetry.DEFAULT_TRACE_RATIO
    assert telemetry.trace_ratio({telemetry.TRACE_RATIO_ENV: "0.5"}) == 0.5
    assert telemetry.trace_ratio({telemetry.TRACE_RATIO_ENV: "7"}) == 1.0


@pytest.mark.parametrize(
    ("text", "flush_ms"),
    [("", 5000), ("100", 100), (" 100", 100), ("3", 10), ("0", 5000), ("-5", 5000), ("abc", 5000), ("²", 5000),
     ("99999999999999", 60_000)],
)  # fmt: skip
def test_envoy_sends_its_spans_as_often_as_the_services_and_only_its_runtime_file_says_so(text, flush_ms) -> None:
    assert telemetry.span_flush_ms({telemetry.SPAN_FLUSH_ENV: text}) == flush_ms
    runtime = yaml_of(render(EnvoyPorts(8080, 9901, backends=BACKENDS, span_flush_ms=flush_ms)))["layered_runtime"]
    assert runtime == {
        "layers": [{"name": "static", "static_layer": {"tracing.opentelemetry.flush_interval_ms": flush_ms}}]
    }


@pytest.mark.parametrize(("ratio", "parent_sampled"), [(0.0, True), (1.0, False), (0.5, True), (0.5, False)])
def test_the_services_follow_a_parents_sampled_flag_whatever_the_ratio(ratio: float, parent_sampled: bool) -> None:
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if parent_sampled else trace.TraceFlags.DEFAULT)
    parent = trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=flags)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    decision = telemetry.sampler(ratio).should_sample(context, 0x1234, "call").decision
    assert decision == (Decision.RECORD_AND_SAMPLE if parent_sampled else Decision.DROP)


def test_new_traces_are_sampled_at_the_ratio() -> None:
    sampled = sum(
        telemetry.sampler(0.25).should_sample(None, trace_id, "call").decision == Decision.RECORD_AND_SAMPLE
        for trace_id in range(1, 2**64, 2**64 // 4000)
    )
    assert 800 <= sampled <= 1200


# --- helpers ------------------------------------------------------------------------------------


def _routes(config: dict) -> list[dict]:
    """The REST routes (those that name their rule)."""
    every = hcm_of(config)["route_config"]["virtual_hosts"][0]["routes"]
    return [r for r in every if "rule" in r.get("metadata", {}).get("filter_metadata", {}).get(LUA, {})]


def _route_key(route: dict) -> str:
    return route["metadata"]["filter_metadata"]["envoy.filters.http.lua"]["rule"]


def _cap(route: dict) -> int:
    return route["metadata"]["filter_metadata"][edge.GATE_FILTER]["max_body"]


def _gates(config: dict) -> list[dict]:
    return [r["metadata"]["filter_metadata"][edge.GATE_FILTER] for r in _routes(config)]


def test_envoy_checks_the_health_of_clusters_that_may_have_several_replicas() -> None:
    """Two Router workers, and a Registry found by a DNS name, are health-checked over gRPC; a lone
    Billing is not (were it failing, Envoy's panic threshold would call it all the same)."""
    backends = {"router": [("127.0.0.1", 3), ("127.0.0.1", 4)], "registry": [("registry", 1)],
                "billing": [("127.0.0.1", 2)]}  # fmt: skip
    clusters = {c["name"]: c for c in yaml_of(render(EnvoyPorts(8080, 9901, backends)))["static_resources"]["clusters"]}
    for name in ("router", "registry"):
        (check,) = clusters[name]["health_checks"]
        assert check["grpc_health_check"] == {} and check["unhealthy_threshold"] == 2
    assert "health_checks" not in clusters["billing"]
