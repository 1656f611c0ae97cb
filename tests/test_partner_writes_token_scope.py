"""Which tokens change a provider's partner data (docs/partners.md; docs/api-keys.md, "Managing
them"): a token with a rate, token, budget or model limit none (as it manages no tokens), an org
token only its own org's providers', whatever its user's role elsewhere; an expiry-only token and a
personal token without limits as their user's role says. Reads are unchanged. Through Envoy, and
in process on two replicas of one database (the rule is read from each replica's index)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from helpers.contexts import BearerContext
from helpers.registry import World, build_world, error_of, ok, unique
from helpers.registry_replicas import ADMIN_TOKEN, replica_states
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import registry_service_pb2 as registry_pb

from services.common.errors import ApiError
from services.registry.api.admin import AdminServicer
from services.registry.api.partners import RegistryServicer
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.replicas import ReplicaFollower
from services.registry.domain.state import RegistryState
from services.registry.domain.tokens import issue_token, update_token_limits
from services.registry.storage.queries import load_index

LIMITS = {
    "rate": {"requestsPerMinute": 60},
    "tokens": {"tokensPerMinute": 1000},
    "budget": {"budgetNanoUsd": "1000000", "budgetPeriod": "daily"},
    "models": {"allowedModels": ["some/model"]},
}


@pytest.fixture(scope="module")
def worlds(stack) -> tuple[World, World]:
    """Two providers of two orgs; the first org's admin has the write role in the second too."""
    with stack.admin() as admin:
        home, other = build_world(admin), build_world(admin)
        ok(admin.put(f"/admin/v1/orgs/{other.org}/members/{home.users['orgadmin']}", json={"role": "write"}))
    return home, other


def models_path(world: World, suffix: str = "") -> str:
    return f"/api/partners/{world.provider}/models{suffix}"


def new_mapping(stack, world: World) -> dict:
    """A mapping's body for a new catalog model (a provider maps a model once per task)."""
    model = f"{world.models['image']}-{unique('m')}"
    with stack.admin() as admin:
        ok(admin.post("/admin/v1/models:batchUpsert", json={"models": [{"id": model, "pipelineTag": "text-to-image"}]}))
    return {"task": "text-to-image", "hfModel": model, "providerModel": unique("img")}


def prices(world: World) -> dict:
    return {"prices": [{"providerModel": unique("m"), "inputTokenNanoUsd": 1}]}


def mapping_writes(http: httpx.Client, world: World, mapping_id: str) -> dict[str, httpx.Response]:
    """Every partner write but a create, on one existing mapping; the delete last."""
    path = models_path(world, f"/{mapping_id}")
    return {
        "prices": http.put(f"/api/partners/{world.provider}/prices", json=prices(world)),
        "capabilities": http.patch(path, json={"contextLength": 4096}, params={"updateMask": "contextLength"}),
        "status": http.put(f"{path}/status", json={"status": "live"}),
        "delete": http.delete(path),
    }


def every_write(stack, http: httpx.Client, world: World, mapping_id: str) -> dict[str, httpx.Response]:
    """Every partner write: a create, a check, then mapping_writes on an existing mapping."""
    return {
        "create": http.post(models_path(world), json=new_mapping(stack, world)),
        "check": http.post(models_path(world, f"/{mapping_id}:check"), json={}),
        **mapping_writes(http, world, mapping_id),
    }


def created(stack, token: str, world: World) -> dict:
    """A new mapping of the world's provider, made with `token`."""
    body = new_mapping(stack, world)
    with stack.http(token) as http:
        return ok(http.post(models_path(world), json=body))


def personal_token(stack, world: World, role: str, body: dict) -> str:
    """A token the role's user makes with their personal token (POST /v1/me/tokens)."""
    with stack.http(world.tokens[role]) as http:
        return ok(http.post("/v1/me/tokens", json={"name": unique("t"), **body}))["token"]


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_a_token_with_a_rate_token_budget_or_model_limit_changes_no_partner_data(stack, worlds, limit) -> None:
    home, _ = worlds
    limited = personal_token(stack, home, "writer", {"limits": LIMITS[limit]})
    mapping = created(stack, home.tokens["writer"], home)
    mapping_id = mapping["_id"]
    with stack.http(limited) as http:
        for what, answer in every_write(stack, http, home, mapping_id).items():
            error = error_of(answer, 403)
            assert error["code"] == "limited_token_cannot_manage", what
            assert "use one without limits" in error["message"] and home.provider in error["message"], what
        # reads are unchanged: the writers' report read (none made yet) and the public listing
        report = http.get(models_path(home, f"/{mapping_id}/conformanceReport"))
        assert error_of(report, 404)["code"] == "report_not_found"
        listed = ok(http.get(models_path(home)))["text-to-image"][mapping["hfModel"]]
    assert listed == {"_id": mapping_id, "providerId": mapping["providerModel"], "status": "staging"}  # untouched


def test_an_expiry_only_token_changes_partner_data(stack, worlds) -> None:
    home, _ = worlds
    expire_time = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    expiring = personal_token(stack, home, "writer", {"limits": {"expireTime": expire_time}})
    mapping_id = created(stack, expiring, home)["_id"]
    with stack.http(expiring) as http:
        for what, answer in mapping_writes(http, home, mapping_id).items():
            assert answer.status_code == 200, (what, answer.text)


def test_an_org_token_changes_its_own_orgs_providers_only(stack, worlds) -> None:
    home, other = worlds
    with stack.http(home.tokens["orgadmin"]) as http:
        org_token = ok(http.post(f"/v1/orgs/{home.org}/tokens", json={"name": unique("ci")}))["token"]
    mapping_id = created(stack, org_token, home)["_id"]  # the partner's CI registers its models
    with stack.http(org_token) as http:
        for what, answer in mapping_writes(http, home, mapping_id).items():
            assert answer.status_code == 200, (what, answer.text)
    others = created(stack, other.tokens["writer"], other)["_id"]
    with stack.http(org_token) as http:
        for what, answer in every_write(stack, http, other, others).items():
            error = error_of(answer, 403)
            assert error["code"] == "org_token_other_org", what
            assert home.org in error["message"] and other.org in error["message"], what
        report = http.get(models_path(other, f"/{others}/conformanceReport"))
        assert error_of(report, 404)["code"] == "report_not_found"  # a read: unchanged
    # the same user's personal token without limits writes there as its role says
    with stack.http(home.tokens["orgadmin"]) as http:
        for what, answer in mapping_writes(http, other, others).items():
            assert answer.status_code == 200, (what, answer.text)


def test_a_token_given_limits_writes_no_more_and_again_once_they_are_lifted(stack, worlds) -> None:
    home, _ = worlds
    name = unique("ci")
    token = personal_token(stack, home, "writer", {"name": name})
    created(stack, token, home)
    with stack.http(home.tokens["writer"]) as personal:
        ok(personal.patch(f"/v1/me/tokens/{name}", json=LIMITS["rate"]))
        with stack.http(token) as http:
            refused = http.post(models_path(home), json=new_mapping(stack, home))
        assert error_of(refused, 403)["code"] == "limited_token_cannot_manage"
        ok(personal.patch(f"/v1/me/tokens/{name}", json={}))
    created(stack, token, home)


# In process: two Registry replicas on one database; the rule is each replica's index's.


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[RegistryState, RegistryState]]:
    with replica_states(tmp_path) as states:
        yield states


async def make_partners(state: RegistryState) -> None:
    """Orgs home and other with a provider each; user ann writes both."""
    admin, context = AdminServicer(state), BearerContext(ADMIN_TOKEN)
    await admin.CreateUser(admin_pb.CreateUserRequest(user=admin_pb.User(name="ann")), context)
    for org in ("home", "other"):
        await admin.CreateOrg(admin_pb.CreateOrgRequest(org=admin_pb.Org(name=org)), context)
        await admin.UpdateMembership(admin_pb.UpdateMembershipRequest(org=org, user="ann", role="write"), context)
        provider = admin_pb.Provider(id=f"{org}-p", org=org, base_url="http://127.0.0.1:9")
        await admin.CreateProvider(admin_pb.CreateProviderRequest(provider=provider), context)


async def change_prices(state: RegistryState, token: str, provider: str) -> str:
    """The reason a price change of the provider with `token` is refused ("" when it is not)."""
    price = admin_pb.Price(provider_model="m", input_token_nano_usd=1)
    request = admin_pb.UpdateProviderPricesRequest(provider=provider, prices=[price])
    try:
        await RegistryServicer(state, checker=None).UpdateProviderPrices(request, BearerContext(token))
    except ApiError as refused:
        return refused.reason
    return ""


async def test_each_replica_and_a_restart_know_a_tokens_limits_and_org(two_replicas) -> None:
    writer, reader = two_replicas
    await make_partners(writer)
    _, plain = await issue_token(writer, "ann", "plain")
    _, org_token = await issue_token(writer, "ann", "ci", account="home")
    follower = ReplicaFollower(reader)
    await follower.poll()
    assert await change_prices(reader, plain, "other-p") == ""
    assert await change_prices(reader, org_token, "home-p") == ""
    assert await change_prices(reader, org_token, "other-p") == "ORG_TOKEN_OTHER_ORG"
    await update_token_limits(writer, "ann", "plain", admin_pb.ApiTokenLimits(allowed_models=["a/b"]))
    await follower.poll()
    assert await change_prices(reader, plain, "home-p") == "LIMITED_TOKEN_CANNOT_MANAGE"
    restarted = RegistryState(writer.db, load_index(writer.db.engine), ChangeFeed(), ADMIN_TOKEN)
    assert await change_prices(restarted, plain, "home-p") == "LIMITED_TOKEN_CANNOT_MANAGE"
    assert await change_prices(restarted, org_token, "other-p") == "ORG_TOKEN_OTHER_ORG"
    await update_token_limits(writer, "ann", "plain", admin_pb.ApiTokenLimits())
    await follower.poll()
    assert await change_prices(reader, plain, "home-p") == ""
    mapping = registry_pb.CreateModelMappingRequest(provider="other-p", task="text-to-image", hf_model="x/y")
    with pytest.raises(ApiError) as refused:
        await RegistryServicer(reader, checker=None).CreateModelMapping(mapping, BearerContext(org_token))
    assert refused.value.reason == "ORG_TOKEN_OTHER_ORG"
