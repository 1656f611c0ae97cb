"""The ledger's database work, run on Database.run's writer thread.

Every function takes a session, does one transaction and commits it: a
batch of records, a reservation, a batch of settlements. SQLite runs them on
one thread, so a reservation's check-and-insert cannot interleave with
another; on PostgreSQL the account row is locked (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from services.billing.storage import PENDING, SETTLED, UNPRICED, BillingAccount, LedgerEntry, Reservation
from services.common.db import padded_chunks

LEDGER = LedgerEntry.__table__
RESERVATIONS = Reservation.__table__
ACCOUNTS = BillingAccount.__table__
UNPRICED_LISTED = 1000  # the usage report lists at most this many unpriced requests

# What a request costs the account: the settled cost, else its estimate.
CHARGE = case((LEDGER.c.state == SETTLED, LEDGER.c.cost_nano_usd), else_=0)
PENDING_CHARGE = case((LEDGER.c.state == SETTLED, 0), else_=LEDGER.c.estimated_nano_usd)


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The first instant of moment's month (UTC) and of the next month."""
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    )
    return start, following


def _insert(session: Session):
    """The dialect's INSERT that supports ON CONFLICT DO NOTHING."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(LEDGER)


# What a stream's final record completes of its provisional one (its state and cost stay).
_COMPLETED = ("end_time", "input_tokens", "output_tokens", "images", "estimated_nano_usd")


def record_entries(session: Session, rows: Sequence[dict]) -> int:
    """Stores new entries (a request id already stored is skipped, except that a final
    record completes a provisional one) and drops their reservations, whose estimates
    the entries now carry. Returns how many entries were new or completed."""
    if not rows:
        return 0
    rows = list({row["request_id"]: row for row in rows}.values())  # a stream's final record wins
    connection = session.connection()
    # RETURNING names only the rows inserted: executemany's rowcount is not portable (-1 on PostgreSQL).
    insert = _insert(session).on_conflict_do_nothing(index_elements=["request_id"]).returning(LEDGER.c.request_id)
    stored: set[str] = set()
    for chunk in padded_chunks(rows):
        stored.update(row[0] for row in connection.execute(insert, chunk))
        ids = [row["request_id"] for row in chunk]
        connection.execute(delete(RESERVATIONS).where(RESERVATIONS.c.request_id.in_(ids)))
    completions = [row for row in rows if row["request_id"] not in stored and not row["provisional"]]
    completed = _complete_provisional(connection, completions) if completions else 0
    session.commit()
    return len(stored) + completed


def _complete_provisional(connection, rows: Sequence[dict]) -> int:
    """Final records of streams whose provisional record is stored (others: resends, no-ops)."""
    completion = (
        update(LEDGER)
        .where(LEDGER.c.request_id == bindparam("id"), LEDGER.c.provisional)
        .values(provisional=False, **{name: bindparam(f"new_{name}") for name in _COMPLETED})
    )
    params = [{"id": row["request_id"], **{f"new_{n}": row[n] for n in _COMPLETED}} for row in rows]
    result = connection.execute(completion, params)
    return max(result.rowcount, 0)


@dataclass(frozen=True)
class Grant:
    """ReserveSpend's outcome; remaining is -1 for an account without a limit."""

    granted: bool
    remaining_nano_usd: int


def reserve_spend(
    session: Session, request_id: str, account: str, estimate: int, now: float, ttl_seconds: float
) -> Grant:
    """Reserves estimate when settled + pending + live reservations + estimate
    stays within included credits + limit; replaces an earlier reservation of
    the same request id."""
    connection = session.connection()
    settings = session.get(BillingAccount, account, with_for_update=True)
    connection.execute(delete(RESERVATIONS).where(RESERVATIONS.c.request_id == request_id))
    remaining = -1
    if settings is not None and settings.limit_nano_usd > 0:
        budget = settings.included_credits_nano_usd + settings.limit_nano_usd
        moment = datetime.fromtimestamp(now, UTC)
        used = month_spend(session, account, moment) + reserved_spend(session, account, now)
        remaining = budget - used
        if estimate > remaining:
            session.rollback()
            return Grant(False, max(remaining, 0))
        remaining -= estimate
    connection.execute(
        RESERVATIONS.insert().values(
            request_id=request_id, account=account, estimated_nano_usd=estimate, expires_at=now + ttl_seconds
        )
    )
    session.commit()
    return Grant(True, remaining)


def release_reservation(session: Session, request_id: str) -> None:
    """Drops a reservation (no provider answered the request)."""
    session.connection().execute(delete(RESERVATIONS).where(RESERVATIONS.c.request_id == request_id))
    session.commit()


def purge_expired_reservations(session: Session, now: float) -> int:
    """Deletes reservations past their expiry; they no longer count anyway."""
    result = session.connection().execute(delete(RESERVATIONS).where(RESERVATIONS.c.expires_at <= now))
    session.commit()
    return result.rowcount


def month_spend(session: Session, account: str, moment: datetime) -> int:
    """Settled costs plus estimates of unsettled requests in moment's month."""
    start, end = month_bounds(moment)
    query = select(func.coalesce(func.sum(CHARGE + PENDING_CHARGE), 0)).where(
        LEDGER.c.account == account, LEDGER.c.start_time >= start, LEDGER.c.start_time < end
    )
    return int(session.connection().execute(query).scalar_one())


def reserved_spend(session: Session, account: str, now: float) -> int:
    """Estimates reserved by the account's requests in flight (unexpired)."""
    query = select(func.coalesce(func.sum(RESERVATIONS.c.estimated_nano_usd), 0)).where(
        RESERVATIONS.c.account == account, RESERVATIONS.c.expires_at > now
    )
    return int(session.connection().execute(query).scalar_one())


def pending_page(session: Session, provider: str, after: str, limit: int) -> list[tuple[str, str]]:
    """(request_id, provider_request_id) of a provider's pending requests, in request id order after `after`."""
    query = (
        select(LEDGER.c.request_id, LEDGER.c.provider_request_id)
        .where(
            LEDGER.c.provider == provider,
            LEDGER.c.state == PENDING,
            LEDGER.c.request_id > after,
            LEDGER.c.provider_request_id != "",
        )
        .order_by(LEDGER.c.request_id)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.connection().execute(query)]


_SETTLE = (
    update(LEDGER)
    .where(LEDGER.c.request_id == bindparam("settle_id"), LEDGER.c.state == PENDING)
    .values(state=SETTLED, cost_nano_usd=bindparam("settle_cost"), reason="")
)


def settle_costs(session: Session, costs: Sequence[tuple[str, int]]) -> int:
    """Settles pending requests with their real cost, in one transaction.
    Only pending rows change, so settling twice charges once. Returns how
    many requests were settled."""
    if not costs:
        return 0
    params = [{"settle_id": request_id, "settle_cost": cost} for request_id, cost in costs]
    result = session.connection().execute(_SETTLE, params)
    session.commit()
    return result.rowcount


def age_out_pending(session: Session, ended_before: datetime, reason: str) -> int:
    """Marks requests pending since before `ended_before` as unpriced; they keep their estimate."""
    query = (
        update(LEDGER)
        .where(LEDGER.c.state == PENDING, LEDGER.c.end_time < ended_before)
        .values(state=UNPRICED, reason=reason)
    )
    result = session.connection().execute(query)
    session.commit()
    return result.rowcount


def count_pending(session: Session) -> int:
    """Requests waiting for a cost."""
    query = select(func.count()).select_from(LEDGER).where(LEDGER.c.state == PENDING)
    return int(session.connection().execute(query).scalar_one())


@dataclass
class UsageTotals:
    """Money and count of one slice of usage."""

    key: str
    settled_nano_usd: int
    pending_nano_usd: int
    requests: int


@dataclass
class UsageReport:
    """An account's month: by model, by provider, and the unpriced requests."""

    by_model: list[UsageTotals]
    by_provider: list[UsageTotals]
    unpriced: list[tuple[str, str, str, int]]  # request id, provider, reason, estimate


def _grouped(session: Session, column, start: datetime, end: datetime, account: str) -> list[UsageTotals]:
    query = (
        select(column, func.sum(CHARGE), func.sum(PENDING_CHARGE), func.count())
        .where(LEDGER.c.account == account, LEDGER.c.start_time >= start, LEDGER.c.start_time < end)
        .group_by(column)
        .order_by(column)
    )
    return [UsageTotals(r[0], int(r[1]), int(r[2]), int(r[3])) for r in session.connection().execute(query)]


def usage_report(session: Session, account: str, start: datetime, end: datetime) -> UsageReport:
    """The account's usage of requests started in [start, end)."""
    unpriced = (
        select(LEDGER.c.request_id, LEDGER.c.provider, LEDGER.c.reason, LEDGER.c.estimated_nano_usd)
        .where(
            LEDGER.c.account == account,
            LEDGER.c.start_time >= start,
            LEDGER.c.start_time < end,
            LEDGER.c.state == UNPRICED,
        )
        .order_by(LEDGER.c.start_time, LEDGER.c.request_id)
        .limit(UNPRICED_LISTED)
    )
    return UsageReport(
        by_model=_grouped(session, LEDGER.c.model, start, end, account),
        by_provider=_grouped(session, LEDGER.c.provider, start, end, account),
        unpriced=[(r[0], r[1], r[2], int(r[3])) for r in session.connection().execute(unpriced)],
    )


@dataclass(frozen=True)
class AccountState:
    """An account's settings and this month's spending."""

    account: str
    included_credits_nano_usd: int
    limit_nano_usd: int
    spent_nano_usd: int
    reserved_nano_usd: int


def account_state(session: Session, account: str, now: float) -> AccountState:
    """Settings (zero when never set), spending this month and live reservations."""
    settings = session.get(BillingAccount, account) or BillingAccount(account=account)
    moment = datetime.fromtimestamp(now, UTC)
    return AccountState(
        account,
        settings.included_credits_nano_usd,
        settings.limit_nano_usd,
        month_spend(session, account, moment),
        reserved_spend(session, account, now),
    )


def update_account(session: Session, account: str, **values: int) -> None:
    """Sets limit_nano_usd and/or included_credits_nano_usd, creating the row when needed."""
    row = session.get(BillingAccount, account) or BillingAccount(account=account)
    for name, value in values.items():
        setattr(row, name, value)
    session.add(row)
    session.commit()


def limited_accounts(session: Session) -> set[str]:
    """The accounts with a spending limit."""
    query = select(ACCOUNTS.c.account).where(ACCOUNTS.c.limit_nano_usd > 0)
    return {row[0] for row in session.connection().execute(query)}
