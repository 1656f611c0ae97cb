"""Declaring what a mapping's provider model supports, through real Envoy over REST: with the
mapping and later by PATCH (update mask), only by write members, every bad value a 4xx."""

from __future__ import annotations

import pytest
from helpers.registry import World, build_world, error_of, ok


@pytest.fixture(scope="module")
def world(stack) -> World:
    with stack.admin() as admin:
        return build_world(admin)


def mapping_path(world: World, mapping_id: str = "") -> str:
    return f"/api/partners/{world.provider}/models" + (f"/{mapping_id}" if mapping_id else "")


# The task each of the world's models may be mapped for.
TASKS = {"chat": "conversational", "vlm": "conversational", "plain": "text-generation", "image": "text-to-image",
         "lora": "text-to-image", "lora2": "text-to-image"}  # fmt: skip


def create(stack, world: World, model: str, **capabilities: object) -> dict:
    body = {"task": TASKS[model], "hfModel": world.models[model], "providerModel": f"{model}-v1", **capabilities}
    with stack.http(world.tokens["writer"]) as http:
        return ok(http.post(mapping_path(world), json=body))


def patch(stack, world: World, mapping_id: str, body: object, mask: str = "", role: str = "writer"):
    query = {"updateMask": mask} if mask else {}
    with stack.http(world.tokens[role] if role else None) as http:
        return http.patch(mapping_path(world, mapping_id), json=body, params=query)


CAPABILITY_KEYS = {"supportsTools", "supportsStructuredOutput", "contextLength"}


def declared(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key in CAPABILITY_KEYS}


def test_capabilities_are_declared_with_the_mapping_and_unknown_ones_are_left_out(stack, world) -> None:
    full = create(stack, world, "chat", supportsTools=True, supportsStructuredOutput=False, contextLength=8192)
    assert declared(full) == {"supportsTools": True, "supportsStructuredOutput": False, "contextLength": 8192}
    bare = create(stack, world, "vlm")
    assert declared(bare) == {}  # unknown: never declared
    with stack.http(world.tokens["writer"]) as http:
        http.delete(mapping_path(world, full["_id"]))
        http.delete(mapping_path(world, bare["_id"]))


def test_patch_changes_what_the_mask_names_and_a_named_absent_field_becomes_unknown(stack, world) -> None:
    mapping = create(stack, world, "plain", supportsTools=False)
    answer = ok(patch(stack, world, mapping["_id"], {"contextLength": 4096, "supportsTools": True}, "contextLength"))
    assert declared(answer) == {"supportsTools": False, "contextLength": 4096}  # only the masked field changed
    answer = ok(patch(stack, world, mapping["_id"], {"supportsStructuredOutput": True}))  # no mask: what is set
    assert declared(answer) == {"supportsTools": False, "supportsStructuredOutput": True, "contextLength": 4096}
    answer = ok(patch(stack, world, mapping["_id"], {}, "supportsTools,contextLength"))
    assert declared(answer) == {"supportsStructuredOutput": True}
    assert answer["status"] == mapping["status"] and answer["providerModel"] == mapping["providerModel"]
    with stack.http(world.tokens["writer"]) as http:
        http.delete(mapping_path(world, mapping["_id"]))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"contextLength": -1}, "contextLength"),
        ({"contextLength": 0}, "contextLength"),
        ({"contextLength": 1_000_000_001}, "contextLength"),
        ({"contextLength": 2**40}, None),  # not an int32: the transcoder refuses it
        ({"contextLength": 1.5}, None),
        ({"contextLength": "many"}, None),
        ({"supportsTools": "yes"}, None),
        ({"supportsStructuredOutput": 1}, None),
    ],
)
def test_bad_capability_values_are_400s_on_create_and_patch(stack, world, body: dict, param: str | None) -> None:
    mapping = create(stack, world, "image")
    create_body = {"task": "conversational", "hfModel": world.models["chat"], "providerModel": "x", **body}
    with stack.http(world.tokens["writer"]) as http:
        created = error_of(http.post(mapping_path(world), json=create_body), 400)
    patched = error_of(patch(stack, world, mapping["_id"], body), 400)
    for error in (created, patched):
        assert error["type"] == "invalid_request_error" and error["code"].islower()
        if param:
            assert error["param"] == param and "between 1 and 1000000000" in error["message"]
    with stack.http(world.tokens["writer"]) as http:
        assert world.models["chat"] not in ok(http.get(mapping_path(world))).get("conversational", {})  # not created
        http.delete(mapping_path(world, mapping["_id"]))


def test_the_update_mask_may_name_capabilities_only(stack, world) -> None:
    mapping = create(stack, world, "lora")
    for mask in ("status", "providerModel", "supportsTools,hfModel"):
        error = error_of(patch(stack, world, mapping["_id"], {"status": "live", "supportsTools": True}, mask), 400)
        assert error["param"] == "update_mask" and error["code"] == "invalid_request"
    answer = ok(patch(stack, world, mapping["_id"], {}, ""))
    assert declared(answer) == {} and answer["status"] == "staging"


def test_only_write_members_of_the_providers_org_declare(stack, world) -> None:
    mapping = create(stack, world, "lora2")
    for role in ("reader", "outsider"):
        error = error_of(patch(stack, world, mapping["_id"], {"supportsTools": True}, role=role), 403)
        assert error["code"] == "forbidden"
    error_of(patch(stack, world, mapping["_id"], {"supportsTools": True}, role=""), 401)
    assert declared(ok(patch(stack, world, mapping["_id"], {"contextLength": 10}, role="orgadmin"))) == {
        "contextLength": 10
    }
    with stack.admin() as admin:
        answer = ok(admin.patch(mapping_path(world, mapping["_id"]), json={"supportsTools": True}))
    assert declared(answer) == {"supportsTools": True, "contextLength": 10}
    missing = error_of(patch(stack, world, "0" * 24, {"supportsTools": True}), 404)
    assert missing["code"] == "mapping_not_found"
