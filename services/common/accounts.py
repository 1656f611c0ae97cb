"""Billed accounts. Users and orgs share one name space, so an account name is
exactly one user or one org. What the operators' admin token spends is billed
to OPERATOR_ACCOUNT, a name no user or org can have (names start with a
letter or a digit), so no user can own or read it."""

OPERATOR_ACCOUNT = "_operators"
# The org roles that may change an org's providers' mappings and read their health.
WRITE_ROLES = frozenset({"write", "admin"})
