"""Who is calling Billing, and what they may see.

Callers are authenticated by the Registry; answers are cached for at most
`ttl_seconds` (<= 1 s), so a revoked token or a changed membership takes
effect within a second. Failures are never cached. The admin token is
recognised locally without a Registry call.
"""

from __future__ import annotations

import hashlib
import time

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.auth import bearer_token, is_admin_token
from services.common.errors import ApiError

REGISTRY_TIMEOUT = 5.0
CACHE_LIMIT = 10_000
ADMIN = internal_pb.Caller(admin=True)


class Authenticator:
    """Turns a request's bearer token into the Registry's Caller."""

    def __init__(self, registry: internal_grpc.InternalServiceStub, admin_token: str, ttl_seconds: float = 1.0) -> None:
        self.registry = registry
        self.admin_token = admin_token
        self.ttl_seconds = min(ttl_seconds, 1.0)
        self._cache: dict[bytes, tuple[float, internal_pb.Caller]] = {}

    async def caller(self, context: grpc.aio.ServicerContext) -> internal_pb.Caller:
        """The caller; 401 for a missing or unknown token, 503 when the Registry cannot answer."""
        token = bearer_token(context)
        if is_admin_token(token, self.admin_token):
            return ADMIN
        key = hashlib.sha256(token.encode()).digest()  # the cache never holds tokens themselves
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        caller = await self._authenticate(token)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (now + self.ttl_seconds, caller)
        return caller

    async def _authenticate(self, token: str) -> internal_pb.Caller:
        try:
            return await self.registry.AuthenticateToken(
                internal_pb.AuthenticateTokenRequest(token=token), timeout=REGISTRY_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                raise ApiError(401, "invalid API token", code="invalid_api_key") from None
            raise ApiError(503, "identity service unavailable, try again", code="service_unavailable") from None


def may_manage(caller: internal_pb.Caller, account: str) -> bool:
    """The admin token, the account's own user, or an admin of the org of that name."""
    if caller.admin or (caller.user and caller.user == account):
        return True
    return any(m.org == account and m.role == "admin" for m in caller.memberships)


def require_account_access(caller: internal_pb.Caller, account: str) -> None:
    """403 unless the caller may see and manage the account."""
    if not may_manage(caller, account):
        raise ApiError(403, f"you may not access the billing of account '{account}'", code="account_access_denied")
