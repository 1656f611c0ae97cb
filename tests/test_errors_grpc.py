"""Errors are defined gRPC-first (issue 12, findings 3, 5 and 6).

A native gRPC caller on Envoy's port gets a standard status: the code, an
ErrorInfo reason (domain "switchboard") and a BadRequest field when a field is
at fault, and nothing REST-only in its trailers. A REST caller gets the same
error as the HTTP status and OpenAI-shaped body that services/common/errors.py
derives from (code, reason) in one table. Another service's verdict on the
request (the Registry's 404 or 400) reaches the caller as it is; only an
unreachable service is a 503.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import httpx
import openai
import orjson
import pytest
from google.api import httpbody_pb2
from google.rpc import error_details_pb2, status_pb2
from helpers.registry import error_of, ok, unique
from helpers.stacks import DemoStack, RunningStack
from helpers.waiting import eventually
from hypothesis import given
from hypothesis import strategies as st
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common.errors import (
    DETAILS_TRAILER,
    DOMAIN,
    PROVIDER_VERDICTS,
    REASON_FORMAT,
    ApiError,
    Code,
    from_rpc_error,
    relayed,
    rest_face,
    table,
    unavailable,
)
from services.demo import CHAT_MODEL

pytestmark = pytest.mark.e2e  # starts processes

MESSAGES = [{"role": "user", "content": "Hello!"}]
# Codes that say the caller's request was at fault (a 4xx), and those that say the server's side failed (a 5xx).
CLIENT_CODES = {
    Code.CANCELLED, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION, Code.ABORTED, Code.OUT_OF_RANGE, Code.UNAUTHENTICATED,
}  # fmt: skip
SERVER_CODES = {Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.UNIMPLEMENTED, Code.INTERNAL, Code.UNAVAILABLE,
                Code.DATA_LOSS}  # fmt: skip
ERROR_CODES = [code for code in Code if code != Code.OK]
# Another service's verdict on the request itself (passed on), and the codes of a service that could not answer.
VERDICT_CODES = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION,
                 Code.OUT_OF_RANGE, Code.ABORTED, Code.PERMISSION_DENIED}  # fmt: skip
UNREACHABLE_CODES = {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED}


@dataclass(frozen=True)
class GrpcFailure:
    """What a native gRPC caller learns of a failed call."""

    code: grpc.StatusCode
    reason: str
    field: str | None
    trailer_keys: frozenset[str]


def grpc_failure(call: Callable[[], object]) -> GrpcFailure:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    trailers = error.trailing_metadata()
    status = status_pb2.Status.FromString(dict(trailers)[DETAILS_TRAILER])
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert any(detail.Unpack(info) for detail in status.details)
    assert (status.code, status.message, info.domain) == (error.code().value[0], error.details(), DOMAIN)
    has_field = any(detail.Unpack(bad_request) for detail in status.details)
    field = bad_request.field_violations[0].field if has_field else None
    return GrpcFailure(error.code(), info.reason, field, frozenset(key for key, _ in trailers))


@dataclass
class Demo:
    running: RunningStack
    token: str
    limited_token: str  # a user whose spending limit is reached

    def router(self, channel: grpc.Channel) -> router_grpc.RouterServiceStub:
        return router_grpc.RouterServiceStub(channel)


def chat_request(body: dict) -> router_pb.CreateChatCompletionRequest:
    return router_pb.CreateChatCompletionRequest(
        body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body))
    )


def over_limit_user(running: RunningStack) -> str:
    """A new user with a 1 nano-USD spending limit, once the Router refuses their calls."""
    with running.admin() as admin:
        user = unique("limited")
        ok(admin.post("/admin/v1/users", json={"name": user}))
        token = ok(admin.post(f"/admin/v1/users/{user}/tokens", json={"name": "main"}))["token"]
        ok(admin.put(f"/v1/billing/accounts/{user}/limit", json={"limitNanoUsd": "1"}))
    body = {"model": CHAT_MODEL, "messages": MESSAGES}
    with running.http(token) as http:  # Billing pushes the limited account to the Router: wait for it
        eventually(lambda: http.post("/v1/chat/completions", json=body).status_code == 402, "the Router's refusal")
    return token


@pytest.fixture(scope="module")
def demo(shared_demo: DemoStack) -> Demo:
    stack, base_url, admin_token, lines = shared_demo
    running = RunningStack(stack, base_url, admin_token)
    token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
    return Demo(running, token, over_limit_user(running))


@dataclass(frozen=True)
class Case:
    """One failing call, made natively and over REST, and the error both must name."""

    grpc_call: Callable[[router_grpc.RouterServiceStub, Demo], object]
    rest_call: Callable[[httpx.Client, Demo], httpx.Response]
    expected: tuple[grpc.StatusCode, str, str | None]  # code, reason, field
    http_status: int


def chat_case(body: dict, expected: tuple, http_status: int, token: Callable[[Demo], str] = lambda d: d.token) -> Case:
    def native(stub: router_grpc.RouterServiceStub, demo: Demo) -> object:
        metadata = [("authorization", f"Bearer {token(demo)}")]
        return list(stub.CreateChatCompletion(chat_request(body), metadata=metadata, timeout=30))

    def rest(http: httpx.Client, demo: Demo) -> httpx.Response:
        return http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token(demo)}"})

    return Case(native, rest, expected, http_status)


def model_case(model: str, expected: tuple, http_status: int) -> Case:
    return Case(
        lambda stub, _: stub.GetModel(router_pb.GetModelRequest(id=model), timeout=30),
        lambda http, _: http.get(f"/v1/models/{model}"),
        expected,
        http_status,
    )


CASES = {
    "over the spending limit": chat_case(
        {"model": CHAT_MODEL, "messages": MESSAGES},
        (Code.RESOURCE_EXHAUSTED, "INSUFFICIENT_QUOTA", None),
        402,
        token=lambda demo: demo.limited_token,
    ),
    "an unknown model": model_case("nope/x", (Code.NOT_FOUND, "MODEL_NOT_FOUND", "model"), 404),
    "chat with an unknown model": chat_case(
        {"model": "nope/x", "messages": MESSAGES}, (Code.NOT_FOUND, "MODEL_NOT_FOUND", "model"), 404
    ),
    "a model id with a provider suffix": model_case(
        f"{CHAT_MODEL}:demo", (Code.INVALID_ARGUMENT, "INVALID_MODEL_ID", "model"), 400
    ),
    "a bad field": chat_case(
        {"model": CHAT_MODEL, "messages": MESSAGES, "temperature": "hot"},
        (Code.INVALID_ARGUMENT, "INVALID_PARAMETER", "temperature"),
        400,
    ),
    "an unknown provider suffix": chat_case(
        {"model": f"{CHAT_MODEL}:nosuch", "messages": MESSAGES},
        (Code.INVALID_ARGUMENT, "UNKNOWN_PROVIDER", "model"),
        400,
    ),
    "an unknown provider field": chat_case(
        {"model": CHAT_MODEL, "messages": MESSAGES, "provider": "nosuch"},
        (Code.INVALID_ARGUMENT, "UNKNOWN_PROVIDER", "provider"),
        400,
    ),
    "an unknown token": chat_case(
        {"model": CHAT_MODEL, "messages": MESSAGES},
        (Code.UNAUTHENTICATED, "INVALID_API_KEY", None),
        401,
        token=lambda demo: "sk-nobody",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_native_grpc_gets_a_standard_status_and_nothing_rest_only(demo, name: str) -> None:
    case = CASES[name]
    with grpc.insecure_channel(demo.running.address("envoy")) as channel:
        failure = grpc_failure(lambda: case.grpc_call(demo.router(channel), demo))
    assert (failure.code, failure.reason, failure.field) == case.expected
    assert not [key for key in failure.trailer_keys if key.startswith("x-switchboard-")]


@pytest.mark.parametrize("name", list(CASES))
def test_rest_gets_the_same_error_in_openai_shape(demo, name: str) -> None:
    case = CASES[name]
    code, reason, field = case.expected
    with demo.running.http() as http:
        answer = case.rest_call(http, demo)
    error = error_of(answer, case.http_status)
    face = rest_face(code, reason)
    assert (face.status, error["type"], error["code"], error["param"]) == (
        case.http_status, face.type, reason.lower(), field,
    )  # fmt: skip
    assert not [name for name in answer.headers if name.startswith(("grpc-", "x-switchboard-"))]


def test_the_openai_sdk_raises_not_found_for_an_unknown_model_without_retrying(demo) -> None:
    client = openai.OpenAI(base_url=f"{demo.running.base_url}/v1", api_key=demo.token, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nope/x")  # sent as nope%2Fx
    assert (missing.value.status_code, missing.value.code) == (404, "model_not_found")
    with pytest.raises(openai.BadRequestError) as suffixed:
        client.chat.completions.create(model=f"{CHAT_MODEL}:nosuch", messages=MESSAGES)
    assert (suffixed.value.status_code, suffixed.value.code, suffixed.value.param) == (400, "unknown_provider", "model")


def test_only_an_unreachable_registry_is_a_503(make_stack) -> None:
    running = make_stack()
    registry = next(child for child in running.stack.children if child.name == "registry")
    registry.process.terminate()
    registry.process.wait(timeout=30)
    running.stack.children.remove(registry)
    with running.http() as http:
        error = error_of(http.get("/v1/models/nope/x"), 503)
    assert (error["code"], error["type"]) == ("registry_unavailable", "service_unavailable_error")
    with grpc.insecure_channel(running.address("envoy")) as channel:
        stub = router_grpc.RouterServiceStub(channel)
        failure = grpc_failure(lambda: stub.GetModel(router_pb.GetModelRequest(id="nope/x"), timeout=30))
    assert (failure.code, failure.reason) == (Code.UNAVAILABLE, "REGISTRY_UNAVAILABLE")
    assert not [key for key in failure.trailer_keys if key.startswith("x-switchboard-")]


# --- the table, without a network ---------------------------------------------------------------

reasons = st.sampled_from([reason for _, reason in table() if reason]) | st.from_regex(REASON_FORMAT, fullmatch=True)


@given(st.sampled_from(ERROR_CODES), reasons)
def test_every_http_status_is_consistent_with_its_grpc_code(code: grpc.StatusCode, reason: str) -> None:
    face = rest_face(code, reason)
    assert 400 <= face.status < 500 if code in CLIENT_CODES else 500 <= face.status < 600
    assert (face.status == 503) <= (code == Code.UNAVAILABLE)
    assert face.type.endswith("_error") or face.type == "insufficient_quota"
    error = ApiError(code, reason, "message", param="field")
    assert error.openai_body()["error"] == {"message": "message", "type": face.type, "param": "field",
                                            "code": reason.lower()}  # fmt: skip


def test_the_table_names_every_code_and_the_issues_examples() -> None:
    assert {code for code, reason in table() if not reason} == set(ERROR_CODES) == CLIENT_CODES | SERVER_CODES
    examples = {
        (Code.RESOURCE_EXHAUSTED, "INSUFFICIENT_QUOTA"): (402, "insufficient_quota"),
        (Code.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED"): (429, "rate_limit_error"),
        (Code.INVALID_ARGUMENT, "INVALID_PARAMETER"): (400, "invalid_request_error"),
        (Code.INVALID_ARGUMENT, "BODY_TOO_LARGE"): (413, "invalid_request_error"),
        (Code.NOT_FOUND, "MODEL_NOT_FOUND"): (404, "not_found_error"),
        (Code.ALREADY_EXISTS, "NAME_TAKEN"): (409, "conflict_error"),
        (Code.UNAVAILABLE, "UPSTREAM_ERROR"): (502, "upstream_error"),
        (Code.UNAVAILABLE, "REGISTRY_UNAVAILABLE"): (503, "service_unavailable_error"),
    }
    assert {key: (rest_face(*key).status, rest_face(*key).type) for key in examples} == examples
    assert {status: rest_face(*verdict).status for status, verdict in PROVIDER_VERDICTS.items()} == {
        status: status for status in PROVIDER_VERDICTS
    }


def rpc_error(code: grpc.StatusCode, error: ApiError | None) -> grpc.aio.AioRpcError:
    """A failed call's error as a client sees it, with the details `error` (if any) would send."""
    trailers = error.trailing_metadata() if error else ()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "details")


@given(st.sampled_from(ERROR_CODES), reasons, st.none() | st.from_regex(r"[a-z][a-zA-Z.]{0,20}", fullmatch=True))
def test_another_services_verdict_is_relayed_faithfully_and_only_unreachable_is_a_503(
    code: grpc.StatusCode, reason: str, field: str | None
) -> None:
    sent = ApiError(code, reason, "the registry's message", param=field)
    unreachable = unavailable("REGISTRY_UNAVAILABLE", "the registry is unavailable")
    got = relayed(rpc_error(code, sent), "registry", unreachable)
    if code in UNREACHABLE_CODES:
        assert got is unreachable and got.http_status == 503
    elif code in VERDICT_CODES:
        assert (got.grpc_code, got.reason, got.param, got.message) == (code, reason, field, sent.message)
        assert got.openai_body() == sent.openai_body()
    else:  # e.g. our own service credential refused: a fault of the deployment, not of the caller
        assert (got.grpc_code, got.http_status) == (Code.INTERNAL, 500)
    assert relayed(rpc_error(code, None), "registry", unreachable).http_status in (500, 503)


def test_a_status_without_our_details_is_not_taken_for_a_verdict() -> None:
    foreign = ApiError(Code.NOT_FOUND, "MODEL_NOT_FOUND", "m")
    status = foreign.rpc_status()
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", domain="example.com")
    status.details[0].Pack(info)
    trailers = grpc.aio.Metadata((DETAILS_TRAILER, status.SerializeToString()))
    error = grpc.aio.AioRpcError(Code.NOT_FOUND, grpc.aio.Metadata(), trailers, "m")
    assert from_rpc_error(error) is None
    garbage = grpc.aio.Metadata((DETAILS_TRAILER, b"\xff\xff"))
    assert from_rpc_error(grpc.aio.AioRpcError(Code.NOT_FOUND, grpc.aio.Metadata(), garbage, "m")) is None


def test_a_reason_that_is_not_upper_snake_is_refused() -> None:
    for reason in ("model_not_found", "X", "A-B", "_A", "A" * 64, "400"):
        with pytest.raises(ValueError):
            ApiError(Code.NOT_FOUND, reason, "m")
