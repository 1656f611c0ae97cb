"""What the Registry's servicers share: database, index, change feed, callers."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.common.auth import bearer_token, is_admin_token
from services.common.db import Database
from services.common.errors import ApiError, already_exists, unauthenticated
from services.registry import store
from services.registry.changes import ChangeFeed
from services.registry.index import RegistryIndex
from services.registry.storage import ChangeRow

T = TypeVar("T")
TOKEN_PREFIX = "sb-"


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


def invalid_token() -> ApiError:
    return unauthenticated("INVALID_API_KEY", "invalid API token")


@dataclass
class RegistryState:
    """The database, the in-memory index kept in step with it, and the change feed."""

    db: Database
    index: RegistryIndex
    feed: ChangeFeed
    admin_token: str
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)  # this replica, in the change log

    async def changed(self, kind: int, key: str = "") -> None:
        """Tells this replica's watchers, and the other replicas through the change log."""
        self.feed.publish(kind, feed_key(key))
        change = ChangeRow(origin=self.origin, kind=kind, key=key)
        await self.db.run(lambda session: store.insert(session, change))

    def user_of_token(self, token: str) -> str | None:
        """The token's user; None for the admin token; 401 for anything else."""
        if is_admin_token(token, self.admin_token):
            return None
        user = self.index.tokens.get(hash_token(token))
        if user is None:
            raise invalid_token()
        return user

    def caller(self, context: grpc.aio.ServicerContext) -> str | None:
        """The calling user from the bearer token (None: the operators' admin token)."""
        return self.user_of_token(bearer_token(context))

    async def write(self, work: Callable[[Session], T], conflict: str, reason: str = "ALREADY_EXISTS") -> T:
        """Runs a database write; a unique-constraint violation becomes a 409 with this message."""
        try:
            return await self.db.run(work)
        except IntegrityError:
            raise already_exists(reason, conflict) from None
