"""Keeps this Router replica's health figures in step with the shared records in the Registry.

On a timer (never per request), the traffic measured since the last report goes to the
Registry in one ReportModelHealth call per MAX_REPORTS provider models; the records it
answers replace the local ones at once. Each report has a request id, so that the Registry
applies it once: a report that failed on the way (e.g. UNAVAILABLE, DEADLINE_EXCEEDED: it may
have been applied) is sent again as it was, with back-off, for at most GIVE_UP_SECONDS;
meanwhile new traffic waits. A report the Registry refuses (REFUSED, e.g. as invalid) is dropped
and counted, never retried: it would be refused again. The change feed brings the records other replicas
and the probes changed (CHANGE_KIND_HEALTH); when the feed (re)connects, every record is
loaded again (ListModelHealth), since notices may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.health import timestamp, traffic_message
from services.common.registry_feed import REGISTRY_TIMEOUT_SECONDS, Change, is_reset
from services.common.telemetry import ROUTER, LoopCounter
from services.router.measurements import Measurements, Taken

log = logging.getLogger(__name__)
MAX_REPORTS = 1000  # provider models per ReportModelHealth call (the Registry's cap)
LOAD_PAGE_SIZE = 1000
# The Registry's verdicts on a report: sent again, it would get the same. Any other failure
# (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL...) may be passing, and the report may have arrived.
REFUSED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
GIVE_UP_SECONDS = 300.0  # well within the Registry's memory of request ids (15 minutes)
DROPPED = LoopCounter(
    ROUTER,
    "switchboard_router_health_reports_dropped",
    "Provider models' traffic in health reports dropped unapplied, by why: refused (the Registry "
    "refused the report, e.g. as invalid) or unreachable (retried for GIVE_UP_SECONDS in vain)",
    ("reason",),
)


@dataclass
class _Retry:
    """A report that failed on the way: sent again as it was (same request id) from `due` on."""

    request: internal_pb.ReportModelHealthRequest
    taken: Taken
    first_failed: float
    delay: float
    due: float


class HealthReports:
    """Sends this replica's traffic to the shared records and applies the records it gets."""

    def __init__(
        self, registry: internal_grpc.InternalServiceStub, measurements: Measurements, interval_seconds: float
    ) -> None:
        self.registry = registry
        self.measurements = measurements
        self.interval_seconds = interval_seconds
        self._loading: asyncio.Task | None = None
        self._retry: _Retry | None = None

    async def run(self) -> None:
        """Reports on the timer until cancelled."""
        try:
            while True:
                await asyncio.sleep(self.interval_seconds)
                await self.report()
        finally:
            if self._loading is not None:
                self._loading.cancel()

    async def report(self) -> None:
        """Sends a report waiting for its retry when it is due, then what is pending, one call
        per MAX_REPORTS provider models. Traffic that comes while this round is under way waits
        for the next (else a busy Router would report back to back, not once a round), and so
        does all traffic while a report waits for its retry."""
        retry = self._retry
        if retry is not None and (time.monotonic() < retry.due or not await self._send(retry.request, retry.taken)):
            return
        start = timestamp(self.measurements.started)
        for _ in range(-(-self.measurements.pending_count() // MAX_REPORTS)):
            if not (taken := self.measurements.take_report(MAX_REPORTS)):
                return
            request = internal_pb.ReportModelHealthRequest(
                start_time=start,
                reports=[traffic_message(p, m, traffic) for p, m, traffic in taken],
                request_id=str(uuid.uuid4()),
            )
            if not await self._send(request, taken):
                return

    async def _send(self, request: internal_pb.ReportModelHealthRequest, taken: Taken) -> bool:
        """Sends a report: True when it is done with (applied, or dropped), False when it waits
        for a retry."""
        try:
            answer = await self.registry.ReportModelHealth(request, timeout=REGISTRY_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            return self._failed(request, taken, exc.code())
        except BaseException:
            self._retry = None
            self.measurements.report_ended(taken, None)
            raise
        self._retry = None
        self.measurements.report_ended(taken, list(answer.records))
        return True

    def _failed(self, request: internal_pb.ReportModelHealthRequest, taken: Taken, code: grpc.StatusCode) -> bool:
        """Keeps a report that may not have arrived for a retry with back-off, within
        GIVE_UP_SECONDS; drops it otherwise (True: done with)."""
        now, retry = time.monotonic(), self._retry
        retry = retry if retry is not None and retry.request is request else None
        if code not in REFUSED and (retry is None or now - retry.first_failed < GIVE_UP_SECONDS):
            delay = FIRST_RETRY_SECONDS if retry is None else min(MAX_RETRY_SECONDS, retry.delay * 2)
            self._retry = _Retry(request, taken, now if retry is None else retry.first_failed, delay, now + delay)
            log.warning("reporting provider health failed; retrying", extra={"code": code.name, "delay_s": delay})
            return False
        self._retry = None
        reason = "refused" if code in REFUSED else "unreachable"
        DROPPED.inc(len(taken), labels=(reason,))
        log.warning("provider health report dropped", extra={"code": code.name, "reason": reason, "models": len(taken)})
        self.measurements.report_ended(taken, [])  # applied nowhere: its traffic is gone
        return True

    def changed(self, change: Change) -> None:
        """A change notice: its records applied; a reset (the feed connected) loads them all, again
        from the first page when a load was under way (its pages read may have changed unnoticed)."""
        if is_reset(change):
            if self._loading is not None:
                self._loading.cancel()
            self._loading = asyncio.create_task(self.load())
        elif change.kind == internal_pb.CHANGE_KIND_HEALTH:
            self.measurements.apply(change.health)

    async def load(self) -> None:
        """Every shared record, page by page (a failure is logged: the next reset tries again)."""
        token = ""
        try:
            while True:
                request = internal_pb.ListModelHealthRequest(page_size=LOAD_PAGE_SIZE, page_token=token)
                page = await self.registry.ListModelHealth(request, timeout=REGISTRY_TIMEOUT_SECONDS)
                self.measurements.apply(page.records)
                if not (token := page.next_page_token):
                    return
        except grpc.aio.AioRpcError as exc:
            log.warning("loading the shared provider health failed", extra={"code": exc.code().name})
