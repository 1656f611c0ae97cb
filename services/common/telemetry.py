"""Metrics and traces, one place per concern.

Metrics: Prometheus, served by each service on its own HTTP port (`--metrics-port`, 0 = off).
Names follow OpenTelemetry's GenAI semantic conventions where they apply (dots become
underscores, the unit a suffix); the rest are Switchboard's own. Label values are bounded:
provider ids (created by operators), catalog model ids (else "other"), HTTP statuses, fixed
words. Values that live in a service's memory or database (breaker states, spool depth, index
size, pending records) are read when Prometheus scrapes, not on the hot path.

Traces: OpenTelemetry, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set (OTLP/HTTP). Each
service continues the W3C `traceparent` its callers send (Envoy starts one when the caller
did not) with a server span per call, passes it on in the gRPC metadata of its own calls and
to the provider; log lines carry the trace id. A request Envoy did not sample gets no span.
When tracing is off no interceptor is installed; either way the Router then passes the
traceparent Envoy sent on to the provider unchanged.

Counters and histograms of the hot path are plain Python (LoopCounter, LoopHistogram): a few
µs per request, where prometheus-client's own took ~30 µs here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from itertools import accumulate
from types import TracebackType
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from services.common.errors import ApiError
from services.common.metadata import adding_metadata

log = logging.getLogger(__name__)

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACE_RATIO_ENV = "OTEL_TRACES_SAMPLER_ARG"
SPAN_FLUSH_ENV = "OTEL_BSP_SCHEDULE_DELAY"
DEFAULT_SPAN_FLUSH_MS = 5000  # OpenTelemetry's and Envoy's default
MIN_SPAN_FLUSH_MS, MAX_SPAN_FLUSH_MS = 10, 60_000  # Envoy's flush interval, whatever the variable says
# The share of new traces sampled (Envoy and the services alike) unless TRACE_RATIO_ENV says otherwise;
# a trace a caller started is followed by its sampled flag.
DEFAULT_TRACE_RATIO = 0.01
TRACEPARENT = "traceparent"
OTHER_MODEL = "other"  # the model label of a request whose model is not in the catalog
NO_PROVIDER = "none"  # the provider label of a request no provider answered
CLIENT_CLOSED = 499  # the outcome of a request whose caller left

# One registry per service: each endpoint shows its own metrics only.
ROUTER = CollectorRegistry()
BILLING = CollectorRegistry()
REGISTRY = CollectorRegistry()
REGISTRIES = {"router": ROUTER, "billing": BILLING, "registry": REGISTRY}

# --- counters and histograms for the hot path ------------------------------------------------
# prometheus_client's own take a lock and check the labels on every update (several µs each
# here); these are plain lists updated on the event loop's thread and turned into metric
# families when Prometheus scrapes (a scrape may see an update half done: one sample off).


class LoopCounter:
    """A counter per label values, for one thread's updates."""

    def __init__(self, registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()):
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, amount: float = 1, labels: tuple[str, ...] = ()) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        series = list(self.values.items()) or ([((), 0)] if not self.labels else [])
        for values, total in series:
            family.add_metric(values, total)
        return [family]


class LoopHistogram:
    """A histogram per label values, for one thread's updates: [sum, count, per-bucket counts]."""

    def __init__(
        self, registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple
    ) -> None:
        self.name, self.documentation, self.labels, self.buckets = name, documentation, labels, buckets
        self.series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0, 0] + [0] * (len(self.buckets) + 1)
        series[0] += value
        series[1] += 1
        series[2 + bisect_left(self.buckets, value)] += 1  # the first bucket whose bound is >= value

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, series in list(self.series.items()):
            counts = list(accumulate(series[2:]))
            bounds = [floatToGoString(bound) for bound in self.buckets] + ["+Inf"]
            family.add_metric(values, list(zip(bounds, counts, strict=True)), sum_value=series[0])
        return [family]


# --- the Router: GenAI semantic conventions -------------------------------------------------

_GEN_AI = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_provider_name")
# The conventions' advised bucket boundaries.
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TOKEN_BUCKETS = tuple(4.0**power for power in range(14))  # 1, 4, 16, ... 67108864

REQUEST_DURATION = LoopHistogram(
    ROUTER,
    "gen_ai_server_request_duration_seconds",
    "Inference request duration, from the call's arrival to its last byte (error_type: the HTTP status of a failure)",
    (*_GEN_AI, "error_type"),
    _DURATION_BUCKETS,
)
TIME_TO_FIRST_TOKEN = LoopHistogram(
    ROUTER,
    "gen_ai_server_time_to_first_token_seconds",
    "Time from a streamed request's arrival to its first event from the provider",
    _GEN_AI,
    _TTFT_BUCKETS,
)
TOKEN_USAGE = LoopHistogram(
    ROUTER,
    "gen_ai_client_token_usage",
    "Tokens per answered request, as the provider reported them (or as counted), by gen_ai_token_type",
    (*_GEN_AI, "gen_ai_token_type"),
    _TOKEN_BUCKETS,
)

# --- the Router: Switchboard's own ----------------------------------------------------------

REQUESTS = LoopCounter(
    ROUTER,
    "switchboard_router_requests",
    "Inference requests by operation and outcome (the HTTP status answered; 499: the caller left)",
    ("gen_ai_operation_name", "outcome"),
)
PROVIDER_ATTEMPTS = LoopCounter(
    ROUTER,
    "switchboard_router_provider_attempts",
    "Calls to providers by outcome: ok, retryable_error (failed over), provider_error (the caller's "
    "answer), abandoned (the caller left), circuit_open (skipped)",
    ("provider", "outcome"),
)
FAILOVERS = LoopCounter(
    ROUTER,
    "switchboard_router_failovers",
    "Times a request moved on from this provider to its next candidate",
    ("provider",),
)
RESERVATIONS_REFUSED = LoopCounter(
    ROUTER, "switchboard_router_reservations_refused", "Requests refused with 402: a spending limit is reached"
)
REGISTRY_CALLS = LoopCounter(
    ROUTER,
    "switchboard_router_registry_calls",
    "Unary calls to the Registry by method: a request whose answers are not cached makes one per answer",
    ("method",),
)


class CountingCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts a channel's unary calls by method name."""

    def __init__(self, counter: LoopCounter) -> None:
        self.counter = counter

    async def intercept_unary_unary(self, continuation, details, request):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.counter.inc(labels=(method.rpartition("/")[2],))
        return await continuation(details, request)


def attempted(provider: str, outcome: str, failing_over: bool = False) -> None:
    """One call to a provider (or its skipping), and whether the request moves on to the next candidate."""
    PROVIDER_ATTEMPTS.inc(labels=(provider, outcome))
    if failing_over:
        FAILOVERS.inc(labels=(provider,))


# --- Billing ----------------------------------------------------------------------------------

RECORDS_STORED = LoopCounter(
    BILLING, "switchboard_billing_records_stored", "Ledger records stored (new or completing a stream's)"
)
RECORDS_SETTLED = LoopCounter(
    BILLING, "switchboard_billing_records_settled", "Ledger records settled with a provider's cost"
)
RECORDS_REJECTED = LoopCounter(
    BILLING, "switchboard_billing_records_rejected", "Costs a provider's cost API answered that were rejected"
)
RECORDS_UNPRICED = LoopCounter(
    BILLING, "switchboard_billing_records_unpriced", "Ledger records aged into unpriced (no valid cost in time)"
)
COST_API_FAILURES = LoopCounter(
    BILLING,
    "switchboard_billing_cost_api_failures",
    "Cost API calls that changed nothing (non-200, invalid answer, timeout, connection error)",
    ("provider",),
)


# --- values read at scrape time -----------------------------------------------------------------

Samples = Iterable[tuple[Mapping[str, str], float]]


class ScrapeTimeGauge:
    """A gauge whose samples are read when Prometheus scrapes (on the metrics server's
    thread): nothing on the hot path. `sample` returns (labels, value) pairs."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        documentation: str,
        labels: list[str],
        sample: Callable[[], Samples],
    ) -> None:
        self.name, self.documentation, self.labels, self.sample = name, documentation, labels, sample
        registry.register(self)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            for labels, value in self.sample():
                family.add_metric([labels[name] for name in self.labels], value)
        except Exception:  # a scrape never breaks the service; the gauge is left out this time
            log.exception("metric not readable", extra={"metric": self.name})
            return []
        return [family]


def gauge(registry: CollectorRegistry, name: str, documentation: str, read: Callable[[], float]) -> ScrapeTimeGauge:
    """A scrape-time gauge without labels."""
    return ScrapeTimeGauge(registry, name, documentation, [], lambda: [({}, read())])


def watch_router(breakers: Any, spool: Any, spending: Any) -> None:
    """The Router's scrape-time gauges: breaker states (services/router/breaker.py), the spool of
    ledger records (services/router/spool.py; metric names keep "ledger_spool") and whether it
    follows Billing's limited accounts (services/router/spending.py)."""
    ScrapeTimeGauge(
        ROUTER,
        "switchboard_router_breaker_state",
        "Circuit breaker per provider: 0 closed, 1 open, 2 half-open (providers not listed are closed)",
        ["provider"],
        lambda: [({"provider": provider}, state) for provider, state in breakers.states().items()],
    )
    gauge(ROUTER, "switchboard_router_ledger_spool_records", "Ledger records not yet acknowledged by Billing",
          lambda: spool.backlog().records)  # fmt: skip
    gauge(ROUTER, "switchboard_router_ledger_spool_files", "Ledger spool files not yet acknowledged by Billing",
          lambda: spool.backlog().files)  # fmt: skip
    gauge(ROUTER, "switchboard_router_ledger_spool_oldest_age_seconds",
          "Age of the oldest ledger record not yet acknowledged by Billing (0: none)",
          lambda: spool.backlog().oldest_age_seconds)  # fmt: skip
    gauge(ROUTER, "switchboard_router_limit_feed_following",
          "1 while Billing's limited accounts are followed; 0: every request asks Billing for a reservation",
          lambda: float(spending.following))  # fmt: skip


def watch_registry(index: Any, feed: Any) -> None:
    """The Registry's scrape-time gauges: its index (services/registry/storage/index.py) and change feed."""
    ScrapeTimeGauge(
        REGISTRY,
        "switchboard_registry_index_entries",
        "Entries of the in-memory index by kind",
        ["kind"],
        lambda: [({"kind": kind}, len(getattr(index, kind))) for kind in ("catalog", "mappings", "providers", "users")],
    )
    gauge(REGISTRY, "switchboard_registry_change_feed_watchers", "Open change-feed streams (Routers, Billing)",
          lambda: feed.watchers)  # fmt: skip
    gauge(REGISTRY, "switchboard_registry_change_feed_lag", "Change notices the slowest watcher has not been sent yet",
          lambda: feed.backlog)  # fmt: skip


def watch_billing(count_pending: Callable[[], int]) -> None:
    """Billing's scrape-time gauge: ledger records waiting for a cost (a query, on the metrics thread)."""
    gauge(BILLING, "switchboard_billing_records_pending", "Ledger records waiting for a provider's cost", count_pending)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serves the registry (and the process's own metrics) on http://host:port/metrics; 0 = off.
    Returns the bound port."""
    if port <= 0:
        return 0
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server.server_port


# --- one inference request ---------------------------------------------------------------------


class InferenceMeasure:
    """Measures one inference request: its duration and outcome on exit, its first token and
    token usage when told. The servicer sets `model` (a catalog model) and `provider` as they
    become known."""

    __slots__ = ("model", "operation", "provider", "started")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.model = OTHER_MODEL
        self.provider = NO_PROVIDER
        self.started = time.monotonic()

    def __enter__(self) -> InferenceMeasure:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None) -> None:
        status = str(_status_of(error))
        REQUESTS.inc(labels=(self.operation, status))
        labels = (self.operation, self.model, self.provider, "" if status == "200" else status)
        REQUEST_DURATION.observe(labels, time.monotonic() - self.started)

    def first_token(self, at: float) -> None:
        """A stream's first event arrived at `at` (time.monotonic())."""
        TIME_TO_FIRST_TOKEN.observe((self.operation, self.model, self.provider), at - self.started)

    def tokens(self, input_tokens: int, output_tokens: int) -> None:
        TOKEN_USAGE.observe((self.operation, self.model, self.provider, "input"), input_tokens)
        TOKEN_USAGE.observe((self.operation, self.model, self.provider, "output"), output_tokens)


def _status_of(error: BaseException | None) -> int:
    if error is None:
        return 200
    if isinstance(error, ApiError):
        return error.http_status
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return CLIENT_CLOSED
    return 500


# --- traces ------------------------------------------------------------------------------------

_tracer: Any = None  # the service's tracer while tracing is on


def tracing_enabled() -> bool:
    return _tracer is not None


def span_flush_ms(environment: Mapping[str, str] = os.environ) -> int:
    """How often spans are sent, in ms: OpenTelemetry's SPAN_FLUSH_ENV (its batch span processor's
    delay in the services), else DEFAULT_SPAN_FLUSH_MS; Envoy's tracer takes the same."""
    try:
        delay = int(environment.get(SPAN_FLUSH_ENV, "").strip())
    except ValueError:
        return DEFAULT_SPAN_FLUSH_MS
    return min(MAX_SPAN_FLUSH_MS, max(MIN_SPAN_FLUSH_MS, delay)) if delay > 0 else DEFAULT_SPAN_FLUSH_MS


def trace_ratio(environment: Mapping[str, str] = os.environ) -> float:
    """The share of new traces sampled: TRACE_RATIO_ENV, else DEFAULT_TRACE_RATIO (clamped to 0..1)."""
    text = environment.get(TRACE_RATIO_ENV, "")
    return min(1.0, max(0.0, float(text))) if text else DEFAULT_TRACE_RATIO


def sampler(ratio: float) -> Any:
    """Parent-based sampling, as Envoy's: a parent's sampled flag decides; a new trace is sampled
    by its trace id at `ratio`."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return ParentBased(TraceIdRatioBased(ratio))


def configure_tracing(service: str, environment: Mapping[str, str] = os.environ) -> bool:
    """Turns tracing on when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans are batched and sent
    over OTLP/HTTP on the SDK's own thread. Returns whether it is on."""
    global _tracer
    if not environment.get(OTLP_ENDPOINT_ENV):
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"switchboard-{service}"}), sampler=sampler(trace_ratio(environment))
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("switchboard")
    return True


def stop_tracing() -> None:
    """Sends the spans still batched (call it off the event loop: it blocks)."""
    if _tracer is not None:
        from opentelemetry import trace

        trace.get_tracer_provider().shutdown()


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, in hex, while tracing is on."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _recording() -> bool:
    """Whether a span is being recorded now (tracing on and this request sampled)."""
    if _tracer is None:
        return False
    from opentelemetry import trace

    return trace.get_current_span().is_recording()


def provider_span(operation: str, model: str, provider: str) -> AbstractContextManager:
    """The span of one call to a provider, within a recorded trace (nothing otherwise)."""
    if not _recording():
        return nullcontext()
    from opentelemetry import trace

    attributes = {"gen_ai.operation.name": operation, "gen_ai.request.model": model, "gen_ai.provider.name": provider}
    return _tracer.start_as_current_span(f"{operation} {model}", kind=trace.SpanKind.CLIENT, attributes=attributes)


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def trace_headers(headers: dict[str, str], traceparent: str) -> dict[str, str]:
    """`headers` plus the trace context: the current span's while one is recorded, else the
    traceparent the call came with (if it has the W3C shape)."""
    if not _recording():
        return {**headers, TRACEPARENT: traceparent} if _TRACEPARENT.fullmatch(traceparent) else headers
    from opentelemetry import propagate

    carrier = dict(headers)
    propagate.inject(carrier)
    return carrier


# Calls that get no span: health checks, reflection, and long-lived feeds (a span per connection tells nothing).
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


def _traced_method(method: str) -> bool:
    return not method.startswith(_UNTRACED_PREFIXES) and not method.rpartition("/")[2].startswith("Watch")


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A server span per call, continuing the caller's trace from the call's metadata."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not _traced_method(details.method) or _unsampled(details):
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=_span_unary(handler.unary_unary, details))
        if handler.unary_stream:
            return handler._replace(unary_stream=_span_stream(handler.unary_stream, details))
        return handler


def _unsampled(details: grpc.HandlerCallDetails) -> bool:
    """Whether the caller's traceparent says the call is not sampled. Such a call gets no span and
    its handler is not wrapped at all: it costs what it costs with tracing off (what it calls gets
    no trace context either, the provider gets the caller's traceparent)."""
    metadata = details.invocation_metadata or ()
    return any(key == TRACEPARENT and isinstance(value, str) and value.endswith("-00") for key, value in metadata)


def _server_span(details: grpc.HandlerCallDetails) -> AbstractContextManager:
    """The call's span, continuing the caller's trace."""
    metadata = {key: value for key, value in details.invocation_metadata or () if isinstance(value, str)}
    from opentelemetry import propagate, trace

    service, _, method = details.method.lstrip("/").rpartition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return _tracer.start_as_current_span(
        details.method.lstrip("/"), context=propagate.extract(metadata), kind=trace.SpanKind.SERVER,
        attributes=attributes,
    )  # fmt: skip


def _span_unary(behavior: Callable, details: grpc.HandlerCallDetails) -> Callable:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _server_span(details):
            return await behavior(request, context)

    return traced


def _span_stream(behavior: Callable, details: grpc.HandlerCallDetails) -> Callable:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _server_span(details):
            async for response in behavior(request, context):
                yield response

    return traced


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The tracing interceptor while tracing is on; none otherwise (no cost)."""
    return [TracingInterceptor()] if _tracer is not None else []


def _trace_context() -> list[tuple[str, str]]:
    """The current trace context as metadata entries (traceparent, tracestate)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that pass the trace on to the called service while tracing is on; none otherwise."""
    return adding_metadata(_trace_context) if _tracer is not None else []
