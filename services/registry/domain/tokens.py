"""API tokens: the one code path that issues, revokes and lists them, for the operators'
admin API (any user's tokens) and the callers' self-service (their own).

Only a token's SHA-256 digest and the last TOKEN_SUFFIX_CHARS characters of its
secret are stored; the secret is in the creating answer only.
"""

from __future__ import annotations

from sqlmodel import Session, func, select
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.errors import ApiError, Code, not_found
from services.registry.domain import token_limits
from services.registry.domain.state import RegistryState, hash_token, new_token
from services.registry.domain.validation import check_name, shown
from services.registry.storage import queries
from services.registry.storage.tables import TokenRow, UserRow

# A hint that tells a user's tokens apart; 24 of the secret's 256 random bits.
TOKEN_SUFFIX_CHARS = 4
# The most tokens a user holds at once (docs/money.md): a stolen or buggy client cannot mint
# them without end; one more is a 429 token_limit_reached until one is revoked.
MAX_TOKENS_PER_USER = 100


async def issue_token(
    state: RegistryState,
    user: str,
    name: str,
    limits: admin_pb.ApiTokenLimits | None = None,
    account: str | None = None,
) -> tuple[TokenRow, str]:
    """Creates a token named `name` for `user` with its own limits, if any, billing `account`
    (an org; None: the user) by default (409 when the user has one of that name): its row and
    its secret."""
    check_name(name, "name")
    stored = token_limits.stored(token_limits.checked(limits)) if limits is not None else None
    token = new_token()
    row = TokenRow(
        user=user, name=name, token_hash=hash_token(token), suffix=token[-TOKEN_SUFFIX_CHARS:], limits=stored,
        account=account,
    )  # fmt: skip
    conflict = f"user {shown(user)} already has a token named {shown(name)}"
    await state.write(lambda s: _insert_within_cap(s, row), internal_pb.CHANGE_KIND_IDENTITY, user, conflict)
    return row, token


def _insert_within_cap(session: Session, row: TokenRow) -> None:
    """Inserts the token unless its user holds MAX_TOKENS_PER_USER already. The user's row is
    locked first (PostgreSQL; SQLite has one writer), so concurrent creations cannot pass the cap."""
    session.exec(select(UserRow.name).where(UserRow.name == row.user).with_for_update()).first()
    held = session.exec(select(func.count()).select_from(TokenRow).where(TokenRow.user == row.user)).one()
    if held >= MAX_TOKENS_PER_USER:
        raise ApiError(
            Code.RESOURCE_EXHAUSTED,
            "TOKEN_LIMIT_REACHED",
            f"user {shown(row.user)} has {held} tokens, the most a user may hold ({MAX_TOKENS_PER_USER}): "
            "revoke one before creating another",
        )
    queries.insert(session, row)


async def revoke_token(state: RegistryState, user: str, name: str) -> None:
    """Deletes the user's token of that name (404 when there is none): it stops working at once
    through this replica, and through the others once they read the change (docs/registry.md)."""
    where = (TokenRow.user == user, TokenRow.name == name)
    missing = not_found("TOKEN_NOT_FOUND", f"user {shown(user)} has no token named {shown(name)}")
    await state.write(
        lambda s: queries.delete_existing(s, TokenRow, where, missing), internal_pb.CHANGE_KIND_IDENTITY, user
    )


async def update_token_limits(state: RegistryState, user: str, name: str, limits: admin_pb.ApiTokenLimits) -> TokenRow:
    """Replaces the limits of the user's token of that name (404 when there is none); every
    service's cached caller of the user is dropped by the change notice."""
    stored = token_limits.stored(token_limits.checked(limits))

    def update(session: Session) -> TokenRow:
        row = session.exec(select(TokenRow).where(TokenRow.user == user, TokenRow.name == name)).first()
        if row is None:
            raise not_found("TOKEN_NOT_FOUND", f"user {shown(user)} has no token named {shown(name)}")
        row.limits = stored
        session.add(row)
        session.flush()
        session.refresh(row)
        return row

    return await state.write(update, internal_pb.CHANGE_KIND_IDENTITY, user)


def tokens_after(session: Session, user: str, after: str, size: int) -> list[TokenRow]:
    """A keyset page of the user's tokens by name: up to size + 1 after `after`."""
    query = select(TokenRow).where(TokenRow.user == user, TokenRow.name > after).order_by(TokenRow.name)
    return list(session.exec(query.limit(size + 1)))


def token_id(token_hash: str) -> str:
    """The id counters know a token by: a prefix of its digest (96 bits), never the secret."""
    return token_hash[:24]


def limits_of(session: Session, token_hash: str) -> tuple[admin_pb.ApiTokenLimits | None, str] | None:
    """The token's own limits (None when it has none) and the org it bills ("": its user); None
    when the token is gone (revoked on another replica whose change this one has not read yet)."""
    row = session.exec(select(TokenRow.limits, TokenRow.account).where(TokenRow.token_hash == token_hash)).first()
    return (token_limits.loaded(row[0]), row[1] or "") if row else None
