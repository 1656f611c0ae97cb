"""Errors defined gRPC-first: the error catalogue.

An error is a gRPC status code and an ErrorInfo reason (UPPER_SNAKE, domain
"switchboard"), with a BadRequest field violation when a field is at fault. A
servicer raises ApiError; the server's interceptor ends the call with it as a
google.rpc.Status in grpc-status-details-bin, for every caller alike: services
know nothing of REST. What a REST caller sees is derived from (code, reason) in
one place, `rest_face`: the HTTP status and OpenAI's error `type`; OpenAI's
snake_case `code` is the reason in lower case. Envoy alone turns the status into
that answer (envoy/errors.lua), from the table scripts/generate.py writes from
this catalogue (gen/error_faces.lua, docs/boundary.md).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

log = logging.getLogger(__name__)

Code = grpc.StatusCode
DETAILS_TRAILER = "grpc-status-details-bin"
DOMAIN = "switchboard"
# AIP-193: UPPER_SNAKE_CASE, at most 63 characters.
REASON_FORMAT = re.compile(r"[A-Z][A-Z0-9_]{0,61}[A-Z0-9]")
# ErrorInfo metadata: which provider answered, and the provider's own error code (what REST callers see).
PROVIDER_KEY = "provider"
PROVIDER_CODE_KEY = "provider_code"
# A message or param longer than this is cut: errors echo input, and the status
# details trailer must stay far below the metadata limits of gRPC and Envoy.
MAX_MESSAGE_CHARS = 1024
MAX_PARAM_CHARS = 128


@dataclass(frozen=True)
class RestFace:
    """What a REST caller sees of an error: the HTTP status and OpenAI's error type."""

    status: int
    type: str


# Each code's REST face: the HTTP status of google/rpc/code.proto, and OpenAI's error types.
_BY_CODE: dict[grpc.StatusCode, RestFace] = {
    Code.CANCELLED: RestFace(499, "cancelled_error"),
    Code.UNKNOWN: RestFace(500, "api_error"),
    Code.INVALID_ARGUMENT: RestFace(400, "invalid_request_error"),
    Code.DEADLINE_EXCEEDED: RestFace(504, "timeout_error"),
    Code.NOT_FOUND: RestFace(404, "not_found_error"),
    Code.ALREADY_EXISTS: RestFace(409, "conflict_error"),
    Code.PERMISSION_DENIED: RestFace(403, "permission_error"),
    Code.RESOURCE_EXHAUSTED: RestFace(429, "rate_limit_error"),
    Code.FAILED_PRECONDITION: RestFace(400, "invalid_request_error"),
    Code.ABORTED: RestFace(409, "conflict_error"),
    Code.OUT_OF_RANGE: RestFace(400, "invalid_request_error"),
    Code.UNIMPLEMENTED: RestFace(501, "not_implemented_error"),
    Code.INTERNAL: RestFace(500, "api_error"),
    Code.UNAVAILABLE: RestFace(503, "service_unavailable_error"),
    Code.DATA_LOSS: RestFace(500, "api_error"),
    Code.UNAUTHENTICATED: RestFace(401, "authentication_error"),
}
_UPSTREAM = RestFace(502, "upstream_error")
# The reasons whose REST face is not their code's.
_BY_REASON: dict[tuple[grpc.StatusCode, str], RestFace] = {
    # Out of credits or over the spending limit: OpenAI's 402, not a rate limit's 429.
    (Code.RESOURCE_EXHAUSTED, "INSUFFICIENT_QUOTA"): RestFace(402, "insufficient_quota"),
    (Code.INVALID_ARGUMENT, "BODY_TOO_LARGE"): RestFace(413, "invalid_request_error"),
    (Code.INVALID_ARGUMENT, "UNPROCESSABLE_ENTITY"): RestFace(422, "unprocessable_entity_error"),
    # A provider failed: UNAVAILABLE (retrying may help) but a 502, since Switchboard itself
    # answered; a 503 says that a Switchboard service is unreachable.
    (Code.UNAVAILABLE, "UPSTREAM_ERROR"): _UPSTREAM,
    (Code.UNAVAILABLE, "UPSTREAM_AUTH_ERROR"): _UPSTREAM,
    (Code.UNAVAILABLE, "STREAM_INTERRUPTED"): _UPSTREAM,
}
# A provider's own verdict on a request, passed on: the provider's HTTP status -> (code, reason).
PROVIDER_VERDICTS: dict[int, tuple[grpc.StatusCode, str]] = {
    400: (Code.INVALID_ARGUMENT, "BAD_REQUEST"),
    404: (Code.NOT_FOUND, "NOT_FOUND"),
    409: (Code.ABORTED, "CONFLICT"),
    413: (Code.INVALID_ARGUMENT, "BODY_TOO_LARGE"),
    422: (Code.INVALID_ARGUMENT, "UNPROCESSABLE_ENTITY"),
}


# Anthropic's Messages API answers its errors in Anthropic's shape, {"type": "error", "error":
# {"type", "message"}}, with Anthropic's statuses: Envoy answers so on these paths (plain and per
# provider), the services' errors and its own replies alike (envoy/errors.lua, edge/envoy.py).
ANTHROPIC_PATH_REGEX = r"(/[^/?]+)?/v1/messages(/[^?]*)?([?].*)?"
# HTTP status -> (Anthropic's status, Anthropic's error type); any other status is an api_error.
ANTHROPIC_FACES: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    402: (402, "billing_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    409: (409, "invalid_request_error"),
    413: (413, "request_too_large"),
    414: (414, "invalid_request_error"),
    422: (422, "invalid_request_error"),
    429: (429, "rate_limit_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
}


def anthropic_face(status: int) -> tuple[int, str]:
    """Anthropic's status and error type for an HTTP status."""
    return ANTHROPIC_FACES.get(status, (status, "api_error"))


def anthropic_error(status: int, message: str) -> tuple[int, dict]:
    """Anthropic's status and error body for an error of this HTTP status."""
    anthropic_status, error_type = anthropic_face(status)
    return anthropic_status, {"type": "error", "error": {"type": error_type, "message": message}}


def rest_face(code: grpc.StatusCode, reason: str) -> RestFace:
    """The HTTP status and OpenAI error type of an error: the one place they are decided."""
    return _BY_REASON.get((code, reason)) or _BY_CODE[code]


def table() -> list[tuple[grpc.StatusCode, str]]:
    """Every (code, reason) the table names ("" for a code's default)."""
    return [(code, "") for code in _BY_CODE] + list(_BY_REASON)


class ApiError(Exception):
    """An error for the caller: a gRPC code, an ErrorInfo reason and a message; `param` is
    the field at fault (BadRequest's field, OpenAI's param), `metadata` ErrorInfo's metadata,
    `headers` extra response metadata (e.g. the answer's timing, binary under a "-bin" key), which
    Envoy presents to REST callers as headers; `retry_seconds` when retrying later may succeed (RetryInfo,
    which the edge presents to REST callers)."""

    def __init__(
        self,
        grpc_code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        param: str | None = None,
        metadata: dict[str, str] | None = None,
        headers: dict[str, str | bytes] | None = None,
        retry_seconds: int | None = None,
    ) -> None:
        if grpc_code not in _BY_CODE or not REASON_FORMAT.fullmatch(reason):
            raise ValueError(f"not an error's code and reason: {grpc_code}, {reason!r}")
        super().__init__(message)
        self.grpc_code = grpc_code
        self.reason = reason
        self.message = _truncate(message, MAX_MESSAGE_CHARS)
        self.param = None if param is None else _truncate(param, MAX_PARAM_CHARS)
        self.metadata = {key: _truncate(value, MAX_PARAM_CHARS) for key, value in (metadata or {}).items()}
        self.headers = headers or {}
        self.retry_seconds = retry_seconds

    @property
    def rest(self) -> RestFace:
        return rest_face(self.grpc_code, self.reason)

    @property
    def http_status(self) -> int:
        return self.rest.status

    @property
    def code(self) -> str:
        """OpenAI's `code`: the reason in snake_case, or the provider's own code it passes on."""
        return self.metadata.get(PROVIDER_CODE_KEY) or self.reason.lower()

    def openai_body(self) -> dict:
        """The body OpenAI's clients expect."""
        return {"error": {"message": self.message, "type": self.rest.type, "param": self.param, "code": self.code}}

    def rpc_status(self) -> status_pb2.Status:
        """google.rpc.Status with ErrorInfo, plus BadRequest when a field is at fault and RetryInfo
        when retrying later may succeed."""
        details: list = [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)]
        if self.param:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.param, description=self.message)
            details.append(error_details_pb2.BadRequest(field_violations=[violation]))
        if self.retry_seconds is not None:
            delay = duration_pb2.Duration(seconds=self.retry_seconds)
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        packed = []
        for detail in details:
            message = any_pb2.Any()
            message.Pack(detail)
            packed.append(message)
        return status_pb2.Status(code=self.grpc_code.value[0], message=self.message, details=packed)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The status details and the extra response metadata."""
        return ((DETAILS_TRAILER, self.rpc_status().SerializeToString()), *self.headers.items())


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "... (truncated)"


def invalid_argument(reason: str, message: str, param: str | None = None) -> ApiError:
    """The request is wrong whatever the state (a 400), naming the field at fault."""
    return ApiError(Code.INVALID_ARGUMENT, reason, message, param=param)


def not_found(reason: str, message: str, param: str | None = None) -> ApiError:
    """What the request names does not exist (a 404)."""
    return ApiError(Code.NOT_FOUND, reason, message, param=param)


def already_exists(reason: str, message: str, param: str | None = None) -> ApiError:
    """What the request would create exists already (a 409)."""
    return ApiError(Code.ALREADY_EXISTS, reason, message, param=param)


def unauthenticated(reason: str, message: str) -> ApiError:
    """No valid credentials (a 401)."""
    return ApiError(Code.UNAUTHENTICATED, reason, message)


def api_key_expired() -> ApiError:
    """An API token past its expireTime (a 401), whichever service is called with it."""
    return unauthenticated("API_KEY_EXPIRED", "this API token has expired")


def permission_denied(reason: str, message: str, param: str | None = None) -> ApiError:
    """The caller may not do this (a 403)."""
    return ApiError(Code.PERMISSION_DENIED, reason, message, param=param)


def unavailable(reason: str, message: str) -> ApiError:
    """A service is unreachable (a 503), or with an upstream reason a provider failed (a 502)."""
    return ApiError(Code.UNAVAILABLE, reason, message)


def internal_error() -> ApiError:
    """What the caller sees of an unexpected failure: no stack trace, no detail."""
    return ApiError(Code.INTERNAL, "INTERNAL_ERROR", "internal error")


# Another service could not answer: retrying may help.
_UNREACHABLE = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED})
# Another service's verdict on the request itself, which the caller made.
_VERDICTS = frozenset(
    {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION, Code.OUT_OF_RANGE,
     Code.ABORTED, Code.PERMISSION_DENIED}
)  # fmt: skip


def relayed(exc: grpc.aio.AioRpcError, service: str, unreachable: ApiError) -> ApiError:
    """The caller's error for a failed call to another Switchboard service: that service's own
    verdict on the request passed on as it is (code, reason, message, field); `unreachable` when
    the service could not answer; an internal error for anything else (e.g. our service
    credential refused, a fault of the deployment, not of the caller)."""
    code = exc.code()
    if code in _VERDICTS:
        error = from_rpc_error(exc)
        if error is not None:
            return error
    log.warning("%s call failed", service, extra={"code": code.name})
    return unreachable if code in _UNREACHABLE else internal_error()


def from_rpc_error(exc: grpc.aio.AioRpcError) -> ApiError | None:
    """The ApiError a Switchboard service ended the call with (from its status details), or None."""
    raw = next((v for k, v in exc.trailing_metadata() or () if k == DETAILS_TRAILER and isinstance(v, bytes)), None)
    if raw is None:
        return None
    try:
        status = status_pb2.Status.FromString(raw)
    except DecodeError:
        return None
    info, request, retry = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest(), error_details_pb2.RetryInfo()
    if not any(detail.Unpack(info) for detail in status.details):
        return None
    if info.domain != DOMAIN or status.code != exc.code().value[0]:
        return None
    has_field = any(detail.Unpack(request) for detail in status.details)
    param = request.field_violations[0].field if has_field and request.field_violations else None
    retry_seconds = retry.retry_delay.seconds if any(detail.Unpack(retry) for detail in status.details) else None
    try:
        return ApiError(
            exc.code(), info.reason, status.message, param=param, metadata=dict(info.metadata),
            retry_seconds=retry_seconds,
        )  # fmt: skip
    except ValueError:
        return None
