"""/v1/models in OpenAI's JSON with the hub router's per-provider fields, read by the `openai`
client and raw through real Envoy; the typed gRPC twin of /v1/providers; Billing's exact int64
money beside the released doubles; the catalog's create time and its migration."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import httpx
import openai
import pytest
from google.protobuf import json_format
from helpers.clients import http_client
from helpers.migrations import REGISTRY_MIGRATIONS, database, execute, upgrade  # noqa: F401
from helpers.stacks import Stacks
from helpers.waiting import eventually
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.billing.servicer import money_fields
from services.common.db import make_engine
from services.common.pricing import INT64_MAX
from services.demo import CATALOG, CHAT_MODEL, IMAGE_MODEL, AdminApi
from services.registry.storage import queries

pytestmark = pytest.mark.e2e  # starts processes

MODEL_KEYS = {"id", "object", "created", "owned_by", "pipeline_tag", "providers"}
# Hub router names; context_length and supports_* are absent: nothing knows them for the demo.
PROVIDER_KEYS = {
    "provider",
    "status",
    "provider_model",
    "first_token_latency_ms",
    "throughput",
    "input_price_per_million",
    "output_price_per_million",
    "input_token_nano_usd",
    "output_token_nano_usd",
}
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello!"}]}


@dataclass
class Demo:
    base_url: str
    admin: AdminApi
    token: str
    # Unix seconds before the demo's catalog was written.
    started: int

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return http_client(base_url=self.base_url, headers=headers, timeout=30)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.token, max_retries=0)


@pytest.fixture(scope="module")
def demo(stacks: Stacks) -> Iterator[Demo]:
    started = int(time.time())
    with stacks.demo("models") as (_, base_url, admin_token, lines):
        token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
        demo = Demo(base_url, AdminApi(base_url, admin_token), token, started)
        with demo.http() as http:  # measured latency and throughput for the chat model
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        yield demo


# --- /v1/models -------------------------------------------------------------------------------


def test_the_openai_client_parses_owner_creation_time_and_object(demo) -> None:
    page = demo.openai().models.list()
    assert page.object == "list"
    by_id = {m.id: m for m in page}
    assert {CHAT_MODEL, IMAGE_MODEL} <= set(by_id)
    for model_id in (CHAT_MODEL, IMAGE_MODEL):
        model = by_id[model_id]
        assert (model.object, model.owned_by) == ("model", "demo")
        assert demo.started <= model.created <= time.time()


def test_the_openai_client_retrieves_a_slash_id(demo) -> None:
    model = demo.openai().models.retrieve(CHAT_MODEL)
    assert (model.id, model.object, model.owned_by) == (CHAT_MODEL, "model", "demo")
    assert demo.started <= model.created <= time.time()


def test_the_json_has_exactly_openais_and_the_hub_routers_keys(demo) -> None:
    with demo.http() as http:
        listing = http.get("/v1/models").json()
        one = http.get(f"/v1/models/{CHAT_MODEL}").json()
    assert set(listing) == {"object", "data"}
    by_id = {m["id"]: m for m in listing["data"]}
    assert one == by_id[CHAT_MODEL]
    for model in (by_id[CHAT_MODEL], by_id[IMAGE_MODEL]):
        assert set(model) == MODEL_KEYS
    (chat,) = by_id[CHAT_MODEL]["providers"]
    # The demo prices reference-chat at 100 / 300 nano-USD per token: 0.1 / 0.3 USD per million.
    assert set(chat) == PROVIDER_KEYS | {"pricing", "supports_tools", "supports_structured_output"}
    assert chat["supports_tools"] is True and chat["supports_structured_output"] is True  # the demo declares them
    assert chat["pricing"] == {"input": 0.1, "output": 0.3}
    assert (chat["input_token_nano_usd"], chat["output_token_nano_usd"]) == ("100", "300")
    assert (chat["input_price_per_million"], chat["output_price_per_million"]) == (0.1, 0.3)
    assert (chat["provider"], chat["status"], chat["provider_model"]) == ("demo", "live", "reference-chat")
    assert chat["first_token_latency_ms"] > 0 and chat["throughput"] > 0
    (image,) = by_id[IMAGE_MODEL]["providers"]
    # Priced per image only: no token pricing to show, never measured; its price per unit (an image).
    assert set(image) == PROVIDER_KEYS | {"unit_price"}
    assert image["unit_price"] == {"task": "text-to-image", "unit": "image", "nano_usd": "5000000", "usd": 0.005}
    assert (image["first_token_latency_ms"], image["throughput"], image["input_token_nano_usd"]) == (0, 0, "0")


def test_grpc_clients_get_the_same_models_typed(demo) -> None:
    with demo.http() as http:
        rest = http.get("/v1/models").json()
    with grpc.insecure_channel(demo.base_url.removeprefix("http://")) as channel:
        typed = router_grpc.RouterServiceStub(channel).ListModels(
            router_pb.ListModelsRequest(), metadata=[("authorization", f"Bearer {demo.token}")], timeout=10
        )
    assert json_format.MessageToDict(typed, always_print_fields_with_no_presence=True) == rest
    chat = next(m for m in typed.data if m.id == CHAT_MODEL)
    (served,) = chat.providers
    assert (chat.owned_by, served.input_token_nano_usd, served.pricing.input) == ("demo", 100, 0.1)


def test_upserting_a_known_model_keeps_its_creation_time(demo) -> None:
    def created() -> int:
        with demo.http() as http:
            return http.get(f"/v1/models/{CHAT_MODEL}").json()["created"]

    before = created()
    changed = [{**m, "tags": [*m["tags"], "re-upserted"]} if m["id"] == CHAT_MODEL else m for m in CATALOG]
    demo.admin.call("POST", "/admin/v1/models:batchUpsert", {"models": changed})
    assert created() == before


# --- /v1/providers and its typed twin ---------------------------------------------------------


def test_the_typed_provider_listing_matches_the_rest_array(demo) -> None:
    with demo.http() as http:
        rest = http.get("/v1/providers").json()
    with grpc.insecure_channel(demo.base_url.removeprefix("http://")) as channel:
        typed = router_grpc.RouterServiceStub(channel).ListInferenceProviders(
            router_pb.ListInferenceProvidersRequest(), timeout=10
        )
    assert [{"id": p.id, "url": p.url, "tasks": list(p.tasks)} for p in typed.providers] == rest
    assert [p["id"] for p in rest] == ["demo"]
    assert set(rest[0]) == {"id", "url", "tasks"}


# --- Billing's money --------------------------------------------------------------------------


def test_account_money_is_exact_int64_beside_the_released_doubles(demo) -> None:
    account = f"rich-{uuid.uuid4().hex[:8]}"
    demo.admin.call("PUT", f"/admin/v1/billing/accounts/{account}/credits", {"includedCreditsNanoUsd": str(INT64_MAX)})
    state = demo.admin.call("PUT", f"/v1/billing/accounts/{account}/limit", {"limitNanoUsd": str(INT64_MAX - 1)})
    assert state == {
        "account": account,
        "includedCreditsNanoUsd": float(INT64_MAX),
        "limitNanoUsd": float(INT64_MAX - 1),
        "spentNanoUsd": 0,
        "reservedNanoUsd": 0,
        "includedCreditsNanoUsdExact": str(INT64_MAX),
        "limitNanoUsdExact": str(INT64_MAX - 1),
        "spentNanoUsdExact": "0",
        "reservedNanoUsdExact": "0",
    }


def demo_usage(demo: Demo) -> dict:
    with demo.http() as http:
        return http.get("/v1/billing/usage", params={"account": "demo"}).json()


def test_usage_money_has_exact_twins_equal_to_the_doubles(demo) -> None:
    # The fixture's chat is billed once the Router's spool has sent its record (every 0.5 s).
    usage = eventually(lambda: (usage := demo_usage(demo)).get("requests") and usage, "the fixture's chat billed")
    lines = [usage, *usage["byModel"], *usage["byProvider"]]
    assert usage["requests"] == 1 and usage["settledNanoUsd"] + usage["pendingNanoUsd"] > 0
    for line in lines:
        assert int(line["settledNanoUsdExact"]) == line["settledNanoUsd"]
        assert int(line["pendingNanoUsdExact"]) == line["pendingNanoUsd"]


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_every_amount_fits_its_int64_twin_saturated(amount: int) -> None:
    fields = money_fields(limit_nano_usd=amount, spent_nano_usd=amount)
    message = billing_pb.Account(**fields)  # raises when a value does not fit int64
    expected = max(-INT64_MAX, min(amount, INT64_MAX))
    assert (message.limit_nano_usd_exact, message.spent_nano_usd_exact) == (expected, expected)
    assert message.limit_nano_usd == float(amount)


# --- the catalog's create time ----------------------------------------------------------------


# `database` (SQLite and PostgreSQL) is test_registry_names' fixture.
def test_the_migration_dates_existing_models_and_new_ones_get_their_insertion_time(database: str) -> None:  # noqa: F811
    upgrade(database, REGISTRY_MIGRATIONS, "0004")
    execute(database, "INSERT INTO models (id, pipeline_tag, tags, adapter_weights_path) VALUES ('a/o', '', '[]', '')")
    before = datetime.now(UTC)
    upgrade(database, REGISTRY_MIGRATIONS, "head")
    migrated = datetime.now(UTC)
    engine = make_engine(database)
    try:
        with Session(engine) as session:
            (old,) = queries.catalog_create_times(session, ["a/o"]).values()
            assert before <= old <= migrated
            new = {"id": "a/new", "pipeline_tag": "", "tags": "[]", "adapter_weights_path": ""}
            queries.upsert_models(session, [new, {**new, "id": "a/o"}])
            times = queries.catalog_create_times(session, ["a/o", "a/new", "a/absent"])
    finally:
        engine.dispose()
    assert set(times) == {"a/o", "a/new"}
    assert times["a/o"] == old and times["a/new"] >= migrated
