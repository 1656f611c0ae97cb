"""One health record per (provider, provider model), shared by every Router replica.

The Registry keeps the record (services/registry/storage/health_records.py): Routers report the live
traffic they measured in batches (Traffic), its probes add their outcomes, and the change feed
carries every changed record to every Router. A Router shows the record with what it measured
since its last report added (services/router/measurements.py), both combined by `add`, the
one rule the Registry uses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from google.protobuf import timestamp_pb2
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

ALPHA = 0.2  # weight of the newest sample in the moving averages
WINDOW_MINUTES = 5  # the recent window: this many whole minutes, the current one included
LAST_ERRORS = 5  # errors kept per provider model


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One failed or refused attempt; `message` is already redacted and bounded."""

    unix_seconds: float
    provider_status: int
    code: str
    reason: str
    message: str


@dataclass(slots=True)
class Traffic:
    """What one Router replica measured of one provider model since its last report."""

    requests: int = 0
    errors: int = 0
    rejected: int = 0
    skipped: int = 0
    latency_samples: int = 0
    ttft_ms_sum: float = 0.0
    throughput_samples: int = 0
    throughput_sum: float = 0.0
    minutes: dict[int, list[int]] = field(default_factory=dict)  # minute -> [requests, errors]
    last_errors: list[ErrorRecord] = field(default_factory=list)  # newest first

    def count(self, minute: int, requests: int, errors: int) -> None:
        counts = self.minutes.get(minute)
        if counts is None:
            counts = self.minutes[minute] = [0, 0]
        counts[0] += requests
        counts[1] += errors

    def error(self, record: ErrorRecord) -> None:
        self.last_errors.insert(0, record)
        del self.last_errors[LAST_ERRORS:]

    def merge(self, newer: Traffic) -> None:
        """Adds a later report's traffic to this one (a report that failed, retried with the next)."""
        self.requests += newer.requests
        self.errors += newer.errors
        self.rejected += newer.rejected
        self.skipped += newer.skipped
        self.latency_samples += newer.latency_samples
        self.ttft_ms_sum += newer.ttft_ms_sum
        self.throughput_samples += newer.throughput_samples
        self.throughput_sum += newer.throughput_sum
        for minute, (requests, errors) in newer.minutes.items():
            self.count(minute, requests, errors)
        self.last_errors = (newer.last_errors + self.last_errors)[:LAST_ERRORS]


@dataclass(slots=True)
class Figures:
    """A provider model's shared health record, or a Router's view of it."""

    start_time: float = 0.0  # every count is since then (0: not known yet)
    requests: int = 0
    errors: int = 0
    rejected: int = 0
    skipped: int = 0
    samples: int = 0  # answers whose time to first token was measured
    ttft_ms: float = 0.0
    throughput_samples: int = 0
    tokens_per_second: float = 0.0
    minutes: dict[int, list[int]] = field(default_factory=dict)  # minute -> [requests, errors]
    last_errors: list[ErrorRecord] = field(default_factory=list)  # newest first
    probes: int = 0
    probe_failures: int = 0
    last_probe_time: float = 0.0
    last_probe_failure: str = ""
    version: int = 0

    def recent(self, minute: int) -> tuple[int, int]:
        """(requests, errors) within the window that ends with `minute`."""
        requests = errors = 0
        for bucket_minute, (bucket_requests, bucket_errors) in self.minutes.items():
            if minute - WINDOW_MINUTES < bucket_minute <= minute:
                requests += bucket_requests
                errors += bucket_errors
        return requests, errors


def average(average: float, samples: int, total: float, count: int) -> float:
    """The moving average after `count` more samples summing to `total`, taken as `count`
    samples of their mean: the first ones set it, later ones move it by 1 - (1 - ALPHA)^count."""
    if count == 0:
        return average
    mean = total / count
    return mean if samples == 0 else average + (1 - (1 - ALPHA) ** count) * (mean - average)


def add(figures: Figures, traffic: Traffic, start_time: float, newest_minute: int) -> Figures:
    """A new record: `figures` with `traffic` added, counting since the earlier of both starts,
    keeping the minutes of the window that ends with `newest_minute`."""
    minutes = {m: list(counts) for m, counts in figures.minutes.items() if m > newest_minute - WINDOW_MINUTES}
    for minute, (requests, errors) in traffic.minutes.items():
        if minute > newest_minute - WINDOW_MINUTES:
            counts = minutes.setdefault(minute, [0, 0])
            counts[0] += requests
            counts[1] += errors
    errors = sorted(traffic.last_errors + figures.last_errors, key=lambda e: -e.unix_seconds)  # stable
    return replace(
        figures,
        start_time=min(figures.start_time, start_time) if figures.start_time else start_time,
        requests=figures.requests + traffic.requests,
        errors=figures.errors + traffic.errors,
        rejected=figures.rejected + traffic.rejected,
        skipped=figures.skipped + traffic.skipped,
        samples=figures.samples + traffic.latency_samples,
        ttft_ms=average(figures.ttft_ms, figures.samples, traffic.ttft_ms_sum, traffic.latency_samples),
        throughput_samples=figures.throughput_samples + traffic.throughput_samples,
        tokens_per_second=average(
            figures.tokens_per_second, figures.throughput_samples, traffic.throughput_sum, traffic.throughput_samples
        ),
        minutes=minutes,
        last_errors=errors[:LAST_ERRORS],
    )


# --- the messages of InternalService's health RPCs -------------------------------------------


def timestamp(unix_seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(unix_seconds * 1e9))
    return stamp


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def error_message(record: ErrorRecord) -> internal_pb.HealthError:
    return internal_pb.HealthError(
        time=timestamp(record.unix_seconds),
        provider_status=record.provider_status,
        code=record.code,
        reason=record.reason,
        message=record.message,
    )


def error_record(message: internal_pb.HealthError) -> ErrorRecord:
    return ErrorRecord(_seconds(message.time), message.provider_status, message.code, message.reason, message.message)


def _minutes_message(minutes: dict[int, list[int]]) -> list[internal_pb.MinuteCounts]:
    return [internal_pb.MinuteCounts(minute=m, requests=r, errors=e) for m, (r, e) in sorted(minutes.items())]


def _minutes(messages: list[internal_pb.MinuteCounts]) -> dict[int, list[int]]:
    return {m.minute: [m.requests, m.errors] for m in messages}


def traffic_message(provider: str, provider_model: str, traffic: Traffic) -> internal_pb.TrafficReport:
    return internal_pb.TrafficReport(
        provider=provider,
        provider_model=provider_model,
        requests=traffic.requests,
        errors=traffic.errors,
        rejected=traffic.rejected,
        skipped=traffic.skipped,
        latency_samples=traffic.latency_samples,
        time_to_first_token_ms_sum=traffic.ttft_ms_sum,
        throughput_samples=traffic.throughput_samples,
        throughput_tokens_per_second_sum=traffic.throughput_sum,
        minutes=_minutes_message(traffic.minutes),
        last_errors=[error_message(e) for e in traffic.last_errors],
    )


def traffic_of(message: internal_pb.TrafficReport) -> Traffic:
    return Traffic(
        message.requests,
        message.errors,
        message.rejected,
        message.skipped,
        message.latency_samples,
        message.time_to_first_token_ms_sum,
        message.throughput_samples,
        message.throughput_tokens_per_second_sum,
        _minutes(message.minutes),
        [error_record(e) for e in message.last_errors[:LAST_ERRORS]],
    )


def health_message(provider: str, provider_model: str, figures: Figures) -> internal_pb.ModelHealth:
    message = internal_pb.ModelHealth(
        provider=provider,
        provider_model=provider_model,
        version=figures.version,
        start_time=timestamp(figures.start_time),
        requests=figures.requests,
        errors=figures.errors,
        rejected=figures.rejected,
        skipped=figures.skipped,
        latency_samples=figures.samples,
        time_to_first_token_ms=figures.ttft_ms,
        throughput_samples=figures.throughput_samples,
        throughput_tokens_per_second=figures.tokens_per_second,
        minutes=_minutes_message(figures.minutes),
        last_errors=[error_message(e) for e in figures.last_errors],
        probes=figures.probes,
        probe_failures=figures.probe_failures,
        last_probe_failure=figures.last_probe_failure,
    )
    if figures.last_probe_time:
        message.last_probe_time.CopyFrom(timestamp(figures.last_probe_time))
    return message


def figures_of(message: internal_pb.ModelHealth) -> Figures:
    return Figures(
        start_time=_seconds(message.start_time),
        requests=message.requests,
        errors=message.errors,
        rejected=message.rejected,
        skipped=message.skipped,
        samples=message.latency_samples,
        ttft_ms=message.time_to_first_token_ms,
        throughput_samples=message.throughput_samples,
        tokens_per_second=message.throughput_tokens_per_second,
        minutes=_minutes(message.minutes),
        last_errors=[error_record(e) for e in message.last_errors],
        probes=message.probes,
        probe_failures=message.probe_failures,
        last_probe_time=_seconds(message.last_probe_time) if message.HasField("last_probe_time") else 0.0,
        last_probe_failure=message.last_probe_failure,
        version=message.version,
    )
