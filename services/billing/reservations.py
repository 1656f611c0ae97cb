"""Reservations of limited accounts: decided in memory from leased slices of their budgets
(book.py, leases.py), else in batches, one database transaction for every reservation that
arrived meanwhile.

A grant from a slice needs no transaction: the slice was counted against the budget when it was
leased, so the database's total never passes the budget, whichever Billing processes on the
database grant what. An ask the book cannot decide (no slice yet, it does not fit, the slice is
stale or revoked) waits for the next batch: the batch decides its asks in arrival order, in one
transaction (group commit), and resizes this process's slices in the same transaction (a round).
A round also runs every `sync_seconds` while slices are held, and when a slice runs low.

A crashed process's slices count until their lease's held_until (the reservation TTL after their
last renewal), so whatever it granted stays counted as long as a reservation would; a stopping one
hands its grants back as reservation rows. A lower budget revokes the account's leases: the
change is answered once no process can grant from them any more (`limit_changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from services.billing import leases, ledger
from services.billing.book import Book
from services.common.db import LARGEST_CHUNK, Database

log = logging.getLogger(__name__)

LEASE_SECONDS = 3.0  # a slice is granted from until this long after its last round
SYNC_SECONDS = 1.0  # rounds while slices are held: a revocation takes effect within this
REVOCATION_POLL_SECONDS = 0.05


class Reservations:
    """The book of this process's slices, and the batches the database decides."""

    def __init__(
        self,
        db: Database,
        ttl_seconds: float,
        largest_batch: int = LARGEST_CHUNK,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
        sync_seconds: float = SYNC_SECONDS,
    ) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.largest_batch = largest_batch
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.sync_seconds = sync_seconds
        self.holder = uuid.uuid4().hex  # this process, in its lease rows
        self.book = Book(ttl_seconds)
        self._waiting: list[tuple[ledger.Ask, asyncio.Future[ledger.Grant]]] = []
        # Request ids of the asks waiting for a round or in one, and those of them released or recorded
        # meanwhile (a caller that gave up waiting): their reservation rows must not outlive the round.
        self._deciding: Counter[str] = Counter()
        self._ended: set[str] = set()
        self._writer: asyncio.Task | None = None
        self._syncer: asyncio.Task | None = None
        self._round_waiters: list[asyncio.Future[None]] = []
        self._everyone = False  # the next round covers every slice
        self._closing = False

    async def reserve(self, asks: list[ledger.Ask]) -> list[ledger.Grant]:
        """The asks' grants, in order: from the book, else once the batch that decided them committed."""
        grants: list[ledger.Grant | None] = []
        for ask in asks:
            while isinstance(decided := self.book.grant(ask, self.clock()), asyncio.Future):
                await asyncio.shield(decided)  # a round on the slice: then decide from it
            grants.append(decided)
        if self.book.due:
            self._kick()
        undecided = [ask for ask, grant in zip(asks, grants, strict=True) if grant is None]
        decided = iter(await self._in_database(undecided))
        return [grant if grant is not None else next(decided) for grant in grants]

    def forget(self, request_ids: list[str]) -> None:
        """The requests were released: their grants go back to their slices."""
        self.book.forget(request_ids)

    def consume(self, request_ids: list[str]) -> None:
        """The requests were recorded: their grants leave their slices (spent, not free again)."""
        self.book.consume(request_ids)

    def ending(self, request_ids: list[str]) -> None:
        """The requests are about to be released or recorded (before the database is told): an ask
        of theirs that a round has yet to decide leaves no reservation row behind when granted, as
        the release or the record found none to delete."""
        self._ended.update(request_id for request_id in request_ids if request_id in self._deciding)

    async def _in_database(self, asks: list[ledger.Ask]) -> list[ledger.Grant]:
        if not asks:
            return []
        loop = asyncio.get_running_loop()
        decisions: list[asyncio.Future[ledger.Grant]] = [loop.create_future() for _ in asks]
        self._waiting.extend(zip(asks, decisions, strict=True))
        self._deciding.update(ask.request_id for ask in asks)
        self._kick()
        # Shielded: a caller that gives up (deadline) leaves the batch to the others' answers.
        return list(await asyncio.shield(asyncio.gather(*decisions)))

    async def round(self, everyone: bool = False) -> None:
        """Returns after a round that began after this call (every slice's, when `everyone`)."""
        done = asyncio.get_running_loop().create_future()
        self._round_waiters.append(done)
        self._everyone = self._everyone or everyone
        self._kick()
        await asyncio.shield(done)

    def _kick(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_rounds())

    async def _write_rounds(self) -> None:
        try:
            while self._waiting or self.book.due or self._round_waiters:
                batch = self._waiting[: self.largest_batch]
                del self._waiting[: self.largest_batch]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[ledger.Ask, asyncio.Future[ledger.Grant]]]) -> None:
        now, asks = self.clock(), [ask for ask, _ in batch]
        everyone, self._everyone = self._everyone, False
        waiters, self._round_waiters = self._round_waiters, []
        wishes = self.book.wishes(asks, now, everyone, self._closing)
        lease_round = leases.LeaseRound(self.holder, wishes, self.lease_seconds, self.ttl_seconds)
        try:
            grants = await self.db.run(lambda s: ledger.reserve_batch(s, asks, now, self.ttl_seconds, lease_round))
            gone = self.book.settled(lease_round, now) + self._decided(asks)
        except Exception as exc:  # every caller of the batch gets the failure (the Router proceeds unchecked)
            self._decided(asks)
            self.book.failed(lease_round)
            log.warning("a reservation round failed", extra={"error": type(exc).__name__}, exc_info=exc)
            for _, decided in batch:
                if not decided.done():
                    decided.set_exception(exc)
        else:
            for (_, decided), grant in zip(batch, grants, strict=True):
                if not decided.done():
                    decided.set_result(grant)
            if gone:
                await self._drop_rows(gone)
            self._keep_syncing()
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _decided(self, asks: list[ledger.Ask]) -> list[str]:
        """The asks' round is over: the request ids of those released or recorded meanwhile (from here
        on, a release or a record finds their rows itself)."""
        ended = []
        for ask in asks:
            request_id = ask.request_id
            self._deciding[request_id] -= 1
            if not self._deciding[request_id]:
                del self._deciding[request_id]
                if request_id in self._ended:
                    self._ended.discard(request_id)
                    ended.append(request_id)
        return ended

    async def _drop_rows(self, request_ids: list[str]) -> None:
        """Rows a round wrote whose requests were recorded or released meanwhile."""
        try:
            await self.db.run(lambda s: ledger.release_reservations(s, request_ids))
        except Exception:
            log.exception("could not drop handed-back reservations; they expire")

    def _keep_syncing(self) -> None:
        if self.book.slices and self._syncer is None and not self._closing:
            self._syncer = asyncio.create_task(self._sync_while_holding())

    async def _sync_while_holding(self) -> None:
        try:
            while self.book.slices and not self._closing:
                await asyncio.sleep(self.sync_seconds)
                await self.round(everyone=True)
        finally:
            self._syncer = None

    async def limit_changed(self, account: str, change: Callable[[], Awaitable[None]]) -> None:
        """Runs `change` (which stores a new limit or credits, revoking the account's leases when
        the budget went down) while this process decides the account's asks in the database; then
        hands back its own slice and returns once no other process can grant from a revoked one."""
        self.book.frozen[account] += 1  # a count: concurrent changes each keep it frozen
        self.book.due.add(account)  # the round after the change hands the slice back
        try:
            await change()
            await self.round()
        finally:
            self.book.frozen[account] -= 1
            if not self.book.frozen[account]:
                del self.book.frozen[account]
        deadline = self.clock() + self.lease_seconds + self.sync_seconds
        for _ in range(int((deadline - self.clock()) / REVOCATION_POLL_SECONDS) + 1):
            if not await self.db.run(lambda s: leases.revoked_in_force(s, account, self.holder, self.clock())):
                return
            await asyncio.sleep(REVOCATION_POLL_SECONDS)

    async def close(self) -> None:
        """Hands every slice back (its grants become reservation rows)."""
        self._closing = True
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        if self.book.slices:
            await self.round(everyone=True)
