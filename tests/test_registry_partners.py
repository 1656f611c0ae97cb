"""The partners API through real Envoy over REST, exactly as the partner documentation says."""

from __future__ import annotations

import re

import pytest
from helpers.registry import World, build_world, error_of, ok, unique


@pytest.fixture(scope="module")
def world(stack) -> World:
    with stack.admin() as admin:
        return build_world(admin)


def path(world: World, suffix: str = "") -> str:
    return f"/api/partners/{world.provider}/models{suffix}"


def create(stack, world: World, body: dict, role: str = "writer") -> dict:
    with stack.http(world.tokens[role]) as http:
        return ok(http.post(path(world), json=body))


def chat_mapping(world: World, **extra) -> dict:
    return {"task": "conversational", "hfModel": world.models["chat"], "providerModel": "chat-v1", **extra}


def test_create_answers_a_24_hex_id_and_defaults_to_staging(stack, world) -> None:
    answer = create(stack, world, {"task": "text-to-image", "hfModel": world.models["image"], "providerModel": "img"})
    assert re.fullmatch(r"[0-9a-f]{24}", answer["_id"])
    assert answer["status"] == "staging"
    with stack.http() as http:
        table = ok(http.get(path(world)))
    assert table["text-to-image"][world.models["image"]] == {
        "_id": answer["_id"],
        "providerId": "img",
        "status": "staging",
    }


def test_listing_is_exactly_the_documented_document(stack) -> None:
    with stack.admin() as admin:
        world = build_world(admin)
    chat = create(stack, world, chat_mapping(world, status="live"))
    vlm = create(stack, world, {"task": "conversational", "hfModel": world.models["vlm"], "providerModel": "vlm-1"})
    plain = create(
        stack, world, {"task": "text-generation", "hfModel": world.models["plain"], "providerModel": "plain"}
    )
    tags = ["lora", world.models["base_tag"]]
    lora = create(
        stack,
        world,
        {
            "type": "tag-filter",
            "task": "text-to-image",
            "tags": tags,
            "providerModel": "sdxl-lora-mutualized",
            "adapterType": "lora",
            "status": "live",
        },
    )
    sorted_tags = sorted(tags)
    expected = {
        "conversational": {
            world.models["chat"]: {"_id": chat["_id"], "providerId": "chat-v1", "status": "live"},
            world.models["vlm"]: {"_id": vlm["_id"], "providerId": "vlm-1", "status": "staging"},
        },
        "text-generation": {world.models["plain"]: {"_id": plain["_id"], "providerId": "plain", "status": "staging"}},
        "text-to-image": {
            "tag-filter=" + ",".join(sorted_tags): {
                "_id": lora["_id"],
                "status": "live",
                "providerId": "sdxl-lora-mutualized",
                "adapterType": "lora",
                "tags": sorted_tags,
            }
        },
    }
    with stack.http() as http:  # public: no token
        assert ok(http.get(path(world))) == expected
        live = {task: {k: v for k, v in entries.items() if v["status"] == "live"} for task, entries in expected.items()}
        assert ok(http.get(path(world), params={"status": "live"})) == {k: v for k, v in live.items() if v}
        staging = ok(http.get(path(world), params={"status": "staging"}))
        assert set(staging) == {"conversational", "text-generation"}
        assert set(staging["conversational"]) == {world.models["vlm"]}
        assert "status" in error_of(http.get(path(world), params={"status": "gone"}), 400)["message"]
    with stack.http() as http:
        error_of(http.get(f"/api/partners/{unique('nobody')}/models"), 404)


def test_status_update_and_delete(stack, world) -> None:
    mapping = create(stack, world, {"task": "conversational", "hfModel": world.models["vlm"], "providerModel": "v"})
    with stack.http(world.tokens["orgadmin"]) as http:
        updated = ok(http.put(path(world, f"/{mapping['_id']}/status"), json={"status": "live"}))
        assert updated["status"] == "live"
        assert ok(http.get(path(world)))["conversational"][world.models["vlm"]]["status"] == "live"
        error = error_of(http.put(path(world, f"/{mapping['_id']}/status"), json={"status": "on"}), 400)
        assert error["param"] == "status"
        assert ok(http.delete(path(world, f"/{mapping['_id']}"))) == {}
        assert world.models["vlm"] not in ok(http.get(path(world))).get("conversational", {})
        error_of(http.delete(path(world, f"/{mapping['_id']}")), 404)
        error_of(http.put(path(world, f"/{mapping['_id']}/status"), json={"status": "live"}), 404)


def test_writes_need_a_writer_of_the_providers_org(stack, world) -> None:
    body = {"task": "text-to-image", "hfModel": world.models["image"], "providerModel": unique("x")}
    with stack.http() as http:
        assert error_of(http.post(path(world), json=body), 401)["code"] == "invalid_api_key"
    with stack.http("sb-not-a-token") as http:
        assert error_of(http.post(path(world), json=body), 401)["code"] == "invalid_api_key"
    for role in ("reader", "outsider"):
        with stack.http(world.tokens[role]) as http:
            assert error_of(http.post(path(world), json=body), 403)["code"] == "forbidden"
    # a writer of another provider's org
    with stack.admin() as admin:
        other = build_world(admin)
    with stack.http(other.tokens["writer"]) as http:
        error_of(http.post(path(world), json=body), 403)
    mapping = create(stack, world, {"task": "text-to-image", "hfModel": world.models["lora2"], "providerModel": "l2"})
    for role in ("reader", "outsider"):
        with stack.http(world.tokens[role]) as http:
            error_of(http.delete(path(world, f"/{mapping['_id']}")), 403)
            error_of(http.put(path(world, f"/{mapping['_id']}/status"), json={"status": "live"}), 403)
    # a mapping id of another provider is 404 for this one, even for its own writers
    with stack.http(other.tokens["writer"]) as http:
        error_of(http.delete(f"/api/partners/{other.provider}/models/{mapping['_id']}"), 404)
        error_of(
            http.put(f"/api/partners/{other.provider}/models/{mapping['_id']}/status", json={"status": "live"}), 404
        )
    with stack.http(world.tokens["writer"]) as http:
        error_of(http.post(f"/api/partners/{unique('nobody')}/models", json=body), 404)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"task": "not-a-task", "hfModel": "{chat}", "providerModel": "p"}, "task", "not a known task"),
        ({"task": "conversational", "providerModel": "p"}, "hfModel", "required"),
        ({"task": "conversational", "hfModel": "{chat}"}, "providerModel", "required"),
        ({"task": "conversational", "hfModel": "nobody/nothing", "providerModel": "p"}, "hfModel", "catalog"),
        ({"task": "text-to-image", "hfModel": "{chat}", "providerModel": "p"}, "task", "pipeline_tag"),
        ({"task": "conversational", "hfModel": "{plain}", "providerModel": "p"}, "task", "conversational"),
        ({"task": "conversational", "hfModel": "{image}", "providerModel": "p"}, "task", "text-generation"),
        ({"task": "conversational", "hfModel": "{chat}", "providerModel": "p", "status": "on"}, "status", "live"),
        ({"type": "lora", "task": "text-to-image", "providerModel": "p"}, "type", "tag-filter"),
        (
            {"type": "tag-filter", "task": "text-to-image", "providerModel": "p", "adapterType": "lora"},
            "tags",
            "at least one",
        ),
        (
            {"type": "tag-filter", "task": "text-to-image", "tags": [], "providerModel": "p", "adapterType": "lora"},
            "tags",
            "at least one",
        ),
        (
            {
                "type": "tag-filter",
                "task": "text-to-image",
                "tags": ["a", ""],
                "providerModel": "p",
                "adapterType": "lora",
            },
            "tags",
            "empty",
        ),
        (
            {
                "type": "tag-filter",
                "task": "text-to-image",
                "tags": ["a", "a"],
                "providerModel": "p",
                "adapterType": "lora",
            },
            "tags",
            "repeat",
        ),
        (
            {"type": "tag-filter", "task": "text-to-image", "tags": ["a"], "providerModel": "p", "adapterType": "dora"},
            "adapterType",
            "lora",
        ),
        (
            {"type": "tag-filter", "task": "text-to-image", "tags": ["a"], "providerModel": "p"},
            "adapterType",
            "lora",
        ),
    ],
)
def test_validation_names_the_field(stack, world, body: dict, param: str, words: str) -> None:
    body = {k: v.format(**world.models) if isinstance(v, str) else v for k, v in body.items()}
    with stack.http(world.tokens["writer"]) as http:
        error = error_of(http.post(path(world), json=body), 400)
    assert error["param"] == param
    assert param in error["message"] or param == "task"
    assert words in error["message"]


@pytest.mark.parametrize("field", ["task", "hfModel", "providerModel", "status", "tags", "adapterType"])
def test_wrong_json_types_are_a_400_naming_the_field(stack, world, field: str) -> None:
    body = {**chat_mapping(world), field: 5 if field != "tags" else "lora"}
    with stack.http(world.tokens["writer"]) as http:
        error = error_of(http.post(path(world), json=body), 400)
    # Envoy's transcoder names the proto field (hf_model for hfModel)
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), field)
    assert field in error["message"] or snake in error["message"]


def test_conversational_accepts_tagged_chat_models(stack, world) -> None:
    create(stack, world, chat_mapping(world, providerModel=unique("c")))


def test_duplicates_are_409(stack) -> None:
    with stack.admin() as admin:
        world = build_world(admin)
    create(stack, world, chat_mapping(world))
    tag_filter = {
        "type": "tag-filter",
        "task": "text-to-image",
        "tags": ["lora", "b"],
        "providerModel": "p",
        "adapterType": "lora",
    }
    create(stack, world, tag_filter)
    with stack.http(world.tokens["writer"]) as http:
        assert error_of(http.post(path(world), json=chat_mapping(world, providerModel="other")), 409)["code"]
        same_tags = {**tag_filter, "tags": ["b", "lora"], "providerModel": "q"}
        error_of(http.post(path(world), json=same_tags), 409)
        # the same model for another task, and a superset of tags, are different mappings
        ok(http.post(path(world), json={**tag_filter, "tags": ["lora", "b", "c"]}))
        ok(
            http.post(
                path(world), json={"task": "text-generation", "hfModel": world.models["chat"], "providerModel": "t"}
            )
        )
