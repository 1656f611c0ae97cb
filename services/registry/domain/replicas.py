"""Keeps this Registry replica's index in step with writes made by the others.

Every write commits its record in the `changes` table in its own transaction
(RegistryState.write: an outbox). Each replica polls that table and applies
another replica's change with RegistryState.apply, as the writer applied it: it
re-reads from the database what the change touched (one provider's mappings, a
provider, a user's identity, a batch of catalog models, a model alias), updates
its index and passes the notice on to its own watchers.

A poll first reads one indexed scalar mark of the table (CHANGE_LOG_MARK, no ORM
session) and reads the changes only when the mark moved. Polls come every
POLL_SECONDS while changes come; each poll that finds nothing doubles the pause
up to IDLE_POLL_SECONDS, the worst case for a change made on another replica to
reach this one; the first poll that finds something returns to POLL_SECONDS. An
idle replica (and a single one, whose own writes apply as they commit) thus
costs a scalar read about twice a second.

Revisions of concurrent transactions may become visible out of order
(PostgreSQL sequences), so each poll looks back a window of revisions and
skips the ones already applied; re-applying a change is harmless anyway.
A change of this replica's own that its writer is applying waits, outside the
window, until the writer is done; it is applied here if the writer's apply
failed or was cancelled (e.g. its caller's deadline), however many changes
came meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from services.registry.domain.state import RegistryState
from services.registry.storage import queries

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2  # between polls while changes come
IDLE_POLL_SECONDS = 0.5  # the longest pause, after polls that found nothing
LOOK_BACK = 200  # revisions
KEEP_CHANGES = timedelta(hours=1)
PRUNE_EVERY_SECONDS = 60.0


class ReplicaFollower:
    """Applies the other replicas' changes to this replica's index."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self.newest = state.index.loaded_revision
        self.applied: set[int] = set()
        # This replica's changes its writers were applying when read: revision -> (kind, key)
        self.waiting: dict[int, tuple[int, str]] = {}
        self._last_prune = 0.0
        self._polls = 0  # polls started
        self._polling = asyncio.Lock()
        self.pause = POLL_SECONDS  # until the next poll
        # (look-back start, CHANGE_LOG_MARK) when the changes were last read with none left for later
        self._read_at: tuple | None = None

    async def run(self) -> None:
        """Polls until cancelled; a failed poll is logged and retried."""
        while True:
            try:
                await self.catch_up()
                await self._prune()
            except Exception:
                log.exception("reading the change log failed; retrying")
            await asyncio.sleep(self.pause)

    async def catch_up(self) -> None:
        """Applies every change committed before the call. Callers arriving together share
        one poll: a poll that started after a caller asked has read all it needs."""
        asked_after = self._polls
        async with self._polling:
            if self._polls > asked_after:  # one started (under this lock) after the call, and ended
                return
            self._polls += 1
            await self.poll()

    async def poll(self) -> None:
        await self._settle_waiting()
        since = self.newest - LOOK_BACK
        (mark,) = await self.state.db.query(queries.CHANGE_LOG_MARK, {"since": since})
        read_at = (since, *mark)
        if read_at == self._read_at:  # nothing committed or pruned since the last read
            self.pause = min(self.pause * 2, IDLE_POLL_SECONDS)
            return
        self.pause, self._read_at = POLL_SECONDS, None
        changes = await self.state.db.run(lambda session: queries.changes_since(session, since))
        for revision, _, kind, key in changes:
            if revision in self.applied:
                continue
            if revision in self.state.applying_here:  # its writer is applying it: settled at the next poll
                self.waiting[revision] = (kind, key)
            elif revision not in self.state.applied_here:  # another replica's, or ours not applied
                await self.state.apply(kind, key)  # should it fail, the next poll reads the changes again
            self.applied.add(revision)
            self.newest = max(self.newest, revision)
        self._read_at = read_at
        self.applied = {r for r in self.applied if r > self.newest - LOOK_BACK}
        oldest = self.newest - LOOK_BACK  # a waiting change's revision stays until it is settled
        self.state.applied_here -= {r for r in self.state.applied_here if r <= oldest and r not in self.waiting}

    async def _settle_waiting(self) -> None:
        """This replica's changes whose writers were applying them: applied here unless they did."""
        for revision, (kind, key) in list(self.waiting.items()):
            if revision in self.state.applying_here:
                continue
            if revision not in self.state.applied_here:
                await self.state.apply(kind, key)
            del self.waiting[revision]

    async def _prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = time.monotonic()
        before = datetime.now(UTC) - KEEP_CHANGES
        await self.state.db.run(lambda session: queries.prune_changes(session, before))
