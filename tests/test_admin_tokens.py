"""Every admin route answers a token the same way (issue 24, finding 7): none or an unknown one is
a 401 (as on every route), a user's token a 403, whichever service answers the route."""

from __future__ import annotations

import json
import re
import secrets

import pytest

from edge.envoy import OPENAPI
from services.demo import AdminApi
from services.registry.domain.tokens import MAX_TOKENS_PER_USER

pytestmark = pytest.mark.slow


DOCUMENT = json.loads(OPENAPI.read_text())


def valid_body(operation: dict) -> dict | None:
    """A body with the operation's required fields (so the boundary's body checks pass and the
    token decides), or None for an operation without a body."""
    if "requestBody" not in operation:
        return None
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    fields = {name: schema.get("properties", {}).get(name, {}) for name in schema.get("required", [])}
    return {name: 1 if field.get("type", "string") != "string" or "oneOf" in field
            else (field.get("enum") or ["http://h" if "url" in name.lower() else "x"])[-1]
            for name, field in fields.items()}  # fmt: skip


def admin_operations() -> list[tuple[str, str, dict | None]]:
    """(method, path with every parameter filled, a valid body) of each admin operation the document lists."""
    return [(method.upper(), re.sub(r"\{[^}]+\}", "x", path), valid_body(operation))
            for path, operations in DOCUMENT["paths"].items() if path.startswith("/admin/")
            for method, operation in operations.items()]  # fmt: skip


def test_the_document_lists_the_admin_routes_this_test_covers() -> None:
    assert ("GET", "/admin/v1/providerHealth", None) in admin_operations() and len(admin_operations()) >= 20


@pytest.mark.parametrize(("method", "path", "body"), admin_operations())
def test_an_unknown_token_is_a_401_and_a_users_token_a_403_on_every_admin_route(stack, method, path, body) -> None:
    api = AdminApi(stack.base_url, stack.admin_token)
    user = f"user-{secrets.token_hex(4)}"
    api.call("POST", "/admin/v1/users", {"name": user})
    for token, status in (
        (None, 401),
        (f"sb-{secrets.token_hex(16)}", 401),
        ("\u00e9", 401),
        (api.new_token(user), 403),
    ):
        with stack.http() as http:
            headers = {"Authorization": f"Bearer {token}".encode("latin-1")} if token else {}
            answer = http.request(method, path, json=body, headers=headers)
        assert answer.status_code == status, (token, answer.text)
        assert answer.json()["error"]["type"] == ("authentication_error" if status == 401 else "permission_error")


def test_a_user_holds_at_most_the_documented_number_of_tokens(stack) -> None:
    """Past MAX_TOKENS_PER_USER a creation is a 429 token_limit_reached, by the admin API and by the
    user's own; a revoked token makes room again."""
    api = AdminApi(stack.base_url, stack.admin_token)
    user = f"user-{secrets.token_hex(4)}"
    api.call("POST", "/admin/v1/users", {"name": user})
    own = api.new_token(user, "first")
    for number in range(1, MAX_TOKENS_PER_USER):
        api.new_token(user, f"t{number}")
    with stack.admin() as admin, stack.http(own) as http:
        for answer in (admin.post(f"/admin/v1/users/{user}/tokens", json={"name": "one-more"}),
                       http.post("/v1/me/tokens", json={"name": "one-more"})):  # fmt: skip
            assert answer.status_code == 429, answer.text
            error = answer.json()["error"]
            assert error["code"] == "token_limit_reached" and str(MAX_TOKENS_PER_USER) in error["message"]
        assert admin.delete(f"/admin/v1/users/{user}/tokens/t1").status_code == 200
        assert http.post("/v1/me/tokens", json={"name": "one-more"}).status_code == 200
