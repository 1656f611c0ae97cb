"""The accounts that have a spending limit, kept in memory.

Most accounts have no limit; their reservations are granted without touching
the database, so the Router's hot path never queues behind a ledger batch on
SQLite's single writer thread. This process's own limit changes apply at
once; the set is also reloaded every `refresh_seconds`, for limits changed by
another replica on a shared database.
"""

from __future__ import annotations

import asyncio
import logging

from services.billing import ledger
from services.common.db import Database

log = logging.getLogger(__name__)


class LimitedAccounts:
    """Which accounts have a limit (> 0)."""

    def __init__(self, db: Database, refresh_seconds: float = 1.0) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self._names: set[str] = set()
        self._task: asyncio.Task | None = None

    def __contains__(self, account: str) -> bool:
        return account in self._names

    def changed(self, account: str, limit_nano_usd: int) -> None:
        """Records a limit this process just stored."""
        if limit_nano_usd > 0:
            self._names.add(account)
        else:
            self._names.discard(account)

    async def reload(self) -> None:
        self._names = await self.db.run(ledger.limited_accounts)

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

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
