"""The change feed behind InternalService.WatchChanges.

Every committed write publishes one notice; each watcher has a bounded queue.
A watcher too slow to keep up loses its backlog and gets a reset notice
(kind UNSPECIFIED: drop every cached state), so one slow client never makes
the Registry buffer without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

RESET = internal_pb.CHANGE_KIND_UNSPECIFIED


class Change(NamedTuple):
    """One notice: revision, kind (a ChangeKind value) and the changed key."""

    revision: int
    kind: int
    key: str


class ChangeFeed:
    """Fans every change out to the current watchers."""

    def __init__(self, queue_size: int = 1024) -> None:
        self.revision = 0
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[Change]] = set()

    def publish(self, kind: int, key: str = "") -> None:
        self.revision += 1
        change = Change(self.revision, kind, key)
        for queue in self._queues:
            if queue.full():
                _drain(queue)
                change_for_queue = Change(self.revision, RESET, "")
            else:
                change_for_queue = change
            queue.put_nowait(change_for_queue)

    async def watch(self) -> AsyncIterator[Change]:
        """A reset notice at once, then every change until the caller stops iterating."""
        queue: asyncio.Queue[Change] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        try:
            yield Change(self.revision, RESET, "")
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

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
