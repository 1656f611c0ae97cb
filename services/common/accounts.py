"""Billed accounts. Users and orgs share one name space, so an account name is
exactly one user or one org. What the operators' admin token spends is billed
to OPERATOR_ACCOUNT, a name no user or org can have (names start with a
letter or a digit), so no user can own or read it."""

import re
from collections.abc import Iterable

from switchboard.registry.v1.admin_service_pb2 import ApiTokenLimits

from services.common.errors import permission_denied

OPERATOR_ACCOUNT = "_operators"
# The org roles that may change an org's providers' mappings and read their health.
WRITE_ROLES = frozenset({"write", "admin"})
MAX_NAME = 96  # org, user, provider and token names
# The one name rule: the Registry's user, org, provider and token names; Billing's accounts;
# the Router's anonymous account.
NAME_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}"
NAME = re.compile(NAME_PATTERN)


def is_account_name(name: str) -> bool:
    """A user or org name: 1-96 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return NAME.fullmatch(name) is not None


# An expiry's names: ApiTokenLimits' field, and its key in the proto3 JSON the Registry stores.
EXPIRY_NAMES = frozenset({"expire_time", "expireTime"})


def limits_beyond_expiry(names: Iterable[str]) -> bool:
    """Whether a token's limits (the names of the fields it sets, or its stored JSON's keys) hold a
    rate, token, budget or model limit: such a token manages nothing. An expiry alone is none."""
    return any(name not in EXPIRY_NAMES for name in names)


def require_managing_token(limits: ApiTokenLimits | None, account: str) -> None:
    """403 for a token that manages nothing (tokens, spending limits). An org admin's token for an
    org (`account`: the org it bills) is a key handed to the org's CI, which must not mint keys
    billing its admin. One with a rate, token, budget or model limit could lift its own limits, and
    a key handed out with them must stay within them. An expiry alone is no such limit (what it
    makes expires no later: the Registry)."""
    if account:
        raise permission_denied(
            "ORG_TOKEN_CANNOT_MANAGE",
            f"a token for org '{account}' cannot create, change or delete tokens or limits: "
            "use a personal token without limits",
        )
    if limits is not None and limits_beyond_expiry(field.name for field, _ in limits.ListFields()):
        raise permission_denied(
            "LIMITED_TOKEN_CANNOT_MANAGE",
            "a token with limits cannot create, change or delete tokens or limits: use one without limits",
        )
