"""Metrics and traces through the real stack: every Prometheus endpoint counts exactly what
was done, and a caller's traceparent reaches the provider with every service's span in it.

A mock provider answers by the first path segment: "fail" (503, so the Router fails over),
"good" (a chat answer, or a stream reporting usage when asked), "costs" (a cost API that
rejects the first id it is asked about and prices the others). A tiny OTLP/HTTP receiver
collects the spans the services and Envoy export.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from helpers.upstream import JsonHandler
from helpers.waiting import eventually
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.common import telemetry
from services.common.logs import JsonFormatter
from services.demo import AdminApi
from services.launcher import free_port
from services.router.breaker import Breakers

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
PRICES = [{"provider_model": "upstream-model", "input_token_nano_usd": 100, "output_token_nano_usd": 300}]
COST_NANO_USD = 4321


def _answer(stream: bool, with_usage: bool) -> tuple[bytes, str]:
    if not stream:
        message = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        return json.dumps({"id": "c1", "object": "chat.completion", "choices": [message], "usage": USAGE}).encode(), (
            "application/json"
        )
    delta = {"index": 0, "delta": {"content": "hi"}, "finish_reason": None}
    events = [{"id": "c1", "object": "chat.completion.chunk", "choices": [delta]}]
    if with_usage:
        events.append({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return body, "text/event-stream"


class MockProvider(JsonHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.traceparents.append(self.headers.get("traceparent", ""))
        behaviour = self.path.split("/")[1]
        if behaviour == "fail":
            self.send(503, b'{"error": {"message": "overloaded"}}')
        elif behaviour == "costs":
            first, *others = request["requestIds"]
            costs = [{"requestId": first, "costNanoUsd": -1}] + [
                {"requestId": i, "costNanoUsd": COST_NANO_USD} for i in others
            ]
            self.send(200, json.dumps({"requests": costs}).encode())
        else:
            with_usage = (request.get("stream_options") or {}).get("include_usage") is True
            self.send(200, *_answer(request.get("stream") is True, with_usage))


class OtlpReceiver(BaseHTTPRequestHandler):
    """Keeps (service name, trace id, span name) of every span exported to it."""

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        """The request body, chunked or not, gzipped or not (exporters differ)."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            data = self.rfile.read(int(self.headers["Content-Length"]))
        else:
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

    def do_POST(self) -> None:
        export = ExportTraceServiceRequest.FromString(self._body())
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append((attributes.get("service.name"), span.trace_id.hex(), span.name))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


class Server(ThreadingHTTPServer):
    # Envoy sends a batch of spans once (a one-second connect timeout, no retry): the listen queue has room
    # for every exporter's connection at once (5 by default), however late the accepting thread runs.
    request_queue_size = 128


def _serve(handler: type[BaseHTTPRequestHandler], **state: list) -> Iterator[ThreadingHTTPServer]:
    server = Server(("127.0.0.1", free_port()), handler)
    for name, value in state.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[ThreadingHTTPServer]:
    yield from _serve(MockProvider, traceparents=[])


@pytest.fixture(scope="session")  # outlives the module's stacks: their exporters' last flush finds it there
def receiver() -> Iterator[ThreadingHTTPServer]:
    yield from _serve(OtlpReceiver, spans=[])


class Setup:
    """A user with a token, and providers and models on the mock provider."""

    def __init__(self, sb, provider: ThreadingHTTPServer) -> None:
        self.sb, self.api = sb, AdminApi(sb.base_url, sb.admin_token)
        self.mock = f"http://127.0.0.1:{provider.server_address[1]}"
        self.org, self.user = "org-telemetry", "user-telemetry"
        self.api.ensure_member(self.org, self.user)
        self.token = self.api.new_token(self.user)

    def provider(self, behaviour: str, rank: int = 0) -> str:
        name = f"p-{behaviour}"
        settings = {
            "tasks": ["conversational"],
            "default_rank": rank,
            "api_key": secrets.token_hex(8),
            "billing_url": f"{self.mock}/costs",
            "billing_authorization": f"Bearer {secrets.token_hex(16)}",  # long: "cost" would be redacted everywhere
        }
        self.api.ensure_provider({"id": name, "org": self.org, "base_url": f"{self.mock}/{behaviour}", **settings})
        self.api.call("PUT", f"/admin/v1/providers/{name}/prices", {"prices": PRICES})
        return name

    def model(self, name: str, *providers: str) -> str:
        model = f"{self.org}/{name}"
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        self.api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        mapping = {"task": "conversational", "hfModel": model, "providerModel": "upstream-model", "status": "live"}
        for provider in providers:
            self.api.call("POST", f"/api/partners/{provider}/models", mapping)
        return model

    def chat(self, model: str, headers: dict[str, str] | None = None, **extra: object) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
        with self.sb.http(self.token) as http:
            return http.post("/v1/chat/completions", json=body, headers=headers or {})

    def set_limit(self, nano_usd: int) -> None:
        with self.sb.http(self.token) as http:
            answer = http.put(f"/v1/billing/accounts/{self.user}/limit", json={"limitNanoUsd": str(nano_usd)})
        assert answer.status_code == 200, answer.text


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint, by (sample name, labels)."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def family(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == name}


def gen_ai(model: str, provider: str, **labels: str) -> dict[str, str]:
    return {"gen_ai_operation_name": "chat", "gen_ai_request_model": model, "gen_ai_provider_name": provider, **labels}


def envoy_responses(samples: Samples, code_class: str) -> float:
    name = "envoy_http_downstream_rq_xx_total"  # the parser names counter samples *_total
    return value(samples, name, envoy_http_conn_manager_prefix="switchboard", envoy_response_code_class=code_class)


def in_access_log(sb, trace_id: str) -> bool:
    """Whether Envoy logged a request of the trace (its access log is flushed now and then)."""
    return f'"trace_id":"{trace_id}"' in (sb.stack.data_dir / "logs" / "envoy.log").read_text()


def test_every_metrics_endpoint_counts_a_failover_a_402_and_a_stream_exactly(make_stack, provider) -> None:
    sb = make_stack(SWITCHBOARD_RECONCILE_INTERVAL_SECONDS="3600", SWITCHBOARD_BREAKER_FAILURES="100")
    metrics = sb.stack.metrics
    assert set(metrics) == {"envoy", "registry", "billing", "router"}
    setup = Setup(sb, provider)
    failing, good = setup.provider("fail"), setup.provider("good", rank=1)
    failover_model, stream_model = setup.model("failover", failing, good), setup.model("stream", good)
    envoy_before = scrape(metrics["envoy"])

    answered = setup.chat(failover_model)
    assert answered.status_code == 200 and answered.headers["x-inference-provider"] == good, answered.text
    streamed = setup.chat(stream_model, stream=True)
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n"), streamed.text
    setup.set_limit(1)
    refused = setup.chat(stream_model)
    assert refused.status_code == 402, refused.text

    envoy = scrape(metrics["envoy"])
    assert envoy_responses(envoy, "2") - envoy_responses(envoy_before, "2") == 3  # two answers, the limit
    assert envoy_responses(envoy, "4") - envoy_responses(envoy_before, "4") == 1

    router = scrape(metrics["router"])
    assert family(router, "switchboard_router_requests_total") == {
        frozenset({("gen_ai_operation_name", "chat"), ("outcome", "200")}): 2,
        frozenset({("gen_ai_operation_name", "chat"), ("outcome", "402")}): 1,
    }
    assert family(router, "switchboard_router_provider_attempts_total") == {
        frozenset({("provider", failing), ("outcome", "retryable_error")}): 1,
        frozenset({("provider", good), ("outcome", "ok")}): 2,
    }
    assert family(router, "switchboard_router_failovers_total") == {frozenset({("provider", failing)}): 1}
    assert value(router, "switchboard_router_reservations_refused_total") == 1
    assert family(router, "switchboard_router_breaker_state") == {frozenset({("provider", failing)}): 0}
    durations = family(router, "gen_ai_server_request_duration_seconds_count")
    assert durations == {
        frozenset(gen_ai(failover_model, good, error_type="").items()): 1,
        frozenset(gen_ai(stream_model, good, error_type="").items()): 1,
        frozenset(gen_ai(stream_model, "none", error_type="402").items()): 1,
    }
    assert family(router, "gen_ai_server_time_to_first_token_seconds_count") == {
        frozenset(gen_ai(stream_model, good).items()): 1
    }
    for model in (failover_model, stream_model):
        for kind, tokens in (("input", USAGE["prompt_tokens"]), ("output", USAGE["completion_tokens"])):
            labels = gen_ai(model, good, gen_ai_token_type=kind)
            assert value(router, "gen_ai_client_token_usage_count", **labels) == 1
            assert value(router, "gen_ai_client_token_usage_sum", **labels) == tokens

    registry = scrape(metrics["registry"])
    assert family(registry, "switchboard_registry_index_entries") == {
        frozenset({("kind", "catalog")}): 2,
        frozenset({("kind", "mappings")}): 3,
        frozenset({("kind", "providers")}): 2,
        frozenset({("kind", "users")}): 1,
    }
    assert value(registry, "switchboard_registry_change_feed_watchers") == 2  # the Router's and Billing's
    assert value(registry, "switchboard_registry_change_feed_lag") == 0

    spooled = lambda: value(scrape(metrics["router"]), "switchboard_router_ledger_spool_records") == 0  # noqa: E731
    eventually(spooled, "the Router's ledger spool to drain")
    eventually(lambda: value(scrape(metrics["billing"]), "switchboard_billing_records_pending") == 2, "two records")
    with sb.admin() as admin:
        assert admin.post("/admin/v1/billing:reconcile", json={}).status_code == 200
    billing = scrape(metrics["billing"])
    assert value(billing, "switchboard_billing_records_pending") == 1  # its cost was rejected
    assert value(billing, "switchboard_billing_records_settled_total") == 1
    assert value(billing, "switchboard_billing_records_rejected_total") == 1
    assert value(billing, "switchboard_billing_records_unpriced_total") == 0
    assert family(billing, "switchboard_billing_cost_api_failures_total") == {}


def test_a_callers_traceparent_reaches_the_provider_and_every_services_span(make_stack, provider, receiver) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    sb = make_stack(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="100")
    setup = Setup(sb, provider)
    model = setup.model("traced", setup.provider("good"))
    setup.set_limit(10**15)  # a limited account: its reservation is a call to Billing within the trace
    trace_id = secrets.token_hex(16)
    provider.traceparents.clear()

    answer = setup.chat(model, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})

    assert answer.status_code == 200, answer.text
    assert [t.split("-")[1] for t in provider.traceparents] == [trace_id]
    services = {"switchboard-envoy", "switchboard-router", "switchboard-registry", "switchboard-billing"}

    # the Router's server span and its call to the provider
    names = {"switchboard.router.v1.RouterService/CreateChatCompletion", "chat upstream-model"}

    def traced() -> tuple[set[str], set[str]]:
        spans = [(service, name) for service, trace, name in list(receiver.spans) if trace == trace_id]
        return {service for service, _ in spans}, {name for service, name in spans if service != "switchboard-envoy"}

    # A service exports a span when it ends, in batches: the Router's server span can come in a later
    # batch than its call to the provider, after the caller has its answer.
    eventually(
        lambda: traced()[0] == services and traced()[1] >= names, lambda: f"{services} with {names}, got {traced()}"
    )
    eventually(lambda: in_access_log(sb, trace_id), "the trace id in Envoy's access log")

    unsampled = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    provider.traceparents.clear()
    assert setup.chat(model, headers={"traceparent": unsampled}).status_code == 200
    (passed_on,) = provider.traceparents
    assert passed_on.split("-")[1] == unsampled.split("-")[1] and passed_on.endswith("-00"), passed_on
    later = secrets.token_hex(16)  # sampled, sent after: once its spans are in, the unsampled one's would be
    setup.chat(model, headers={"traceparent": f"00-{later}-{secrets.token_hex(8)}-01"})
    exporters = {"switchboard-envoy", "switchboard-router", "switchboard-billing"}
    eventually(lambda: {s for s, trace, _ in list(receiver.spans) if trace == later} >= exporters, "the later spans")
    assert not [span for span in receiver.spans if span[1] == unsampled.split("-")[1]]


def test_without_an_otlp_endpoint_envoy_runs_no_tracer_and_passes_a_callers_traceparent_on(stack, provider):
    setup = Setup(stack, provider)  # the session's shared stack: no OTLP endpoint, names of this module's own
    model = setup.model("untraced", setup.provider("good"))
    provider.traceparents.clear()
    assert setup.chat(model).status_code == 200
    assert provider.traceparents[-1] == ""  # no tracer in Envoy: nothing starts a trace
    callers = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    assert setup.chat(model, headers={"traceparent": callers}).status_code == 200
    assert provider.traceparents[-1] == callers


def test_log_lines_carry_the_trace_and_span_ids_while_tracing_is_on(monkeypatch) -> None:
    tracer = TracerProvider().get_tracer("test")
    monkeypatch.setattr(telemetry, "_tracer", tracer)
    formatter = JsonFormatter("router")
    record = logging.LogRecord("x", logging.WARNING, "", 0, "something happened", None, None)
    with tracer.start_as_current_span("call") as span:
        entry = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert (entry["trace_id"], entry["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert "trace_id" not in json.loads(formatter.format(record))  # no span, no ids


W3C_TRACEPARENT = r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"


@given(st.from_regex(W3C_TRACEPARENT, fullmatch=True))
def test_with_tracing_off_a_w3c_traceparent_is_passed_on_to_the_provider(traceparent: str) -> None:
    headers = {"Content-Type": "application/json"}
    assert telemetry.trace_headers(headers, traceparent) == {**headers, "traceparent": traceparent}


@given(st.text(max_size=80).filter(lambda text: not re.fullmatch(W3C_TRACEPARENT, text)))
def test_with_tracing_off_anything_else_is_never_sent_to_the_provider(text: str) -> None:
    headers = {"Content-Type": "application/json"}
    assert telemetry.trace_headers(headers, text) == headers


def test_the_breaker_gauge_reads_closed_open_and_half_open() -> None:
    now = [0.0]
    breakers = Breakers(threshold=2, cooldown=10, clock=lambda: now[0])
    breakers.failed("a")
    assert breakers.states() == {"a": 0}  # one failure: still closed
    breakers.failed("a")
    assert breakers.states() == {"a": 1}
    now[0] = 11.0
    assert breakers.allow("a")  # the probe goes out
    assert breakers.states() == {"a": 2}
    breakers.succeeded("a")
    assert breakers.states() == {}


@given(st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=50))
def test_the_loop_histogram_exposes_what_prometheus_clients_own_would(observations: list[float]) -> None:
    buckets = (0.01, 0.5, 1.0, 81.92)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = telemetry.LoopHistogram(ours, "h_seconds", "h", ("kind",), buckets)
    reference = Histogram("h_seconds", "h", ["kind"], buckets=buckets, registry=theirs)
    for value in observations:
        histogram.observe(("a",), value)
        reference.labels("a").observe(value)

    def samples(registry: CollectorRegistry) -> dict:
        text = generate_latest(registry).decode()
        return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text)
                for s in f.samples if not s.name.endswith("_created")}  # fmt: skip

    assert samples(ours) == pytest.approx(samples(theirs))
