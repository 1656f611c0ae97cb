"""Billing's gRPC servicers: the ledger for the Router, usage and limits for
callers, reconciliation and credits for operators."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from services.billing import ledger
from services.billing.access import Authenticator, require_account_access
from services.billing.console import daily_usage_message, reconciliation_message, series_bounds, stamp, usage_days
from services.billing.generations import GenerationsMixin
from services.billing.limits import LimitedAccounts
from services.billing.reconciler import CostApiRecord, Reconciler
from services.billing.reservations import Reservations
from services.billing.storage import PENDING, UNPRICED
from services.billing.units import default_estimate, record_units
from services.common.accounts import OPERATOR_ACCOUNT, is_account_name, require_managing_token
from services.common.auth import require_admin
from services.common.db import Database
from services.common.errors import invalid_argument, relayed, unavailable
from services.common.paging import key_after, next_page_token, page_size
from services.common.pricing import INT64_MAX, saturated
from services.common.tasks import served
from services.common.telemetry import RECORDS_STORED

log = logging.getLogger(__name__)
MAX_BATCH = 10_000
NO_REQUEST_ID = "the provider's answer carried no request id header"
PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
RECONCILIATIONS_LISTING = "providerReconciliations"


def _time(stamp: Timestamp, default: datetime) -> datetime:
    """The stamp; `default` when unset or invalid (outside years 1-9999, which a datetime cannot
    hold: a forged record must not fail its whole batch)."""
    if not (stamp.seconds or stamp.nanos):
        return default
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except ValueError:
        return default


def _check_account(name: str) -> None:
    """An account is a user or org name, or the operators' account; 400 otherwise."""
    _required(name, "account")
    if name != OPERATOR_ACCOUNT and not is_account_name(name):
        raise invalid_argument(
            "INVALID_REQUEST", "account must be a user or org name: 1-96 letters, digits, '.', '_' or '-'", "account"
        )


def _required(value: str, param: str) -> None:
    if not value:
        raise invalid_argument("INVALID_REQUEST", f"{param} is required", param)


def _required_amount(request: Message, field: str, param: str) -> int:
    """A money field the body must carry (a missing one is never read as 0 = "none"); >= 0."""
    if not request.HasField(field):
        raise invalid_argument("MISSING_FIELD", f"{param} is required (nano-USD, 0 or more)", param)
    value = getattr(request, field)
    _not_negative(value, param)
    return value


def _not_negative(value: int, param: str) -> None:
    if value < 0:
        raise invalid_argument("INVALID_REQUEST", f"{param} must not be negative", param)


def _record_times(record: billing_pb.LedgerRecord, now: datetime) -> tuple[datetime, datetime]:
    """The record's start and end, never after Billing's now and the end never before the start: a
    Router's wrong clock (or a forged record) must not charge a future month. The past is kept, as
    records arrive late (a spool held while Billing was down)."""
    start = min(_time(record.start_time, now), now)
    return start, min(max(_time(record.end_time, start), start), now)


def ledger_row(record: billing_pb.LedgerRecord, now: datetime) -> dict:
    """A ledger row for a record (which has a request id). Without a provider
    request id the request can never be priced: it is stored unpriced at
    once. A zero (or negative) estimate is replaced by the task's default, so
    nothing is ever charged zero silently."""
    start, end = _record_times(record, now)
    unit, units = record_units(record)
    return {
        "request_id": record.request_id,
        "provider_request_id": record.provider_request_id,
        "provider": record.provider,
        "model": record.model,
        "provider_model": record.provider_model,
        "task": record.task,
        "caller": record.caller,
        "account": record.account,
        "start_time": start,
        "end_time": end,
        "input_tokens": max(0, record.input_tokens),
        "output_tokens": max(0, record.output_tokens),
        "images": max(0, record.images),
        "unit": unit,
        "units": units,
        "estimated_nano_usd": record.estimated_nano_usd
        if record.estimated_nano_usd > 0
        else default_estimate(record.task, unit, units),
        "cost_nano_usd": None,
        "state": PENDING if record.provider_request_id else UNPRICED,
        "reason": "" if record.provider_request_id else NO_REQUEST_ID,
        "provisional": record.provisional,
        "first_token_ms": min(max(0, record.time_to_first_token_ms), INT64_MAX),
    }


def parse_period(period: str) -> tuple[str, datetime, datetime]:
    """The period (YYYY-MM; the current month when empty) and its bounds; 400 when malformed."""
    if not period:
        period = datetime.now(UTC).strftime("%Y-%m")
    match = PERIOD.match(period)
    bounds = _month_bounds(int(match[1]), int(match[2])) if match else None
    if bounds is None:
        raise invalid_argument(
            "INVALID_PERIOD", f"period must be a month YYYY-MM from 0001-01 to 9999-11, got '{period[:40]}'", "period"
        )
    return period, *bounds


def _month_bounds(year: int, month: int) -> tuple[datetime, datetime] | None:
    """The month's bounds; None for year 0 and for 9999-12 (whose end is beyond what a datetime holds)."""
    try:
        return ledger.month_bounds(datetime(year, month, 1, tzinfo=UTC))
    except ValueError:
        return None


def money_fields(**amounts: int) -> dict[str, float | int]:
    """Each nano-USD amount as its released double field and its exact int64 `*_exact` twin."""
    fields: dict[str, float | int] = {}
    for name, amount in amounts.items():
        fields[name], fields[f"{name}_exact"] = float(amount), saturated(amount)
    return fields


def account_message(state: ledger.AccountState) -> billing_pb.Account:
    return billing_pb.Account(
        account=state.account,
        **money_fields(
            included_credits_nano_usd=state.included_credits_nano_usd,
            limit_nano_usd=state.limit_nano_usd,
            spent_nano_usd=state.spent_nano_usd,
            reserved_nano_usd=state.reserved_nano_usd,
        ),
    )


def _usage_line(totals: ledger.UsageTotals, **key: str) -> billing_pb.UsageLine:
    return billing_pb.UsageLine(
        **money_fields(settled_nano_usd=totals.settled_nano_usd, pending_nano_usd=totals.pending_nano_usd),
        requests=totals.requests,
        **key,
    )


def _task_line(totals: ledger.UsageTotals) -> billing_pb.UsageLine:
    """A task's line: its unit (as its records carry it, else the task's own) and the units used."""
    task = served(totals.key)
    unit = totals.unit or (task.unit if task else "")
    return _usage_line(totals, task=totals.key, unit=unit, units=saturated(totals.units))


def usage_message(account: str, period: str, report: ledger.UsageReport) -> billing_pb.Usage:
    """Totals are the sum of the per-provider lines (every request has exactly one provider)."""
    return billing_pb.Usage(
        account=account,
        period=period,
        **money_fields(
            settled_nano_usd=sum(t.settled_nano_usd for t in report.by_provider),
            pending_nano_usd=sum(t.pending_nano_usd for t in report.by_provider),
        ),
        requests=sum(t.requests for t in report.by_provider),
        by_model=[_usage_line(t, model=t.key) for t in report.by_model],
        by_provider=[_usage_line(t, provider=t.key) for t in report.by_provider],
        by_task=[_task_line(t) for t in report.by_task],
        unpriced=[
            billing_pb.UnpricedRequest(request_id=r, provider=p, reason=why, **money_fields(estimated_nano_usd=e))
            for r, p, why, e in report.unpriced
        ],
    )


class AccountsMixin:
    """Reads and writes of an account's settings, shared by the caller and operator services."""

    db: Database
    limited: LimitedAccounts
    reservations: Reservations

    async def _account(self, account: str) -> billing_pb.Account:
        state = await self.db.run(lambda s: ledger.account_state(s, account, time.time()))
        return account_message(state)

    async def _update_account(self, account: str, **values: int) -> billing_pb.Account:
        async def change() -> None:
            await self.db.run(lambda s: ledger.update_account(s, account, **values))

        await self.reservations.limit_changed(account, change)
        state = await self._account(account)
        await self.limited.changed(account, state.limit_nano_usd_exact)
        return state


class BillingServicer(AccountsMixin, GenerationsMixin, billing_grpc.BillingServiceServicer):
    """Usage, accounts and limits for callers."""

    def __init__(self, db: Database, auth: Authenticator, limited: LimitedAccounts, reservations: Reservations) -> None:
        self.db = db
        self.auth = auth
        self.limited = limited
        self.reservations = reservations

    async def GetUsage(
        self, request: billing_pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.Usage:
        caller = await self.auth.caller(context)
        _check_account(request.account)
        period, start, end = parse_period(request.period)
        require_account_access(caller, request.account)
        report = await self.db.run(lambda s: ledger.usage_report(s, request.account, start, end))
        return usage_message(request.account, period, report)

    async def GetDailyUsage(
        self, request: billing_pb.GetDailyUsageRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.DailyUsage:
        caller = await self.auth.caller(context)
        _check_account(request.account)
        days = usage_days(request.days)
        require_account_access(caller, request.account)
        first, start, end = series_bounds(days, datetime.now(UTC))
        rows = await self.db.run(lambda s: ledger.daily_usage(s, request.account, start, end))
        return daily_usage_message(request.account, first, days, rows)

    async def GetAccount(
        self, request: billing_pb.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.Account:
        caller = await self.auth.caller(context)
        _check_account(request.account)
        require_account_access(caller, request.account)
        return await self._account(request.account)

    async def UpdateSpendingLimit(
        self, request: billing_pb.UpdateSpendingLimitRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.Account:
        caller = await self.auth.caller(context, fresh=True)  # not as cached: its limits a moment ago hold
        _check_account(request.account)
        require_account_access(caller, request.account)
        require_managing_token(caller.limits if caller.HasField("limits") else None, caller.account)
        limit = _required_amount(request, "limit_nano_usd", "limitNanoUsd")
        return await self._update_account(request.account, limit_nano_usd=limit)


class BillingAdminServicer(AccountsMixin, billing_grpc.BillingAdminServiceServicer):
    """The operators' billing calls (admin token only)."""

    def __init__(
        self,
        db: Database,
        reconciler: Reconciler,
        limited: LimitedAccounts,
        auth: Authenticator,
        reservations: Reservations,
    ) -> None:
        self.db = db
        self.limited = limited
        self.reservations = reservations
        self.reconciler = reconciler
        self.auth = auth

    async def _admin(self, context: grpc.aio.ServicerContext) -> None:
        """401 for a missing or unknown token (as on every route), 403 for a user's."""
        require_admin((await self.auth.caller(context)).admin)

    async def ReconcileCosts(
        self, request: billing_pb.ReconcileCostsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.ReconcileCostsResponse:
        await self._admin(context)
        try:
            counts = await self.reconciler.run_pass(respect_backoff=False)
        except grpc.aio.AioRpcError as exc:
            unreachable = unavailable(
                "REGISTRY_UNAVAILABLE", "the Registry (provider cost APIs) is unavailable, try again"
            )
            raise relayed(exc, "registry", unreachable) from None
        return billing_pb.ReconcileCostsResponse(**vars(counts))

    async def ListProviderReconciliations(
        self, request: billing_pb.ListProviderReconciliationsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.ListProviderReconciliationsResponse:
        await self._admin(context)
        size = page_size(request.page_size)
        after = key_after(RECONCILIATIONS_LISTING, request.page_token)
        counts = await self.db.run(ledger.reconciliation_counts)
        records = self.reconciler.cost_api_records
        providers = sorted(p for p in counts.keys() | records.keys() if p > after)
        page = providers[:size]
        answer = billing_pb.ListProviderReconciliationsResponse(
            provider_reconciliations=[
                reconciliation_message(p, counts.get(p, (0, 0)), records.get(p, CostApiRecord())) for p in page
            ],
            next_page_token=next_page_token(RECONCILIATIONS_LISTING, page[-1]) if len(providers) > size else "",
        )
        stamp(answer, "last_pass_time", self.reconciler.last_pass_time)
        return answer

    async def UpdateIncludedCredits(
        self, request: billing_pb.UpdateIncludedCreditsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.Account:
        await self._admin(context)
        _check_account(request.account)
        credits = _required_amount(request, "included_credits_nano_usd", "includedCreditsNanoUsd")
        return await self._update_account(request.account, included_credits_nano_usd=credits)


class LedgerServicer(billing_grpc.LedgerServiceServicer):
    """Ledger records and reservations from the Router (not routed by Envoy)."""

    def __init__(self, db: Database, limited: LimitedAccounts, reservations: Reservations) -> None:
        self.db = db
        self.limited = limited
        self.reservations = reservations

    async def RecordRequests(
        self, request: billing_pb.RecordRequestsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.RecordRequestsResponse:
        if len(request.records) > MAX_BATCH:
            raise invalid_argument(
                "INVALID_REQUEST", f"at most {MAX_BATCH} records per batch, got {len(request.records)}", "records"
            )
        now = datetime.now(UTC)
        rows = [ledger_row(record, now) for record in request.records if record.request_id]
        if len(rows) < len(request.records):
            # A served request is never turned away with its batch: the others are stored.
            log.error("ledger records without a request id skipped", extra={"count": len(request.records) - len(rows)})
        request_ids = [row["request_id"] for row in rows]
        self.reservations.ending(request_ids)
        stored = await self.db.run(lambda s: ledger.record_entries(s, rows))
        self.reservations.consume(request_ids)  # once their estimates are in the totals
        RECORDS_STORED.inc(stored)
        return billing_pb.RecordRequestsResponse(stored_count=stored)

    async def ReserveSpend(
        self, request: billing_pb.ReserveSpendRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.ReserveSpendResponse:
        (answer,) = await self._reserve([request])
        return answer

    async def BatchReserveSpend(
        self, request: billing_pb.BatchReserveSpendRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.BatchReserveSpendResponse:
        if len(request.requests) > MAX_BATCH:
            raise invalid_argument(
                "INVALID_REQUEST",
                f"at most {MAX_BATCH} reservations per batch, got {len(request.requests)}",
                "requests",
            )
        return billing_pb.BatchReserveSpendResponse(responses=await self._reserve(request.requests))

    async def _reserve(
        self, requests: Sequence[billing_pb.ReserveSpendRequest]
    ) -> list[billing_pb.ReserveSpendResponse]:
        """Each request's outcome, in order; those of limited accounts decided in one batch."""
        for request in requests:
            _required(request.request_id, "request_id")
            _required(request.account, "account")
            _not_negative(request.estimated_nano_usd, "estimated_nano_usd")
        # No limit: nothing to check, nothing to hold (GetAccount shows reservations of limited accounts).
        limited = [r.account in self.limited for r in requests]
        asks = [
            ledger.Ask(r.request_id, r.account, r.estimated_nano_usd)
            for r, x in zip(requests, limited, strict=True)
            if x
        ]
        grants = iter(await self.reservations.reserve(asks))
        outcomes = [next(grants) if x else ledger.Grant(True, -1) for x in limited]
        return [
            billing_pb.ReserveSpendResponse(granted=g.granted, remaining_nano_usd=g.remaining_nano_usd)
            for g in outcomes
        ]

    async def WatchLimitedAccounts(
        self,
        request_iterator: AsyncIterator[billing_pb.WatchLimitedAccountsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[billing_pb.WatchLimitedAccountsResponse]:
        async for update in self.limited.watch(request_iterator, context):
            yield update

    async def ReleaseReservation(
        self, request: billing_pb.ReleaseReservationRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.ReleaseReservationResponse:
        _required(request.request_id, "request_id")
        self.reservations.ending([request.request_id])
        self.reservations.forget([request.request_id])
        await self.db.run(lambda s: ledger.release_reservation(s, request.request_id))
        return billing_pb.ReleaseReservationResponse()
