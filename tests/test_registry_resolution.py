"""Resolution, authentication, the change feed and secrets, through the real stack."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest
from helpers.registry import World, assert_no_secret, build_world, create_user, error_of, ok, unique
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc

TIMEOUT = 10


@pytest.fixture(scope="module")
def world(stack) -> World:
    with stack.admin() as admin:
        return build_world(admin)


@pytest.fixture(scope="module")
def internal(stack):
    with stack.channel("registry") as channel:
        yield internal_grpc.InternalServiceStub(channel)


def create(stack, world: World, body: dict) -> str:
    with stack.http(world.tokens["writer"]) as http:
        return ok(http.post(f"/api/partners/{world.provider}/models", json=body))["_id"]


def set_status(stack, world: World, mapping_id: str, status: str) -> None:
    with stack.http(world.tokens["writer"]) as http:
        ok(http.put(f"/api/partners/{world.provider}/models/{mapping_id}/status", json={"status": status}))


def resolve(internal, model: str, user: str, task: str, providers=()) -> internal_pb.ResolveModelResponse:
    request = internal_pb.ResolveModelRequest(model=model, user=user, task=task, providers=providers)
    return internal.ResolveModel(request, timeout=TIMEOUT)


def test_staging_is_visible_only_to_members(stack, world, internal) -> None:
    mapping_id = create(stack, world, {"task": "conversational", "hfModel": world.models["vlm"], "providerModel": "v"})
    for role in ("reader", "writer", "orgadmin"):
        answer = resolve(internal, world.models["vlm"], world.users[role], "conversational")
        assert [(c.provider, c.provider_model, c.status) for c in answer.candidates] == [
            (world.provider, "v", "staging")
        ]
    for user in (world.users["outsider"], ""):
        answer = resolve(internal, world.models["vlm"], user, "conversational")
        assert answer.model_found and not answer.candidates
        assert [e.provider for e in answer.exclusions] == [world.provider]
        assert "staging" in answer.exclusions[0].reason
    set_status(stack, world, mapping_id, "live")
    answer = resolve(internal, world.models["vlm"], world.users["outsider"], "conversational")
    assert [c.mapping_id for c in answer.candidates] == [mapping_id]
    with pytest.raises(grpc.RpcError) as missing:  # the caller's mistake: a 404, never an outage
        resolve(internal, "nobody/nothing", "", "conversational")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_mapping_beats_tag_filters_and_most_tags_win(stack, internal) -> None:
    with stack.admin() as admin:
        world = build_world(admin)
    base = world.models["base_tag"]

    def tag_filter(tags: list[str], provider_model: str) -> str:
        body = {
            "type": "tag-filter",
            "task": "text-to-image",
            "tags": tags,
            "providerModel": provider_model,
            "adapterType": "lora",
            "status": "live",
        }
        return create(stack, world, body)

    older = tag_filter(["lora"], "generic-lora")
    tag_filter([base], "base-only")  # same tag count as "lora", but newer: loses to it
    best = tag_filter(["lora", base], "flux-lora")
    answer = resolve(internal, world.models["lora"], "", "text-to-image")
    [candidate] = answer.candidates
    assert (candidate.provider_model, candidate.mapping_id) == ("flux-lora", best)
    adapter = candidate.adapter
    assert (adapter.type, adapter.model, adapter.weights_path, adapter.base_provider_model) == (
        "lora",
        world.models["lora"],
        "lora.safetensors",
        "flux-lora",
    )
    # a filter whose tags are not all on the model does not match
    tag_filter(["lora", base, "style", "absent"], "too-specific")
    assert resolve(internal, world.models["lora"], "", "text-to-image").candidates[0].mapping_id == best
    # the image model has none of the tags
    assert not resolve(internal, world.models["image"], "", "text-to-image").candidates
    # a model mapping beats every tag-filter of the same provider
    direct = create(
        stack,
        world,
        {"task": "text-to-image", "hfModel": world.models["lora"], "providerModel": "direct", "status": "live"},
    )
    [candidate] = resolve(internal, world.models["lora"], "", "text-to-image").candidates
    assert (candidate.mapping_id, candidate.HasField("adapter")) == (direct, False)
    with stack.http(world.tokens["writer"]) as http:
        ok(http.delete(f"/api/partners/{world.provider}/models/{direct}"))
        ok(http.delete(f"/api/partners/{world.provider}/models/{best}"))
    assert resolve(internal, world.models["lora"], "", "text-to-image").candidates[0].mapping_id == older
    assert not resolve(internal, world.models["lora"], "", "conversational").candidates


def test_candidates_follow_rank_or_the_callers_list(stack, internal) -> None:
    with stack.admin() as admin:
        first, second = build_world(admin), build_world(admin)
        second.models = first.models
        ok(admin.patch(f"/admin/v1/providers/{first.provider}", json={"defaultRank": 2}))
        ok(admin.patch(f"/admin/v1/providers/{second.provider}", json={"defaultRank": 1}))
    body = {"task": "text-to-image", "hfModel": first.models["image"], "status": "live"}
    create(stack, first, {**body, "providerModel": "one"})
    create(stack, second, {**body, "providerModel": "two"})
    answer = resolve(internal, first.models["image"], "", "text-to-image")
    assert [c.provider for c in answer.candidates] == [second.provider, first.provider]
    wanted = [first.provider, "nobody", second.provider]
    answer = resolve(internal, first.models["image"], "", "text-to-image", wanted)
    assert [c.provider for c in answer.candidates] == [first.provider, second.provider]
    assert [e.provider for e in answer.exclusions] == ["nobody"]
    answer = internal.ResolveProviderModel(
        internal_pb.ResolveProviderModelRequest(provider=second.provider, provider_model="two", task="text-to-image"),
        timeout=TIMEOUT,
    )
    assert [(c.provider, c.provider_model) for c in answer.candidates] == [(second.provider, "two")]
    served = internal.ListServedModels(
        internal_pb.ListServedModelsRequest(model=first.models["image"]), timeout=TIMEOUT
    )
    assert {c.provider for c in served.models[0].candidates} == {first.provider, second.provider}


def test_authenticate_token_and_revocation(stack, world, internal) -> None:
    with stack.admin() as admin:
        user, token = create_user(admin, world.org, "write")
    caller = internal.AuthenticateToken(internal_pb.AuthenticateTokenRequest(token=token), timeout=TIMEOUT)
    assert caller.user == user and not caller.admin
    assert [(m.org, m.role) for m in caller.memberships] == [(world.org, "write")]
    admin_caller = internal.AuthenticateToken(
        internal_pb.AuthenticateTokenRequest(token=stack.admin_token), timeout=TIMEOUT
    )
    assert admin_caller.admin
    with stack.admin() as admin:
        ok(admin.delete(f"/admin/v1/users/{user}/tokens/main"))
    with pytest.raises(grpc.RpcError) as error:
        internal.AuthenticateToken(internal_pb.AuthenticateTokenRequest(token=token), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with stack.http(token) as http:
        body = {"task": "text-to-image", "hfModel": world.models["image"], "providerModel": "x"}
        error_of(http.post(f"/api/partners/{world.provider}/models", json=body), 401)


def test_change_feed_pushes_every_kind_of_change(stack, world, internal) -> None:
    changes: queue.Queue = queue.Queue()
    stream = internal.WatchChanges(internal_pb.WatchChangesRequest(), timeout=60)

    def read() -> None:
        try:
            for change in stream:
                changes.put(change)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = changes.get(timeout=TIMEOUT)
        assert first.kind == internal_pb.CHANGE_KIND_UNSPECIFIED
        mapping_id = create(
            stack, world, {"task": "text-to-image", "hfModel": world.models["lora2"], "providerModel": "q"}
        )
        set_status(stack, world, mapping_id, "live")
        with stack.admin() as admin:
            ok(admin.patch(f"/admin/v1/providers/{world.provider}", json={"defaultRank": 5}))
            ok(admin.post("/admin/v1/models:batchUpsert", json={"models": [{"id": f"{unique('ns')}/m"}]}))
            user, _ = create_user(admin, world.org, "read")
        seen = []
        deadline = time.monotonic() + TIMEOUT
        wanted = [
            (internal_pb.CHANGE_KIND_MAPPING, world.provider),
            (internal_pb.CHANGE_KIND_MAPPING, world.provider),
            (internal_pb.CHANGE_KIND_PROVIDER, world.provider),
            (internal_pb.CHANGE_KIND_MODEL, None),
            (internal_pb.CHANGE_KIND_IDENTITY, user),
        ]
        while len(seen) < len(wanted) and time.monotonic() < deadline:
            change = changes.get(timeout=TIMEOUT)
            if change.key in (world.provider, user) or change.kind == internal_pb.CHANGE_KIND_MODEL:
                seen.append(change)
        assert [c.kind for c in seen] == [kind for kind, _ in wanted]
        revisions = [c.revision for c in seen]
        assert revisions == sorted(revisions) and revisions[0] > first.revision
    finally:
        stream.cancel()
        reader.join(timeout=TIMEOUT)


def test_typed_paginated_listing_over_grpc_through_envoy(stack) -> None:
    with stack.admin() as admin:
        world = build_world(admin)
    ids = [
        create(stack, world, {"task": task, "hfModel": world.models[name], "providerModel": name})
        for task, name in (("conversational", "chat"), ("text-to-image", "image"), ("text-generation", "plain"))
    ]
    with stack.channel("envoy") as channel:
        stub = registry_grpc.RegistryServiceStub(channel)
        listed, token = [], ""
        while True:
            page = stub.ListModelMappings(
                registry_pb.ListModelMappingsRequest(provider=world.provider, page_size=2, page_token=token),
                timeout=TIMEOUT,
            )
            listed += page.model_mappings
            token = page.next_page_token
            if not token:
                break
    assert [m.id for m in listed] == ids
    assert listed[0].hf_model == world.models["chat"] and listed[0].status == "staging"


def test_secrets_never_appear_in_answers_or_logs(stack) -> None:
    answers = []
    with stack.admin() as admin:
        world = build_world(admin)
        provider_url = f"/admin/v1/providers/{world.provider}"
        answers.append(admin.get(provider_url))
        answers.append(admin.get("/admin/v1/providers", params={"pageSize": 1000}))
        answers.append(admin.patch(provider_url, json={"apiKey": world.secrets[0] + "-new"}))
        answers.append(admin.patch(provider_url, json={"apiKey": "bad\nkey " + world.secrets[0]}))
        answers.append(admin.patch(provider_url, json={"billingAuthorization": world.secrets[1], "baseUrl": "nope"}))
        answers.append(
            admin.post(
                "/admin/v1/providers",
                json={"id": world.provider, "org": world.org, "baseUrl": "http://h", "apiKey": world.secrets[0]},
            )
        )
    with stack.http() as http:
        answers.append(http.get(f"/api/partners/{world.provider}/models"))
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 400, 409, 200]
    logs = stack.logs()
    assert_no_secret(logs)  # every secret of every test so far
    for secret in [*world.secrets, world.secrets[0] + "-new"]:
        for answer in answers:
            assert secret not in answer.text
            assert secret not in str(answer.headers)
        assert secret not in logs
