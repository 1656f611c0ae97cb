"""A change feed subscriber names the kinds of change it wants (WatchChangesRequest.kinds):
the Registry's feed (services/registry/domain/changes.py) sends it those and the resets only,
and Billing, which caches callers only, asks for identity changes (no health notices)."""

from __future__ import annotations

import asyncio
import contextlib

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.billing.server import FEED_KINDS
from services.common.registry_feed import FeedCache
from services.registry.domain.changes import RESET, ChangeFeed
from services.registry.storage.index import Touched

HEALTH, IDENTITY, PROVIDER = (
    internal_pb.CHANGE_KIND_HEALTH,
    internal_pb.CHANGE_KIND_IDENTITY,
    internal_pb.CHANGE_KIND_PROVIDER,
)


async def test_a_watcher_gets_the_kinds_it_asked_for_and_the_resets_another_gets_all() -> None:
    feed = ChangeFeed()
    picky, everything = feed.watch([IDENTITY]), feed.watch()
    assert [(await anext(picky)).kind, (await anext(everything)).kind] == [RESET, RESET]
    for kind, key in ((HEALTH, "h"), (PROVIDER, "p"), (IDENTITY, "alice")):
        feed.publish(kind, key, Touched())
    assert [(await anext(everything)).key for _ in range(3)] == ["h", "p", "alice"]
    assert (await anext(picky)).key == "alice"
    feed.close()
    assert [change async for change in picky] == [] and [change async for change in everything] == []


async def test_kinds_a_watcher_did_not_ask_for_never_fill_its_queue() -> None:
    feed = ChangeFeed(queue_size=2)
    picky = feed.watch([IDENTITY])
    assert (await anext(picky)).kind == RESET
    for number in range(5):
        feed.publish(HEALTH, f"h{number}", Touched())
    feed.publish(IDENTITY, "alice", Touched())
    assert ((change := await anext(picky)).kind, change.key) == (IDENTITY, "alice")  # no reset: nothing was lost
    await picky.aclose()


def test_billing_asks_for_no_health_notices() -> None:
    assert HEALTH not in FEED_KINDS and IDENTITY in FEED_KINDS


class Stub:
    """A Registry whose feed ends after its reset: records what each watch asked for."""

    def __init__(self) -> None:
        self.asked: list[internal_pb.WatchChangesRequest] = []

    def WatchChanges(self, request, wait_for_ready: bool):
        self.asked.append(request)
        return self._changes()

    async def _changes(self):
        yield internal_pb.WatchChangesResponse(kind=RESET)
        raise asyncio.CancelledError


async def test_a_feed_cache_asks_for_its_kinds() -> None:
    for kinds in ((), (IDENTITY,)):
        stub = Stub()
        with contextlib.suppress(asyncio.CancelledError):  # the stub's way to end the watch
            await FeedCache(stub, kinds=kinds).watch()
        assert list(stub.asked[0].kinds) == list(kinds)
