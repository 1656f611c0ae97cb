"""Callers' self-service (AccountService): who a token belongs to, one's own API
tokens, an org's members for its admins.

A user's token acts on that user only. The operators' admin token belongs to no
user: it may read /v1/me and any org's members, and manages users' tokens through
the admin API (/admin/v1/users/{user}/tokens), not here.
"""

from __future__ import annotations

from collections import defaultdict

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel import Session, select
from switchboard.registry.v1 import account_service_pb2 as account_pb
from switchboard.registry.v1 import account_service_pb2_grpc as account_grpc
from switchboard.registry.v1.admin_service_pb2 import ApiTokenLimits

from services.common.accounts import require_managing_token
from services.common.auth import bearer_token
from services.common.errors import not_found, permission_denied
from services.common.paging import fitted_page, key_after, of_parent, page_size
from services.registry.domain import token_limits
from services.registry.domain.messages import membership_messages
from services.registry.domain.state import RegistryState, hash_token, invalid_token
from services.registry.domain.tokens import issue_token, limits_of, revoke_token, tokens_after, update_token_limits
from services.registry.domain.validation import shown
from services.registry.storage.tables import MembershipRow, OrgRow, TokenRow

TOKENS_LISTING = "tokens"
MEMBERS_LISTING = "members"


def api_token_message(row: TokenRow) -> account_pb.ApiToken:
    message = account_pb.ApiToken(
        name=row.name, suffix=row.suffix, limits=token_limits.loaded(row.limits), account=row.account or ""
    )
    message.create_time.FromDatetime(row.create_time)
    return message


def within_expiry(limits: ApiTokenLimits | None, expiry: Timestamp | None) -> ApiTokenLimits | None:
    """A new token's limits as a token expiring at `expiry` may give them: its expiry when they
    name none, a 403 when they name a later one (None: no expiry to keep within)."""
    if expiry is None:
        return limits
    limits = limits if limits is not None else ApiTokenLimits()
    if not limits.HasField("expire_time"):
        limits.expire_time.CopyFrom(expiry)
    elif limits.expire_time.ToNanoseconds() > expiry.ToNanoseconds():
        raise permission_denied(
            "EXPIRY_BEYOND_OWN", "a token cannot give a token an expireTime later than its own", "limits.expireTime"
        )
    return limits


def members_after(session: Session, org: str, after: str, size: int) -> list[MembershipRow]:
    """A keyset page of the org's memberships by user: up to size + 1 after `after`."""
    query = select(MembershipRow).where(MembershipRow.org == org, MembershipRow.user > after)
    return list(session.exec(query.order_by(MembershipRow.user).limit(size + 1)))


class AccountServicer(account_grpc.AccountServiceServicer):
    """Self-service of callers and org admins."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self.index = state.index

    async def _caller(self, context: grpc.aio.ServicerContext) -> str | None:
        """The calling user (None: the admin token); a token made a moment ago on another
        replica is known here too."""
        return await self.state.fresh(lambda: self.state.caller(context))

    async def _user(self, context: grpc.aio.ServicerContext) -> str:
        """The calling user; 403 for the admin token, which is no user's."""
        user = await self._caller(context)
        if user is None:
            raise permission_denied(
                "NOT_A_USER_TOKEN",
                "the admin token belongs to no user: manage a user's tokens with /admin/v1/users/{user}/tokens",
            )
        return user

    def _providers_by_org(self) -> dict[str, list[str]]:
        owned: dict[str, list[str]] = defaultdict(list)
        for provider in self.index.providers.values():
            owned[provider.org].append(provider.id)
        return owned

    async def GetMe(self, request: account_pb.GetMeRequest, context: grpc.aio.ServicerContext) -> account_pb.Me:
        user = await self._caller(context)
        if user is None:
            return account_pb.Me(admin=True)
        entry = self.index.users.get(user)
        roles = sorted(entry.memberships.items()) if entry else []
        owned = self._providers_by_org()
        orgs = [account_pb.OrgRole(org=org, role=role, provider_ids=sorted(owned.get(org, ()))) for org, role in roles]
        return account_pb.Me(user=user, orgs=orgs)

    async def ListMyApiTokens(
        self, request: account_pb.ListMyApiTokensRequest, context: grpc.aio.ServicerContext
    ) -> account_pb.ListMyApiTokensResponse:
        user = await self._user(context)
        size = page_size(request.page_size)
        listing = of_parent(TOKENS_LISTING, user)
        after = key_after(listing, request.page_token)
        rows = await self.state.db.run(lambda s: tokens_after(s, user, after, size))
        keys, messages = [r.name for r in rows[:size]], (api_token_message(r) for r in rows[:size])
        page, next_token = fitted_page(listing, keys, messages, len(rows) > size)
        return account_pb.ListMyApiTokensResponse(api_tokens=page, next_page_token=next_token)

    async def _managing_user(self, context: grpc.aio.ServicerContext) -> tuple[str, Timestamp | None]:
        """The calling user, through a token that may manage the user's tokens, and that token's
        expiry. An org admin's token for an org may not (a key for the org's CI must not mint keys
        billing its admin), nor one with a rate, token, budget or model limit: it could lift its
        limits or make keys without them, and a key handed out with limits must stay within them.
        One with an expiry only may, its keys expiring no later than itself (within_expiry)."""
        user = await self._user(context)
        token_hash = hash_token(bearer_token(context))
        found = await self.state.db.run(lambda s: limits_of(s, token_hash))
        if found is None:  # revoked since it was read: it manages nothing
            raise invalid_token()
        own, account = found
        require_managing_token(own, account)
        return user, own.expire_time if own is not None and own.HasField("expire_time") else None

    async def CreateMyApiToken(
        self, request: account_pb.CreateMyApiTokenRequest, context: grpc.aio.ServicerContext
    ) -> account_pb.CreateMyApiTokenResponse:
        user, expiry = await self._managing_user(context)
        limits = within_expiry(request.limits if request.HasField("limits") else None, expiry)
        row, token = await issue_token(self.state, user, request.name, limits)
        return account_pb.CreateMyApiTokenResponse(api_token=api_token_message(row), token=token)

    async def CreateOrgApiToken(
        self, request: account_pb.CreateOrgApiTokenRequest, context: grpc.aio.ServicerContext
    ) -> account_pb.CreateMyApiTokenResponse:
        user, expiry = await self._managing_user(context)
        if self.index.role(user, request.org) != "admin":
            message = f"only the admins of org {shown(request.org)} may create its tokens"
            raise permission_denied("ORG_ACCESS_DENIED", message)
        limits = within_expiry(request.limits if request.HasField("limits") else None, expiry)
        row, token = await issue_token(self.state, user, request.name, limits, request.org)
        return account_pb.CreateMyApiTokenResponse(api_token=api_token_message(row), token=token)

    async def UpdateMyApiToken(
        self, request: account_pb.UpdateMyApiTokenRequest, context: grpc.aio.ServicerContext
    ) -> account_pb.ApiToken:
        user, expiry = await self._managing_user(context)
        limits = within_expiry(request.limits, expiry)
        row = await update_token_limits(self.state, user, request.name, limits)
        return api_token_message(row)

    async def DeleteMyApiToken(
        self, request: account_pb.DeleteMyApiTokenRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        user, _ = await self._managing_user(context)
        await revoke_token(self.state, user, request.name)
        return Empty()

    async def ListOrgMembers(
        self, request: account_pb.ListOrgMembersRequest, context: grpc.aio.ServicerContext
    ) -> account_pb.ListOrgMembersResponse:
        await self._require_org_admin(context, request.org)
        size = page_size(request.page_size)
        listing = of_parent(MEMBERS_LISTING, request.org)
        after = key_after(listing, request.page_token)
        rows = await self.state.db.run(lambda s: members_after(s, request.org, after, size))
        keys, messages = [r.user for r in rows[:size]], membership_messages(rows[:size])
        page, next_token = fitted_page(listing, keys, messages, len(rows) > size)
        return account_pb.ListOrgMembersResponse(members=page, next_page_token=next_token)

    async def _require_org_admin(self, context: grpc.aio.ServicerContext, org: str) -> None:
        """The admin token (404 for an unknown org), or an admin of the org; anyone else
        gets the same 403 whether the org exists or not."""
        user = await self._caller(context)
        if user is not None:
            if self.index.role(user, org) != "admin":
                message = f"only the admins of org {shown(org)} may list its members"
                raise permission_denied("ORG_ACCESS_DENIED", message)
            return
        if not await self.state.db.run(lambda s: s.get(OrgRow, org) is not None):
            raise not_found("ORG_NOT_FOUND", f"org {shown(org)} does not exist")
