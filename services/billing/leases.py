"""A Billing process's leases in the database: the part of a reservation batch's transaction
(ledger.reserve_batch) that resizes the slices of budget this process holds.

A lease row (storage.Lease) counts its whole amount against the account's budget, so the
database's total (month total + reservation rows + leases) never passes the budget whatever
several processes decide in memory. In a round, a holder's own rows count only what its grants
hold (so a batch's asks are decided exactly against the rest); then each slice becomes those
grants plus a new free part: what the book wants, at most a SHARE of the room left outside
leases, and none when that is less than `least` (the last units of a budget are decided here,
one transaction per batch, as without leases). A revoked lease (the budget went down), a lease
of an account without a limit and every lease of a stopping process is handed back: its grants
become reservation rows and the row goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, exists, false, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from services.billing.storage import Lease, LedgerEntry, Reservation
from services.common.db import padded_chunks

LEASES = Lease.__table__
LEDGER = LedgerEntry.__table__
RESERVATIONS = Reservation.__table__
SHARE = 4  # a slice's free part is at most this fraction of the room left outside leases

Held = dict[str, tuple[int, float]]  # request id -> (estimate, expires_at) of a grant from a slice


def dialect_insert(session: Session, table):
    """The dialect's INSERT that supports ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@dataclass(frozen=True)
class Wish:
    """What the book asks of one account's slice in a round."""

    account: str
    grants: Held  # what this process granted from the slice and still holds
    wanted: int  # the free part it would like (0: none)
    least: int  # the smallest free part worth a lease
    hand_back: bool = False  # end the lease: its grants become reservation rows
    check: frozenset[str] = frozenset()  # grants to look up in the ledger
    keep: int = 0  # of the free part, what the book may grant while the round runs (kept leased)


@dataclass(frozen=True)
class Terms:
    """A slice after the round."""

    account: str
    amount: int  # what the lease holds against the budget (0: no lease, the row is gone)
    room: int  # the account's budget left outside this lease (-1: no limit)
    valid_until: float  # grant from the free part only before this
    revoked: bool  # the budget went down (or the limit went): the lease is, or will be, handed back
    recorded: frozenset[str]  # grants whose requests are in the ledger (recorded through any process)


class LeaseRound:
    """One round's wishes and, once settled, their terms."""

    def __init__(self, holder: str, wishes: Sequence[Wish], lease_seconds: float, ttl_seconds: float) -> None:
        self.holder = holder
        self.wishes = list(wishes)
        self.lease_seconds = lease_seconds
        self.ttl_seconds = ttl_seconds
        self.terms: dict[str, Terms] = {}
        self._revoked: set[str] = set()
        self._recorded: set[str] = set()

    def accounts(self) -> set[str]:
        return {wish.account for wish in self.wishes}

    def begin(self, session: Session) -> None:
        """The round's first statements: on SQLite a write, so that its driver begins the
        transaction (and takes the database's write lock) before anything is read; then which
        grants are recorded, read before the month totals so that none is counted in neither."""
        connection = session.connection()
        if session.get_bind().dialect.name == "sqlite":
            connection.execute(update(LEASES).where(false()).values(holder=LEASES.c.holder))
        granted = sorted(request_id for wish in self.wishes for request_id in wish.check)
        for chunk in padded_chunks(granted):
            query = select(LEDGER.c.request_id).where(LEDGER.c.request_id.in_(chunk))
            self._recorded.update(row[0] for row in connection.execute(query))

    def count_own(self, session: Session, used: dict[str, int], now: float) -> None:
        """Locks this holder's rows and counts, in `used`, what its grants hold instead of its slices."""
        own: dict[str, int] = {}
        for chunk in padded_chunks(sorted(self.accounts())):
            query = (
                select(LEASES.c.account, LEASES.c.amount_nano_usd, LEASES.c.held_until, LEASES.c.revoked)
                .where(LEASES.c.holder == self.holder, LEASES.c.account.in_(chunk))
                .with_for_update()
            )
            for account, amount, held_until, revoked in session.connection().execute(query):
                own[account] = amount if held_until > now else 0
                if revoked:
                    self._revoked.add(account)
        for wish in self.wishes:
            if wish.account in used:
                used[wish.account] += self._held(wish, now) - own.get(wish.account, 0)

    def _held(self, wish: Wish, now: float) -> int:
        """What the slice must keep: its live grants not recorded, and what it may grant meanwhile."""
        return wish.keep + sum(e for r, (e, exp) in wish.grants.items() if exp > now and r not in self._recorded)

    def settle(self, session: Session, budgets: dict[str, int], used: dict[str, int], now: float) -> None:
        """Writes each slice's new size (or hands it back); fills `terms`."""
        for wish in self.wishes:
            budget = budgets.get(wish.account)
            recorded = frozenset(r for r in wish.grants if r in self._recorded)
            revoked = wish.account in self._revoked
            if (budget is None or revoked) and wish.keep:  # grants may come meanwhile: back next round
                amount = self._held(wish, now)
                self._write(session, wish.account, amount, now, now)
                self.terms[wish.account] = Terms(wish.account, amount, -1, now, True, recorded)
                continue
            if budget is None or revoked or wish.hand_back:
                self._hand_back(session, wish, now)
                self.terms[wish.account] = Terms(wish.account, 0, -1, 0.0, revoked, recorded)
                continue
            room = budget - used[wish.account]
            more = min(max(wish.wanted - wish.keep, 0), max(room, 0) // SHARE)
            more = more if wish.keep + more >= max(wish.least, 1) else 0
            amount = self._held(wish, now) + more
            # Over the budget (a cost above its estimate): what is held stays counted, nothing more is granted.
            valid_until = now + self.lease_seconds if wish.keep + more and room >= 0 else now
            self._write(session, wish.account, amount, valid_until, now)
            used[wish.account] += more
            self.terms[wish.account] = Terms(wish.account, amount, room - more, valid_until, False, recorded)

    def _write(self, session: Session, account: str, amount: int, valid_until: float, now: float) -> None:
        where = (LEASES.c.account == account, LEASES.c.holder == self.holder)
        if not amount:
            session.connection().execute(delete(LEASES).where(*where))
            return
        # Grants made up to valid_until may expire as late as valid_until + the TTL.
        values = {"amount_nano_usd": amount, "valid_until": valid_until,
                  "held_until": now + self.lease_seconds + self.ttl_seconds}  # fmt: skip
        upsert = dialect_insert(session, LEASES).on_conflict_do_update(
            index_elements=["account", "holder"], set_=values
        )
        session.connection().execute(upsert, {"account": account, "holder": self.holder, "revoked": False, **values})

    def _hand_back(self, session: Session, wish: Wish, now: float) -> None:
        """The slice's live grants become reservation rows (those not recorded); the row goes."""
        rows = [
            {"request_id": r, "account": wish.account, "estimated_nano_usd": e, "expires_at": expires}
            for r, (e, expires) in wish.grants.items()
            if expires > now and r not in self._recorded
        ]
        if rows:
            insert = dialect_insert(session, RESERVATIONS)
            # A request id may hold a row too (a retry decided in the other place): the larger stays.
            larger = {
                column: case((insert.excluded[column] > RESERVATIONS.c[column], insert.excluded[column]),
                             else_=RESERVATIONS.c[column])
                for column in ("estimated_nano_usd", "expires_at")
            }  # fmt: skip
            session.connection().execute(insert.on_conflict_do_update(index_elements=["request_id"], set_=larger), rows)
        self._write(session, wish.account, 0, 0.0, now)


def revoke(session: Session, account: str) -> None:
    """Marks the account's leases revoked (its budget went down): holders stop granting from
    them and hand them back at their next round. Part of the caller's transaction."""
    session.connection().execute(update(LEASES).where(LEASES.c.account == account).values(revoked=True))


def revoked_in_force(session: Session, account: str, holder: str, now: float) -> bool:
    """Whether another holder may still grant from a revoked lease of the account."""
    query = select(
        exists().where(
            LEASES.c.account == account, LEASES.c.revoked, LEASES.c.holder != holder, LEASES.c.valid_until > now
        )
    )
    return bool(session.connection().execute(query).scalar())


def purge_expired(session: Session, now: float) -> None:
    """Deletes leases that no longer count (their holder stopped renewing them). Part of the
    caller's transaction."""
    session.connection().execute(delete(LEASES).where(LEASES.c.held_until <= now))
