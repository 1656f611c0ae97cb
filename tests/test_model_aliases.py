"""Model aliases (an operator's other names for catalog models) and the opt-in anonymous mode.

In memory (the index), on a migrated SQLite database (two Registry replicas), and through
real Envoy on a private stack with the demo's provider and aliases whose Router bills calls
without a token to ANONYMOUS (what `switchboard up --demo` does).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers.clients import http_client
from helpers.contexts import BearerContext
from helpers.registry import cli, error_of, ok, unique
from helpers.registry_replicas import ADMIN_TOKEN, replica_states
from helpers.stacks import RunningStack
from helpers.waiting import eventually
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from switchboard.registry.v1 import admin_service_pb2 as admin_pb

from services.cli import build_parser, up_options
from services.common.errors import ApiError
from services.demo import (
    ALIASES,
    ANONYMOUS_ACCOUNT,
    ANONYMOUS_CREDITS_NANO_USD,
    CHAT_MODEL,
    IMAGE_MODEL,
    AdminApi,
    start_demo,
)
from services.registry.api.admin import AdminServicer
from services.registry.domain.replicas import ReplicaFollower
from services.registry.domain.state import RegistryState
from services.registry.storage.index import LIVE, MODEL, IndexedProvider, Mapping, RegistryIndex
from services.registry.storage.queries import load_index
from services.router.config import RouterSettings

ANONYMOUS = "anon-account"
CHAT = {"messages": [{"role": "user", "content": "Hello alias"}], "max_tokens": 8}


# --- the index -----------------------------------------------------------------------------


def small_index() -> RegistryIndex:
    index = RegistryIndex()
    index.put_provider(IndexedProvider("p", "org", 0))
    index.put_model("ns/chat", "text-generation", ("conversational",), "")
    created = datetime.now(UTC)
    index.add_mapping(Mapping("m1", 1, "p", MODEL, "conversational", "ns/chat", (), "p-chat", LIVE, "", created))
    return index


def test_an_alias_resolves_like_its_target_and_the_catalog_wins_over_it() -> None:
    index = small_index()
    index.put_alias("fast-chat", "ns/chat")
    by_alias, by_id = index.resolve("fast-chat", "", "conversational"), index.resolve("ns/chat", "", "conversational")
    assert (
        by_alias == by_id
        and by_alias.model == "ns/chat"
        and [c.provider_model for c in by_alias.candidates] == ["p-chat"]
    )
    assert index.resolve("nope", "", "conversational").model_found is False
    assert index.aliases_of(["ns/chat"]) == {"ns/chat": ["fast-chat"]}
    index.put_model("fast-chat", "text-generation", (), "")  # a hub id upserted later under the alias's name
    assert index.canonical("fast-chat") == "fast-chat" and index.aliases_of(["ns/chat"]) == {}
    assert index.resolve("fast-chat", "", "conversational").model == "fast-chat"
    index.remove_alias("fast-chat")
    assert index.canonical("fast-chat") == "fast-chat"


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[RegistryState, RegistryState]]:
    """Two Registry replicas' states on one migrated SQLite database."""
    with replica_states(tmp_path) as states:
        yield states


async def test_an_alias_reaches_the_other_replica_and_survives_a_restart(two_replicas) -> None:
    writer, reader = two_replicas
    admin, context = AdminServicer(writer), BearerContext(ADMIN_TOKEN)
    models = [admin_pb.Model(id="ns/image", pipeline_tag="text-to-image")]
    await admin.BatchUpsertModels(admin_pb.BatchUpsertModelsRequest(models=models), context)
    follower = ReplicaFollower(reader)
    await follower.poll()
    alias = admin_pb.ModelAlias(name="flux", target="ns/image")
    created = await admin.CreateModelAlias(admin_pb.CreateModelAliasRequest(model_alias=alias), context)
    assert (created.name, created.target) == ("flux", "ns/image") and created.create_time.seconds > 0
    await follower.poll()
    assert reader.index.aliases == {"flux": "ns/image"}
    assert load_index(writer.db.engine).aliases == {"flux": "ns/image"}  # a restart loads it
    with pytest.raises(ApiError) as taken:
        await admin.CreateModelAlias(admin_pb.CreateModelAliasRequest(model_alias=alias), context)
    assert taken.value.code == "model_alias_exists"
    await admin.DeleteModelAlias(admin_pb.DeleteModelAliasRequest(name="flux"), context)
    await follower.poll()
    assert reader.index.aliases == {} and load_index(writer.db.engine).aliases == {}


# --- through Envoy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(make_stack) -> RunningStack:
    """The demo's provider, catalog and aliases; tokenless calls billed to ANONYMOUS."""
    sb = make_stack(SWITCHBOARD_ANONYMOUS_ACCOUNT=ANONYMOUS)
    start_demo(sb.stack, sb.base_url, sb.admin_token, ANONYMOUS)
    return sb


@pytest.fixture(scope="module")
def token(demo: RunningStack) -> str:
    api = AdminApi(demo.base_url, demo.admin_token)
    user = unique("alias-user")
    api.call("POST", "/admin/v1/users", {"name": user})
    return api.new_token(user)


def create_alias(admin: httpx.Client, name: str, target: str) -> httpx.Response:
    return admin.post("/admin/v1/modelAliases", json={"name": name, "target": target})


def test_aliases_are_created_got_listed_page_by_page_and_deleted(demo: RunningStack) -> None:
    names = sorted(unique("al") for _ in range(3))
    with demo.admin() as admin:
        for name in names:
            created = ok(create_alias(admin, name, CHAT_MODEL))
            assert set(created) == {"name", "target", "createTime"} and created["target"] == CHAT_MODEL
        assert ok(admin.get(f"/admin/v1/modelAliases/{names[0]}"))["target"] == CHAT_MODEL
        listed, token = [], ""
        while True:
            page = ok(admin.get("/admin/v1/modelAliases", params={"pageSize": 2, "pageToken": token}))
            listed += [alias["name"] for alias in page.get("modelAliases", [])]
            token = page.get("nextPageToken", "")
            if not token:
                break
        assert listed == sorted(listed) and set(names) <= set(listed)
        assert {a["name"] for a in ALIASES} <= set(listed)
        assert ok(admin.delete(f"/admin/v1/modelAliases/{names[0]}")) == {}
        for method in (admin.get, admin.delete):
            error = error_of(method(f"/admin/v1/modelAliases/{names[0]}"), 404)
            assert error["code"] == "model_alias_not_found"


@pytest.mark.parametrize(
    ("name", "target", "status", "param", "code"),
    [
        ("", CHAT_MODEL, 400, "name", "invalid_request"),
        ("ns/slash", CHAT_MODEL, 400, "name", "invalid_request"),
        ("with:colon", CHAT_MODEL, 400, "name", "invalid_request"),
        ("-dash-first", CHAT_MODEL, 400, "name", "invalid_request"),
        ("x" * 97, CHAT_MODEL, 400, "name", "invalid_request"),
        ("naïve", CHAT_MODEL, 400, "name", "invalid_request"),
        ("ok-name", "", 400, "target", "invalid_request"),
        ("ok-name", "no such/model!", 400, "target", "invalid_model_id"),
        ("ok-name", "nobody/nothing", 404, "target", "model_not_found"),
        ("ok-name", "gpt-4o-mini", 400, "target", "invalid_alias_target"),
        ("gpt-4o-mini", IMAGE_MODEL, 409, None, "model_alias_exists"),
    ],
)
def test_a_bad_alias_is_a_4xx_in_openai_shape(demo: RunningStack, name, target, status, param, code) -> None:
    with demo.admin() as admin:
        error = error_of(create_alias(admin, name, target), status)
    assert (error["param"], error["code"]) == (param, code)


def test_an_alias_cannot_shadow_a_catalog_id_and_only_the_admin_manages_aliases(demo, token) -> None:
    bare = unique("bare")  # a hub id without a namespace looks like an alias
    with demo.admin() as admin:
        ok(admin.post("/admin/v1/models:batchUpsert", json={"models": [{"id": bare, "pipelineTag": "text-to-image"}]}))
        error = error_of(create_alias(admin, bare, IMAGE_MODEL), 409)
        assert (error["param"], error["code"]) == ("name", "model_id_taken")
    with demo.http(token) as user:
        assert error_of(create_alias(user, unique("al"), CHAT_MODEL), 403)["code"] == "forbidden"
        assert error_of(user.delete("/admin/v1/modelAliases/flux"), 403)["code"] == "forbidden"
    with demo.http() as nobody:
        assert error_of(nobody.get("/admin/v1/modelAliases"), 401)["code"] == "invalid_api_key"


@hypothesis_settings(max_examples=40)
@given(name=st.text(max_size=120), target=st.sampled_from([CHAT_MODEL, "gpt-4o-mini", "a/b", "", "\x00"]))
def test_any_alias_request_is_answered_without_a_5xx(demo: RunningStack, name: str, target: str) -> None:
    with demo.admin() as admin:
        answer = create_alias(admin, name, target)
        assert answer.status_code in (200, 400, 404, 409), answer.text
        if answer.status_code == 200:
            assert ok(admin.delete(f"/admin/v1/modelAliases/{name}")) == {}
        else:
            error_of(answer, answer.status_code)


def png_of(answer: httpx.Response) -> Image.Image:
    assert answer.status_code == 200, answer.text
    data = answer.content if answer.headers["content-type"] == "image/png" else None
    data = data or base64.b64decode(answer.json()["data"][0]["b64_json"])
    return Image.open(io.BytesIO(data))


def test_aliases_work_wherever_a_model_is_named(demo: RunningStack, token: str) -> None:
    with demo.http(token) as http:
        for model in ("gpt-4o-mini", "gpt-4o-mini:demo", "gpt-4o-mini:cheapest"):
            answer = http.post("/v1/chat/completions", json={**CHAT, "model": model})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-inference-provider"] == "demo" and answer.json()["model"] == CHAT_MODEL
            assert answer.json()["choices"][0]["message"]["content"] == "Reference answer to: Hello alias"
        for model in ("flux", "flux:demo"):
            image = http.post(
                "/v1/images/generations", json={"model": model, "prompt": "a cat", "response_format": "b64_json"}
            )
            assert png_of(image).format == "PNG"
        assert png_of(http.post("/models/flux", json={"inputs": "a cat"})).format == "PNG"
        listed = {model["id"]: model for model in ok(http.get("/v1/models"))["data"]}
        assert {"gpt-4o-mini", "flux", CHAT_MODEL, IMAGE_MODEL} <= set(listed)
        assert ok(http.get("/v1/models/flux"))["id"] == "flux"
        for alias, target in (("gpt-4o-mini", CHAT_MODEL), ("flux", IMAGE_MODEL)):  # full OpenAI model objects
            for entry in (listed[alias], ok(http.get(f"/v1/models/{alias}"))):
                assert entry["owned_by"] == target.split("/")[0] and entry["object"] == "model"
                assert entry["created"] == listed[target]["created"] > 0
        assert {"gpt-4o-mini", "flux"} <= set(ok(http.get("/v1/providers/demo"))["models"])
        error = error_of(http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o-maxi"}), 404)
        assert error["code"] == "model_not_found"


def test_an_alias_change_reaches_the_router(demo: RunningStack, token: str) -> None:
    name = unique("moving")

    def chat_status() -> int:
        with demo.http(token) as http:
            return http.post("/v1/chat/completions", json={**CHAT, "model": name}).status_code

    def image_status() -> int:
        with demo.http(token) as http:
            body = {"model": name, "prompt": "a dog", "response_format": "b64_json"}
            return http.post("/v1/images/generations", json=body).status_code

    assert chat_status() == 404  # unknown: not cached as an answer
    with demo.admin() as admin:
        ok(create_alias(admin, name, CHAT_MODEL))
        assert eventually(lambda: chat_status() == 200)
        ok(admin.delete(f"/admin/v1/modelAliases/{name}"))
        assert eventually(lambda: chat_status() == 404)
        ok(create_alias(admin, name, IMAGE_MODEL))
    assert eventually(lambda: image_status() == 200)
    with demo.http() as http:
        assert eventually(lambda: name in {m["id"] for m in ok(http.get("/v1/models"))["data"]})


def test_the_cli_manages_aliases(demo: RunningStack) -> None:
    name = unique("cli-alias")
    assert '"target": "demo/image-model"' in cli(demo, "aliases", "create", name, IMAGE_MODEL).stdout
    assert f'"name": "{name}"' in cli(demo, "aliases", "list").stdout
    assert f'"name": "{name}"' in cli(demo, "aliases", "get", name).stdout
    cli(demo, "aliases", "delete", name)
    assert "404" in cli(demo, "aliases", "get", name, check=False).stderr


# --- anonymous mode ------------------------------------------------------------------------


def usage(demo: RunningStack, account: str) -> dict:
    with demo.admin() as admin:
        return ok(admin.get("/v1/billing/usage", params={"account": account}))


def test_a_tokenless_call_is_billed_to_the_anonymous_account(demo: RunningStack) -> None:
    before = usage(demo, ANONYMOUS).get("requests", 0)
    with demo.http() as http:
        answer = http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"})
        assert answer.status_code == 200, answer.text
    assert eventually(lambda: usage(demo, ANONYMOUS).get("requests", 0) == before + 1)
    assert CHAT_MODEL in {line["model"] for line in usage(demo, ANONYMOUS)["byModel"]}
    with demo.admin() as admin:
        account = ok(admin.get(f"/v1/billing/accounts/{ANONYMOUS}"))
    assert int(account["includedCreditsNanoUsd"]) == ANONYMOUS_CREDITS_NANO_USD


@pytest.mark.parametrize("authorization", ["Bearer sb-not-a-token", "Basic dXNlcjpwYXNz", "Bearer", "token"])
def test_a_bad_token_is_401_in_anonymous_mode_too(demo: RunningStack, authorization: str) -> None:
    with http_client(base_url=demo.base_url, headers={"Authorization": authorization}, timeout=30) as http:
        error = error_of(http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"}), 401)
    assert error["code"] == "invalid_api_key"


def test_anonymous_callers_cannot_bill_an_org(demo: RunningStack) -> None:
    with demo.http() as http:
        answer = http.post(
            "/v1/chat/completions", json={**CHAT, "model": CHAT_MODEL}, headers={"X-HF-Bill-To": "demo-org"}
        )
    assert error_of(answer, 403)["code"] == "bill_to_forbidden"


def test_the_anonymous_account_is_held_to_its_credits(demo: RunningStack) -> None:
    credits = f"/admin/v1/billing/accounts/{ANONYMOUS}/credits"
    with demo.admin() as admin, demo.http() as http:
        ok(admin.put(credits, json={"includedCreditsNanoUsd": 0}))
        try:
            error = error_of(http.post("/v1/chat/completions", json={**CHAT, "model": CHAT_MODEL}), 402)
            assert error["code"] == "insufficient_quota"
        finally:
            ok(admin.put(credits, json={"includedCreditsNanoUsd": ANONYMOUS_CREDITS_NANO_USD}))


@pytest.mark.parametrize(
    ("argv", "account"),
    [
        (["up"], ""),
        (["up", "--demo"], ANONYMOUS_ACCOUNT),
        (["up", "--demo", "--anonymous-account", ""], ""),
        (["up", "--anonymous-account", "guests"], "guests"),
    ],
)
def test_switchboard_up_turns_anonymous_mode_on_only_when_asked_or_for_the_demo(argv, account) -> None:
    assert up_options(build_parser().parse_args(argv)).anonymous_account == account


@pytest.mark.parametrize("account", ["_operators", "two words", "a/b", "x" * 97, "-dash"])
def test_the_router_refuses_an_anonymous_account_that_is_no_account_name(account: str) -> None:
    with pytest.raises(ValidationError):
        RouterSettings(anonymous_account=account)


def test_anonymous_mode_is_off_by_default(stack: RunningStack) -> None:
    with stack.http() as http:
        error = error_of(http.post("/v1/chat/completions", json={**CHAT, "model": CHAT_MODEL}), 401)
    assert error["code"] == "invalid_api_key"
