"""What Envoy enforces at the boundary (issues 10 and 11), through the real stack:
strict typed bodies, path parameters only from the path, Envoy's own replies in
OpenAI's shape, gRPC content types only on gRPC methods, caps on paths, headers
and error messages, the caller's method in the access log, /openapi.json."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest
from helpers.edge import access_log_lines
from helpers.registry import build_world, error_of, ok, unique
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from edge import envoy
from services.common.errors import invalid_argument

JSON = {"content-type": "application/json"}


def send_json(client: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    """Sends exactly json.dumps(body) (ASCII, escapes as Python writes them)."""
    return client.request(method, path, content=json.dumps(body).encode(), headers=JSON)


# --- strict typed bodies (issue 10 finding 5) ---------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [({"limitNanoUSD": 5000}, "limitNanoUSD"), ({"bogus": 1, "limitNanoUsd": 5}, "bogus")],
)
def test_unknown_field_in_a_typed_body_is_a_400_naming_it(stack, body: dict, param: str) -> None:
    with stack.admin() as admin:
        error = error_of(send_json(admin, "PUT", "/v1/billing/accounts/demo/limit", body), 400)
    assert (error["code"], error["param"]) == ("unknown_field", param)
    assert param in error["message"]


@pytest.mark.parametrize("content", [b"{}", b"", b"  ", b'{"limitNanoUsd": null}', b'{"limit_nano_usd":null}'])
def test_missing_required_field_is_a_400_naming_it(stack, content: bytes) -> None:
    with stack.admin() as admin:
        answer = admin.put("/v1/billing/accounts/demo/limit", content=content, headers=JSON)
    error = error_of(answer, 400)
    assert (error["code"], error["param"]) == ("missing_field", "limitNanoUsd")


@pytest.mark.parametrize("key", ["limitNanoUsd", "limit_nano_usd"])
def test_a_valid_limit_is_still_set_under_either_field_name(stack, key: str) -> None:
    account = unique("acct")
    with stack.admin() as admin:
        answer = ok(send_json(admin, "PUT", f"/v1/billing/accounts/{account}/limit", {key: 7000}))
    assert (answer["account"], answer["limitNanoUsd"]) == (account, 7000)


def test_unknown_field_in_a_nested_message_is_named_by_its_path(stack) -> None:
    body = {"prices": [{"providerModel": "a"}, {"providerModel": "b", "inputNanoUsd": 1}]}
    with stack.admin() as admin:
        error = error_of(send_json(admin, "PUT", "/admin/v1/providers/p/prices", body), 400)
    assert (error["code"], error["param"]) == ("unknown_field", "prices.inputNanoUsd")


def test_missing_required_field_in_a_nested_message(stack) -> None:
    body = {"prices": [{"providerModel": "a"}, {"requestNanoUsd": 1}]}
    with stack.admin() as admin:
        error = error_of(send_json(admin, "PUT", "/admin/v1/providers/p/prices", body), 400)
    assert (error["code"], error["param"]) == ("missing_field", "prices.providerModel")


def test_keys_inside_string_values_are_not_fields(stack) -> None:
    name = '{"bogus": 1, "x\\"y,"z":{[' + unique("org")
    with stack.admin() as admin:
        answer = send_json(admin, "POST", "/admin/v1/orgs", {"name": name, "createTime": "2020-01-01T00:00:00Z"})
    # Past the Lua filter: the Registry judges the name itself.
    assert answer.status_code in (200, 400)
    assert answer.json().get("error", {}).get("code") not in ("unknown_field", "missing_field", "invalid_json")


def test_a_field_the_path_binds_is_refused_in_the_body(stack) -> None:
    with stack.admin() as admin:
        answer = send_json(admin, "PUT", "/v1/billing/accounts/demo/limit", {"limitNanoUsd": 1, "account": "other"})
        error = error_of(answer, 400)
    assert (error["code"], error["param"]) == ("path_parameter_in_body", "account")


def test_a_patch_need_not_repeat_required_fields(stack) -> None:
    with stack.admin() as admin:
        world = build_world(admin)
        answer = send_json(admin, "PATCH", f"/admin/v1/providers/{world.provider}", {"baseUrl": "http://127.0.0.1:8/"})
        assert ok(answer)["baseUrl"] == "http://127.0.0.1:8"
        error = error_of(send_json(admin, "PATCH", f"/admin/v1/providers/{world.provider}", {"bogus": 1}), 400)
    assert error["code"] == "unknown_field"


def test_too_deep_a_body_is_a_400(stack) -> None:
    content = b'{"limitNanoUsd": 1, "x": ' + b"[" * 100 + b"]" * 100 + b"}"
    with stack.admin() as admin:
        error = error_of(admin.put("/v1/billing/accounts/demo/limit", content=content, headers=JSON), 400)
    assert error["code"] == "unknown_field"  # the first unknown key wins before the depth cap
    content = b'{"prices": ' + b"[" * 100 + b"]" * 100 + b"}"
    with stack.admin() as admin:
        error = error_of(admin.put("/admin/v1/providers/p/prices", content=content, headers=JSON), 400)
    assert error["code"] == "nesting_too_deep"


@pytest.mark.parametrize(
    ("path", "content", "param"),
    [
        ("/v1/billing/accounts/demo/limit", b'{"limitNanoUsd": "' + b"x" * 100_000 + b'"}', "limitNanoUsd"),
        ("/admin/v1/providers/p/prices", b'{"prices": "' + b"x" * 100_000 + b'"}', "prices"),
        ("/v1/billing/accounts/demo/limit", b'{"limitNanoUsd": ' + b"9" * 100_000 + b"}", "limitNanoUsd"),
        (
            "/admin/v1/providers/p/prices",
            b'{"prices": [{"providerModel": "m", "requestNanoUsd": "' + b"1" * 300 + b'"}]}',
            "prices.requestNanoUsd",
        ),
    ],
)
def test_a_long_string_where_none_fits_is_refused_without_echoing_it(stack, path, content, param) -> None:
    with stack.admin() as admin:
        answer = admin.put(path, content=content, headers=JSON)
    error = error_of(answer, 400)
    assert (error["code"], error["param"], len(answer.content) < 300) == ("invalid_value", param, True)


_ORG_KEYS = {"name", "members", "createTime", "create_time"}
_LIMIT_KEYS = {"limitNanoUsd", "limit_nano_usd", "account"}
_PRICE_KEYS = {
    *("providerModel", "provider_model", "inputTokenNanoUsd", "input_token_nano_usd"),
    *("outputTokenNanoUsd", "output_token_nano_usd", "requestNanoUsd", "request_nano_usd"),
    *("imageNanoUsd", "image_nano_usd"),
}
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _expected_param(key: str) -> str:
    """The Lua filter echoes the raw JSON spelling of a key, plain characters only."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "?", json.dumps(key)[1:-1][:64])


@st.composite
def body_with_unknown_key(draw: st.DrawFn) -> tuple[str, str, dict | list, str]:
    """(method, path, body, param of the unknown key) on one of three typed routes."""
    route = draw(st.sampled_from(["limit", "org", "prices"]))
    known = {"limit": _LIMIT_KEYS, "org": _ORG_KEYS, "prices": _PRICE_KEYS}[route]
    key = draw(st.text(min_size=1, max_size=80).filter(lambda k: k not in known))
    value = draw(_ANY_JSON)
    first = draw(st.booleans())
    if route == "limit":
        fields = {"limitNanoUsd": draw(st.integers(0, 10**12))}
        return "PUT", "/v1/billing/accounts/demo/limit", _with_key(fields, key, value, first), _expected_param(key)
    if route == "org":
        fields = {"name": draw(st.text(max_size=10)), "members": draw(st.lists(st.text(max_size=5), max_size=3))}
        return "POST", "/admin/v1/orgs", _with_key(fields, key, value, first), _expected_param(key)
    prices = [{"providerModel": draw(st.text(max_size=10))} for _ in range(draw(st.integers(0, 3)))]
    at = draw(st.integers(0, len(prices)))
    prices.insert(at, _with_key({"providerModel": "m", "requestNanoUsd": 1}, key, value, first))
    return "PUT", "/admin/v1/providers/p/prices", {"prices": prices}, "prices." + _expected_param(key)


def _with_key(fields: dict, key: str, value: object, first: bool) -> dict:
    return {key: value, **fields} if first else {**fields, key: value}


@seed(1011)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=body_with_unknown_key())
def test_any_unknown_key_at_any_depth_is_a_400_naming_it(stack, case: tuple[str, str, dict, str]) -> None:
    method, path, body, param = case
    with stack.admin() as admin:
        error = error_of(send_json(admin, method, path, body), 400)
    assert (error["code"], error["param"]) == ("unknown_field", param)


# --- path parameters only from the path (issue 10 finding 6) --------------------


@pytest.mark.parametrize("query", ["provider={}", "%70rovider={}", "provider={}&a=1"])
def test_the_query_cannot_override_a_path_parameter(stack, query: str) -> None:
    with stack.admin() as admin:
        target = build_world(admin).provider
        error = error_of(admin.delete(f"/admin/v1/providers/nope-qa?{query.format(target)}"), 400)
        assert (error["code"], error["param"]) == ("path_parameter_in_query", "provider")
        assert ok(admin.get(f"/admin/v1/providers/{target}"))["id"] == target


@pytest.mark.parametrize(
    ("path", "param"),
    [("/admin/v1/providers/p?providerId=x", None), ("/v1/billing/accounts/demo?account=x", "account")],
)
def test_every_spelling_of_a_path_field_is_refused_in_the_query(stack, path: str, param: str | None) -> None:
    with stack.admin() as admin:
        answer = admin.patch(path, content=b"{}", headers=JSON) if param is None else admin.get(path)
    error = error_of(answer, 400)
    assert (error["code"], error["param"]) == ("path_parameter_in_query", param or "providerId")


def test_the_query_cannot_set_a_path_parameter_of_a_chat_route(stack) -> None:
    with stack.http("sk-nobody") as http:
        answer = http.post("/p1/v1/chat/completions?provider=p2", content=b"{}", headers=JSON)
    error = error_of(answer, 400)
    assert (error["code"], error["param"]) == ("path_parameter_in_query", "provider")


def test_an_unknown_query_parameter_echoes_only_a_short_prefix(stack) -> None:
    with stack.http() as http:
        error = error_of(http.get("/v1/providers", params={"c" * 3000: "1"}), 400)
    assert (error["code"], error["param"]) == ("unknown_query_parameter", "c" * 64)
    assert len(error["message"]) < 200


# --- Envoy's own replies in OpenAI's shape (issue 11 finding 2) -------------------


def raw_exchange(stack, data: bytes) -> bytes:
    """Sends raw bytes to Envoy and reads until it closes the connection."""
    host, port = stack.address("envoy").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def openai_error_of_raw(answer: bytes, status: int) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode(), head
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"GET /v1/models HTTP/1.0\r\n\r\n", 426, "http_version_not_supported"),
        (b"GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "headers_too_large"),
    ],
)
def test_envoy_protocol_errors_are_openai_json(stack, data: bytes, status: int, code: str) -> None:
    answer = raw_exchange(stack, data)
    assert openai_error_of_raw(answer, status)["code"] == code
    assert re.search(rb"\r\nserver-timing: edge;dur=\d+\.\d\d\r\n", answer.partition(b"\r\n\r\n")[0])


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("GET", "/no/such/route", b"", 404, "route_not_found"),
        ("GET", "/v1/chat/completions", b"", 404, "route_not_found"),
        ("PUT", "/v1/billing/accounts/demo/limit", b"x" * (9 * 1024 * 1024), 413, "body_too_large"),
        ("PUT", "/v1/billing/accounts/demo/limit", b'{"limitNanoUsd": 1,', 400, "invalid_json"),
        ("PUT", "/v1/billing/accounts/demo/limit", b'{"limitNanoUsd": "many"}', 400, "invalid_json"),
    ],
)
def test_envoy_local_replies_carry_snake_case_codes(stack, method, path, content, status, code) -> None:
    with stack.admin() as admin:
        error = error_of(admin.request(method, path, content=content, headers=JSON), status)
    assert error["code"] == code


def test_an_unreachable_upstream_is_a_json_503(make_stack) -> None:
    running = make_stack()
    billing = next(child.process for child in running.stack.children if child.name == "billing")
    billing.kill()
    billing.wait()
    with running.admin() as admin:
        answer = admin.get("/v1/billing/accounts/demo")
    error = error_of(answer, 503)
    assert (error["code"], error["type"]) == ("upstream_unavailable", "service_unavailable_error")
    assert re.fullmatch(r"edge;dur=\d+\.\d\d", answer.headers["server-timing"])


# --- content types, encodings, sizes (issue 11 finding 1) ------------------------


def test_json_on_a_grpc_path_is_a_415(stack) -> None:
    with stack.http() as http:
        answer = http.post("/switchboard.router.v1.RouterService/ListProviders", json={})
    assert error_of(answer, 415)["code"] == "unsupported_content_type"


@pytest.mark.parametrize(
    "path", ["/v1/billing/usage", "/v1/chat/completions", "/switchboard.router.v1.RouterService/ListProviders"]
)
def test_grpc_web_is_refused_in_json(stack, path: str) -> None:
    with stack.http() as http:
        answer = http.post(
            path, content=b"\x00\x00\x00\x00\x00", headers={"content-type": "application/grpc-web+proto"}
        )
    assert error_of(answer, 415)["code"] == "unsupported_content_type"
    assert not [name for name in answer.headers if name.startswith(("grpc-", "x-switchboard-"))]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/%ff"),
        ("GET", "/v1/providers/%ff"),
        ("GET", "/admin/v1/providers/%ff"),
        ("GET", "/admin/v1/orgs/%c3%28"),
        ("GET", "/admin/v1/users/%ff"),
        ("GET", "/admin/v1/models/%ff"),
        ("GET", "/v1/billing/accounts/%ff"),
        ("GET", "/api/partners/%ff/models"),
        ("DELETE", "/admin/v1/users/%ff/tokens/main"),
        ("DELETE", "/api/partners/%ff/models/0123"),
        ("POST", "/%ff/v1/chat/completions"),
    ],
)
def test_invalid_utf8_in_a_path_is_a_400(stack, method: str, path: str) -> None:
    with stack.admin() as admin:
        error = error_of(admin.request(method, path, content=b"{}", headers=JSON), 400)
    assert error["code"] == "invalid_encoding"


def test_a_long_path_is_a_414_naming_the_cap(stack) -> None:
    with stack.http() as http:
        error = error_of(http.get("/v1/providers/" + "a" * 12_000), 414)
    assert (error["code"], str(envoy.MAX_PATH_BYTES) in error["message"]) == ("uri_too_long", True)


def test_a_path_just_under_the_cap_reaches_the_service(stack) -> None:
    with stack.http() as http:
        error = error_of(http.get("/v1/providers/" + "a" * (envoy.MAX_PATH_BYTES - 20)), 404)
    assert len(error["message"]) <= 1024


def test_headers_near_the_cap_are_not_refused_by_a_service(stack) -> None:
    headers = {f"x-pad-{i}": "a" * 1000 for i in range(envoy.MAX_REQUEST_HEADERS_KB - 4)}
    with stack.http() as http:
        assert http.get("/v1/providers", headers=headers).status_code == 200


def test_an_error_echoing_huge_input_stays_a_4xx(stack) -> None:
    with stack.http("sk-nobody") as http:
        answer = http.post("/v1/chat/completions", json={"model": "m" * 20_000, "messages": []})
    assert answer.status_code in (400, 401)
    assert len(answer.json()["error"]["message"]) <= 1024


def test_api_error_messages_are_capped_so_a_trailer_always_fits() -> None:
    error = invalid_argument("UNKNOWN_PROVIDER", "provider " + "é" * 100_000 + " is unknown", "p" * 10_000)
    trailers = error.trailing_metadata()
    assert sum(len(value) for _, value in trailers) < 16 * 1024
    body = error.openai_body()  # what Envoy makes of the status details (envoy/errors.lua)
    assert body["error"]["message"].endswith("(truncated)")
    assert len(body["error"]["param"]) == 128


# --- access log, /openapi.json ----------------------------------------------------


def test_the_access_log_records_the_callers_method(stack) -> None:
    marker = unique("logged")
    with stack.admin() as admin:
        admin.delete(f"/admin/v1/providers/{marker}")
        admin.put(f"/v1/billing/accounts/{marker}/limit", json={"limitNanoUsd": 1})
        admin.get(f"/admin/v1/orgs/{marker}")
        # A caller cannot choose what is logged (the query string only marks this request's line).
        chat = f"/v1/chat/completions?marker={marker}"
        admin.post(chat, content=b"{}", headers={**JSON, "x-switchboard-method": "PATCH"})
    methods = {}
    deadline = time.monotonic() + 60  # Envoy flushes its access log now and then
    while len(methods) < 4 and time.monotonic() < deadline:
        methods = {line["path"]: line["method"] for line in access_log_lines(stack) if marker in (line["path"] or "")}
        time.sleep(0.2)
    assert methods == {
        f"/admin/v1/providers/{marker}": "DELETE",
        f"/v1/billing/accounts/{marker}/limit": "PUT",
        f"/admin/v1/orgs/{marker}": "GET",
        chat: "POST",
    }


def test_openapi_document_is_served(stack) -> None:
    with stack.http() as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == json.loads(envoy.openapi_document())


# --- the rendering itself -----------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        ("/v1/models/{id=**}", ["/v1/models/a/b"], ["/v1/model/a"]),
        ("/admin/v1/models:batchUpsert", ["/admin/v1/models:batchUpsert"], ["/admin/v1/modelsXbatchUpsert"]),
        ("/api/partners/{provider}/models/{mapping_id}", ["/api/partners/p/models/1"], ["/api/partners/p/q/models/1"]),
        ("/{provider}/v1/chat/completions", ["/p/v1/chat/completions"], ["/v1/chat/completions"]),
    ],
)
def test_path_regex_follows_the_template(template: str, matches: list[str], misses: list[str]) -> None:
    regex = re.compile(envoy.path_regex(template))
    assert [bool(regex.match(p)) for p in matches + misses] == [True] * len(matches) + [False] * len(misses)


def test_every_rule_reads_required_fields_from_the_descriptor() -> None:
    d = envoy.descriptors()
    rule = next(r for r in d.rules if r.key == "PUT /v1/billing/accounts/{account}/limit")
    entry = envoy._rule_entry(d, rule)
    assert entry["body"]["required"] == [["limitNanoUsd", "limit_nano_usd"]]
    assert entry["body"]["path"] == {"account": True}
    assert entry["query"] == {"account": "path"}


@pytest.mark.parametrize("name", ["c+j!", "a`b", "x#y", "h$", "!a", "+", "~x", "|"])
def test_a_header_name_grpc_refuses_is_dropped_not_a_500(stack, name) -> None:
    with stack.admin() as admin:
        answer = admin.get("/admin/v1/providers", headers={name: "1"})
    assert answer.status_code == 200, answer.text


@given(st.text(st.sampled_from("abz09_.-:!+~|`#$%&'*^AZ"), min_size=1, max_size=6))
def test_the_unfit_header_name_rule_is_grpcs(name: str) -> None:
    """Envoy drops a name gRPC refuses as a metadata key (a character outside [0-9a-z_.-]), never a pseudo-header."""
    refused = not name.startswith(":") and re.search(r"[^0-9a-z_.\-]", name) is not None
    assert (re.fullmatch(envoy.UNFIT_HEADER_NAME, name) is not None) == refused
