"""Keeps this Router replica's health figures in step with the shared records in the Registry.

On a timer (never per request), the traffic measured since the last report goes to the
Registry in one ReportModelHealth call per MAX_REPORTS provider models; the records it
answers replace the local ones at once. The change feed brings the records other replicas
and the probes changed (CHANGE_KIND_HEALTH); when the feed (re)connects, every record is
loaded again (ListModelHealth), since notices may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.health import timestamp, traffic_message
from services.common.registry_feed import REGISTRY_TIMEOUT_SECONDS, Change, is_reset
from services.router.measurements import Measurements

log = logging.getLogger(__name__)
MAX_REPORTS = 1000  # provider models per ReportModelHealth call (the Registry's cap)
LOAD_PAGE_SIZE = 1000


class HealthReports:
    """Sends this replica's traffic to the shared records and applies the records it gets."""

    def __init__(
        self, registry: internal_grpc.InternalServiceStub, measurements: Measurements, interval_seconds: float
    ) -> None:
        self.registry = registry
        self.measurements = measurements
        self.interval_seconds = interval_seconds
        self._loading: asyncio.Task | None = None

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
        """Sends what is pending, one call per MAX_REPORTS provider models; a failed call's
        traffic stays pending for the next round, and so does traffic that comes while this
        round is under way (else a busy Router would report back to back, not once a round)."""
        start = timestamp(self.measurements.started)
        for _ in range(-(-self.measurements.pending_count() // MAX_REPORTS)):
            if not (taken := self.measurements.take_report(MAX_REPORTS)):
                return
            request = internal_pb.ReportModelHealthRequest(
                start_time=start, reports=[traffic_message(p, m, traffic) for p, m, traffic in taken]
            )
            try:
                answer = await self.registry.ReportModelHealth(request, timeout=REGISTRY_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                log.warning("reporting provider health failed; retrying", extra={"code": exc.code().name})
                self.measurements.report_ended(taken, None)
                return
            except BaseException:
                self.measurements.report_ended(taken, None)
                raise
            self.measurements.report_ended(taken, list(answer.records))

    def changed(self, change: Change) -> None:
        """A change notice: its records applied; a reset (the feed connected) loads them all."""
        if is_reset(change):
            if self._loading is None or self._loading.done():
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
