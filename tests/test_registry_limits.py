"""The Registry's input limits (services/registry/domain/validation.py, one table): every string,
list and number outside them is a 400 naming the field, whose message repeats at most a
short prefix of the input; the partners listing always fits Envoy's transcoder; a bad or
unknown model id is the caller's error (400/404), never an outage. Issue 11, findings 1 and 3."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from helpers.registry import World, build_world, error_of, ok, unique
from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc

from services.common.errors import ApiError
from services.common.paging import key_after
from services.registry.api.partners import table_entry
from services.registry.domain import token_limits
from services.registry.domain import validation as v
from services.registry.storage.index import MODEL, TAG_FILTER, Conformance, Mapping

LONGEST_MESSAGE = 400  # characters: limits and a short prefix of the input, never the input


@pytest.fixture(scope="module")
def world(stack) -> World:
    with stack.admin() as admin:
        return build_world(admin)


def refused(answer, param: str) -> dict:
    """A 400 naming `param` whose message does not repeat the (long) input."""
    error = error_of(answer, 400)
    assert error["param"] == param, error
    assert len(error["message"]) <= LONGEST_MESSAGE, error["message"][:200]
    return error


def tag_filter(tags: list[str], provider_model: str = "base") -> dict:
    return {"type": "tag-filter", "task": "text-to-image", "tags": tags, "providerModel": provider_model,
            "adapterType": "lora"}  # fmt: skip


# --- the reproductions of issue 11 ---------------------------------------------------------------


def test_forty_thousand_tags_are_a_400_before_any_per_tag_work(stack, world) -> None:
    """The body that took 15 s to fail (a quadratic duplicate check) now fails on its count."""
    tags = [f"t{i}" for i in range(40_000)]
    with stack.http(world.tokens["writer"]) as http:
        error = refused(http.post(f"/api/partners/{world.provider}/models", json=tag_filter(tags)), "tags")
    assert f"at most {v.MAX_TAGS_PER_FILTER}" in error["message"]


def test_a_one_megabyte_catalog_id_is_a_400(stack) -> None:
    model = {"id": "a" * 1_000_000, "pipelineTag": "text-generation"}
    with stack.admin() as admin:
        error = refused(admin.post("/admin/v1/models:batchUpsert", json={"models": [model]}), "models[0].id")
    assert f"at most {v.MAX_MODEL_ID}" in error["message"]


def test_a_megabyte_tag_is_a_400(stack, world) -> None:
    with stack.http(world.tokens["writer"]) as http:
        answer = http.post(f"/api/partners/{world.provider}/models", json=tag_filter(["x" * 1_100_000]))
        error = refused(answer, "tags")
        assert f"at most {v.MAX_TAG}" in error["message"]
        assert http.get(f"/api/partners/{world.provider}/models").status_code == 200


def test_repeated_tags_are_named_once_each(stack, world) -> None:
    tags = ["same"] * 50 + [f"u{i}" for i in range(40)] + ["again"] * 10
    with stack.http(world.tokens["writer"]) as http:
        error = refused(http.post(f"/api/partners/{world.provider}/models", json=tag_filter(tags)), "tags")
    assert error["message"] == "tags must not repeat a tag: 'again', 'same'"


# Characters of tags and provider model ids: plain, and those Envoy's JSON writes longest ('<' as
# \u003c, a tag symbol as a surrogate pair: 6 and 12 bytes; the listing once came out 4 MB).
@pytest.mark.parametrize("fill", ["t", "<", "\U000e0041"])
def test_the_listing_at_the_caps_always_fits_envoys_transcoder(stack, fill: str) -> None:
    """Tag-filters as large as allowed, until the provider's listing is full: it still answers,
    within MAX_LISTING_BYTES as Envoy writes it."""
    with stack.admin() as admin:
        world = build_world(admin)
    url = f"/api/partners/{world.provider}/models"
    with stack.http(world.tokens["writer"]) as http:
        created = 0
        while True:
            tags = [f"{created}-{i}-".ljust(v.MAX_TAG, fill) for i in range(v.MAX_TAGS_PER_FILTER)]
            answer = http.post(url, json=tag_filter(tags, f"{created}/".ljust(v.MAX_PROVIDER_MODEL, fill)))
            if answer.status_code != 200:
                break
            created += 1
        assert error_of(answer, 400)["code"] == "mapping_table_full"
        assert created >= (5 if fill == "t" else 1)
        listing = http.get(url)
        assert listing.status_code == 200, listing.text[:200]
        assert len(listing.json()["text-to-image"]) == created
        assert len(listing.content) <= v.MAX_LISTING_BYTES
    with stack.channel() as channel:  # the typed listing pages by size too
        stub, seen, token = registry_grpc.RegistryServiceStub(channel), 0, ""
        while True:
            request = registry_pb.ListModelMappingsRequest(provider=world.provider, page_size=1000, page_token=token)
            page = stub.ListModelMappings(request, timeout=10)
            seen += len(page.model_mappings)
            token = page.next_page_token
            if not token:
                break
        assert seen == created


# --- one limit of each kind, over REST ----------------------------------------------------------


def provider_body(**fields) -> dict:
    return {"id": unique("p"), "baseUrl": "http://127.0.0.1:9", "tasks": ["conversational"], **fields}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"baseUrl": "http://h/" + "x" * v.MAX_URL}, "baseUrl"),
        ({"billingUrl": "http://h/" + "x" * v.MAX_URL}, "billingUrl"),
        ({"requestIdHeader": "x" * (v.MAX_HEADER_NAME + 1)}, "requestIdHeader"),
        ({"requestIdHeader": "Switchboard-Provider"}, "requestIdHeader"),  # the Router's own metadata
        ({"requestIdHeader": "grpc-status"}, "requestIdHeader"),
        ({"requestIdHeader": "Content-Length"}, "requestIdHeader"),
        ({"apiKey": "k" * (v.MAX_SECRET + 1)}, "apiKey"),
        ({"billingAuthorization": "k" * (v.MAX_SECRET + 1)}, "billingAuthorization"),
        ({"defaultRank": v.MAX_RANK + 1}, "defaultRank"),
        ({"defaultRank": -v.MAX_RANK - 1}, "defaultRank"),
        ({"tasks": ["conversational"] * 2}, "tasks"),
        ({"tasks": ["conversational"] * (v.MAX_TASKS + 1)}, "tasks"),
        ({"tasks": ["x" * 100_000]}, "tasks"),
        ({"id": "p" * (v.MAX_NAME + 1)}, "id"),
    ],
)
def test_provider_fields_past_their_limits(stack, world, fields: dict, param: str) -> None:
    with stack.admin() as admin:
        refused(admin.post("/admin/v1/providers", json=provider_body(org=world.org, **fields)), param)


def test_provider_fields_at_their_limits_are_accepted(stack, world) -> None:
    fields = {
        "baseUrl": ("http://h/" + "x" * v.MAX_URL)[: v.MAX_URL],
        "requestIdHeader": "x" * v.MAX_HEADER_NAME,
        "apiKey": "k" * v.MAX_SECRET,
        "defaultRank": -v.MAX_RANK,
    }
    with stack.admin() as admin:
        created = ok(admin.post("/admin/v1/providers", json=provider_body(org=world.org, **fields)))
        assert created["defaultRank"] == -v.MAX_RANK and created["hasApiKey"]
        page = ok(admin.get("/admin/v1/providers", params={"pageSize": v.MAX_PAGE_SIZE}))
        assert page["providers"]
        refused(admin.get("/admin/v1/providers", params={"pageSize": v.MAX_PAGE_SIZE + 1}), "page_size")
        refused(admin.get("/admin/v1/providers", params={"pageToken": "z" * 300}), "page_token")


@pytest.mark.parametrize(
    ("price", "param"),
    [
        ({"providerModel": "m" * (v.MAX_PROVIDER_MODEL + 1)}, "prices[0].providerModel"),
        ({"providerModel": "m", "requestNanoUsd": -1}, "prices[0].request_nano_usd"),
    ],
)
def test_prices_past_their_limits(stack, world, price: dict, param: str) -> None:
    with stack.admin() as admin:
        refused(admin.put(f"/admin/v1/providers/{world.provider}/prices", json={"prices": [price]}), param)


@pytest.mark.parametrize(
    ("model", "param"),
    [
        ({"id": "a" * (v.MAX_MODEL_ID_PART + 1) + "/b"}, "models[0].id"),
        ({"id": "a/b/c"}, "models[0].id"),
        ({"id": "a b/c"}, "models[0].id"),
        ({"id": "ok/model", "tags": ["t"] * (v.MAX_TAGS_PER_MODEL + 1)}, "models[0].tags"),
        ({"id": "ok/model", "tags": ["t" * (v.MAX_TAG + 1)]}, "models[0].tags"),
        ({"id": "ok/model", "pipelineTag": "p" * (v.MAX_TASK + 1)}, "models[0].pipelineTag"),
        ({"id": "ok/model", "adapterWeightsPath": "w" * (v.MAX_PATH + 1)}, "models[0].adapterWeightsPath"),
    ],
)
def test_catalog_entries_past_their_limits(stack, model: dict, param: str) -> None:
    with stack.admin() as admin:
        refused(admin.post("/admin/v1/models:batchUpsert", json={"models": [model]}), param)


def test_a_catalog_entry_at_the_limits_is_accepted(stack) -> None:
    model_id = f"{unique('n')}".ljust(v.MAX_MODEL_ID_PART, "n") + "/" + "m" * v.MAX_MODEL_ID_PART
    tags = [f"{i}".ljust(v.MAX_TAG, "t") for i in range(v.MAX_TAGS_PER_MODEL)]
    model = {"id": model_id, "pipelineTag": "text-to-image", "tags": tags}
    with stack.admin() as admin:
        assert ok(admin.post("/admin/v1/models:batchUpsert", json={"models": [model]}))["upsertedCount"] == 1
        assert len(ok(admin.get(f"/admin/v1/models/{model_id}"))["tags"]) == v.MAX_TAGS_PER_MODEL


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"task": "text-to-image", "hfModel": "x" * 300, "providerModel": "p"}, "hfModel"),
        ({"task": "text-to-image", "hfModel": "a/b", "providerModel": "p" * 100_000}, "providerModel"),
        ({"task": "t" * 100_000, "hfModel": "a/b", "providerModel": "p"}, "task"),
        ({"task": "text-to-image", "hfModel": "a/b", "providerModel": "p", "status": "s" * 100_000}, "status"),
    ],
)
def test_mapping_fields_past_their_limits(stack, world, body: dict, param: str) -> None:
    with stack.http(world.tokens["writer"]) as http:
        refused(http.post(f"/api/partners/{world.provider}/models", json=body), param)


def test_provider_preferences_are_bounded(stack, world) -> None:
    with stack.http(world.tokens["reader"]) as http:
        many = [world.provider] * (v.MAX_PROVIDERS + 1)
        refused(http.put("/v1/settings/provider-preferences", json={"providers": many}), "providers")
        unknown = ["u" * 10_000]
        refused(http.put("/v1/settings/provider-preferences", json={"providers": unknown}), "providers")


# --- resolution: the caller's mistake, with a precise status ------------------------------------


def error_info(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    trailers = dict(error.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return error.code(), info.reason


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda s: s.ResolveModel(internal_pb.ResolveModelRequest(model="a" * 300, task="conversational")),
         (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")),
        (lambda s: s.ResolveModel(internal_pb.ResolveModelRequest(model="a b", task="conversational")),
         (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MODEL_ID")),
        (lambda s: s.ResolveModel(internal_pb.ResolveModelRequest(model="no/such-model", task="conversational")),
         (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")),
        (lambda s: s.ResolveModel(internal_pb.ResolveModelRequest(model="a/b", task="t" * 1000)),
         (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")),
        (lambda s: s.ResolveProviderModel(
            internal_pb.ResolveProviderModelRequest(provider="nope", provider_model="m", task="conversational")),
         (grpc.StatusCode.NOT_FOUND, "PROVIDER_NOT_FOUND")),
        (lambda s: s.ResolveProviderModel(
            internal_pb.ResolveProviderModelRequest(provider="p", provider_model="m" * 20_000, task="conversational")),
         (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")),
        (lambda s: s.ListServedModels(internal_pb.ListServedModelsRequest(model="%ff/\x00")),
         (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")),
        (lambda s: s.ListServedModels(internal_pb.ListServedModelsRequest(model="no/such-model")),
         (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")),
    ],
)  # fmt: skip
def test_resolution_of_a_bad_or_unknown_model_is_a_precise_status(stack, call, expected) -> None:
    with stack.channel("registry") as channel, pytest.raises(grpc.RpcError) as failed:
        call(internal_grpc.InternalServiceStub(channel))
    assert error_info(failed.value) == expected
    assert len(failed.value.details()) <= LONGEST_MESSAGE


def test_over_rest_a_bad_model_id_is_a_400_and_an_unknown_one_a_404(stack) -> None:
    with stack.http() as http:
        error = error_of(http.get("/v1/models/" + "a" * 300), 400)
        assert error["param"] == "model" and len(error["message"]) <= LONGEST_MESSAGE
        assert error_of(http.get("/v1/models/nobody/nothing"), 404)["code"] == "model_not_found"


# --- the validators, in process: accepted within the limits or a 400, nothing else ------------

text = st.text(max_size=400) | st.text(alphabet="ab-_./, ", max_size=300) | st.sampled_from(sorted(v.KNOWN_TASKS))
STRING_CHECKS = [
    lambda s: v.check_name(s, "name"),
    lambda s: v.check_account_name(s),
    lambda s: v.check_model_id(s, "model"),
    lambda s: v.check_provider_model(s),
    lambda s: v.check_task(s),
    lambda s: v.check_status(s),
    lambda s: v.check_role(s),
    lambda s: v.check_url(s, "baseUrl"),
    lambda s: v.check_header_name(s, "requestIdHeader"),
    lambda s: v.check_secret(s, "apiKey"),
    lambda s: key_after("providers", s),
]
LIST_CHECKS = [
    lambda items: v.check_tags(items),
    lambda items: v.check_model_tags(items, "tags"),
    lambda items: v.check_tasks(items),
    lambda items: v.check_unique(items, "providers", "provider"),
]


def holds_or_refuses(check, value) -> None:
    try:
        check(value)
    except ApiError as error:
        assert error.http_status == 400 and error.param
        assert len(error.message) <= LONGEST_MESSAGE
        if isinstance(value, str) and len(value) > v.SHOWN_CHARS:
            assert value not in error.message


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(range(len(STRING_CHECKS))), text | st.text(min_size=250, max_size=5000))
def test_string_validators_accept_or_answer_a_400(which: int, value: str) -> None:
    holds_or_refuses(STRING_CHECKS[which], value)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(range(len(LIST_CHECKS))), st.lists(text, max_size=150) | st.lists(st.just("t"), max_size=2000))
def test_list_validators_accept_or_answer_a_400(which: int, items: list[str]) -> None:
    holds_or_refuses(LIST_CHECKS[which], items)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(min_value=-(2**64), max_value=2**64))
def test_number_validators_accept_or_answer_a_400(number: int) -> None:
    holds_or_refuses(v.page_size, number)
    holds_or_refuses(lambda n: v.check_range(n, 0, v.MAX_NANO_USD, "prices[0].request_nano_usd"), number)
    holds_or_refuses(lambda n: v.check_range(n, -v.MAX_RANK, v.MAX_RANK, "defaultRank"), number)


def test_the_duplicate_check_is_linear() -> None:
    """200,000 distinct items are checked in one pass (the old check was quadratic)."""
    v.check_unique((str(i) for i in range(200_000)), "tags", "tag")
    with pytest.raises(ApiError):
        v.check_unique([*map(str, range(200_000)), "7"], "tags", "tag")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.text(min_size=1, max_size=40),
            st.lists(st.text(max_size=30), max_size=12),
            st.text(max_size=200),  # a probes' reason: the mapping is in error
            st.booleans(),  # checked: a conformance summary is listed
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_listing_size_estimate_is_an_upper_bound(entries: list[tuple[bool, str, list[str], str, bool]]) -> None:
    """What creation counts per mapping is at least what the mapping adds to the answer."""
    checked = Conformance(datetime.now(UTC), True, 8, 0, 2, True, True)
    mappings = [
        Mapping(id="0" * 24, seq=i, provider="p", type=MODEL if is_model else TAG_FILTER, task="text-to-image",
                hf_model=f"ns/{name}" if is_model else "", tags=() if is_model else tuple(sorted({name, *tags})),
                provider_model=name, status="error" if reason else "staging", adapter_type="" if is_model else "lora",
                create_time=datetime.now(UTC), status_reason=reason, conformance=checked if was_checked else None)
        for i, (is_model, name, tags, reason, was_checked) in enumerate(entries)
    ]  # fmt: skip
    table: dict[str, dict] = {}
    for mapping in mappings:
        key, value = table_entry(mapping)
        table.setdefault(mapping.task, {})[key] = value
    answer = struct_pb2.Struct()
    answer.update(table)
    assert answer.ByteSize() <= sum(m.listing_bytes for m in mappings)


@pytest.mark.parametrize("nanos", [-5, 1_000_000_000, 2_000_000_000])
def test_a_tokens_expiry_with_nanos_out_of_range_is_a_400(nanos: int) -> None:
    """Only a native gRPC caller can send it (Envoy parses an RFC 3339 time); it was a 500 once stored."""
    limits = admin_pb.ApiTokenLimits()
    limits.expire_time.seconds, limits.expire_time.nanos = int(time.time()) + 3600, nanos
    with pytest.raises(ApiError) as raised:
        token_limits.checked(limits)
    assert raised.value.http_status == 400 and raised.value.param == "limits.expireTime.nanos"


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (v.check_secret, "Bearer " + "k" * 32 + "\n"),
        (v.check_header_name, "X-Request-Id\n"),
        (v.check_mapped_provider_model, "../../admin/x"),
        (v.check_mapped_provider_model, "org//model"),
        (v.check_mapped_provider_model, "org/model/."),
    ],
)
def test_a_last_line_break_or_a_path_leaving_the_providers_url_is_a_400(check, value: str) -> None:
    """A regex's $ matches before a last line break: each rule holds to the end of the value."""
    with pytest.raises(ApiError) as raised:
        check(value, "field")
    assert raised.value.http_status == 400 and raised.value.param == "field"
