"""Who is calling Billing, and what they may see.

Callers are authenticated by the Registry and cached while its change feed
is connected (services/common/registry_feed.py): a revoked token or a changed
membership takes effect as soon as the Registry's notice arrives. The admin
token is recognised locally without a Registry call.
"""

from __future__ import annotations

import grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.auth import bearer_token, is_admin_token
from services.common.errors import permission_denied
from services.common.registry_feed import FeedCache

ADMIN = internal_pb.Caller(admin=True)


class Authenticator:
    """Turns a request's bearer token into the Registry's Caller."""

    def __init__(self, registry: FeedCache, admin_token: str) -> None:
        self.registry = registry
        self.admin_token = admin_token

    async def caller(self, context: grpc.aio.ServicerContext, fresh: bool = False) -> internal_pb.Caller:
        """The caller; 401 for a missing or unknown token, 503 when the Registry cannot answer.
        `fresh`: as the Registry has it now, past the cache, for a rare decision a change notice
        still on its way must not undo (a token given limits a moment ago may not lift a spending
        limit)."""
        token = bearer_token(context)
        if is_admin_token(token, self.admin_token):
            return ADMIN
        return await self.registry.authenticate(token, fresh)


def may_manage(caller: internal_pb.Caller, account: str) -> bool:
    """The admin token, the account's own user, or an admin of the org of that name
    (users and orgs share one name space: a name is one or the other)."""
    if caller.admin or (caller.user and caller.user == account):
        return True
    return any(m.org == account and m.role == "admin" for m in caller.memberships)


def require_account_access(caller: internal_pb.Caller, account: str) -> None:
    """403 unless the caller may see and manage the account."""
    if not may_manage(caller, account):
        raise permission_denied("ACCOUNT_ACCESS_DENIED", f"you may not access the billing of account '{account[:64]}'")
