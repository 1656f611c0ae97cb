"""gen/openapi.json: a valid OpenAPI 3.1 document that covers every annotated
RPC of every service Envoy transcodes, in proto3 JSON's types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from edge import openapi
from edge.descriptors import bindings
from edge.envoy import PUBLIC_SERVICES
from services.common.errors import ANTHROPIC_PATH_REGEX

ROOT = Path(__file__).resolve().parent.parent

DESCRIPTORS = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "switchboard.pb").read_bytes())
DOCUMENT = json.loads((ROOT / "gen" / "openapi.json").read_text())


def operation(path: str, method: str) -> dict:
    return DOCUMENT["paths"][path][method]


def schema(name: str) -> dict:
    return DOCUMENT["components"]["schemas"][name]


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    validate(DOCUMENT)


def test_the_committed_document_is_what_the_descriptors_build() -> None:
    assert json.loads(json.dumps(openapi.build(DESCRIPTORS), sort_keys=True)) == DOCUMENT


def test_every_binding_of_every_transcoded_rpc_is_an_operation() -> None:
    expected = set()
    for file in DESCRIPTORS.file:
        for service in file.service:
            if f"{file.package}.{service.name}" not in PUBLIC_SERVICES:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                expected |= {(verb, openapi.openapi_path(path)[0]) for verb, path, _ in bindings(rule)}
    documented = {(verb, path) for path, operations in DOCUMENT["paths"].items() for verb in operations}
    assert documented == expected
    assert len(documented) == 74


@pytest.mark.parametrize(
    ("template", "path", "variables"),
    [
        ("/v1/models/{id=**}", "/v1/models/{id}", ["id"]),
        (
            "/api/partners/{provider}/models/{mapping_id}",
            "/api/partners/{provider}/models/{mapping_id}",
            ["provider", "mapping_id"],
        ),
        ("/admin/v1/models:batchUpsert", "/admin/v1/models:batchUpsert", []),
        ("/v1/{name=projects/*/things/*}:get", "/v1/{name}:get", ["name"]),
    ],
)
def test_path_templates_become_openapi_paths(template: str, path: str, variables: list[str]) -> None:
    assert openapi.openapi_path(template) == (path, variables)


def test_int64_is_a_string_out_and_a_string_or_integer_in() -> None:
    price_out = schema("switchboard_registry_v1_Price")["properties"]["inputTokenNanoUsd"]
    assert price_out["type"] == "string"
    price_in = schema("switchboard_registry_v1_Price_Input")["properties"]["inputTokenNanoUsd"]
    assert [alternative["type"] for alternative in price_in["oneOf"]] == ["integer", "string"]
    assert price_in["oneOf"][0]["maximum"] == 2**63 - 1


def test_answers_require_every_field_the_transcoder_prints() -> None:
    model = schema("switchboard_router_v1_Model")
    assert set(model["required"]) == {"id", "object", "created", "owned_by", "pipeline_tag", "providers"}
    assert model["additionalProperties"] is False
    assert model["properties"]["created"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 2**32 - 1,
        "description": "Unix seconds when the model entered the catalog (uint32, so that JSON shows a number).",
    }
    # Fields with presence (a message, proto3 optional) are printed only when set.
    provider = schema("switchboard_router_v1_ModelProvider")
    optional = {
        "pricing",
        "context_length",
        "supports_tools",
        "supports_structured_output",
        "status_reason",
        "unit_price",
    }
    assert set(provider["properties"]) - set(provider["required"]) == optional


def test_write_only_secrets_are_documented_as_always_empty_in_answers() -> None:
    provider = schema("switchboard_registry_v1_Provider")["properties"]
    assert provider["apiKey"]["const"] == ""
    assert provider["billingAuthorization"]["const"] == ""
    assert "hasApiKey" not in schema("switchboard_registry_v1_Provider_Input")["properties"]


def test_request_bodies_follow_the_body_rule() -> None:
    # body: "*" -> the request message without the path's fields
    status = operation("/api/partners/{provider}/models/{mapping_id}/status", "put")
    body = status["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"status"}
    assert body["required"] == ["status"]
    # body: "provider" -> that field's message; the rest of the request in the query
    patch = operation("/admin/v1/providers/{provider_id}", "patch")
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/switchboard_registry_v1_Provider_Input"
    }
    assert [(p["name"], p["in"]) for p in patch["parameters"]] == [("provider_id", "path"), ("update_mask", "query")]
    assert patch["parameters"][1]["schema"]["type"] == "string"


def test_well_known_types_have_their_json_forms() -> None:
    assert schema("switchboard_registry_v1_Org")["properties"]["createTime"]["format"] == "date-time"
    deleted = operation("/admin/v1/providers/{provider}", "delete")["responses"]["200"]
    assert deleted["content"]["application/json"]["schema"] == {"type": "object", "additionalProperties": False}


def test_errors_are_documented_in_openai_shape_with_snake_case_codes() -> None:
    """OpenAI's shape everywhere but on Anthropic's Messages API (plain and per provider)."""
    for path, operations in DOCUMENT["paths"].items():
        shape = "AnthropicError" if re.fullmatch(ANTHROPIC_PATH_REGEX, path) else "Error"
        for documented in operations.values():
            assert (
                documented["responses"]["4XX"]
                == documented["responses"]["5XX"]
                == {"$ref": f"#/components/responses/{shape}"}
            )
    error = schema("Error")["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
    assert error["properties"]["code"]["pattern"] == openapi.SNAKE_CASE


def test_only_the_partners_listing_is_public_and_bearer_is_the_scheme() -> None:
    assert DOCUMENT["security"] == [{"bearerAuth": []}]
    assert DOCUMENT["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    public = [
        (verb, path)
        for path, operations in DOCUMENT["paths"].items()
        for verb, documented in operations.items()
        if "security" in documented
    ]
    assert public == [("get", "/api/partners/{provider}/models")]
    listing = operation("/api/partners/{provider}/models", "get")["responses"]["200"]["content"]["application/json"]
    entry = listing["schema"]["additionalProperties"]["additionalProperties"]
    assert entry["required"] == ["_id", "providerId", "status"]


def test_inference_routes_describe_the_fields_the_router_reads_and_pass_the_rest() -> None:
    chat = operation("/v1/chat/completions", "post")
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is True
    assert body["required"] == ["messages", "model"]
    assert body["properties"]["max_tokens"]["maximum"] == 1_000_000
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    images = operation("/{provider}/v1/images/generations", "post")
    assert images["requestBody"]["content"]["application/json"]["schema"]["properties"]["response_format"] == {
        "enum": ["url", "b64_json"]
    }
    assert [p["name"] for p in images["parameters"]] == ["provider"]
    hub = operation("/models/{model}", "post")
    assert set(hub["responses"]["200"]["content"]) == {"application/json", "image/png", "audio/wav", "video/mp4"}
    assert set(hub["requestBody"]["content"]) == {"application/json", "audio/*", "image/*", "application/octet-stream"}
    embeddings = operation("/{provider}/v1/embeddings", "post")["requestBody"]["content"]["application/json"]
    assert embeddings["schema"]["properties"]["input"]["oneOf"][1]["maxItems"] == 2048
    assert set(operation("/v1/audio/transcriptions", "post")["requestBody"]["content"]) == {"multipart/form-data"}


def test_descriptions_come_from_the_proto_comments() -> None:
    listing = operation("/v1/models", "get")
    assert listing["summary"] == "The models the caller can use, in OpenAI's list shape"
    assert schema("switchboard_router_v1_Model")["description"] == "A model in OpenAI's shape, with its providers."
