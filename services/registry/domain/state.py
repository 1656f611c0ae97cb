"""What the Registry's servicers share: database, index, change feed, callers."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.auth import TOKEN_PREFIX, bearer_token, is_admin_token
from services.common.db import Database
from services.common.errors import ApiError, already_exists, api_key_expired, not_found, unauthenticated
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.validation import shown
from services.registry.storage import health_records, queries
from services.registry.storage.index import IndexedProvider, RegistryIndex, TokenTerms, Touched
from services.registry.storage.tables import ChangeRow

T = TypeVar("T")
Update = Callable[[RegistryIndex], Touched]


def hash_token(token: str) -> str:
    """Tokens are stored and looked up as their SHA-256 digest only.

    The lookup compares digests, never the token: how long it takes says
    nothing about how close a guess came to a stored token (finding a token
    for a digest prefix is a preimage search). The admin token, which is kept
    as is, is compared with hmac.compare_digest.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def feed_key(key: str) -> str:
    """A change's key as watchers see it: a catalog batch of several models has none."""
    return "" if "\n" in key else key


async def _nothing_to_catch_up() -> None:
    return None


def read_change(session: Session, kind: int, key: str) -> Update:
    """Re-reads from the database what a change touched; the answer applies it to an index
    (on the event loop) and says what it touched there."""
    if kind in (internal_pb.CHANGE_KIND_MAPPING, internal_pb.CHANGE_KIND_PROVIDER):
        entry, mappings = queries.indexed_provider(session, key), queries.provider_mappings(session, key)
        if kind == internal_pb.CHANGE_KIND_PROVIDER:
            return lambda index: index.replace_provider(key, entry, mappings)
        return lambda index: index.replace_provider_mappings(key, mappings) if key in index.providers else Touched()
    if kind == internal_pb.CHANGE_KIND_IDENTITY:
        user, tokens = queries.user_identity(session, key)
        return lambda index: index.replace_user(key, user, tokens)
    if kind == internal_pb.CHANGE_KIND_MODEL:
        rows = queries.catalog_rows(session, key.split("\n")) if key else []
        return lambda index: index.put_models(rows)
    if kind == internal_pb.CHANGE_KIND_ALIAS:
        target = queries.alias_target(session, key)
        return lambda index: index.replace_alias(key, target)
    return lambda index: Touched()


def invalid_token() -> ApiError:
    return unauthenticated("INVALID_API_KEY", "invalid API token")


@dataclass
class RegistryState:
    """The database, the in-memory index kept in step with it, and the change feed.

    Every write goes through `write`: the rows and their change record commit in one
    transaction, then the index and the feed are updated from the change by `apply`,
    the code that applies the other replicas' changes too.
    """

    db: Database
    index: RegistryIndex
    feed: ChangeFeed
    admin_token: str
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)  # this replica, in the change log
    # Applies every change committed so far (the ReplicaFollower's, set at start).
    catch_up: Callable[[], Awaitable[None]] = _nothing_to_catch_up
    # Revisions of this replica's writes it applied itself: the follower skips them (and
    # applies a write of ours whose apply failed or was cancelled after its commit).
    applied_here: set[int] = field(default_factory=set)
    # Revisions of this replica's writes their writer is applying: the follower looks at them again
    # once their writer is done (applied, or not: a failed or cancelled apply), so that it does not
    # apply a change its writer is applying (which would tell the watchers twice), nor lose one. A
    # change read between its commit and its writer's next step is applied by both: a harmless second notice.
    applying_here: set[int] = field(default_factory=set)
    _applying: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def write(
        self,
        work: Callable[[Session], T],
        kind: int,
        key: str,
        conflict: str = "",
        reason: str = "ALREADY_EXISTS",
    ) -> T:
        """The one write path: work(session) stages rows without committing; the change
        (kind, key: see ChangeRow) commits with them, so a crash keeps both or neither.
        Then this replica applies the change (should that fail, its follower will). A
        unique-constraint violation is a 409 with the `conflict` message when one is given."""

        def transaction(session: Session) -> tuple[T, int]:
            result = work(session)
            return result, queries.commit_change(session, ChangeRow(origin=self.origin, kind=kind, key=key))

        try:
            result, revision = await self.db.run(transaction)
        except IntegrityError:
            if not conflict:
                raise
            raise already_exists(reason, conflict) from None
        self.applying_here.add(revision)
        try:
            await self.apply(kind, key)
            self.applied_here.add(revision)
        finally:
            self.applying_here.discard(revision)
        return result

    async def apply(self, kind: int, key: str) -> None:
        """Updates the index from what a committed change touched and tells the watchers.
        One change at a time: each re-read starts after the previous one was applied, so
        the newest state read is the one that stays. Health records carry their own version
        and touch no index: their notice carries them (services/registry/storage/health_records.py)."""
        if kind == internal_pb.CHANGE_KIND_HEALTH:
            records = await self.db.run(lambda session: health_records.records(session, health_records.keys_of(key)))
            self.feed.publish(kind, "", Touched(), tuple(records))
            return
        async with self._applying:
            update = await self.db.run(lambda session: read_change(session, kind, key))
            self.feed.publish(kind, feed_key(key), self.index.with_aliases(update(self.index)))

    async def fresh(self, lookup: Callable[[], T]) -> T:
        """lookup() on the index; when it refuses (an ApiError), once more after catching up
        with the change log, so what a write on another replica made a moment ago (a token,
        a provider, a model) is known here: a caller reads its writes whichever replica answers."""
        try:
            return lookup()
        except ApiError:
            await self.catch_up()
            return lookup()

    def provider(self, provider_id: str) -> IndexedProvider:
        provider = self.index.providers.get(provider_id)
        if provider is None:
            raise not_found("PROVIDER_NOT_FOUND", f"provider {shown(provider_id)} does not exist")
        return provider

    def user_of_token(self, token: str) -> str | None:
        """The token's user; None for the admin token; 401 for anything else."""
        if is_admin_token(token, self.admin_token):
            return None
        user = self.index.tokens.get(hash_token(token))
        if user is None:
            raise invalid_token()
        return user

    def caller(self, context: grpc.aio.ServicerContext) -> str | None:
        """The calling user from the bearer token (None: the operators' admin token); 401 as
        acting_user says."""
        return self.acting_user(bearer_token(context))

    def caller_terms(self, context: grpc.aio.ServicerContext) -> tuple[str | None, TokenTerms]:
        """The calling user, as `caller` says, and what the index keeps of the token's limits and
        account (none for the admin token): read together, so both are of the same index state."""
        token = bearer_token(context)
        user = self.acting_user(token)
        return user, TokenTerms() if user is None else self.index.token_terms(hash_token(token))

    def acting_user(self, token: str) -> str | None:
        """The user a token acts as (None: the admin token); 401 for an unknown token and for one
        past its expireTime, which may not act as its user (e.g. make itself a new token)."""
        user = self.user_of_token(token)
        if user is not None and self.index.expired(hash_token(token), time.time()):
            raise api_key_expired()
        return user
