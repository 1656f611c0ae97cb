"""The change feed behind InternalService.WatchChanges.

Every committed write publishes one notice, naming what it touched (so the
services' caches drop those entries only); each watcher has a bounded queue.
A watcher too slow to keep up loses its backlog and gets a reset notice
(kind UNSPECIFIED: drop every cached state), so one slow client never makes
the Registry buffer without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import NamedTuple

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry.storage.index import Touched

RESET = internal_pb.CHANGE_KIND_UNSPECIFIED


class Change(NamedTuple):
    """One notice: revision, kind (a ChangeKind value), the changed key and what it touched;
    the changed health records of a CHANGE_KIND_HEALTH."""

    revision: int
    kind: int
    key: str
    touched: Touched = Touched()
    health: tuple[internal_pb.ModelHealth, ...] = ()

    def message(self) -> internal_pb.WatchChangesResponse:
        return internal_pb.WatchChangesResponse(
            revision=self.revision,
            kind=self.kind,
            key=self.key,
            models=sorted(self.touched.models),
            all_models=self.touched.all_models,
            token_hashes=sorted(self.touched.token_hashes),
            health=self.health,
        )


class ChangeFeed:
    """Fans every change out to the current watchers."""

    def __init__(self, queue_size: int = 1024) -> None:
        self.revision = 0
        self.queue_size = queue_size
        # Each watcher's queue (None in it: the feed is closing) and the kinds it asked for (none: all).
        self._queues: dict[asyncio.Queue[Change | None], frozenset[int]] = {}
        self.closed = False

    def publish(self, kind: int, key: str, touched: Touched, health: tuple[internal_pb.ModelHealth, ...] = ()) -> None:
        if kind != internal_pb.CHANGE_KIND_HEALTH:  # health records carry their own version
            self.revision += 1
        change = Change(self.revision, kind, key, touched, health)
        for queue, kinds in self._queues.items():
            if kinds and kind not in kinds:
                continue
            if queue.full():
                _drain(queue)
                change_for_queue = Change(self.revision, RESET, "")
            else:
                change_for_queue = change
            queue.put_nowait(change_for_queue)

    async def watch(self, kinds: Collection[int] = ()) -> AsyncIterator[Change]:
        """A reset notice at once, then every change of these kinds (of every kind when none are
        named) until the caller stops iterating or the feed is closed."""
        if self.closed:
            return
        queue: asyncio.Queue[Change | None] = asyncio.Queue(self.queue_size)
        self._queues[queue] = frozenset(kinds)
        try:
            yield Change(self.revision, RESET, "")
            while (change := await queue.get()) is not None:
                yield change
        finally:
            self._queues.pop(queue, None)

    def close(self) -> None:
        """Ends every watcher's stream (on stop: a server waits for open streams to end)."""
        self.closed = True
        for queue in self._queues:
            _drain(queue)  # what they missed they get again as a reset after reconnecting
            queue.put_nowait(None)

    @property
    def watchers(self) -> int:
        return len(self._queues)

    @property
    def backlog(self) -> int:
        """Notices the slowest watcher has not been sent yet: how far behind it is."""
        return max((queue.qsize() for queue in list(self._queues)), default=0)


def _drain(queue: asyncio.Queue) -> None:
    while not queue.empty():
        queue.get_nowait()
