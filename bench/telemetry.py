"""What metrics and tracing cost: Switchboard with both on and with both off, side by side.

`telemetry-on`: every Prometheus endpoint served and scraped every SCRAPE_SECONDS, and every
service and Envoy tracing at the default ratio (OTEL_TRACES_SAMPLER_ARG unset: 0.01) to a local
OTLP/HTTP sink that reads and drops the spans (`OTEL_EXPORTER_OTLP_ENDPOINT`).
`telemetry-always`: the same, every request traced (OTEL_TRACES_SAMPLER_ARG=1).
`telemetry-metrics`: the metrics alone, i.e. tracing off. `telemetry-off`: no metrics endpoint, no
OTLP endpoint (no tracer in Envoy, no tracing code in the services).
"""

from __future__ import annotations

import statistics
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.launcher import Stack, free_port

SCRAPE_SECONDS = 5.0
ON, METRICS, OFF, ALWAYS = "telemetry-on", "telemetry-metrics", "telemetry-off", "telemetry-always"
MEASURED = (METRICS, ON, ALWAYS)  # each compared with OFF
TRACING = {ON: "", ALWAYS: "1"}  # the targets that trace, and their OTEL_TRACES_SAMPLER_ARG ("": the default)
# What tracing alone adds: each tracing target over the metrics alone.
TRACING_COMPARED = ((ON, METRICS), (ALWAYS, METRICS))


class _Sink(BaseHTTPRequestHandler):
    """Reads an OTLP export (chunked or not) and answers 200."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                self.rfile.read(size + 2)
            self.rfile.readline()
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def otlp_sink() -> Iterator[str]:
    """A local OTLP/HTTP endpoint that drops what it gets; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scraping(stack: Stack) -> Iterator[None]:
    """Scrapes every metrics endpoint of the stack every SCRAPE_SECONDS, as Prometheus would."""
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(SCRAPE_SECONDS):
            for url in stack.metrics.values():
                try:
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        answer.read()
                except OSError:
                    pass  # a slow scrape is Prometheus' problem too; the run goes on

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class Cost:
    """On minus off, medians of the per-round differences; CPU is all processes' per answer
    (steadier than latency on a busy machine)."""

    added_p50_ms: float
    added_p99_ms: float
    added_cpu_ms: float
    rounds: int


def cost(on: dict[int, tuple[float, ...]], off: dict[int, tuple[float, ...]]) -> Cost | None:
    """From (p50, p99, CPU per answer) per round of each target."""
    paired = [rnd for rnd in on if rnd in off]
    if not paired:
        return None
    added = [statistics.median(on[r][i] - off[r][i] for r in paired) for i in range(3)]
    return Cost(*added, len(paired))
