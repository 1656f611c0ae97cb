"""What the Registry's servicers share: database, index, change feed, callers."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.common.auth import bearer_token, is_admin_token
from services.common.db import Database
from services.common.errors import ApiError
from services.registry.changes import ChangeFeed
from services.registry.index import RegistryIndex

T = TypeVar("T")
TOKEN_PREFIX = "sb-"


def hash_token(token: str) -> str:
    """Tokens are stored and looked up as their SHA-256 digest only."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def invalid_token() -> ApiError:
    return ApiError(401, "invalid API token", code="invalid_api_key")


@dataclass
class RegistryState:
    """The database, the in-memory index kept in step with it, and the change feed."""

    db: Database
    index: RegistryIndex
    feed: ChangeFeed
    admin_token: str

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

    async def write(self, work: Callable[[Session], T], conflict: str, code: str = "already_exists") -> T:
        """Runs a database write; a unique-constraint violation becomes a 409 with this message."""
        try:
            return await self.db.run(work)
        except IntegrityError:
            raise ApiError(409, conflict, code=code) from None
