"""InternalService's health RPCs: the Routers' traffic reports into the shared health records
(services/registry/storage/health_records.py), and the records for a Router that (re)connects."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
from sqlmodel import Session
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.health import traffic_of
from services.common.paging import next_page_token, page_size, pair_after
from services.registry.domain.state import RegistryState
from services.registry.domain.validation import (
    check_count,
    check_length,
    check_name,
    check_provider_model,
    check_range,
)
from services.registry.storage import health_records

MAX_REPORTS = 1000  # provider models per report
MAX_REQUEST_ID = 64  # characters of a report's request id
MAX_COUNT = 2**62  # a report's counts and sums are at least 0 and below this
LISTING = "modelHealth"


def _checked(report: internal_pb.TrafficReport) -> internal_pb.TrafficReport:
    check_name(report.provider, "provider")
    check_provider_model(report.provider_model, "provider_model")
    for name in ("requests", "errors", "rejected", "skipped", "latency_samples", "throughput_samples"):
        check_range(getattr(report, name), 0, MAX_COUNT, name)
    for name in ("time_to_first_token_ms_sum", "throughput_tokens_per_second_sum"):
        check_range(getattr(report, name), 0, MAX_COUNT, name)  # NaN fails the comparison too
    return report


class HealthMethods:
    """ReportModelHealth and ListModelHealth; the servicer that mixes this in sets `state`."""

    state: RegistryState

    async def ReportModelHealth(
        self, request: internal_pb.ReportModelHealthRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ReportModelHealthResponse:
        """400 for more than MAX_REPORTS reports, a report naming no provider model, a negative
        count or a request id over MAX_REQUEST_ID characters; the changed records otherwise. A
        report whose request id was applied already is not applied again (a retry)."""
        check_count(request.reports, MAX_REPORTS, "reports")
        request_id = check_length(request.request_id, MAX_REQUEST_ID, "request_id")
        reports = {(r.provider, r.provider_model): traffic_of(_checked(r)) for r in request.reports}
        if not reports:
            return internal_pb.ReportModelHealthResponse()
        now = time.time()
        start = request.start_time.ToNanoseconds() / 1e9 if request.HasField("start_time") else now
        minute = int(now // 60)

        def apply(session: Session) -> list[internal_pb.ModelHealth]:
            if request_id and not health_records.first_receipt(session, request_id, datetime.fromtimestamp(now, UTC)):
                return health_records.records(session, sorted(reports))  # a retry of a report applied: once
            return health_records.add_traffic(session, reports, min(start, now), minute)

        records = await self.state.write(apply, internal_pb.CHANGE_KIND_HEALTH, health_records.change_key(reports))
        return internal_pb.ReportModelHealthResponse(records=records)

    async def ListModelHealth(
        self, request: internal_pb.ListModelHealthRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ListModelHealthResponse:
        size = page_size(request.page_size)
        after = pair_after(LISTING, request.page_token)
        records = await self.state.db.run(lambda s: health_records.page(s, after, size + 1))
        # An internal call, never transcoded by Envoy: its pages are bounded by size only (measuring
        # each record's JSON cost ~50 us a record on every Router's load).
        more, records = len(records) > size, records[:size]
        token = next_page_token(LISTING, f"{records[-1].provider}\n{records[-1].provider_model}") if more else ""
        return internal_pb.ListModelHealthResponse(records=records, next_page_token=token)
