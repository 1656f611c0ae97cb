"""The Registry's one write path: a write and its change record commit together, the
writer applies the change itself, and its follower applies what the writer could not
(its apply failed or was cancelled after the commit), never a change twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.common.errors import ApiError
from services.registry.api.internal import InternalServicer
from services.registry.domain import replicas
from services.registry.domain import state as state_module
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.replicas import ReplicaFollower
from services.registry.domain.state import RegistryState
from services.registry.domain.tokens import issue_token, revoke_token
from services.registry.server import MIGRATIONS
from services.registry.storage import queries
from services.registry.storage.tables import UserRow


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryState]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url, MIGRATIONS)
    db = Database(url)
    index = await db.run(lambda session: queries.load_index(session.get_bind()))
    yield RegistryState(db, index, ChangeFeed(), "admin-token")
    db.close()


def create_user(name: str):
    return lambda session: queries.create_account(session, UserRow(name=name))


async def test_a_write_applied_here_is_not_applied_again(registry: RegistryState) -> None:
    follower = ReplicaFollower(registry)
    await registry.write(create_user("ann"), internal_pb.CHANGE_KIND_IDENTITY, "ann")
    assert ("ann" in registry.index.users, registry.feed.revision) == (True, 1)
    await follower.catch_up()
    assert registry.feed.revision == 1  # no second notice


async def test_the_follower_applies_a_committed_write_its_writer_could_not(
    registry: RegistryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = ReplicaFollower(registry)
    read_change = state_module.read_change

    def unreadable(*args: object) -> None:
        raise OSError("the database went away after the commit")

    monkeypatch.setattr(state_module, "read_change", unreadable)
    with pytest.raises(OSError):
        await registry.write(create_user("bob"), internal_pb.CHANGE_KIND_IDENTITY, "bob")
    assert "bob" not in registry.index.users  # committed, with its change record, but not applied
    monkeypatch.setattr(state_module, "read_change", read_change)
    await follower.catch_up()
    assert ("bob" in registry.index.users, registry.feed.revision) == (True, 1)


async def test_a_write_whose_apply_was_cancelled_is_applied_however_many_changes_came_after(
    registry: RegistryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its caller gave up (a deadline) while the writer applied it; then, with another write of this
    replica always under way, more changes came than the follower looks back: it applies it, once."""
    monkeypatch.setattr(replicas, "LOOK_BACK", 3)
    follower, apply, gate, both_committed = ReplicaFollower(registry), registry.apply, asyncio.Event(), asyncio.Event()
    applying: list[str] = []

    async def slow_apply(kind: int, key: str) -> None:
        applying.append(key)
        if len(applying) == 2:
            both_committed.set()
        await gate.wait()
        await apply(kind, key)

    registry.apply = slow_apply
    given_up = asyncio.ensure_future(registry.write(create_user("cat"), internal_pb.CHANGE_KIND_IDENTITY, "cat"))
    under_way = asyncio.ensure_future(registry.write(create_user("dog"), internal_pb.CHANGE_KIND_IDENTITY, "dog"))
    await both_committed.wait()  # their writer waits to apply them
    await follower.catch_up()  # it leaves them to their writer for now
    given_up.cancel()
    registry.apply = apply
    for number in range(2 * replicas.LOOK_BACK):
        await registry.write(create_user(f"later-{number}"), internal_pb.CHANGE_KIND_IDENTITY, f"later-{number}")
        await follower.catch_up()
    assert "cat" in registry.index.users
    gate.set()
    await under_way
    await follower.catch_up()
    assert "dog" in registry.index.users
    assert registry.feed.revision == 2 + 2 * replicas.LOOK_BACK  # one notice each, none twice


async def test_an_expired_token_may_not_act_as_its_user_however_the_index_learnt_it(
    registry: RegistryState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Past its expireTime a token is refused (401 api_key_expired) by the Registry's own APIs too:
    else it could make itself a new token without one. Known from the writer's apply and from a load."""
    await registry.write(create_user("eve"), internal_pb.CHANGE_KIND_IDENTITY, "eve")
    limits = admin_pb.ApiTokenLimits(expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600))
    _, token = await issue_token(registry, "eve", "soon", limits)
    _, lasting = await issue_token(registry, "eve", "lasting")
    loaded = await registry.db.run(lambda session: queries.load_index(session.get_bind()))
    for index in (registry.index, loaded):
        state = RegistryState(registry.db, index, ChangeFeed(), "admin-token")
        assert state.caller(Bearer(token)) == state.caller(Bearer(lasting)) == "eve"
        monkeypatch.setattr(state_module.time, "time", lambda: time.time_ns() / 1e9 + 3601)
        with pytest.raises(ApiError) as refused:
            state.caller(Bearer(token))
        assert (refused.value.grpc_code, refused.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_EXPIRED")
        assert state.caller(Bearer(lasting)) == "eve"
        monkeypatch.undo()


async def test_a_token_revoked_through_another_replica_is_never_served_without_its_limits(
    registry: RegistryState,
) -> None:
    """Replica B has not read A's revocation yet (its index still knows the token): B refuses it
    rather than answer the Router a caller without the limits the database no longer holds."""
    await registry.write(create_user("fay"), internal_pb.CHANGE_KIND_IDENTITY, "fay")
    limits = admin_pb.ApiTokenLimits(requests_per_minute=1)
    _, token = await issue_token(registry, "fay", "limited", limits)
    behind = RegistryState(
        registry.db, await registry.db.run(lambda s: queries.load_index(s.get_bind())), ChangeFeed(), "a"
    )
    internal = InternalServicer(behind)
    request = internal_pb.AuthenticateTokenRequest(token=token)
    assert (await internal.AuthenticateToken(request, None)).limits.requests_per_minute == 1
    await revoke_token(registry, "fay", "limited")
    with pytest.raises(ApiError) as refused:
        await internal.AuthenticateToken(request, None)
    assert (refused.value.grpc_code, refused.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")


class Bearer:
    """A call's context as far as the bearer token goes."""

    def __init__(self, token: str) -> None:
        self.token = token

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]
