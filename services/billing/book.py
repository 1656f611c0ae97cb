"""The in-memory book: reservations of a limited account decided, without a database transaction,
from a slice of its budget this process leases (leases.py).

A grant comes out of its slice's free part, exactly: never more than the slice. The slice is
sized in rounds (ledger.reserve_batch's transaction, leases.LeaseRound) to about HORIZON_SECONDS
of the account's recent grants, at least WANT_ASKS of its largest ask, and asks for a new round
when half of that is granted; a round also runs every second (Reservations) to renew the lease,
learn of a revocation, drop expired grants and grants recorded through another process, and
return idle slices. While a round runs, the slice grants from the part of its free part the round
keeps leased. An ask that does not fit, or comes while its slice is gone, revoked or stale, is
decided in the database as without leases.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence

from services.billing.leases import Held, LeaseRound, Terms, Wish
from services.billing.ledger import Ask, Grant

HORIZON_SECONDS = 2.0  # a slice holds about this long's worth of the account's recent grants
WANT_ASKS = 32  # ... and at least this many of its largest ask
LEAST_ASKS = 8  # a slice that would hold fewer is not leased: the database decides
IDLE_SECONDS = 2.0  # a slice granting nothing this long is returned
CHECK_SECONDS = 5.0  # grants older than this are looked up in the ledger (recorded through another process?)


class Slice:
    """This process's lease on one account, and what it granted from it."""

    def __init__(self, account: str, now: float) -> None:
        self.account = account
        self.amount = 0  # as the lease row holds it
        self.grants: Held = {}
        self.granted = 0
        self.valid_until = 0.0
        self.room = 0  # the budget left outside the lease at the last round
        self.revoked = False
        self.round: asyncio.Future[None] | None = None  # a round on the slice is in flight
        self.allowance = 0  # what it may grant meanwhile (the round keeps that much of its free part)
        self.asked = 0  # estimates granted since the last round (its rate)
        self.largest = 0  # the largest ask it granted
        self.wanted = 0
        self.round_at = now
        self.last_grant = now
        self.consumed: dict[str, int] = {}  # grants recorded while a round runs (its amount still has them)

    @property
    def free(self) -> int:
        return self.amount - self.granted

    def take(self, request_id: str) -> int:
        """Drops a grant; its estimate (0 when it had none)."""
        estimate, _ = self.grants.pop(request_id, (0, 0.0))
        self.granted -= estimate
        return estimate


class Book:
    """Every slice this process holds, and which slice granted each request id."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self.fresh = ttl_seconds - CHECK_SECONDS  # a grant expiring later than now + this is fresh
        self.slices: dict[str, Slice] = {}
        self.owners: dict[str, Slice] = {}  # request id -> the slice that granted it
        self.due: set[str] = set()  # accounts whose slice wants a round
        self.frozen: Counter[str] = Counter()  # accounts whose limit is being changed (how many changes)

    def grant(self, ask: Ask, now: float) -> Grant | asyncio.Future[None] | None:
        """The ask's grant from its slice; a round to wait for first; None: the database decides."""
        held = self.slices.get(ask.account)
        if held is None or ask.account in self.frozen:
            return None
        owner = self.owners.get(ask.request_id)
        previous, _ = held.grants.get(ask.request_id, (0, 0.0))  # a retry replaces its own grant
        room = held.free if held.round is None else min(held.free, held.allowance)
        if held.revoked or now >= held.valid_until or owner not in (None, held) or ask.estimate > room + previous:
            return held.round  # None: the database decides; else after the round, from the slice
        held.allowance -= max(ask.estimate - previous, 0)
        held.take(ask.request_id)
        held.grants[ask.request_id] = (ask.estimate, now + self.ttl_seconds)
        held.granted += ask.estimate
        self.owners[ask.request_id] = held
        held.asked += ask.estimate
        held.largest = max(held.largest, ask.estimate)
        held.last_grant = now
        if held.free < held.wanted // 2:
            self.due.add(ask.account)
        return Grant(True, held.free + max(held.room, 0))

    def forget(self, request_ids: Iterable[str]) -> None:
        """The requests were released: their grants go back to their slices' free parts."""
        for request_id in request_ids:
            held = self.owners.pop(request_id, None)
            if held is not None:
                held.take(request_id)

    def consume(self, request_ids: Iterable[str]) -> None:
        """The requests were recorded: their estimates are in the month total now, so they leave
        their slices (granted and amount alike; the free part stays) and the next round shrinks the
        lease rows to match."""
        for request_id in request_ids:
            held = self.owners.pop(request_id, None)
            if held is not None:
                estimate = held.take(request_id)
                held.amount -= estimate
                if held.round is not None:  # the round's amount still counts it: `settled` takes it off
                    held.consumed[request_id] = estimate

    def wishes(self, asks: Sequence[Ask], now: float, everyone: bool, closing: bool) -> list[Wish]:
        """A round's wishes: slices for the accounts of asks the database decides, the slices that
        are due (every slice when `everyone`), each marked in flight until `settled`."""
        largest: dict[str, int] = {}
        for ask in asks:
            largest[ask.account] = max(largest.get(ask.account, 0), ask.estimate)
        accounts = set(largest) | self.due | (set(self.slices) if everyone else set())
        self.due = set()
        wishes = []
        for account in sorted(accounts):
            held = self.slices.get(account)
            if held is None:
                if account not in self.frozen and not closing:
                    wishes.append(Wish(account, {}, WANT_ASKS * largest[account], LEAST_ASKS * largest[account]))
                continue
            wishes.append(self._wish(held, largest.get(account, 0), now, closing))
            held.round = asyncio.get_running_loop().create_future()
        return wishes

    def _wish(self, held: Slice, asked: int, now: float, closing: bool) -> Wish:
        for request_id in [r for r, (_, expires) in held.grants.items() if expires <= now]:
            self.owners.pop(request_id, None)
            held.take(request_id)
        largest = max(held.largest, asked)
        rate = held.asked / max(now - held.round_at, 0.1)
        idle = not asked and now - held.last_grant > IDLE_SECONDS
        held.wanted = 0 if idle or held.revoked else max(WANT_ASKS * largest, int(rate * HORIZON_SECONDS))
        hand_back = held.revoked or closing or held.account in self.frozen
        # The round keeps this much of the free part for grants while it runs; none when the
        # database decides asks of the account (they may need all of it) or the slice goes back.
        # Nor when the account is over its budget (room < 0) or the slice is stale.
        stale = held.room < 0 or now >= held.valid_until
        held.allowance = 0 if asked or hand_back or stale else min(held.free, held.wanted)
        # A grant recorded through this process is consumed at once; older ones may have been
        # recorded through another (every one is looked up before it becomes a row).
        check = set(held.grants) if hand_back else {r for r, (_, e) in held.grants.items() if e - now < self.fresh}
        least = LEAST_ASKS * largest
        return Wish(held.account, dict(held.grants), held.wanted, least, hand_back, frozenset(check), held.allowance)

    def settled(self, lease_round: LeaseRound, now: float) -> list[str]:
        """Applies a committed round. Returns the request ids of grants handed back as reservation
        rows that were recorded or released meanwhile: their rows must go too."""
        gone = []
        for wish in lease_round.wishes:
            terms = lease_round.terms[wish.account]
            held = self.slices.get(wish.account)
            if held is None:
                held = self.slices[wish.account] = Slice(wish.account, now)
            self.forget(terms.recorded)
            if terms.amount:
                self._renew(held, terms, now)
            else:
                gone += [r for r in wish.grants if r not in held.grants and r not in terms.recorded]
                self._drop(held)
            self._finish(held)
        return gone

    def _renew(self, held: Slice, terms: Terms, now: float) -> None:
        consumed = sum(e for r, e in held.consumed.items() if r not in terms.recorded)  # recorded meanwhile
        held.amount, held.valid_until, held.room = terms.amount - consumed, terms.valid_until, terms.room
        if terms.revoked:
            held.revoked = True
            self.due.add(held.account)  # the next round hands it back
        held.asked, held.round_at = 0, now

    def _drop(self, held: Slice) -> None:
        for request_id in held.grants:
            self.owners.pop(request_id, None)
        self.slices.pop(held.account, None)

    def failed(self, lease_round: LeaseRound) -> None:
        """A round that failed: its slices grant nothing until a round succeeds (which sizes each
        lease from what its grants hold, whatever the failed one wrote)."""
        for wish in lease_round.wishes:
            held = self.slices.get(wish.account)
            if held is not None:
                held.valid_until = 0.0
                self._finish(held)

    @staticmethod
    def _finish(held: Slice) -> None:
        if held.round is not None and not held.round.done():
            held.round.set_result(None)
        held.round = None
        held.consumed = {}
