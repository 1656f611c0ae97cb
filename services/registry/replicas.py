"""Keeps this Registry replica's index in step with writes made by the others.

Every write is recorded in the `changes` table (RegistryState.changed). Each
replica polls that table a few times a second, re-reads from the database
what another replica's change touched (one provider's mappings, a provider,
a user's identity, a batch of catalog models, a model alias), applies it to its index and
passes the notice on to its own watchers. With one replica this only reads an
empty result set.

Revisions of concurrent transactions may become visible out of order
(PostgreSQL sequences), so each poll looks back a window of revisions and
skips the ones already applied; re-applying a change is harmless anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry import store
from services.registry.state import RegistryState, feed_key

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
LOOK_BACK = 200  # revisions
KEEP_CHANGES = timedelta(hours=1)
PRUNE_EVERY_SECONDS = 60.0


class ReplicaFollower:
    """Applies the other replicas' changes to this replica's index."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self.newest = state.index.loaded_revision
        self.applied: set[int] = set()
        self._last_prune = 0.0

    async def run(self) -> None:
        """Polls until cancelled; a failed poll is logged and retried."""
        while True:
            try:
                await self.poll()
                await self._prune()
            except Exception:
                log.exception("reading the change log failed; retrying")
            await asyncio.sleep(POLL_SECONDS)

    async def poll(self) -> None:
        since = self.newest - LOOK_BACK
        changes = await self.state.db.run(lambda session: store.changes_since(session, since))
        for revision, origin, kind, key in changes:
            if revision in self.applied:
                continue
            if origin != self.state.origin:
                await self.apply(kind, key)
            self.applied.add(revision)
            self.newest = max(self.newest, revision)
        self.applied = {r for r in self.applied if r > self.newest - LOOK_BACK}

    async def apply(self, kind: int, key: str) -> None:
        """Re-reads what the change touched and updates the index, then tells the watchers."""
        index, run = self.state.index, self.state.db.run
        if kind == internal_pb.CHANGE_KIND_MAPPING:
            mappings = await run(lambda session: store.provider_mappings(session, key))
            if key in index.providers:
                index.replace_provider_mappings(key, mappings)
        elif kind == internal_pb.CHANGE_KIND_PROVIDER:
            entry = await run(lambda session: store.provider_entry(session, key))
            if entry is None:
                index.remove_provider(key)
            else:
                index.put_provider(entry)
        elif kind == internal_pb.CHANGE_KIND_IDENTITY:
            user, token_hashes = await run(lambda session: store.user_identity(session, key))
            index.replace_user(key, user, token_hashes)
        elif kind == internal_pb.CHANGE_KIND_ALIAS:
            target = await run(lambda session: store.alias_target(session, key))
            if target is None:
                index.remove_alias(key)
            else:
                index.put_alias(key, target)
        elif kind == internal_pb.CHANGE_KIND_MODEL and key:
            for row in await run(lambda session: store.catalog_rows(session, key.split("\n"))):
                index.put_model(*row)
        self.state.feed.publish(kind, feed_key(key))

    async def _prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = time.monotonic()
        before = datetime.now(UTC) - KEEP_CHANGES
        await self.state.db.run(lambda session: store.prune_changes(session, before))
