"""Builds the OpenAPI 3.1 document of Switchboard's REST surface from a
FileDescriptorSet: every RPC of a service Envoy transcodes that carries a
google.api.http annotation becomes an operation.

Schemas follow proto3 JSON as Envoy's transcoder speaks it: lowerCamel JSON
names out, int64 as a decimal string out (a string or an integer in), enums
by name, well-known types in their JSON forms. Responses are printed with
always_print_primitive_fields, so every field without presence is required
in a response schema. HttpBody routes (the OpenAI-style inference API) are
described by hand below with the fields the Router reads; they pass
everything else through, hence additionalProperties.
"""

from __future__ import annotations

import re
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field

from edge.descriptors import Descriptors, HttpRule
from services.common import params, task_formats
from services.router import completions_api, messages_api, responses_api

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/"
ERROR_REF = "#/components/responses/Error"
INT_RANGES = {
    Field.TYPE_INT32: (-(2**31), 2**31 - 1),
    Field.TYPE_SINT32: (-(2**31), 2**31 - 1),
    Field.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    Field.TYPE_UINT32: (0, 2**32 - 1),
    Field.TYPE_FIXED32: (0, 2**32 - 1),
    Field.TYPE_INT64: (-(2**63), 2**63 - 1),
    Field.TYPE_SINT64: (-(2**63), 2**63 - 1),
    Field.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    Field.TYPE_UINT64: (0, 2**64 - 1),
    Field.TYPE_FIXED64: (0, 2**64 - 1),
}
INT64_TYPES = {Field.TYPE_INT64, Field.TYPE_SINT64, Field.TYPE_SFIXED64, Field.TYPE_UINT64, Field.TYPE_FIXED64}
NUMBER: Schema = {"oneOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
SCALARS: dict[int, Schema] = {
    Field.TYPE_DOUBLE: NUMBER,
    Field.TYPE_FLOAT: NUMBER,
    Field.TYPE_BOOL: {"type": "boolean"},
    Field.TYPE_STRING: {"type": "string"},
    Field.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    ".google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamel field paths.",
        "pattern": r"^([a-zA-Z_][a-zA-Z0-9_.]*(,[a-zA-Z_][a-zA-Z0-9_.]*)*)?$",
    },
    ".google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.Value": {},
    ".google.protobuf.Any": {"type": "object", "required": ["@type"], "additionalProperties": True},
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.DoubleValue": {"oneOf": [NUMBER, {"type": "null"}]},
    ".google.protobuf.FloatValue": {"oneOf": [NUMBER, {"type": "null"}]},
}
SNAKE_CASE = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
ERROR_BODY: Schema = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "description": "OpenAI's error shape.",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "pattern": SNAKE_CASE},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"], "pattern": SNAKE_CASE},
            },
        }
    },
}


def behaviors(field: descriptor_pb2.FieldDescriptorProto) -> list[int]:
    return list(field.options.Extensions[field_behavior_pb2.field_behavior])


def has_presence(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether the transcoder may leave the field out of an answer."""
    singular = field.label != Field.LABEL_REPEATED
    return singular and (field.type == Field.TYPE_MESSAGE or field.HasField("oneof_index"))


class SchemaBuilder:
    """Component schemas, two per message: the answer form and the request form."""

    def __init__(self, protos: Descriptors) -> None:
        self.protos = protos
        self.components: dict[str, Schema] = {}

    def ref(self, type_name: str, *, response: bool) -> Schema:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        name = type_name.lstrip(".").replace(".", "_") + ("" if response else "_Input")
        if name not in self.components:
            self.components[name] = {}  # reserves the name: messages may be recursive
            self.components[name] = self.message(type_name, response=response)
        return {"$ref": REF + name}

    def message(self, type_name: str, *, response: bool, skip: frozenset[str] = frozenset()) -> Schema:
        """An object schema; skip names fields bound elsewhere (path parameters)."""
        message = self.protos.message(type_name)
        properties, required = {}, []
        for field in message.field:
            if field.name in skip or (not response and field_behavior_pb2.OUTPUT_ONLY in behaviors(field)):
                continue
            properties[field.json_name] = self.field(type_name, field, response=response)
            if response and field_behavior_pb2.INPUT_ONLY in behaviors(field):
                properties[field.json_name] = never_returned(properties[field.json_name])
            needed = not has_presence(field) if response else field_behavior_pb2.REQUIRED in behaviors(field)
            if needed:
                required.append(field.json_name)
        schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        if self.protos.comment(type_name):
            schema["description"] = self.protos.comment(type_name)
        return schema

    def field(self, scope: str, field: descriptor_pb2.FieldDescriptorProto, *, response: bool) -> Schema:
        entry = self.map_entry(field)
        if entry is not None:
            schema = {"type": "object", "additionalProperties": self.single(entry.field[1], response=response)}
        elif field.label == Field.LABEL_REPEATED:
            schema = {"type": "array", "items": self.single(field, response=response)}
        else:
            schema = self.single(field, response=response)
        description = self.protos.comment(f"{scope}.{field.name}")
        if description:
            schema = {**schema, "description": description} if "$ref" not in schema else schema
        return schema

    def map_entry(self, field: descriptor_pb2.FieldDescriptorProto) -> descriptor_pb2.DescriptorProto | None:
        if field.type != Field.TYPE_MESSAGE or field.label != Field.LABEL_REPEATED:
            return None
        entry = self.protos.message(field.type_name)
        return entry if entry.options.map_entry else None

    def single(self, field: descriptor_pb2.FieldDescriptorProto, *, response: bool) -> Schema:
        """The schema of one value of the field's type."""
        if field.type == Field.TYPE_MESSAGE:
            return self.ref(field.type_name, response=response)
        if field.type == Field.TYPE_ENUM:
            names = [value.name for value in self.protos.enum(field.type_name).value]
            return {"enum": names} if response else {"oneOf": [{"enum": names}, {"type": "integer"}]}
        if field.type in INT_RANGES:
            return integer(*INT_RANGES[field.type], as_string=field.type in INT64_TYPES, response=response)
        return dict(SCALARS[field.type])


def never_returned(schema: Schema) -> Schema:
    """An input-only field in an answer: the transcoder prints every field, so
    a write-only secret appears as its empty default, never with a value."""
    empty = {"string": {"const": ""}, "array": {"maxItems": 0}, "boolean": {"const": False}}
    return {**schema, **empty.get(schema.get("type"), {}), "description": "Write-only: always empty in answers."}


def integer(low: int, high: int, *, as_string: bool, response: bool) -> Schema:
    """proto3 JSON integers: 64-bit ones print as strings; both forms parse."""
    number = {"type": "integer", "minimum": low, "maximum": high}
    text = {"type": "string", "pattern": r"^-?[0-9]+$"}
    if response:
        return text if as_string else number
    return {"oneOf": [number, text]}


# The HttpBody routes: the OpenAI request fields the Router reads, with the
# ranges it enforces (services/common/params.py), everything else passed on.
def _text(most: int, *, empty: bool = True) -> Schema:
    return {"type": "string", "maxLength": most, **({} if empty else {"minLength": 1, "pattern": r"\S"})}


_PROVIDER_FIELD = {
    "type": "string",
    "maxLength": params.MAX_PROVIDERS_PER_REQUEST * (params.MAX_PROVIDER_ID_LENGTH + 1),
    "description": f"Provider ids separated by spaces (at most {params.MAX_PROVIDERS_PER_REQUEST}), "
    "most preferred first.",
}
_COMMON_FIELDS: Schema = {
    "model": {
        **_text(params.MAX_MODEL_ID_LENGTH, empty=False),
        "description": "A hub model id, optionally "
        'followed by ":<provider>" or a policy (":fastest", ":cheapest", ":preferred").',
    },
    "provider": _PROVIDER_FIELD,
}
_TOKENS = {"type": "integer", "minimum": 1, "maximum": params.MAX_OUTPUT_TOKENS}
CHAT_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI chat completion request; fields not listed pass through to the provider.",
    "required": sorted(params.REQUIRED_CHAT),
    "additionalProperties": True,
    "properties": {
        **_COMMON_FIELDS,
        "messages": {"type": "array", "minItems": 1, "maxItems": params.MAX_MESSAGES, "items": {"type": "object"}},
        "stream": {"type": "boolean", "description": "Answer with text/event-stream chunks."},
        "stream_options": {"type": "object"},
        "max_tokens": _TOKENS,
        "max_completion_tokens": _TOKENS,
        "n": {"type": "integer", "minimum": 1, "maximum": params.MAX_CHAT_CHOICES},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "seed": {"type": "integer", "minimum": -(2**63), "maximum": params.INT64_MAX},
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "logit_bias": {"type": "object"},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "maxItems": params.MAX_STOP_SEQUENCES, "items": {"type": "string"}},
            ]
        },
        "tools": {"type": "array", "maxItems": params.MAX_TOOLS, "items": {"type": "object"}},
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": {"type": "object"},
        "reasoning_effort": _text(32),
        "user": _text(256),
        "metadata": {"type": "object"},
    },
}
IMAGES_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI image generation request; fields not listed pass through to the provider.",
    "required": sorted(params.REQUIRED_IMAGES),
    "additionalProperties": True,
    "properties": {
        **_COMMON_FIELDS,
        "prompt": _text(params.MAX_PROMPT_CHARACTERS, empty=False),
        "n": {"type": "integer", "minimum": 1, "maximum": params.MAX_IMAGES},
        "size": {**_text(32), "description": 'WIDTHxHEIGHT, e.g. "1024x1024".'},
        "response_format": {"enum": ["url", "b64_json"]},
    },
}
TEXT_TO_IMAGE_BODY: Schema = {
    "type": "object",
    "description": "A hub task request (docs/tasks.md): for text-to-image, inputs is the prompt.",
    "required": ["inputs"],
    "additionalProperties": True,
    "properties": {
        "inputs": {
            "type": ["string", "array", "object"],
            "description": "The prompt or text, a list of texts, an object (question-answering, sentence-similarity), "
            "or an audio or image file in base64.",
        },
        "parameters": {
            "type": "object",
            "additionalProperties": True,
            "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}, "seed": {"type": "integer"}},
        },
    },
}
_BYTES: Schema = {"type": "string", "format": "binary"}
# A hub task call: JSON, or an audio or image file as the raw body.
HUB_TASK_BODY: dict[str, Schema] = {
    "application/json": TEXT_TO_IMAGE_BODY,
    **dict.fromkeys(("audio/*", "image/*", "application/octet-stream"), _BYTES),
}
HUB_TASK_ANSWERS: dict[str, Schema] = {
    "application/json": {"description": "The task's JSON answer (docs/tasks.md)."},
    **{kind: {"type": "string", "contentMediaType": kind} for kind in ("image/png", "audio/wav", "video/mp4")},
}
EMBEDDINGS_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI embeddings request.",
    "required": ["input", "model"],
    "additionalProperties": True,
    "properties": {
        **_COMMON_FIELDS,
        "input": {
            "oneOf": [
                _text(task_formats.MAX_INPUT_CHARS, empty=False),
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": task_formats.MAX_EMBEDDING_INPUTS,
                    "items": _text(task_formats.MAX_INPUT_CHARS, empty=False),
                },
            ]
        },
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1, "maximum": task_formats.MAX_DIMENSIONS},
        "user": _text(256),
    },
}
EMBEDDINGS_ANSWER: Schema = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "additionalProperties": True,
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"type": "object", "required": ["embedding", "index"]}},
        "model": {"type": "string"},
        "usage": {"type": "object"},
    },
}
_NUMBER_0_2 = {"type": "number", "minimum": 0, "maximum": 2}
_TOP_P = {"type": "number", "minimum": 0, "maximum": 1}
_TRANSLATED_COMMON: Schema = {
    **_COMMON_FIELDS,
    "max_price": {"type": "object", "description": "Switchboard's price ceiling (USD), never sent on."},
    "stream": {"type": "boolean", "description": "Answer with the API's server-sent events."},
}


def _refused(fields: dict[str, str]) -> Schema:
    """Known fields Switchboard does not honour: accepted only when they ask for nothing."""
    return {name: {"description": f"Refused unless null, false or empty: {why}."} for name, why in fields.items()}


RESPONSES_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI Responses API request, translated to a chat completion; unknown fields are a 400.",
    "required": list(responses_api.REQUIRED),
    "additionalProperties": False,
    "properties": {
        **_TRANSLATED_COMMON,
        "input": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "maxItems": params.MAX_MESSAGES, "items": {"type": "object"}},
            ]
        },
        "instructions": {"type": ["string", "null"]},
        "max_output_tokens": _TOKENS,
        "temperature": _NUMBER_0_2,
        "top_p": _TOP_P,
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "tools": {"type": "array", "maxItems": params.MAX_TOOLS, "items": {"type": "object"}},
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": {"type": "boolean"},
        "stream_options": {"type": "object"},
        "metadata": {"type": "object"},
        "text": {"type": "object"},
        "reasoning": {"type": "object"},
        "user": _text(256),
        "safety_identifier": _text(256),
        "service_tier": _text(32),
        "truncation": {"enum": ["disabled"]},
        "prompt_cache_key": _text(256),
        "include": {
            "type": "array",
            "maxItems": 32,
            "items": {"type": "string"},
            "description": "Accepted; no extra output.",
        },
        "max_tool_calls": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "prompt_cache_retention": _text(32),
        **_refused(responses_api.REFUSED),
    },
}
MESSAGES_BODY: Schema = {
    "type": "object",
    "description": "An Anthropic Messages API request, translated to a chat completion; unknown fields are a 400.",
    "required": list(messages_api.REQUIRED),
    "additionalProperties": False,
    "properties": {
        **_TRANSLATED_COMMON,
        "max_tokens": _TOKENS,
        "messages": {"type": "array", "minItems": 1, "maxItems": params.MAX_MESSAGES, "items": {"type": "object"}},
        "system": {"type": ["string", "array"]},
        "stop_sequences": {"type": "array", "maxItems": params.MAX_STOP_SEQUENCES, "items": {"type": "string"}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": _TOP_P,
        "top_k": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "tools": {"type": "array", "maxItems": params.MAX_TOOLS, "items": {"type": "object"}},
        "tool_choice": {"type": "object"},
        "metadata": {"type": "object"},
        "thinking": {"type": "object", "description": "Accepted; no thinking blocks are produced."},
        "service_tier": _text(32),
        "context_management": {"type": "object", "description": "Accepted; the context is sent as it is."},
        **_refused(messages_api.REFUSED),
    },
}
COUNT_TOKENS_BODY: Schema = {
    **MESSAGES_BODY,
    "description": "An Anthropic Messages API request to count the input tokens of (max_tokens not needed).",
    "required": list(messages_api.COUNT_REQUIRED),
}
COUNT_TOKENS_ANSWER: Schema = {
    "type": "object",
    "required": ["input_tokens"],
    "additionalProperties": False,
    "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
}
COMPLETIONS_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI legacy completions request, translated to a chat completion; unknown fields are a 400.",
    "required": list(completions_api.REQUIRED),
    "additionalProperties": False,
    "properties": {
        **{name: CHAT_BODY["properties"][name] for name in completions_api.PASSED_ON},
        **_TRANSLATED_COMMON,
        "prompt": {
            "oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string"}}]
        },
        "stream_options": {"type": "object"},
        "best_of": {"enum": [1, None]},
        **_refused(completions_api.REFUSED),
    },
}
RESPONSE_ANSWER: Schema = {
    "type": "object",
    "description": "A response object (nothing stored: store is false).",
    "required": ["id", "object", "status", "output", "model"],
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "status": {"enum": ["completed", "incomplete"]},
        "output": {"type": "array", "items": {"type": "object"}},
        "model": {"type": "string"},
        "usage": {"type": "object"},
    },
}
TRANSCRIPTION_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI transcription upload.",
    "required": ["file", "model"],
    "properties": {
        "file": {**_BYTES, "description": f"At most {task_formats.MAX_AUDIO_BYTES:,} bytes."},
        "model": _COMMON_FIELDS["model"],
        "response_format": {"enum": list(task_formats.TRANSCRIPTION_FORMATS)},
        "language": _text(16),
        "prompt": _text(task_formats.MAX_INPUT_CHARS),
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
SPEECH_BODY: Schema = {
    "type": "object",
    "description": "An OpenAI speech request.",
    "required": ["input", "model"],
    "additionalProperties": True,
    "properties": {
        **_COMMON_FIELDS,
        "input": _text(task_formats.MAX_SPEECH_CHARS, empty=False),
        "voice": _text(256, empty=False),
        "response_format": {"enum": list(task_formats.SPEECH_FORMATS)},
        "speed": {"type": "number", "minimum": 0.25, "maximum": 4},
        "instructions": _text(task_formats.MAX_SPEECH_CHARS),
    },
}
MESSAGE_ANSWER: Schema = {
    "type": "object",
    "description": "An Anthropic message object.",
    "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"type": "array", "items": {"type": "object"}},
        "model": {"type": "string"},
        "stop_reason": {"enum": ["end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence"]},
        "usage": {"type": "object"},
    },
}
COMPLETION_ANSWER: Schema = {
    "type": "object",
    "description": "A text_completion.",
    "required": ["id", "object", "choices"],
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "text_completion"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}
ANTHROPIC_ERROR_BODY: Schema = {
    "type": "object",
    "description": "Anthropic's error shape (on Anthropic's Messages API route).",
    "required": ["type", "error"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "additionalProperties": False,
            "properties": {"type": {"type": "string", "pattern": SNAKE_CASE}, "message": {"type": "string"}},
        },
    },
}
ANTHROPIC_ERROR_REF = "#/components/responses/AnthropicError"
# RPCs whose errors are in Anthropic's shape.
ANTHROPIC_RPCS = {
    "switchboard.router.v1.RouterService.CreateMessage",
    "switchboard.router.v1.RouterService.CountMessageTokens",
}
_EVENTS = {"type": "string", "description": "Server-sent events."}
CHAT_ANSWER: Schema = {
    "type": "object",
    "description": "The provider's chat completion, with the hub model id as model.",
    "required": ["choices"],
    "additionalProperties": True,
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}
IMAGES_ANSWER: Schema = {
    "type": "object",
    "required": ["data"],
    "additionalProperties": True,
    "properties": {
        "created": {"type": "integer"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"url": {"type": "string"}, "b64_json": {"type": "string"}},
                "additionalProperties": True,
            },
        },
    },
}
# The partners listing: task -> (hub model id or "tag-filter=<tags>") -> entry.
MAPPING_TABLE: Schema = {
    "type": "object",
    "description": "The provider's mappings grouped by task, keyed by hub model id or by "
    '"tag-filter=<sorted tags joined by commas>".',
    "additionalProperties": {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["_id", "providerId", "status"],
            "additionalProperties": False,
            "properties": {
                "_id": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                "providerId": {"type": "string"},
                "status": {"enum": ["live", "staging"]},
                "adapterType": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}
PROVIDERS_LIST: Schema = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["id", "url", "tasks"],
        "additionalProperties": False,
        "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "tasks": {"type": "array"}},
    },
}
# RPC -> (request body schema or {media type: schema}, {media type: response schema}) for HttpBody routes.
HTTP_BODY_ROUTES: dict[str, tuple[Schema, dict[str, Schema]]] = {
    "switchboard.router.v1.RouterService.CreateChatCompletion": (
        CHAT_BODY,
        {"application/json": CHAT_ANSWER, "text/event-stream": {"type": "string"}},
    ),
    "switchboard.router.v1.RouterService.CreateResponse": (
        RESPONSES_BODY,
        {"application/json": RESPONSE_ANSWER, "text/event-stream": _EVENTS},
    ),
    "switchboard.router.v1.RouterService.CreateMessage": (
        MESSAGES_BODY,
        {"application/json": MESSAGE_ANSWER, "text/event-stream": _EVENTS},
    ),
    "switchboard.router.v1.RouterService.CountMessageTokens": (
        COUNT_TOKENS_BODY,
        {"application/json": COUNT_TOKENS_ANSWER},
    ),
    "switchboard.router.v1.RouterService.CreateCompletion": (
        COMPLETIONS_BODY,
        {"application/json": COMPLETION_ANSWER, "text/event-stream": _EVENTS},
    ),
    "switchboard.router.v1.RouterService.CreateImage": (IMAGES_BODY, {"application/json": IMAGES_ANSWER}),
    "switchboard.router.v1.RouterService.TextToImage": (HUB_TASK_BODY, HUB_TASK_ANSWERS),
    "switchboard.router.v1.RouterService.CreateEmbedding": (EMBEDDINGS_BODY, {"application/json": EMBEDDINGS_ANSWER}),
    "switchboard.router.v1.RouterService.CreateTranscription": (
        {"multipart/form-data": TRANSCRIPTION_BODY},
        {
            "application/json": {"type": "object", "required": ["text"], "additionalProperties": True},
            "text/plain": {"type": "string"},
        },
    ),
    "switchboard.router.v1.RouterService.CreateSpeech": (
        SPEECH_BODY,
        {kind: {"type": "string", "contentMediaType": kind} for kind in task_formats.SPEECH_FORMATS.values()},
    ),
}
# Answers of a bare Struct or ListValue, in the shape the RPC documents.
SHAPED_ANSWERS: dict[str, Schema] = {
    "switchboard.registry.v1.RegistryService.GetProviderMappingTable": MAPPING_TABLE,
    "switchboard.router.v1.RouterService.ListProviders": PROVIDERS_LIST,
}
# Answered without a token.
PUBLIC_RPCS = {"switchboard.registry.v1.RegistryService.GetProviderMappingTable"}
HTTP_BODY = ".google.api.HttpBody"
TEMPLATE_VARIABLE = re.compile(r"\{([a-zA-Z0-9_.]+)(=[^}]*)?\}")


class DocumentBuilder:
    """The paths of every annotated RPC of the public services."""

    def __init__(self, protos: Descriptors) -> None:
        self.protos = protos
        self.schemas = SchemaBuilder(protos)
        self.paths: dict[str, dict[str, Schema]] = {}

    def add_rule(self, rule: HttpRule) -> None:
        service = rule.service.rpartition(".")[2]
        operation_id = rule.method if rule.index == 0 else f"{rule.method}{rule.index + 1}"
        path, variables = openapi_path(rule.template)
        operation = self.operation(rule, variables)
        operation["operationId"] = f"{service}_{operation_id}"
        operation["tags"] = [service]
        self.paths.setdefault(path, {})[rule.verb.lower()] = operation

    def operation(self, rule: HttpRule, variables: list[str]) -> Schema:
        rpc, body = rule.rpc, rule.body
        # Type names as fields give them (with the leading dot), as WELL_KNOWN's are.
        input_type, output_type = f".{rule.request}", f".{rule.response}"
        error = ANTHROPIC_ERROR_REF if rpc in ANTHROPIC_RPCS else ERROR_REF
        operation: Schema = {
            "summary": self.protos.comment(rpc).split(". ")[0].rstrip("."),
            "description": self.protos.comment(rpc),
            "parameters": [self.path_parameter(input_type, name) for name in variables],
            "responses": {**self.responses(rpc, output_type), "4XX": {"$ref": error}, "5XX": {"$ref": error}},
        }
        if rpc in PUBLIC_RPCS:
            operation["security"] = [{}, {"bearerAuth": []}]
        if rpc in HTTP_BODY_ROUTES:
            operation["requestBody"] = request_body(HTTP_BODY_ROUTES[rpc][0])
            return operation
        bound = {name.split(".")[0] for name in variables}
        if body == "*":
            schema = self.schemas.message(input_type, response=False, skip=frozenset(bound))
            operation["requestBody"] = json_body(schema)
            return operation
        if body:
            field = self.protos.field(input_type, body)
            schema = self.schemas.single(field, response=False)
            operation["requestBody"] = json_body(schema)
            bound.add(body)
        operation["parameters"] += self.query_parameters(input_type, "", bound)
        return operation

    def responses(self, rpc: str, output_type: str) -> Schema:
        if rpc in HTTP_BODY_ROUTES:
            media = HTTP_BODY_ROUTES[rpc][1]
            content = {kind: {"schema": schema} for kind, schema in media.items()}
        else:
            schema = SHAPED_ANSWERS.get(rpc) or self.schemas.ref(output_type, response=True)
            content = {"application/json": {"schema": schema}}
        return {"200": {"description": "Success.", "content": content}}

    def field_of(self, type_name: str, dotted: str) -> tuple[str, descriptor_pb2.FieldDescriptorProto]:
        """The field a dotted path names, with the message that declares it."""
        scope, field = type_name, None
        for part in dotted.split("."):
            if field is not None:
                scope = field.type_name
            field = self.protos.field(scope, part)
        return scope, field

    def path_parameter(self, input_type: str, dotted: str) -> Schema:
        scope, field = self.field_of(input_type, dotted)
        schema = self.schemas.single(field, response=False)
        description = self.protos.comment(f"{scope}.{field.name}")
        return {"name": dotted, "in": "path", "required": True, "schema": schema, "description": description}

    def query_parameters(self, type_name: str, prefix: str, bound: set[str], depth: int = 0) -> list[Schema]:
        """Every leaf field not bound elsewhere, as the transcoder reads it from the query string."""
        found = []
        for field in self.protos.message(type_name).field:
            name = f"{prefix}{field.name}"
            if name in bound or field_behavior_pb2.OUTPUT_ONLY in behaviors(field):
                continue
            nested = field.type == Field.TYPE_MESSAGE and field.type_name not in WELL_KNOWN
            if nested and (depth >= 3 or self.schemas.map_entry(field) is not None):
                continue
            if nested:
                found += self.query_parameters(field.type_name, f"{name}.", bound, depth + 1)
                continue
            schema = self.schemas.field(type_name, field, response=False)
            parameter = {"name": name, "in": "query", "required": False, "schema": schema}
            if field.label == Field.LABEL_REPEATED:
                parameter.update(style="form", explode=True)
            found.append(parameter)
        return found


def json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def request_body(schema: Schema) -> Schema:
    """A JSON body's schema, or {media type: schema} for a body of other (or several) types."""
    if "type" in schema:
        return json_body(schema)
    return {"required": True, "content": {kind: {"schema": media} for kind, media in schema.items()}}


def openapi_path(template: str) -> tuple[str, list[str]]:
    """'/v1/models/{id=**}' -> ('/v1/models/{id}', ['id'])."""
    variables = [match.group(1) for match in TEMPLATE_VARIABLE.finditer(template)]
    return TEMPLATE_VARIABLE.sub(lambda match: "{" + match.group(1) + "}", template), variables


def build(files: descriptor_pb2.FileDescriptorSet) -> Schema:
    """The OpenAPI 3.1 document of every transcoded service in files."""
    protos = Descriptors(files)
    document = DocumentBuilder(protos)
    for rule in protos.rules:
        document.add_rule(rule)
    public = {rule.service for rule in protos.rules}
    tags = [
        {"name": service.name, "description": protos.comment(full_name)}
        for full_name, service in protos.services
        if full_name in public
    ]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Switchboard",
            "version": "1",
            "description": "An inference-provider router: one OpenAI-compatible endpoint in front of many "
            "providers. Generated from protos/ by scripts/generate.py; do not edit.",
        },
        "tags": tags,
        "security": [{"bearerAuth": []}],
        "paths": document.paths,
        "components": {
            "schemas": {**document.schemas.components, "Error": ERROR_BODY, "AnthropicError": ANTHROPIC_ERROR_BODY},
            "responses": {
                "Error": {
                    "description": "An error in OpenAI's shape.",
                    "content": {"application/json": {"schema": {"$ref": REF + "Error"}}},
                },
                "AnthropicError": {
                    "description": "An error in Anthropic's shape.",
                    "content": {"application/json": {"schema": {"$ref": REF + "AnthropicError"}}},
                },
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "A user token or the admin token."}
            },
        },
    }
