"""Renders envoy/envoy.yaml.template for a set of service addresses.

The REST surface is read from the descriptor set (gen/switchboard.pb): every
google.api.http rule becomes one Envoy route (method + path regex) whose Lua
script checks what the transcoder cannot: unknown and missing JSON fields, and
path parameters given again in the query string. Routes, mappers and Lua tables
are rendered as JSON, which is YAML too.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from edge import limits as edge
from edge.descriptors import FREE_MESSAGES, Descriptors, HttpRule, descriptors
from services.common import errors
from services.common.errors import ANTHROPIC_PATH_REGEX, anthropic_face
from services.common.surface import ANSWER_METADATA_KEY, DESCRIPTOR, PUBLIC_SERVICES
from services.common.telemetry import DEFAULT_SPAN_FLUSH_MS, DEFAULT_TRACE_RATIO

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "envoy" / "envoy.yaml.template"
LUA_FILE = ROOT / "envoy" / "errors.lua"
ANSWERS_LUA_FILE = ROOT / "envoy" / "answers.lua"  # the Router's typed answer metadata as REST headers
ERROR_FACES_FILE = ROOT / "gen" / "error_faces.lua"  # written by scripts/generate.py from error_faces_lua()
STRICT_LUA_FILE = ROOT / "envoy" / "strict.lua"
GATE_LUA_FILE = ROOT / "envoy" / "gate.lua"
OPENAPI = ROOT / "gen" / "openapi.json"  # written by scripts/generate.py
# Served until scripts/generate.py writes the document.

LUA_FILTER = "envoy.filters.http.lua"
# Documented caps at the boundary: a longer path is a 414, larger headers a 431.
MAX_PATH_BYTES = 4096
MAX_REQUEST_HEADERS_KB = 32
# What the transcoder may buffer of one unary answer before it gives up.
MAX_RESPONSE_BODY_BYTES = 32 * 1024 * 1024
MAX_DIRECT_RESPONSE_BYTES = 4 * 1024 * 1024

# Server reflection (both versions) and health on the public port: one service answers
# them for the whole public surface (see services/common/server.py, public_catalog).
DISCOVERY_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.health.v1.Health",
)
DISCOVERY_CLUSTER = "router"
# Services whose REST routes serve callers without a token in anonymous mode.
ANONYMOUS_SERVICES = frozenset({"switchboard.router.v1.RouterService"})

_SCALAR_MESSAGES_PREFIX = "google.protobuf."  # Timestamp, Duration, FieldMask, wrappers: JSON scalars
_HTTP_BODY = "google.api.HttpBody"

# Local replies (Envoy's own errors, transcoder rejections) in OpenAI's shape:
# status -> (type, snake_case code). A reply the Lua filter built is left alone.
_LOCAL_REPLIES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("not_found_error", "route_not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "body_too_large"),
    414: ("invalid_request_error", "uri_too_long"),
    415: ("invalid_request_error", "unsupported_content_type"),
    426: ("invalid_request_error", "http_version_not_supported"),
    429: ("rate_limit_error", "rate_limited"),
    431: ("invalid_request_error", "headers_too_large"),
    500: ("api_error", "internal_error"),
    502: ("upstream_error", "upstream_error"),
    503: ("service_unavailable_error", "upstream_unavailable"),
    504: ("timeout_error", "upstream_timeout"),
}
# Transcoder rejections: a request body or query that is not valid for the message.
_TRANSCODER_400 = ("invalid_request_error", "invalid_json")
_TRANSCODER_500 = ("api_error", "response_too_large")
# Envoy's own replies whose status misnames them: (their CEL condition, status, type, code, message). Envoy's
# HTTP/1 codec answers a Transfer-Encoding other than chunked with a 501 in plain text, before the request's
# headers are known (no route, no path, so OpenAI's shape whatever the path): a bad request, not our failure.
_RENAMED_REPLIES = (
    (
        "response.code == 501 && response.code_details == 'http1.invalid_transfer_encoding'",
        400,
        "invalid_request_error",
        "unsupported_transfer_encoding",
        "unsupported Transfer-Encoding: send the body with a Content-Length or Transfer-Encoding: chunked",
    ),
)
# Any other error of Envoy's own, by status class: (lowest status, highest, type, code). Not below 400: Envoy's
# direct responses of 200 (the files it serves) and its redirects are local replies too.
_OTHER_REPLIES = ((400, 499, "invalid_request_error", "invalid_request"), (500, 599, "api_error", "internal_error"))


@dataclass
class EnvoyPorts:
    """Where Envoy listens and where each service's replicas are."""

    http_port: int
    admin_port: int
    backends: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    listen_address: str = "127.0.0.1"
    max_request_bytes: int = edge.FREE_BODY_BYTES
    files_root: Path = ROOT  # where Envoy finds envoy/ and gen/: this checkout, or a container image's copy
    otlp_endpoint: str = ""  # OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP): where Envoy sends its spans
    trace_ratio: float = DEFAULT_TRACE_RATIO  # OTEL_TRACES_SAMPLER_ARG: the share of new traces sampled
    span_flush_ms: int = DEFAULT_SPAN_FLUSH_MS  # OTEL_BSP_SCHEDULE_DELAY: how often Envoy sends its spans
    edge: edge.EdgeLimits = field(default_factory=edge.EdgeLimits)  # memory, deadlines, per-client budgets


_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


def path_regex(template: str) -> str:
    """An RE2 regex for the paths a google.api.http template matches."""
    verb_at = re.search(r":[^/}]*$", template)  # a custom verb such as ":batchUpsert"
    path = template[: verb_at.start()] if verb_at else template
    out, last = [], 0
    for match in _VARIABLE.finditer(path):
        out.append(_literal_regex(path[last : match.start()]))
        out.append(_segments_regex(match.group(2) or "*"))
        last = match.end()
    out.append(_literal_regex(path[last:]))
    if verb_at:
        out.append(re.escape(verb_at.group()))
    return "^" + "".join(out) + "$"


def _literal_regex(text: str) -> str:
    return "/".join(_segments_regex(part) if part in ("*", "**") else re.escape(part) for part in text.split("/"))


def _segments_regex(pattern: str) -> str:
    return "/".join({"*": "[^/]+", "**": ".*"}.get(part, re.escape(part)) for part in pattern.split("/"))


def path_fields(template: str) -> list[str]:
    """Field paths bound by the template's variables, e.g. ["provider", "mapping_id"]."""
    return [match.group(1) for match in _VARIABLE.finditer(template)]


# --- Lua tables -------------------------------------------------------------


def _lua_string(text: str) -> str:
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"not a printable ASCII name: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lua_table(value: object) -> str:
    """Lua source for dicts (string keys), lists, strings and booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"[{_lua_string(k)}]={_lua_table(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ",".join(_lua_table(v) for v in value) + "}"
    raise TypeError(type(value))


def _lua_faces(faces: dict[str, tuple[int, str]]) -> str:
    return "{" + ",".join(f"[{key}]={{{status},{_lua_string(kind)}}}" for key, (status, kind) in faces.items()) + "}"


def error_faces_lua() -> str:
    """The error table envoy/errors.lua answers REST callers from, as Lua: generated from the
    error catalogue (services/common/errors.py) by scripts/generate.py, which --check compares."""
    by_code = {str(code.value[0]): errors.rest_face(code, "") for code, reason in errors.table() if not reason}
    by_reason = {
        _lua_string(f"{code.value[0]}:{reason}"): errors.rest_face(code, reason)
        for code, reason in errors.table()
        if reason
    }
    anthropic = {str(status): errors.anthropic_face(status) for status in errors.ANTHROPIC_FACES}
    return (
        "-- Generated by scripts/generate.py from services/common/errors.py: do not edit.\n"
        "-- gRPC code -> {HTTP status, OpenAI's error type}\n"
        f"ERROR_CODES = {_lua_faces({k: (f.status, f.type) for k, f in by_code.items()})}\n"
        "-- 'code:REASON' -> {HTTP status, OpenAI's error type}: the reasons whose face is not their code's\n"
        f"ERROR_REASONS = {_lua_faces({k: (f.status, f.type) for k, f in by_reason.items()})}\n"
        "-- HTTP status -> {Anthropic's status, Anthropic's error type}; any other status is an api_error\n"
        f"ANTHROPIC_FACES = {_lua_faces(anthropic)}\n"
        "-- The ErrorInfo metadata key of a provider's own error code (OpenAI's `code` when present)\n"
        f"PROVIDER_CODE_KEY = {_lua_string(errors.PROVIDER_CODE_KEY)}\n"
    )


def _field_spec(d: Descriptors, f: descriptor_pb2.FieldDescriptorProto) -> object:
    """true: anything (a scalar, or a free JSON value); a name: that message's object;
    {map = spec}: an object with any keys whose values follow spec."""
    if f.type != descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
        return True
    name = f.type_name.lstrip(".")
    if d.is_map(f):
        return {"map": _field_spec(d, d.messages[name].field[1])}
    if name in FREE_MESSAGES or name.startswith(_SCALAR_MESSAGES_PREFIX):
        return True
    return name


def _required(f: descriptor_pb2.FieldDescriptorProto) -> bool:
    return field_behavior_pb2.REQUIRED in f.options.Extensions[field_behavior_pb2.field_behavior]


def _schema(d: Descriptors, message: str, exclude: frozenset[str] = frozenset()) -> dict:
    """Allowed keys (JSON and proto names) and required keys of a message's JSON object."""
    fields: dict[str, object] = {}
    required: list[list[str]] = []
    short: dict[str, bool] = {}
    bools: dict[str, bool] = {}
    for f in d.messages[message].field:
        if f.name in exclude:
            continue
        fields[f.json_name] = fields[f.name] = _field_spec(d, f)
        if _required(f):
            required.append([f.json_name, f.name])
        if _takes_no_long_string(f):
            short[f.json_name] = short[f.name] = True
        if f.type == f.TYPE_BOOL and f.label != f.LABEL_REPEATED:
            bools[f.json_name] = bools[f.name] = True  # the transcoder would take "yes", "0", ... for them
    return {"fields": fields, "required": required, "short": short, "bools": bools}


def _takes_no_long_string(f: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Fields whose JSON value is never a long string: numbers, booleans, enums, messages."""
    free = {f.TYPE_STRING, f.TYPE_BYTES}
    return f.type not in free and f.type_name.lstrip(".") not in FREE_MESSAGES


def _reachable(d: Descriptors, roots: list[str]) -> list[str]:
    """Every message a JSON body of these roots may contain, in a stable order."""
    seen: dict[str, None] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = None
        for f in d.messages[name].field:
            spec = _field_spec(d, f)
            while isinstance(spec, dict):
                spec = spec["map"]
            if isinstance(spec, str):
                todo.append(spec)
    return sorted(seen)


def _json_path(d: Descriptors, message: str, path: str) -> str:
    """A field path in JSON names, e.g. "provider_id" -> "providerId"."""
    parts = []
    for part in path.split("."):
        f = d.field(message, part)
        parts.append(f.json_name)
        message = f.type_name.lstrip(".")
    return ".".join(parts)


def _query_names(d: Descriptors, rule: HttpRule) -> dict[str, object]:
    """Query parameters (proto and JSON spelling) -> "path" for a field the path binds,
    true for a field the query may set (dotted names are checked by their first part)."""
    names: dict[str, object] = {}
    if rule.body != "*":
        for f in d.messages[rule.request].field:
            if f.name != rule.body:
                names[f.name] = names[f.json_name] = True
    for path in path_fields(rule.template):
        names[path] = names[_json_path(d, rule.request, path)] = "path"
    return names


def _rule_entry(d: Descriptors, rule: HttpRule) -> dict:
    """What the strict Lua script checks for one route."""
    entry: dict[str, object] = {"query": _query_names(d, rule)}
    body = d.body_message(rule)
    if body is not None:
        bound = frozenset(p.split(".")[0] for p in path_fields(rule.template)) if rule.body == "*" else frozenset()
        root = _schema(d, body, bound)
        root["path"] = {name: True for f in sorted(bound) for name in (d.field(rule.request, f).json_name, f)}
        entry["body"] = root
        # A PATCH sends only what changes: required fields apply to creation, not here.
        entry["partial"] = rule.verb == "PATCH"
    return entry


def _free_body(d: Descriptors, rule: HttpRule) -> bool:
    """A body the Lua filter does not read (HttpBody: chat, images): the hot path."""
    return bool(rule.body) and d.body_message(rule) is None


def strict_lua(d: Descriptors) -> str:
    """The strict script: the shared response shaping, the schema tables, the checks."""
    rules = d.rules
    roots = [m for m in (d.body_message(r) for r in rules) if m is not None]
    schemas = {name: _schema(d, name) for name in _reachable(d, roots)}
    tables = (
        f"MAX_PATH_BYTES = {MAX_PATH_BYTES}\n"
        f"SCHEMAS = {_lua_table(schemas)}\n"
        f"RULES = {_lua_table({r.key: _rule_entry(d, r) for r in rules})}\n"
    )
    return "\n".join([errors_lua(), tables, STRICT_LUA_FILE.read_text()])


def errors_lua() -> str:
    """The response shaping every REST route runs: the generated error table, errors.lua, answers.lua."""
    return "\n".join([ERROR_FACES_FILE.read_text(), LUA_FILE.read_text(), ANSWERS_LUA_FILE.read_text()])


# --- routes -----------------------------------------------------------------


_GRPC = "application/grpc"


def _grpc_content_type(*, invert: bool = False) -> dict:
    """Matches gRPC's content types (not gRPC-Web, which nothing here speaks)."""
    regex = r"application/grpc(\+[a-z]+)?(;.*)?"
    return {"name": "content-type", "string_match": {"safe_regex": {"regex": regex}}, "invert_match": invert}


def _reply(status: int, message: str) -> dict:
    """A direct response; the local reply mappers put the message in OpenAI's shape."""
    return {"status": status, "body": {"inline_string": message}}


# Native gRPC streams (reflection, health's Watch, server streams) flow as they come:
# the buffer filter would hold a stream until the caller closes it.
_UNBUFFERED = {
    "envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "disabled": True,
    }
}


# A route without a timeout. Envoy's route timeout covers the whole answer, its body included: on a
# streamed answer (a chat stream of a model that reasons for many minutes, a reflection session, a
# health Watch) it would reset the stream mid-body, with no error event and no [DONE]. There the
# listener's stream_idle_timeout ends a silent stream, and the Router's own upstream timeouts end a
# provider's silence first, with an error event (docs/edge.md, "Route timeouts").
NO_ROUTE_TIMEOUT = "0s"


def _grpc_route(service: str, cluster: str, timeout: str, method: str = "") -> dict:
    """The route of a service's methods, or of one method when given."""
    match = {"path": f"/{service}/{method}"} if method else {"prefix": f"/{service}/"}
    return {
        "match": {**match, "headers": [_grpc_content_type()]},
        "route": {"cluster": cluster, "timeout": timeout},
        "typed_per_filter_config": _UNBUFFERED,
    }


def streamed_methods(d: Descriptors, service: str) -> list[str]:
    """A service's methods that answer (or are called) with a stream."""
    return [
        method.name
        for name, proto in d.services
        if name == service
        for method in proto.method
        if method.server_streaming or method.client_streaming
    ]


def _grpc_routes(d: Descriptors) -> list[dict]:
    """Native gRPC (and transcoded calls, which the transcoder re-routes here), then
    reflection and health, answered by the Router for the whole public surface. A unary
    method takes its service's route timeout (PUBLIC_SERVICES); a streamed one, none."""
    routes = []
    for service, (cluster, timeout) in PUBLIC_SERVICES.items():
        streamed = streamed_methods(d, service)
        routes += [_grpc_route(service, cluster, NO_ROUTE_TIMEOUT, method) for method in streamed]
        routes.append(_grpc_route(service, cluster, timeout))
    # A reflection session or a health Watch lasts as long as its caller wants.
    routes += [_grpc_route(service, DISCOVERY_CLUSTER, NO_ROUTE_TIMEOUT) for service in DISCOVERY_SERVICES]
    routes.append(
        {
            "match": {"prefix": "/", "headers": [{"name": "content-type", "string_match": {"prefix": _GRPC}}]},
            # gRPC callers read a 404 as UNIMPLEMENTED: no such method.
            "direct_response": _reply(404, "no such gRPC method"),
        }
    )
    for service in PUBLIC_SERVICES:
        routes.append(
            {
                "match": {"prefix": f"/{service}/"},
                "direct_response": _reply(415, "gRPC methods need Content-Type application/grpc; use the REST paths"),
            }
        )
    return routes


_STRICT_SCRIPT = {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "name": "strict"}
# Request bodies capped below the listener's limit (max_request_bytes) on their routes, by request
# message: JSON bodies whose documented caps (docs/tasks.md) keep them small. A larger one is a 413.
ROUTE_BODY_LIMITS = {
    "switchboard.router.v1.CreateEmbeddingRequest": 4 * 1024 * 1024,
    "switchboard.router.v1.CreateSpeechRequest": 64 * 1024,
}


def _rest_route(d: Descriptors, rule: HttpRule, *, strict: bool, with_query: bool | None = None,
                anonymous: bool = False) -> dict:  # fmt: skip
    """A route for one HTTP rule (with or without a query string, when given). Its action
    is never used for a transcoded call: the transcoder rewrites the path to the gRPC
    method and the route is chosen again. Its body cap follows from its kind (edge.py)."""
    headers: list[dict] = [{"name": ":method", "string_match": {"exact": rule.verb}}]
    if with_query is not None:
        query = {"name": ":path", "string_match": {"contains": "?"}, "invert_match": not with_query}
        headers.append(query)
    anonymous = anonymous and rule.service in ANONYMOUS_SERVICES
    cap = edge.body_cap(rule.key, rule.body, _free_body(d, rule))
    cap = min(cap, ROUTE_BODY_LIMITS.get(rule.request, cap))
    metadata, per_filter = edge.route_limits(cap, anonymous=anonymous)
    route: dict[str, object] = {
        "match": {"safe_regex": {"regex": path_regex(rule.template)}, "headers": headers},
        "direct_response": _reply(404, "no such route"),
        "metadata": {"filter_metadata": metadata},
        "typed_per_filter_config": per_filter,
    }
    if strict:
        metadata[LUA_FILTER] = {"rule": rule.key}
        per_filter[LUA_FILTER] = _STRICT_SCRIPT
    return route


def _rest_routes(d: Descriptors, anonymous: bool = False) -> list[dict]:
    """Every rule gets the strict script, except free-body rules (chat) without a query
    string: those run errors.lua only, as before, and come first (the hot path)."""
    free = [r for r in d.rules if _free_body(d, r)]
    return [
        *(_rest_route(d, r, strict=False, with_query=False, anonymous=anonymous) for r in free),
        *(_rest_route(d, r, strict=True, with_query=True, anonymous=anonymous) for r in free),
        *(_rest_route(d, r, strict=True, anonymous=anonymous) for r in d.rules if not _free_body(d, r)),
    ]


def openapi_document() -> str:
    return OPENAPI.read_text()


def _response_headers(headers: dict[str, str]) -> list[dict]:
    return [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in headers.items()
    ]


def _static_route(match: dict, body: dict, headers: dict[str, str]) -> dict:
    """A file answered by Envoy itself (GET, and HEAD, which Envoy answers without the body)."""
    method = {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}
    return {
        "match": {**match, "headers": [method]},
        "direct_response": {"status": 200, "body": body},
        "response_headers_to_add": _response_headers(headers),
    }


def _openapi_route() -> dict:
    return _static_route(
        {"path": "/openapi.json"}, {"inline_string": openapi_document()}, {"content-type": "application/json"}
    )


# --- the web console ------------------------------------------------------------

CONSOLE_DIR = ROOT / "console"
CONSOLE_PATH = "/console/"
CONSOLE_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The console's own files and the public API on this origin, nothing else: no inline script or
# style, no other host, no frames, no plugins; a token never leaves in a Referer.
CONSOLE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def console_files() -> list[Path]:
    """The console's files (relative to console/), each served at /console/<path>."""
    files = [p.relative_to(CONSOLE_DIR) for p in sorted(CONSOLE_DIR.rglob("*")) if p.is_file()]
    unknown = [str(p) for p in files if p.suffix not in CONSOLE_CONTENT_TYPES]
    if unknown:
        raise ValueError(f"console files without a content type: {unknown}")
    too_large = [str(p) for p in files if (CONSOLE_DIR / p).stat().st_size > MAX_DIRECT_RESPONSE_BYTES]
    if too_large:
        raise ValueError(f"console files larger than Envoy's direct response cap: {too_large}")
    return files


def _console_routes(files_root: Path) -> list[dict]:
    """Envoy serves console/ from files_root (read when Envoy loads its config): /console/ is
    index.html, /console redirects there."""
    served = files_root / CONSOLE_DIR.relative_to(ROOT)

    def route(match: dict, file: Path) -> dict:
        headers = {"content-type": CONSOLE_CONTENT_TYPES[file.suffix], **CONSOLE_HEADERS}
        return _static_route(match, {"filename": str(served / file)}, headers)

    routes = [
        {"match": {"path": CONSOLE_PATH.rstrip("/")}, "redirect": {"path_redirect": CONSOLE_PATH}},
        route({"path": CONSOLE_PATH}, Path("index.html")),
    ]
    return routes + [route({"path": f"{CONSOLE_PATH}{file.as_posix()}"}, file) for file in console_files()]


def routes(d: Descriptors, files_root: Path = ROOT, anonymous: bool = False) -> list[dict]:
    """Every route; one without a body cap of its own (static files, refusals) takes a small one."""
    every = [
        *_grpc_routes(d),
        *_rest_routes(d, anonymous),
        _openapi_route(),
        *_console_routes(files_root),
        {"match": {"prefix": "/"}, "direct_response": _reply(404, "no such route")},
    ]
    for route in every:
        if "typed_per_filter_config" not in route:
            metadata, per_filter = edge.route_limits(edge.SMALL_BODY_BYTES)
            route["metadata"], route["typed_per_filter_config"] = {"filter_metadata": metadata}, per_filter
    return every


# --- local replies ------------------------------------------------------------


def _error_format(error_type: str, code: str) -> dict:
    return {
        "json_format": {"error": {"message": "%LOCAL_REPLY_BODY%", "type": error_type, "param": None, "code": code}}
    }


def _anthropic_format(error_type: str) -> dict:
    return {"json_format": {"type": "error", "error": {"type": error_type, "message": "%LOCAL_REPLY_BODY%"}}}


_ANTHROPIC_ROUTE = {
    "header_filter": {"header": {"name": ":path", "string_match": {"safe_regex": {"regex": ANTHROPIC_PATH_REGEX}}}}
}


def _anthropic_mappers() -> list[dict]:
    """Envoy's own replies on Anthropic's Messages route, in Anthropic's shape and statuses."""
    mappers = []
    for status in _LOCAL_REPLIES:
        anthropic_status, error_type = anthropic_face(status)
        mapper = {
            "filter": {"and_filter": {"filters": [_status_filter(status), _ANTHROPIC_ROUTE]}},
            "body_format_override": _anthropic_format(error_type),
        }
        if anthropic_status != status:
            mapper["status_code"] = anthropic_status
        mappers.append(mapper)
    mappers.append({"filter": _ANTHROPIC_ROUTE, "body_format_override": _anthropic_format("api_error")})
    return mappers


def _status_filter(status: int, op: str = "EQ") -> dict:
    comparison = {"op": op, "value": {"default_value": status, "runtime_key": f"unused_{status}"}}
    return {"status_code_filter": {"comparison": comparison}}


def _status_range_filter(lowest: int, highest: int) -> dict:
    return {"and_filter": {"filters": [_status_filter(lowest, "GE"), _status_filter(highest, "LE")]}}


def _transcoder_filter(status: int) -> dict:
    """A local reply of the transcoder with this status (its details name it)."""
    return _cel_filter(f"response.code == {status} && response.code_details.startsWith('grpc_json_transcode')")


def _cel_filter(expression: str) -> dict:
    """A local reply for which the CEL expression holds."""
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression,
            },
        }
    }


def local_reply_mappers() -> list[dict]:
    """Envoy's own replies in OpenAI's shape (Anthropic's on the Messages route), the first mapper that fits;
    replies the Lua filters made are left as they are."""
    # The strict Lua script answers in OpenAI's shape already and marks it so.
    own = {
        "filter": {
            "metadata_filter": {
                "matcher": {"filter": "switchboard", "path": [{"key": "own_reply"}], "value": {"bool_match": True}},
                "match_if_key_not_found": False,
            }
        }
    }
    # Every reply of the Messages route in Anthropic's shape; the budget's 429 is the gate's (edge.py).
    mappers: list[dict] = [edge.over_budget_mapper(), own]
    for expression, status, error_type, code, message in _RENAMED_REPLIES:
        mappers.append(
            {
                "filter": _cel_filter(expression),
                "status_code": status,
                "body": {"inline_string": message},
                "body_format_override": _error_format(error_type, code),
            }
        )
    mappers += _anthropic_mappers()
    for status, shape in ((400, _TRANSCODER_400), (500, _TRANSCODER_500)):
        mappers.append({"filter": _transcoder_filter(status), "body_format_override": _error_format(*shape)})
    for status, (error_type, code) in _LOCAL_REPLIES.items():
        mappers.append({"filter": _status_filter(status), "body_format_override": _error_format(error_type, code)})
    # The last: any error of Envoy's own not named above (e.g. the 403 of an upgrade no route takes).
    for lowest, highest, error_type, code in _OTHER_REPLIES:
        filter_ = _status_range_filter(lowest, highest)
        mappers.append({"filter": filter_, "body_format_override": _error_format(error_type, code)})
    return mappers


# --- the whole configuration ----------------------------------------------------


def _discovery(endpoints: list[tuple[str, int]]) -> str:
    """STATIC for IP addresses; STRICT_DNS for host names (e.g. a Kubernetes headless
    Service, whose name resolves to every ready replica)."""
    try:
        for host, _ in endpoints:
            ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS"
    return "STATIC"


# Active gRPC health checks (grpc.health.v1, the server's overall status, which every service
# reports: services/common/server.py) where a cluster may have several replicas: one that hangs, or
# has begun its graceful stop, gets no new calls once two checks in a row failed (each waits 3 s: a
# replica slowed by a loaded machine is not a hung one; a 1 s wait took replicas out under load);
# one pass brings it back, checked every second meanwhile. With too few replicas passing (under
# half, counting Envoy's overprovisioning factor of 1.4: fewer than about a third), Envoy's panic
# threshold spreads calls over all of them again, so that checks slowed by load cannot take every
# replica out at once; a lone replica would be called all the same, so it is not checked (its
# checks would cost for nothing).
_HEALTH_CHECK = (
    "      health_checks:\n"
    "        - {timeout: 3s, interval: 2s, unhealthy_interval: 1s, no_traffic_interval: 2s, unhealthy_threshold: 2,\n"
    "           healthy_threshold: 1, grpc_health_check: {}}"
)


def _clusters(backends: dict[str, list[tuple[str, int]]], buffer_bytes: int) -> str:
    lines = []
    for cluster, endpoints in backends.items():
        discovery = _discovery(endpoints)
        lines += [
            f"    - name: {cluster}",
            f"      type: {discovery}",
            "      connect_timeout: 1s",
            "      lb_policy: ROUND_ROBIN",
        ]
        if len(endpoints) > 1 or discovery == "STRICT_DNS":  # a name may resolve to several replicas
            lines.append(_HEALTH_CHECK)
        lines += [
            f"      per_connection_buffer_limit_bytes: {buffer_bytes}",
            "      typed_extension_protocol_options:",
            "        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
            '          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            "          explicit_http_config:",
            "            http2_protocol_options: {max_concurrent_streams: 1024}",
            "      load_assignment:",
            f"        cluster_name: {cluster}",
            "        endpoints:",
            "          - lb_endpoints:",
        ]
        for host, port in endpoints:
            lines.append(
                f"              - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}"
            )
    return "\n".join(lines)


OTLP_CLUSTER = "opentelemetry_collector"


def tracing(otlp_endpoint: str, ratio: float = DEFAULT_TRACE_RATIO) -> dict | None:
    """The connection manager's OpenTelemetry tracing; None (no tracer at all) without an
    endpoint. Parent-based, as the services' sampler: a caller's traceparent decides by its
    sampled flag, and of the traces Envoy starts it samples `ratio`."""
    if not otlp_endpoint:
        return None
    uri = otlp_endpoint.rstrip("/") + "/v1/traces"
    config = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "service_name": "switchboard-envoy",
        "http_service": {"http_uri": {"uri": uri, "cluster": OTLP_CLUSTER, "timeout": "2s"}},
    }
    return {
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": config},
        # A new trace: sampled at the ratio. A caller's trace: see early_mutations().
        "random_sampling": {"value": min(100.0, max(0.0, 100 * ratio))},
        "client_sampling": {"value": 100},
    }


# A request header name gRPC refuses as a metadata key (outside [0-9a-z_.-]; pseudo-headers aside): legal
# in HTTP (e.g. "a+b!"), it would fail the whole call, so it is dropped before it reaches a service. Here, in
# C++, rather than by a Lua loop over every request's headers (a tenth of Envoy's work per answer).
UNFIT_HEADER_NAME = r"(?:[^:0-9a-z_.\-]|[^:].*[^0-9a-z_.\-]).*"


def early_mutations(otlp_endpoint: str) -> list[dict]:
    """Header changes before Envoy decides anything. While tracing is on, a request with a
    traceparent is marked as the client's trace (x-client-trace-id, which client_sampling always
    traces): Envoy's OpenTelemetry tracer then samples it by its sampled flag, so the decision is
    parent-based as the services' is."""
    mutations: list[dict] = [{"remove": "x-client-trace-id"}]
    mutations.append({"remove": edge.OVER_BUDGET_HEADER})  # only the budgets mark a request (limits.py)
    mutations.append({"remove": ANSWER_METADATA_KEY})  # only the edge asks, for REST calls (errors.lua, mark_rest)
    mutations.append({"remove_on_match": {"key_matcher": {"safe_regex": {"regex": UNFIT_HEADER_NAME}}}})
    if otlp_endpoint:
        mark = {"header": {"key": "x-client-trace-id", "value": "%REQ(traceparent)%"}, "keep_empty_value": False}
        mutations.append({"append": mark})
    return mutations


def layered_runtime(span_flush_ms: int) -> dict:
    """Envoy's runtime: how often its OpenTelemetry tracer sends the spans it holds (a runtime key,
    not a field of the tracer's config). No admin layer, as without a runtime: the admin port cannot
    change runtime values."""
    return {"layers": [{"name": "static", "static_layer": {"tracing.opentelemetry.flush_interval_ms": span_flush_ms}}]}


def _tracing_line(otlp_endpoint: str, ratio: float) -> str:
    config = tracing(otlp_endpoint, ratio)
    return "" if config is None else " " * 16 + "tracing: " + json.dumps(config)


def _collector_cluster(otlp_endpoint: str) -> str:
    """The OTLP/HTTP collector's cluster (plain HTTP/1.1); none without an endpoint."""
    if not otlp_endpoint:
        return ""
    url = urlsplit(otlp_endpoint)
    address = f"{{address: {{socket_address: {{address: {url.hostname}, port_value: {url.port or 80}}}}}}}"
    lines = [
        f"    - name: {OTLP_CLUSTER}",
        "      type: STRICT_DNS",
        "      connect_timeout: 1s",
        "      load_assignment:",
        f"        cluster_name: {OTLP_CLUSTER}",
        "        endpoints:",
        "          - lb_endpoints:",
        f"              - endpoint: {address}",
    ]
    return "\n" + "\n".join(lines)


def gate_lua() -> str:
    """The gate's script: the shared response shaping, its constants, the checks."""
    return "\n".join([errors_lua(), edge.gate_tables(), GATE_LUA_FILE.read_text()])


def render(ports: EnvoyPorts) -> str:
    """The Envoy configuration as YAML text."""
    d = descriptors()
    limits = ports.edge
    return Template(TEMPLATE.read_text()).substitute(
        admin_port=ports.admin_port,
        http_port=ports.http_port,
        listen_address=ports.listen_address,
        max_request_bytes=ports.max_request_bytes,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        max_response_body_bytes=MAX_RESPONSE_BODY_BYTES,
        max_direct_response_bytes=MAX_DIRECT_RESPONSE_BYTES,
        errors_lua=json.dumps(errors_lua()),
        strict_lua=json.dumps(strict_lua(d)),
        descriptor=ports.files_root / DESCRIPTOR.relative_to(ROOT),
        transcoded_services=json.dumps(list(PUBLIC_SERVICES)),
        routes=json.dumps(routes(d, ports.files_root, limits.anonymous)),
        local_reply_mappers=json.dumps(local_reply_mappers()),
        tracing=_tracing_line(ports.otlp_endpoint, ports.trace_ratio),
        early_mutations=json.dumps(early_mutations(ports.otlp_endpoint)),
        clusters=_clusters(ports.backends, limits.connection_buffer_bytes) + _collector_cluster(ports.otlp_endpoint),
        overload_manager=json.dumps(edge.overload_manager(limits)),
        layered_runtime=json.dumps(layered_runtime(ports.span_flush_ms)),
        connection_buffer_bytes=limits.connection_buffer_bytes,
        body_deadline=f"{limits.body_deadline_seconds}s",
        headers_deadline=f"{limits.headers_deadline()}s",
        connection_idle=f"{limits.connection_idle_seconds}s",
        caller_key_filter=json.dumps(edge.caller_key_filter()),
        client_budget_filter=json.dumps(edge.client_budget_filter(limits)),
        refusal_delay_filter=json.dumps(edge.refusal_delay_filter(limits)),
        gate_filter=json.dumps(edge.gate_filter(gate_lua())),
    )
