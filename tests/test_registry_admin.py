"""The operators' admin API through real Envoy over REST."""

from __future__ import annotations

import pytest
from helpers.registry import build_world, create_user, error_of, ok, unique

ADMIN_CALLS = [
    ("post", "/admin/v1/orgs", {"name": "x"}),
    ("get", "/admin/v1/orgs/x", None),
    ("post", "/admin/v1/users", {"name": "x"}),
    ("get", "/admin/v1/users/x", None),
    ("put", "/admin/v1/orgs/x/members/y", {"role": "read"}),
    ("delete", "/admin/v1/orgs/x/members/y", None),
    ("post", "/admin/v1/users/x/tokens", {"name": "t"}),
    ("delete", "/admin/v1/users/x/tokens/t", None),
    ("post", "/admin/v1/providers", {"id": "x", "org": "x", "baseUrl": "http://h"}),
    ("get", "/admin/v1/providers/x", None),
    ("get", "/admin/v1/providers", None),
    ("patch", "/admin/v1/providers/x", {"baseUrl": "http://h"}),
    ("delete", "/admin/v1/providers/x", None),
    ("put", "/admin/v1/providers/x/prices", {"prices": []}),
    ("post", "/admin/v1/models:batchUpsert", {"models": []}),
    ("get", "/admin/v1/models/a/b", None),
]


@pytest.mark.parametrize(("method", "url", "body"), ADMIN_CALLS)
def test_admin_calls_need_the_admin_token(stack, method: str, url: str, body: dict | None) -> None:
    kwargs = {"json": body} if body is not None else {}
    with stack.http() as http:
        error_of(http.request(method, url, **kwargs), 401)
    with stack.http("sb-someone-else") as http:  # an unknown token: 401, as on every route
        error_of(http.request(method, url, **kwargs), 401)
    with stack.admin() as admin:
        _, user_token = create_user(admin, None, None)
    with stack.http(user_token) as http:
        error_of(http.request(method, url, **kwargs), 403)


def test_orgs_users_memberships(stack) -> None:
    org, user = unique("org"), unique("user")
    with stack.admin() as admin:
        created = ok(admin.post("/admin/v1/orgs", json={"name": org}))
        assert created["name"] == org and created["members"] == []
        error_of(admin.post("/admin/v1/orgs", json={"name": org}), 409)
        assert error_of(admin.post("/admin/v1/orgs", json={"name": "bad name"}), 400)["param"] == "name"
        ok(admin.post("/admin/v1/users", json={"name": user}))
        error_of(admin.post("/admin/v1/users", json={"name": user}), 409)
        error_of(admin.get(f"/admin/v1/users/{unique('nobody')}"), 404)
        error_of(admin.get(f"/admin/v1/orgs/{unique('nobody')}"), 404)
        assert (
            error_of(admin.put(f"/admin/v1/orgs/{org}/members/{user}", json={"role": "owner"}), 400)["param"] == "role"
        )
        error_of(admin.put(f"/admin/v1/orgs/{org}/members/{unique('nobody')}", json={"role": "read"}), 404)
        ok(admin.put(f"/admin/v1/orgs/{org}/members/{user}", json={"role": "read"}))
        membership = ok(admin.put(f"/admin/v1/orgs/{org}/members/{user}", json={"role": "write"}))
        assert membership == {"org": org, "user": user, "role": "write"}
        assert ok(admin.get(f"/admin/v1/orgs/{org}"))["members"] == [membership]
        assert ok(admin.get(f"/admin/v1/users/{user}"))["memberships"] == [membership]
        ok(admin.delete(f"/admin/v1/orgs/{org}/members/{user}"))
        error_of(admin.delete(f"/admin/v1/orgs/{org}/members/{user}"), 404)
        assert ok(admin.get(f"/admin/v1/orgs/{org}"))["members"] == []


def test_tokens_are_shown_once_and_revocable(stack) -> None:
    with stack.admin() as admin:
        user, token = create_user(admin, None, None)
        assert token.startswith("hf_sb_")
        shown = ok(admin.get(f"/admin/v1/users/{user}"))
        assert shown["tokenNames"] == ["main"]
        assert token not in str(shown)
        error_of(admin.post(f"/admin/v1/users/{user}/tokens", json={"name": "main"}), 409)
        error_of(admin.post(f"/admin/v1/users/{unique('nobody')}/tokens", json={"name": "t"}), 404)
        ok(admin.delete(f"/admin/v1/users/{user}/tokens/main"))
        error_of(admin.delete(f"/admin/v1/users/{user}/tokens/main"), 404)
        assert ok(admin.get(f"/admin/v1/users/{user}"))["tokenNames"] == []


def test_providers_crud_without_secrets(stack) -> None:
    with stack.admin() as admin:
        world = build_world(admin)
        provider = ok(admin.get(f"/admin/v1/providers/{world.provider}"))
        assert provider["hasApiKey"] and provider["hasBillingAuthorization"]
        assert provider["requestIdHeader"] == "Inference-Id"
        assert provider["baseUrl"] == "http://127.0.0.1:9"
        assert "apiKey" not in provider or provider["apiKey"] == ""
        patched = ok(
            admin.patch(
                f"/admin/v1/providers/{world.provider}",
                json={"requestIdHeader": "X-Request-Id", "defaultRank": 3, "apiKey": "sk-rotated-secret-1"},
            )
        )
        assert patched["requestIdHeader"] == "X-Request-Id" and patched["defaultRank"] == 3
        assert patched["baseUrl"] == "http://127.0.0.1:9"
        world.secrets.append("sk-rotated-secret-1")
        listed = ok(admin.get("/admin/v1/providers", params={"pageSize": 1000}))["providers"]
        assert world.provider in {p["id"] for p in listed}
        body = {"id": world.provider, "org": world.org, "baseUrl": "http://h"}
        error_of(admin.post("/admin/v1/providers", json=body), 409)
        for field, value in (("baseUrl", "ftp://x"), ("org", unique("nobody")), ("tasks", ["nope"])):
            error = error_of(admin.post("/admin/v1/providers", json={**body, "id": unique("p"), field: value}), 400)
            assert error["param"] == field
        error_of(admin.get(f"/admin/v1/providers/{unique('nobody')}"), 404)
        prices = {"prices": [{"providerModel": "chat-v1", "inputTokenNanoUsd": 100, "outputTokenNanoUsd": 300}]}
        assert ok(admin.put(f"/admin/v1/providers/{world.provider}/prices", json=prices))["prices"][0][
            "inputTokenNanoUsd"
        ]
        negative = {"prices": [{"providerModel": "m", "requestNanoUsd": -1}]}
        error_of(admin.put(f"/admin/v1/providers/{world.provider}/prices", json=negative), 400)
        ok(admin.delete(f"/admin/v1/providers/{world.provider}"))
        error_of(admin.get(f"/admin/v1/providers/{world.provider}"), 404)
    with stack.http() as http:
        error_of(http.get(f"/api/partners/{world.provider}/models"), 404)


def test_catalog_upsert_and_get(stack) -> None:
    model_id = f"{unique('ns')}/model"
    with stack.admin() as admin:
        body = {"models": [{"id": model_id, "pipelineTag": "text-generation", "tags": ["a"]}]}
        assert ok(admin.post("/admin/v1/models:batchUpsert", json=body))["upsertedCount"] == 1
        assert ok(admin.get(f"/admin/v1/models/{model_id}"))["tags"] == ["a"]
        body["models"][0]["tags"] = ["a", "b"]
        ok(admin.post("/admin/v1/models:batchUpsert", json=body))
        model = ok(admin.get(f"/admin/v1/models/{model_id}"))
        assert model == {"id": model_id, "pipelineTag": "text-generation", "tags": ["a", "b"], "adapterWeightsPath": ""}
        error_of(admin.get(f"/admin/v1/models/{model_id}-missing"), 404)
        too_many = {"models": [{"id": f"n/m{i}"} for i in range(10_001)]}
        assert error_of(admin.post("/admin/v1/models:batchUpsert", json=too_many), 400)["param"] == "models"
        assert error_of(admin.post("/admin/v1/models:batchUpsert", json={"models": [{"id": ""}]}), 400)["param"]
