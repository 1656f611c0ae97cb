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

from sqlalchemy import BigInteger, bindparam, case, delete, func, literal, select, update
from sqlmodel import Session

from services.billing import leases
from services.billing.leases import LEASES, LeaseRound, dialect_insert
from services.billing.storage import (
    PENDING,
    SETTLED,
    UNPRICED,
    BillingAccount,
    LedgerEntry,
    MonthTotal,
    Reservation,
)
from services.common.db import padded_chunks
from services.common.pricing import saturated

LEDGER = LedgerEntry.__table__
RESERVATIONS = Reservation.__table__
ACCOUNTS = BillingAccount.__table__
TOTALS = MonthTotal.__table__
UNPRICED_LISTED = 1000  # the usage report lists at most this many unpriced requests
CARRY = 2**62  # a month total's unit of carry (MonthTotal.charged_carry)
# Every amount is summed as two bounded parts (amount // SPLIT and amount % SPLIT, each below 2^31
# resp. 2^32 for int64 amounts): neither part's sum can overflow under 2^31 rows, on SQLite
# (whose SUM raises "integer overflow") or PostgreSQL; Python joins them exactly.
SPLIT = 2**32

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


def _insert(session: Session, table=LEDGER):
    """The dialect's INSERT that supports ON CONFLICT (the ledger's by default)."""
    return dialect_insert(session, table)


def month_of(moment: datetime) -> str:
    """The month key of a start time ("YYYY-MM", UTC; naive times are UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


Totals = dict[tuple[str, str], int]  # (account, month) -> change of what it is charged


def _add_to_totals(session: Session, changes: Totals) -> None:
    """Adds each change to its account's month total, exactly: the total is carry * 2^62 + low,
    computed in Python on the locked row, so no sum ever wraps or saturates (a saturated total
    would lose every earlier charge at the next settlement)."""
    changes = {key: change for key, change in changes.items() if change}
    if not changes:
        return
    connection = session.connection()
    fresh = [{"account": a, "month": m, "charged_nano_usd": 0, "charged_carry": 0} for a, m in changes]
    connection.execute(_insert(session, TOTALS).on_conflict_do_nothing(index_elements=["account", "month"]), fresh)
    for (account, month), change in sorted(changes.items()):  # one lock order: no deadlock between writers
        where = (TOTALS.c.account == account, TOTALS.c.month == month)
        found = connection.execute(
            select(TOTALS.c.charged_nano_usd, TOTALS.c.charged_carry).where(*where).with_for_update()
        ).one()
        carry, low = divmod(_total(*found) + change, CARRY)
        connection.execute(update(TOTALS).where(*where).values(charged_nano_usd=low, charged_carry=carry))


def _total(low: int, carry: int) -> int:
    return carry * CARRY + low


def _charge(totals: Totals, account: str, start: datetime, amount: int) -> None:
    key = (account, month_of(start))
    totals[key] = totals.get(key, 0) + amount


# What a stream's final record completes of its provisional one (its state and cost stay).
_COMPLETED = (
    "end_time", "input_tokens", "output_tokens", "images", "estimated_nano_usd", "first_token_ms", "unit", "units",
)  # fmt: skip


def record_entries(session: Session, rows: Sequence[dict]) -> int:
    """Stores new entries (a request id already stored is skipped, except that a final
    record completes a provisional one) and drops their reservations, whose estimates
    the entries now carry. Returns how many entries were new or completed."""
    if not rows:
        return 0
    rows = _one_per_request(rows)
    connection = session.connection()
    # RETURNING names only the rows inserted: executemany's rowcount is not portable (-1 on PostgreSQL).
    insert = _insert(session).on_conflict_do_nothing(index_elements=["request_id"]).returning(LEDGER.c.request_id)
    stored: set[str] = set()
    for chunk in padded_chunks(rows):
        stored.update(row[0] for row in connection.execute(insert, chunk))
        ids = [row["request_id"] for row in chunk]
        connection.execute(delete(RESERVATIONS).where(RESERVATIONS.c.request_id.in_(ids)))
    totals: Totals = {}
    for row in rows:
        if row["request_id"] in stored:  # a new row charges its estimate until it is settled
            _charge(totals, row["account"], row["start_time"], row["estimated_nano_usd"])
    completions = [row for row in rows if row["request_id"] not in stored and not row["provisional"]]
    completed = _complete_provisional(session, completions, totals) if completions else 0
    _add_to_totals(session, totals)
    session.commit()
    return len(stored) + completed


def _one_per_request(rows: Sequence[dict]) -> list[dict]:
    """One row per request id: a stream's final record wins over its provisional one whichever
    comes first (a restarted Router's spool may send a provisional record again after the final)."""
    kept: dict[str, dict] = {}
    for row in rows:
        held = kept.get(row["request_id"])
        if held is None or held["provisional"]:
            kept[row["request_id"]] = row
    return list(kept.values())


def _complete_provisional(session: Session, rows: Sequence[dict], totals: Totals) -> int:
    """Final records of streams whose provisional record is stored (others: resends, no-ops).
    An unsettled row's charge moves from the provisional estimate to the final one."""
    connection = session.connection()
    by_id = {row["request_id"]: row for row in rows}
    provisional = connection.execute(
        select(LEDGER.c.request_id, LEDGER.c.account, LEDGER.c.start_time, LEDGER.c.estimated_nano_usd, LEDGER.c.state)
        .where(LEDGER.c.request_id.in_(list(by_id)), LEDGER.c.provisional)
        .with_for_update()
    ).all()
    if not provisional:
        return 0
    completion = (
        update(LEDGER)
        .where(LEDGER.c.request_id == bindparam("id"), LEDGER.c.provisional)
        .values(provisional=False, **{name: bindparam(f"new_{name}") for name in _COMPLETED})
    )
    params = [{"id": found.request_id, **{f"new_{n}": by_id[found.request_id][n] for n in _COMPLETED}}
              for found in provisional]  # fmt: skip
    connection.execute(completion, params)
    for found in provisional:
        if found.state != SETTLED:
            _charge(totals, found.account, found.start_time,
                    by_id[found.request_id]["estimated_nano_usd"] - found.estimated_nano_usd)  # fmt: skip
    return len(provisional)


@dataclass(frozen=True)
class Grant:
    """ReserveSpend's outcome; remaining is -1 for an account without a limit."""

    granted: bool
    remaining_nano_usd: int


@dataclass(frozen=True)
class Ask:
    """One reservation to decide: a request's estimate for an account."""

    request_id: str
    account: str
    estimate: int


def reserve_spend(
    session: Session, request_id: str, account: str, estimate: int, now: float, ttl_seconds: float
) -> Grant:
    """One reservation (reserve_batch of one)."""
    return reserve_batch(session, [Ask(request_id, account, estimate)], now, ttl_seconds)[0]


def reserve_batch(
    session: Session, asks: Sequence[Ask], now: float, ttl_seconds: float, lease_round: LeaseRound | None = None
) -> list[Grant]:
    """Decides the asks in order, in one transaction: each is granted when settled + pending + live
    reservations + its estimate stays within included credits + limit, else refused (and an earlier
    reservation of its request id stays); a granted ask replaces an earlier reservation of its
    request id. The batch's first statement writes (SQLite: this writer alone from then on) and the
    accounts' rows are locked in one order (PostgreSQL), so batches of several writers (threads,
    Billing replicas on one database) serialise per account. A lease round resizes the slices of
    budget its process holds in the same transaction (leases.py): its own slices count what their
    grants hold while the asks are decided, then each gets its new free part."""
    if not asks and not (lease_round and lease_round.wishes):
        return []
    if lease_round is not None:
        lease_round.begin(session)
    held = _take_reservations(session, [ask.request_id for ask in asks], now)  # put back unless replaced
    accounts = {ask.account for ask in asks} | (lease_round.accounts() if lease_round else set())
    budgets, used = _locked_room(session, sorted(accounts), now)
    if lease_round is not None:
        lease_round.count_own(session, used, now)
    for row in held.values():
        used[row["account"]] = used.get(row["account"], 0) + row["estimated_nano_usd"]
    grants = []
    for ask in asks:
        previous = held.pop(ask.request_id, None)
        if previous is not None:  # a retry's own earlier reservation does not count against it
            used[previous["account"]] -= previous["estimated_nano_usd"]
        budget = budgets.get(ask.account)
        remaining = -1 if budget is None else budget - used.get(ask.account, 0)
        granted = budget is None or ask.estimate <= remaining
        grants.append(Grant(True, -1 if budget is None else remaining - ask.estimate) if granted
                      else Grant(False, max(remaining, 0)))  # fmt: skip
        row = _reservation(ask, now + ttl_seconds) if granted else previous  # refused: the earlier one stays
        if row is not None:
            held[ask.request_id] = row
            used[row["account"]] = used.get(row["account"], 0) + row["estimated_nano_usd"]
    if held:
        session.connection().execute(RESERVATIONS.insert(), list(held.values()))
    if lease_round is not None:
        lease_round.settle(session, budgets, used, now)
    session.commit()
    return grants


def _reservation(ask: Ask, expires_at: float) -> dict:
    return {"request_id": ask.request_id, "account": ask.account, "estimated_nano_usd": ask.estimate,
            "expires_at": expires_at}  # fmt: skip


def _take_reservations(session: Session, request_ids: Sequence[str], now: float) -> dict[str, dict]:
    """Deletes the reservations of these request ids; the unexpired ones, by request id."""
    taken = {}
    for chunk in padded_chunks(request_ids):
        query = delete(RESERVATIONS).where(RESERVATIONS.c.request_id.in_(chunk)).returning(*RESERVATIONS.c)
        for row in session.connection().execute(query):
            if row.expires_at > now:
                taken[row.request_id] = dict(row._mapping)
    return taken


def _locked_room(session: Session, accounts: Sequence[str], now: float) -> tuple[dict[str, int], dict[str, int]]:
    """The budgets (credits + limit) of the accounts with a limit, their rows locked until the
    commit, and what each used: its running total of the month of `now` plus its unexpired
    reservations and leases. Read after the lock (on PostgreSQL a statement that waited for a lock still
    reads from before it), in one statement, so that a record moving a reservation into the
    total meanwhile is counted once."""
    budgets = {}
    for chunk in padded_chunks(accounts):
        locked = (
            select(ACCOUNTS.c.account, ACCOUNTS.c.included_credits_nano_usd, ACCOUNTS.c.limit_nano_usd)
            .where(ACCOUNTS.c.account.in_(chunk), ACCOUNTS.c.limit_nano_usd > 0)
            .order_by(ACCOUNTS.c.account)
            .with_for_update()
        )
        budgets.update((account, credits + limit) for account, credits, limit in session.connection().execute(locked))
    month = month_of(datetime.fromtimestamp(now, UTC))
    live = (RESERVATIONS.c.account == ACCOUNTS.c.account, RESERVATIONS.c.expires_at > now)
    high, low = (select(part).where(*live).scalar_subquery() for part in split_sum(RESERVATIONS.c.estimated_nano_usd))
    leased = (LEASES.c.account == ACCOUNTS.c.account, LEASES.c.held_until > now)
    lease_high, lease_low = (
        select(part).where(*leased).scalar_subquery() for part in split_sum(LEASES.c.amount_nano_usd)
    )
    this_month = ACCOUNTS.outerjoin(TOTALS, (TOTALS.c.account == ACCOUNTS.c.account) & (TOTALS.c.month == month))
    used = {}
    for chunk in padded_chunks(sorted(budgets)):
        query = (
            select(
                ACCOUNTS.c.account, TOTALS.c.charged_nano_usd, TOTALS.c.charged_carry, high, low, lease_high, lease_low
            )
            .select_from(this_month)
            .where(ACCOUNTS.c.account.in_(chunk))
        )
        for account, charged, carry, *held in session.connection().execute(query):
            month_total = saturated(_total(charged, carry)) if charged is not None else 0
            used[account] = month_total + joined_sum(*held[:2]) + joined_sum(*held[2:])
    return budgets, used


def release_reservation(session: Session, request_id: str) -> None:
    """Drops a reservation (no provider answered the request)."""
    release_reservations(session, [request_id])


def release_reservations(session: Session, request_ids: Sequence[str]) -> None:
    """Drops the reservations of these requests."""
    for chunk in padded_chunks(request_ids):
        session.connection().execute(delete(RESERVATIONS).where(RESERVATIONS.c.request_id.in_(chunk)))
    session.commit()


def purge_expired_reservations(session: Session, now: float) -> int:
    """Deletes reservations (and leases) past their expiry; they no longer count anyway."""
    result = session.connection().execute(delete(RESERVATIONS).where(RESERVATIONS.c.expires_at <= now))
    leases.purge_expired(session, now)
    session.commit()
    return result.rowcount


def month_spend(session: Session, account: str, moment: datetime) -> int:
    """Settled costs plus estimates of unsettled requests in moment's month (its running total),
    saturated at int64."""
    query = select(TOTALS.c.charged_nano_usd, TOTALS.c.charged_carry).where(
        TOTALS.c.account == account, TOTALS.c.month == month_of(moment)
    )
    found = session.connection().execute(query).one_or_none()
    return saturated(_total(*found)) if found else 0


def split_sum(amount) -> tuple:
    """The two SUMs whose join (joined_sum) is SUM(amount), neither able to overflow."""
    split = literal(SPLIT, BigInteger)  # a 32-bit INTEGER parameter on PostgreSQL could not hold 2^32
    return func.coalesce(func.sum(amount // split), 0), func.coalesce(func.sum(amount % split), 0)


def joined_sum(high: int, low: int) -> int:
    """A split_sum's exact total, saturated at int64."""
    return saturated(int(high) * SPLIT + int(low))


def reserved_spend(session: Session, account: str, now: float) -> int:
    """Estimates reserved by the account's requests in flight (unexpired), and the slices of its
    budget Billing processes lease to decide them in memory."""
    reserved = select(*split_sum(RESERVATIONS.c.estimated_nano_usd)).where(
        RESERVATIONS.c.account == account, RESERVATIONS.c.expires_at > now
    )
    leased = select(*split_sum(LEASES.c.amount_nano_usd)).where(LEASES.c.account == account, LEASES.c.held_until > now)
    connection = session.connection()
    return saturated(joined_sum(*connection.execute(reserved).one()) + joined_sum(*connection.execute(leased).one()))


def claim_page(
    session: Session, provider: str, after: str, limit: int, now: float, until: float
) -> list[tuple[str, str]]:
    """Claims until `until` a page of a provider's pending requests, in request id order after
    `after`, that no reconciler holds at `now`; their (request_id, provider_request_id). A stream
    whose final record has not come (provisional) is not asked for: the provider's cost of it may
    be a part (its final record makes it pending as any other; without one, it ages out unpriced
    at its estimate, as a stream whose Router died is billed).

    One statement: PostgreSQL skips the rows another reconciler is claiming (FOR UPDATE SKIP
    LOCKED) and re-checks the claim on the rows it locked; SQLite runs one writer at a time.
    So two reconcilers never ask for, nor settle, the same request at the same time.
    """
    page = (
        select(LEDGER.c.request_id)
        .where(
            LEDGER.c.provider == provider,
            LEDGER.c.state == PENDING,
            LEDGER.c.request_id > after,
            LEDGER.c.provider_request_id != "",
            LEDGER.c.claimed_until <= now,
            LEDGER.c.provisional.is_(False),
        )
        .order_by(LEDGER.c.request_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(LEDGER)
        .where(LEDGER.c.request_id.in_(page.scalar_subquery()), LEDGER.c.claimed_until <= now)
        .values(claimed_until=until)
        .returning(LEDGER.c.request_id, LEDGER.c.provider_request_id)
    )
    claimed = sorted((row[0], row[1]) for row in session.connection().execute(claim))
    session.commit()
    return claimed


def release_claims(session: Session, request_ids: Sequence[str], until: float) -> None:
    """Gives back the claims (made until `until`) of requests still pending: the next pass asks again."""
    connection = session.connection()
    for chunk in padded_chunks(request_ids):
        where = (LEDGER.c.request_id.in_(chunk), LEDGER.c.claimed_until == until)
        connection.execute(update(LEDGER).where(*where).values(claimed_until=0.0))
    session.commit()


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
    connection = session.connection()
    by_id = dict(costs)
    pending = connection.execute(
        select(LEDGER.c.request_id, LEDGER.c.account, LEDGER.c.start_time, LEDGER.c.estimated_nano_usd)
        .where(LEDGER.c.request_id.in_(list(by_id)), LEDGER.c.state == PENDING)
        .with_for_update()
    ).all()
    if not pending:
        session.rollback()
        return 0
    connection.execute(
        _SETTLE, [{"settle_id": row.request_id, "settle_cost": by_id[row.request_id]} for row in pending]
    )
    totals: Totals = {}
    for row in pending:  # the charge moves from the estimate to the real cost
        _charge(totals, row.account, row.start_time, by_id[row.request_id] - row.estimated_nano_usd)
    _add_to_totals(session, totals)
    session.commit()
    return len(pending)


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
    units: int = 0  # of the slice's unit, where it has one
    unit: str = ""


@dataclass
class UsageReport:
    """An account's month: by model, by provider, and the unpriced requests."""

    by_model: list[UsageTotals]
    by_provider: list[UsageTotals]
    by_task: list[UsageTotals]  # with each task's units
    unpriced: list[tuple[str, str, str, int]]  # request id, provider, reason, estimate


def _grouped(session: Session, column, start: datetime, end: datetime, account: str) -> list[UsageTotals]:
    """The slices of the account's requests by column; units and unit as the records carry them
    (a task's records share its unit; records from before units have none)."""
    query = (
        select(
            column,
            *split_sum(CHARGE),
            *split_sum(PENDING_CHARGE),
            func.count(),
            *split_sum(LEDGER.c.units),
            func.max(LEDGER.c.unit),
        )
        .where(LEDGER.c.account == account, LEDGER.c.start_time >= start, LEDGER.c.start_time < end)
        .group_by(column)
        .order_by(column)
    )
    rows = session.connection().execute(query)
    return [
        UsageTotals(r[0], joined_sum(r[1], r[2]), joined_sum(r[3], r[4]), int(r[5]), joined_sum(r[6], r[7]), r[8] or "")
        for r in rows
    ]


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
        by_task=_grouped(session, LEDGER.c.task, start, end, account),
        unpriced=[(r[0], r[1], r[2], int(r[3])) for r in session.connection().execute(unpriced)],
    )


# A request is in exactly one of these amounts, by its state.
SETTLED_COST = CHARGE
WAITING_ESTIMATE = case((LEDGER.c.state == PENDING, LEDGER.c.estimated_nano_usd), else_=0)
UNPRICED_ESTIMATE = case((LEDGER.c.state == UNPRICED, LEDGER.c.estimated_nano_usd), else_=0)


@dataclass(frozen=True)
class DayUsage:
    """One (UTC day, model, provider) of an account's usage: (settled, pending, unpriced, requests)."""

    day: str  # "YYYY-MM-DD"
    model: str
    provider: str
    amounts: tuple[int, int, int, int]


def _day_of_start(session: Session):
    """A request's UTC start day as "YYYY-MM-DD", in the database's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", LEDGER.c.start_time), "YYYY-MM-DD")
    return func.substr(LEDGER.c.start_time, 1, 10)  # SQLite keeps "YYYY-MM-DD HH:MM:SS..." in UTC


def daily_usage(session: Session, account: str, start: datetime, end: datetime) -> list[DayUsage]:
    """The account's requests started in [start, end), summed per UTC day, model and provider."""
    day = _day_of_start(session)
    query = (
        select(day, LEDGER.c.model, LEDGER.c.provider, *split_sum(SETTLED_COST), *split_sum(WAITING_ESTIMATE),
               *split_sum(UNPRICED_ESTIMATE), func.count())
        .where(LEDGER.c.account == account, LEDGER.c.start_time >= start, LEDGER.c.start_time < end)
        .group_by(day, LEDGER.c.model, LEDGER.c.provider)
    )  # fmt: skip
    rows = session.connection().execute(query)
    return [
        DayUsage(r[0], r[1], r[2], (joined_sum(*r[3:5]), joined_sum(*r[5:7]), joined_sum(*r[7:9]), int(r[9])))
        for r in rows
    ]


def reconciliation_counts(session: Session) -> dict[str, tuple[int, int]]:
    """Per provider, its requests waiting for a cost and those that stayed unpriced."""
    query = (
        select(LEDGER.c.provider, LEDGER.c.state, func.count())
        .where(LEDGER.c.state.in_((PENDING, UNPRICED)))
        .group_by(LEDGER.c.provider, LEDGER.c.state)
    )
    counts: dict[str, tuple[int, int]] = {}
    for provider, state, count in session.connection().execute(query):
        pending, unpriced = counts.get(provider, (0, 0))
        counts[provider] = (pending + count, unpriced) if state == PENDING else (pending, unpriced + count)
    return counts


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
    """Sets limit_nano_usd and/or included_credits_nano_usd, creating the row when needed; a
    lower budget revokes the account's leases (sized to the old one)."""
    row = session.get(BillingAccount, account, with_for_update=True) or BillingAccount(account=account)
    before = row.included_credits_nano_usd + row.limit_nano_usd
    for name, value in values.items():
        setattr(row, name, value)
    session.add(row)
    if row.included_credits_nano_usd + row.limit_nano_usd < before:
        leases.revoke(session, account)
    session.commit()


# The accounts with a spending limit (LimitedAccounts reads it every second: built once).
LIMITED_ACCOUNTS = select(ACCOUNTS.c.account).where(ACCOUNTS.c.limit_nano_usd > 0)
