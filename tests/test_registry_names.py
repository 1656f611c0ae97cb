"""Users and orgs share one name space; reserved names are refused; the migrations that
bring existing data into it (Registry 0003) and move the admin token's spending to the
operators' account (Billing 0003), run on a database prepared at the previous revision."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from helpers.migrations import BILLING_MIGRATIONS, REGISTRY_MIGRATIONS, database, execute, upgrade  # noqa: F401 (fixtures)
from helpers.registry import error_of, ok, unique

from services.common.accounts import OPERATOR_ACCOUNT
from services.registry.domain.validation import RESERVED_NAMES

# --- through Envoy ------------------------------------------------------------------------------


def create(admin: httpx.Client, kind: str, name: str) -> httpx.Response:
    return admin.post(f"/admin/v1/{kind}s", json={"name": name})


@pytest.mark.parametrize(("first", "second"), [("org", "user"), ("user", "org"), ("user", "user"), ("org", "org")])
def test_a_name_is_taken_once_by_a_user_or_an_org(stack, first: str, second: str) -> None:
    name = unique("acme")
    with stack.admin() as admin:
        ok(create(admin, first, name))
        for taken in (name, name.upper()):  # letter case makes no other account
            error = error_of(create(admin, second, taken), 409)
            assert error["code"] == "name_taken"
            assert error["param"] == "name"
            assert f"the {first} {name!r}" in error["message"]
        assert ok(admin.get(f"/admin/v1/{first}s/{name}"))["name"] == name
        assert admin.get(f"/admin/v1/{second}s/{name}").status_code == (200 if first == second else 404)


def test_a_user_named_like_an_org_never_reads_its_usage(stack) -> None:
    """The reproduction of issue 10, finding 4: the user cannot exist, so it has no token."""
    org = unique("acme-ai")
    with stack.admin() as admin:
        ok(create(admin, "org", org))
        assert error_of(create(admin, "user", org), 409)["code"] == "name_taken"
        assert admin.post(f"/admin/v1/users/{org}/tokens", json={"name": "main"}).status_code == 404


@pytest.mark.parametrize("kind", ["user", "org"])
def test_reserved_names_are_refused_in_any_letter_case(stack, kind: str) -> None:
    with stack.admin() as admin:
        for name in sorted(RESERVED_NAMES):
            for spelled in (name, name.upper(), name.capitalize()):
                error = error_of(create(admin, kind, spelled), 400)
                assert (error["code"], error["param"]) == ("reserved_name", "name"), spelled
        error = error_of(create(admin, kind, OPERATOR_ACCOUNT), 400)  # not a name at all
        assert error["param"] == "name"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_stack(request, stack):
    """The shared SQLite stack, or the worker's shared stack on PostgreSQL (tests/conftest.py)."""
    if request.param == "sqlite":
        return stack
    return request.getfixturevalue("postgres_stack")


def test_racing_creations_of_one_name_let_exactly_one_win(any_stack) -> None:
    """A user and an org of the same name created at once: the database decides, once."""
    names = [unique("race") for _ in range(8)]
    attempts = [(kind, name) for name in names for kind in ("user", "org", "user", "org")]
    with any_stack.admin() as admin, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda a: create(admin, *a).status_code, attempts))
    for i, name in enumerate(names):
        assert sorted(codes[4 * i : 4 * i + 4]) == [200, 409, 409, 409], name


# --- migrations, on SQLite and PostgreSQL -----------------------------------------------------


def registry_at_0002(url: str, users: list[str], orgs: list[str]) -> None:
    upgrade(url, REGISTRY_MIGRATIONS, "0002")
    now = datetime.now(UTC)
    if users:
        rows = [{"n": n, "t": now} for n in users]
        execute(url, "INSERT INTO users (name, preferred_providers, create_time) VALUES (:n, '[]', :t)", rows)
    if orgs:
        execute(url, "INSERT INTO orgs (name, create_time) VALUES (:n, :t)", [{"n": n, "t": now} for n in orgs])


def test_the_registry_migration_fills_the_name_space(database: str) -> None:  # noqa: F811 (the imported fixture)
    registry_at_0002(database, users=["alice", "Bob"], orgs=["acme-ai"])
    upgrade(database, REGISTRY_MIGRATIONS, "head")
    names = execute(database, "SELECT folded, name, kind FROM account_names ORDER BY folded")
    assert names == [("acme-ai", "acme-ai", "org"), ("alice", "alice", "user"), ("bob", "Bob", "user")]
    with pytest.raises(sa.exc.IntegrityError):  # the key refuses a second "acme-ai", whoever inserts it
        execute(database, "INSERT INTO account_names VALUES ('acme-ai', 'Acme-AI', 'user')")


def test_the_registry_migration_stops_and_names_clashing_accounts(database: str) -> None:  # noqa: F811 (the imported fixture)
    registry_at_0002(database, users=["acme", "alice", "Zed"], orgs=["acme", "zed", "other"])
    with pytest.raises(RuntimeError) as stopped:
        upgrade(database, REGISTRY_MIGRATIONS, "head")
    message = str(stopped.value)
    assert "org 'acme' / user 'acme'" in message
    assert "org 'zed' / user 'Zed'" in message
    assert "alice" not in message and "other" not in message
    assert "Rename one of each" in message
    # nothing changed: after the rename the migration goes through
    execute(database, "UPDATE users SET name = 'acme-user' WHERE name = 'acme'")
    execute(database, "DELETE FROM orgs WHERE name = 'zed'")
    upgrade(database, REGISTRY_MIGRATIONS, "head")
    assert execute(database, "SELECT COUNT(*) FROM account_names") == [(5,)]


LEDGER_ROW = (
    "INSERT INTO ledger (request_id, provider_request_id, provider, model, provider_model, task, caller, account, "
    "start_time, end_time, input_tokens, output_tokens, images, estimated_nano_usd, cost_nano_usd, state, reason) "
    "VALUES (:id, '', 'p', 'm', 'pm', 'conversational', :caller, :account, :t, :t, 1, 1, 0, 5, NULL, 'pending', '')"
)


def test_the_billing_migration_moves_the_admin_tokens_spending_to_the_operators_account(database: str) -> None:  # noqa: F811
    upgrade(database, BILLING_MIGRATIONS, "0002")
    now = datetime.now(UTC)
    records = [("op1", "", "admin"), ("op2", "", "admin"), ("u1", "admin", "admin"), ("u2", "bob", "acme")]
    rows = [{"id": i, "caller": c, "account": a, "t": now} for i, c, a in records]
    execute(database, LEDGER_ROW, rows)
    upgrade(database, BILLING_MIGRATIONS, "head")
    accounts = execute(database, "SELECT request_id, account FROM ledger ORDER BY request_id")
    assert accounts == [("op1", OPERATOR_ACCOUNT), ("op2", OPERATOR_ACCOUNT), ("u1", "admin"), ("u2", "acme")]
