"""Errors as google.rpc.Status with details, and in OpenAI's shape for REST.

A servicer raises ApiError; the server's interceptor turns it into a gRPC
status with ErrorInfo (and BadRequest when a field is at fault) details. Two
trailers carry the same error for Envoy's Lua filter, which answers REST
callers with the HTTP status and OpenAI's {"error": {...}} body.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_TRAILER = "x-switchboard-error"
STATUS_TRAILER = "x-switchboard-status"
DOMAIN = "switchboard"
# A message or param longer than this is cut: errors echo input, and the error
# trailer must stay far below the metadata limits of gRPC and Envoy.
MAX_MESSAGE_CHARS = 1024
MAX_PARAM_CHARS = 128

# HTTP status -> (gRPC code, OpenAI error type)
_BY_HTTP_STATUS: dict[int, tuple[grpc.StatusCode, str]] = {
    400: (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error"),
    401: (grpc.StatusCode.UNAUTHENTICATED, "authentication_error"),
    402: (grpc.StatusCode.FAILED_PRECONDITION, "insufficient_quota"),
    403: (grpc.StatusCode.PERMISSION_DENIED, "permission_error"),
    404: (grpc.StatusCode.NOT_FOUND, "not_found_error"),
    409: (grpc.StatusCode.ALREADY_EXISTS, "conflict_error"),
    413: (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error"),
    422: (grpc.StatusCode.INVALID_ARGUMENT, "unprocessable_entity_error"),
    429: (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limit_error"),
    500: (grpc.StatusCode.INTERNAL, "api_error"),
    501: (grpc.StatusCode.UNIMPLEMENTED, "not_implemented_error"),
    502: (grpc.StatusCode.UNAVAILABLE, "upstream_error"),
    503: (grpc.StatusCode.UNAVAILABLE, "service_unavailable_error"),
    504: (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout_error"),
}


class ApiError(Exception):
    """An error for the caller: HTTP status, message, and OpenAI's param/code."""

    def __init__(
        self,
        http_status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}  # extra response headers (metadata), e.g. which provider answered
        self.http_status = http_status if http_status in _BY_HTTP_STATUS else 500
        self.message = _truncate(message, MAX_MESSAGE_CHARS)
        self.param = None if param is None else _truncate(param, MAX_PARAM_CHARS)
        self.code = code or HTTPStatus(self.http_status).phrase.lower().replace(" ", "_")

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _BY_HTTP_STATUS[self.http_status][0]

    @property
    def error_type(self) -> str:
        return _BY_HTTP_STATUS[self.http_status][1]

    def openai_body(self) -> dict:
        """The body OpenAI's clients expect."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def rpc_status(self) -> status_pb2.Status:
        """google.rpc.Status with ErrorInfo, plus BadRequest when a field is at fault."""
        info = error_details_pb2.ErrorInfo(
            reason=self.code.upper(), domain=DOMAIN, metadata={"http_status": str(self.http_status)}
        )
        details = [info]
        if self.param:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.param, description=self.message)
            details.append(error_details_pb2.BadRequest(field_violations=[violation]))
        packed = []
        for detail in details:
            message = any_pb2.Any()
            message.Pack(detail)
            packed.append(message)
        return status_pb2.Status(code=self.grpc_code.value[0], message=self.message, details=packed)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Trailers for gRPC clients (status details) and for Envoy's Lua filter."""
        return (
            ("grpc-status-details-bin", self.rpc_status().SerializeToString()),
            # Metadata values must be printable ASCII: escape everything else.
            (ERROR_TRAILER, json.dumps(self.openai_body(), ensure_ascii=True)),
            (STATUS_TRAILER, str(self.http_status)),
            *self.headers.items(),
        )


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "... (truncated)"


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    """A 400 naming the field at fault."""
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, code: str = "not_found") -> ApiError:
    """A 404."""
    return ApiError(404, message, code=code)


def internal_error() -> ApiError:
    """What the caller sees of an unexpected failure: no stack trace, no detail."""
    return ApiError(500, "internal error", code="internal_error")
