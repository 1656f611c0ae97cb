"""The accounts that have a spending limit: kept in memory, and pushed to every
Router that watches them (LedgerService.WatchLimitedAccounts).

Most accounts have no limit. A Router that follows this set reserves only for
limited accounts, so requests of the others never wait for Billing. A limit
change is answered only once every connected Router acknowledged it (or was
dropped for not acknowledging within `ack_timeout`; a dropped Router asks
Billing on every request until it has reconnected): a new limit applies to
the next request on every Router. The set is also reloaded every
`refresh_seconds`, for limits changed by another Billing replica on a shared
database; such changes reach the Routers within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from switchboard.billing.v1 import billing_service_pb2 as billing_pb

from services.billing import ledger
from services.common.db import Database

log = logging.getLogger(__name__)

ACK_TIMEOUT_SECONDS = 5.0  # a Router this slow to apply a change is dropped (then asks Billing per request)
MAX_QUEUED_UPDATES = 10_000


class _Watcher:
    """One Router's stream: updates to send, and the newest revision it applied."""

    def __init__(self) -> None:
        self.updates: asyncio.Queue[billing_pb.WatchLimitedAccountsResponse | None] = asyncio.Queue()
        self.applied = 0
        self.acknowledged = asyncio.Event()  # set (and replaced) on every acknowledgement
        self.dropped = False

    def acknowledge(self, revision: int) -> None:
        self.applied = max(self.applied, revision)
        event, self.acknowledged = self.acknowledged, asyncio.Event()
        event.set()

    def drop(self) -> None:
        """Ends the stream: the Router reconnects and starts from a snapshot."""
        if not self.dropped:
            self.dropped = True
            self.updates.put_nowait(None)

    def send(self, update: billing_pb.WatchLimitedAccountsResponse) -> None:
        if self.updates.qsize() >= MAX_QUEUED_UPDATES:
            self.drop()  # a Router this far behind gets a fresh snapshot instead of a backlog
        elif not self.dropped:
            self.updates.put_nowait(update)

    async def applied_at_least(self, revision: int) -> None:
        while self.applied < revision and not self.dropped:
            await self.acknowledged.wait()


class LimitedAccounts:
    """Which accounts have a limit (> 0), and the Routers that follow the set."""

    def __init__(self, db: Database, refresh_seconds: float = 1.0, ack_timeout: float = ACK_TIMEOUT_SECONDS) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self.ack_timeout = ack_timeout
        self.revision = 0
        self._names: set[str] = set()
        self._watchers: set[_Watcher] = set()
        self._task: asyncio.Task | None = None

    def __contains__(self, account: str) -> bool:
        return account in self._names

    async def changed(self, account: str, limit_nano_usd: int) -> None:
        """Records a limit this process just stored; returns once every Router applied it."""
        limited = limit_nano_usd > 0
        if limited and account not in self._names:
            self._publish([account], [])
        elif not limited and account in self._names:
            self._publish([], [account])
        # Also when a reload published it first: the answer waits until the Routers have it.
        await self._all_applied(self.revision)

    def _publish(self, limited: list[str], unlimited: list[str]) -> None:
        self._names.update(limited)
        self._names.difference_update(unlimited)
        self.revision += 1
        update = billing_pb.WatchLimitedAccountsResponse(revision=self.revision, limited=limited, unlimited=unlimited)
        for watcher in self._watchers:
            watcher.send(update)

    async def _all_applied(self, revision: int) -> None:
        watchers = list(self._watchers)
        waits = [asyncio.ensure_future(w.applied_at_least(revision)) for w in watchers]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=self.ack_timeout)
        for watcher, wait in zip(watchers, waits, strict=True):
            if wait in late:
                wait.cancel()
                log.warning("a Router did not acknowledge a limit change in time; dropping its stream")
                watcher.drop()

    async def reload(self) -> None:
        """Reads the set from the database and publishes what another replica changed.
        A read that overlapped a change of this process's own is dropped: it may predate it."""
        revision = self.revision
        names = {row[0] for row in await self.db.query(ledger.LIMITED_ACCOUNTS)}
        if revision != self.revision:
            return
        added, removed = sorted(names - self._names), sorted(self._names - names)
        if added or removed:
            self._publish(added, removed)

    async def start(self) -> None:
        """Loads the set, then keeps it fresh in the background."""
        await self.reload()
        self._task = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.reload()
            except Exception:
                log.exception("could not reload the accounts with a spending limit")

    async def watch(
        self, acknowledgements: AsyncIterator[billing_pb.WatchLimitedAccountsRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[billing_pb.WatchLimitedAccountsResponse]:
        """One Router's stream: a snapshot, then every change, while reading its acknowledgements."""
        watcher = _Watcher()
        self._watchers.add(watcher)
        reader = asyncio.create_task(_read_acknowledgements(acknowledgements, watcher))
        try:
            yield billing_pb.WatchLimitedAccountsResponse(
                revision=self.revision, snapshot=True, limited=sorted(self._names)
            )
            while (update := await watcher.updates.get()) is not None:
                yield update
        finally:
            self._watchers.discard(watcher)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def close_watchers(self) -> None:
        """Ends every Router's stream (on stop)."""
        for watcher in list(self._watchers):
            watcher.drop()

    async def close(self) -> None:
        self.close_watchers()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _read_acknowledgements(
    acknowledgements: AsyncIterator[billing_pb.WatchLimitedAccountsRequest], watcher: _Watcher
) -> None:
    try:
        async for message in acknowledgements:
            watcher.acknowledge(message.applied_revision)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    finally:
        watcher.drop()  # the Router closed its side: end ours too
