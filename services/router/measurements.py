"""What the Router shows of each (provider, provider model): the shared health record the
Registry keeps for every replica (services/common/health.py) with what this replica measured
since its last report added: time to first token and output throughput (moving averages),
attempts, errors and refusals (totals and a recent window), and the last few errors.

Recording runs on every attempt, so it is kept cheap: two dict lookups, integer increments on
this replica's pending Traffic, and no lock (the event loop is the only writer). The combined
view is built again only when read after a change (`_view`); ranking() keeps its answer until
an answer or a record moves the averages. services/router/health_reports.py
sends the pending traffic to the Registry on a timer and applies the records it gets back and
the ones the change feed brings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.health import (
    LAST_ERRORS,
    WINDOW_MINUTES,
    ErrorRecord,
    Figures,
    Traffic,
    add,
    average,
    figures_of,
)

__all__ = ["LAST_ERRORS", "WINDOW_MINUTES", "ErrorRecord", "Measurements", "Stats"]

MAX_ERROR_TEXT = 300  # characters of an error's message kept, after redaction
SECRET_REACH = 4096  # characters a secret can take as written (its longest escaped form)
UNAVAILABLE = "UNAVAILABLE"  # the gRPC code of a provider's own failure
Stats = Figures  # what readers get of one provider model
_STALE = object()
Taken = list[tuple[str, str, Traffic]]  # (provider, provider model, its traffic) under way


@dataclass(slots=True)
class _Entry:
    """One provider model: the shared record, this replica's traffic in a report under way
    (`sent`) and since (`pending`), and their combination (None: build it again)."""

    shared: Figures | None = None
    sent: Traffic | None = None
    pending: Traffic | None = None
    # The newest record that came (change feed, load) while `sent` was under way: it may count `sent`
    # already, so it waits for the report's answer rather than count that traffic twice.
    held: internal_pb.ModelHealth | None = None
    view: Figures | None = None
    rank: tuple[float, float] | object | None = None  # ranking()'s answer; _STALE: compute it again


def _ranking(entry: _Entry) -> tuple[float, float] | None:
    """ranking() after an answer or a record moved the averages: the averages alone, without
    building the view (`:fastest` ranks every candidate of every request)."""
    shared = entry.shared
    if shared is None:
        samples, ttft, throughput_samples, throughput = 0, 0.0, 0, 0.0
    else:
        samples, ttft = shared.samples, shared.ttft_ms
        throughput_samples, throughput = shared.throughput_samples, shared.tokens_per_second
    for traffic in (entry.sent, entry.pending):
        if traffic is not None:
            ttft = average(ttft, samples, traffic.ttft_ms_sum, traffic.latency_samples)
            throughput = average(throughput, throughput_samples, traffic.throughput_sum, traffic.throughput_samples)
            samples += traffic.latency_samples
            throughput_samples += traffic.throughput_samples
    return None if samples == 0 else (throughput, ttft)


class Measurements:
    """Per (provider, provider model) figures, fed by every attempt and every answered request
    here and by the shared records of all replicas."""

    def __init__(self, clock: Callable[[], float] = time.time, wall_clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {}  # provider -> provider model -> entry
        self.clock = clock  # its minutes are the recent window's: shared, so Unix time by default
        self.wall_clock = wall_clock
        self.started = wall_clock()
        self._minute = -1
        self._minute_ends = float("-inf")  # when self._minute ends on `clock`
        self._minute_starts = float("inf")

    def minute(self) -> int:
        """The current minute of `clock`; divided out only once a minute (compares otherwise)."""
        now = self.clock()
        if not self._minute_starts <= now < self._minute_ends:
            self._minute = int(now // 60)
            self._minute_starts, self._minute_ends = self._minute * 60.0, (self._minute + 1) * 60.0
        return self._minute

    def _pending(self, provider: str, model: str, averages: bool = False) -> Traffic:
        """The traffic to report of the provider model; `averages` when the event moves them."""
        models = self._entries.get(provider)
        entry = None if models is None else models.get(model)
        if entry is None:
            entry = self._entries.setdefault(provider, {})[model] = _Entry()
        entry.view = None
        if averages:
            entry.rank = _STALE
        if entry.pending is None:
            entry.pending = Traffic()
        return entry.pending

    def observe(self, provider: str, model: str, ttft_seconds: float, tokens: int, generation_seconds: float) -> None:
        traffic = self._pending(provider, model, averages=True)
        traffic.latency_samples += 1
        traffic.ttft_ms_sum += ttft_seconds * 1000
        if tokens > 0:  # throughput over the whole answer time: a unary answer has no token timing
            traffic.throughput_samples += 1
            traffic.throughput_sum += tokens / max(generation_seconds, 1e-3)

    def answered(self, provider: str, model: str) -> None:
        """An attempt got a valid answer (or the start of one)."""
        traffic = self._pending(provider, model)
        traffic.requests += 1
        traffic.count(self.minute(), 1, 0)

    def skipped(self, provider: str, model: str) -> None:
        """A request passed the provider by: its breaker was open."""
        self._pending(provider, model).skipped += 1

    def failed(self, provider: str, model: str, error: ErrorRecord, *, counted: bool = False) -> None:
        """An attempt failed on the provider's side; `counted` when the attempt was counted as a
        request already (a stream that broke after it began)."""
        traffic = self._pending(provider, model)
        requests = 0 if counted else 1
        traffic.requests += requests
        traffic.errors += 1
        traffic.count(self.minute(), requests, 1)
        traffic.error(error)

    def rejected(self, provider: str, model: str, error: ErrorRecord) -> None:
        """The provider refused the request as bad: a request, not an error of the provider."""
        traffic = self._pending(provider, model)
        traffic.requests += 1
        traffic.rejected += 1
        traffic.count(self.minute(), 1, 0)
        traffic.error(error)

    def error(
        self, provider_status: int, code: str, reason: str, message: str, redact: Callable[[str], str]
    ) -> ErrorRecord:
        """An error record stamped now; the message made one line (its control characters spaces:
        JSON would print each as six), then redacted (the other way round, a secret written with
        a control character for its space would become the secret), then cut (a cut first could
        leave part of a secret the redactor no longer recognizes)."""
        text = message[: MAX_ERROR_TEXT + SECRET_REACH]  # all that can be kept, and any secret across its end
        if not text.isprintable():
            text = "".join(c if c.isprintable() else " " for c in text)
        text = redact(text)[:MAX_ERROR_TEXT]
        return ErrorRecord(self.wall_clock(), provider_status, code, reason, text)

    def _view(self, entry: _Entry) -> Figures:
        """The shared record with this replica's unconfirmed traffic added."""
        figures = entry.shared or Figures()
        for traffic in (entry.sent, entry.pending):
            if traffic is not None:
                figures = add(figures, traffic, self.started, self.minute())
        entry.view = figures
        return figures

    def get(self, provider: str, model: str) -> Figures | None:
        models = self._entries.get(provider)
        entry = None if models is None else models.get(model)
        return None if entry is None else entry.view or self._view(entry)

    def of_provider(self, provider: str) -> dict[str, Figures]:
        """The provider's models with figures (a copy: the caller may await while reading)."""
        return {model: entry.view or self._view(entry) for model, entry in self._entries.get(provider, {}).items()}

    def ranking(self, provider: str, model: str) -> tuple[float, float] | None:
        """(throughput, ttft_ms) for ordering, or None when unmeasured (called per candidate: inlined)."""
        models = self._entries.get(provider)
        entry = None if models is None else models.get(model)
        if entry is None:
            return None
        rank = entry.rank
        if rank is _STALE:
            rank = entry.rank = _ranking(entry)
        return rank

    def start_time(self, provider: str) -> float:
        """Since when the provider's figures count: its models' earliest start; without any,
        the earliest start of every record known here (this replica's own before the first)."""
        starts = [f.start_time for f in self.of_provider(provider).values() if f.start_time]
        if starts:
            return min(starts)
        known = (e.shared.start_time for models in self._entries.values() for e in models.values() if e.shared)
        return min(known, default=self.started)

    # --- the shared records (services/router/health_reports.py) ------------------------------

    def pending_count(self) -> int:
        """How many provider models have traffic to report."""
        entries = (entry for models in self._entries.values() for entry in models.values())
        return sum(entry.pending is not None and entry.sent is None for entry in entries)

    def take_report(self, most: int) -> Taken:
        """Up to `most` provider models' pending traffic, now under way (at most one report at a time)."""
        taken: Taken = []
        for provider, models in self._entries.items():
            for model, entry in models.items():
                if entry.pending is not None and entry.sent is None:
                    entry.sent, entry.pending = entry.pending, None
                    taken.append((provider, model, entry.sent))
                    if len(taken) == most:
                        return taken
        return taken

    def report_ended(self, taken: Taken, records: list[internal_pb.ModelHealth] | None) -> None:
        """A report's outcome: the records it changed (which count its traffic now; none for a
        report dropped unapplied, whose traffic is gone), or None when it failed: its traffic
        goes with the next report."""
        for record in records or ():
            _keep(self._entry(record), record)
        for provider, model, _ in taken:
            entry = self._entries[provider][model]
            if records is None and entry.sent is not None:
                if entry.pending is not None:
                    entry.sent.merge(entry.pending)
                entry.pending = entry.sent
                oldest = self.minute() - WINDOW_MINUTES  # the window's minutes only, however long it fails
                entry.pending.minutes = {m: c for m, c in entry.pending.minutes.items() if m > oldest}
            if entry.held is not None:
                _keep(entry, entry.held)
            entry.sent, entry.held, entry.view, entry.rank = None, None, None, _STALE

    def apply(self, records: Iterable[internal_pb.ModelHealth]) -> None:
        """Keeps each record unless a newer one of its provider model is known; while this replica's
        report of the provider model is under way, the newest waits for the report's answer."""
        for record in records:
            entry = self._entry(record)
            if entry.sent is None:
                _keep(entry, record)
            elif entry.held is None or record.version > entry.held.version:
                entry.held = record

    def _entry(self, record: internal_pb.ModelHealth) -> _Entry:
        models = self._entries.setdefault(record.provider, {})
        entry = models.get(record.provider_model)
        if entry is None:
            entry = models[record.provider_model] = _Entry()
        return entry


def _keep(entry: _Entry, record: internal_pb.ModelHealth) -> None:
    """The record as the entry's shared one, unless a newer one is known."""
    if entry.shared is None or record.version > entry.shared.version:
        entry.shared, entry.view, entry.rank = figures_of(record), None, _STALE
