"""Credentials: callers' bearer tokens (Envoy passes HTTP headers as gRPC
metadata) and the service credential that guards the internal services."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from services.common.errors import permission_denied, unauthenticated
from services.common.metadata import adding_metadata

# Metadata key of the shared secret the services present to each other.
SERVICE_CREDENTIAL_KEY = "switchboard-service-credential"
# Its name before 2026-12-07, accepted (never sent) for one release so that the services of the release
# before and of this one call each other while a rolling upgrade runs both (docs/operations.md).
PREVIOUS_SERVICE_CREDENTIAL_KEY = "x-switchboard-service-credential"
ACCEPTED_CREDENTIAL_KEYS = frozenset({SERVICE_CREDENTIAL_KEY, PREVIOUS_SERVICE_CREDENTIAL_KEY})
# Services only the other services may call (Envoy does not route them either).
INTERNAL_SERVICES = frozenset({"switchboard.registry.v1.InternalService", "switchboard.billing.v1.LedgerService"})


# Anthropic's SDKs (and Claude Code) send the key in this header; it counts wherever Bearer does.
API_KEY_HEADER = "x-api-key"
# Every token the Registry issues starts with this (services/registry/domain/state.py): "hf_" as the
# hub's tokens, since the hub's clients (huggingface_hub, @huggingface/inference) send a call
# through the router whose address they are given only with a token that starts so. Tokens
# issued before start with the legacy prefix. In anonymous mode a key of neither shape that is
# not the admin token is a placeholder, not a credential.
TOKEN_PREFIX = "hf_sb_"
TOKEN_PREFIXES = (TOKEN_PREFIX, "sb-")


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """A request header / metadata value, or None."""
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


def credential(authorization: str | None, api_key: str | None) -> str | None:
    """The Authorization header to read: the caller's own, else an x-api-key as a bearer token."""
    if authorization or not api_key:
        return authorization
    return f"Bearer {api_key}"


def parse_bearer(header: str | None, required: bool = True) -> str:
    """The token of "Authorization: Bearer <token>"; "" when absent and not required; 401 otherwise."""
    if not header:
        if not required:
            return ""
        raise unauthenticated(
            "INVALID_API_KEY", "missing credentials: send 'Authorization: Bearer <token>' or 'x-api-key: <token>'"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("INVALID_API_KEY", "the Authorization header must be 'Bearer <token>'")
    return token.strip()


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    """The call's bearer token; 401 when missing or malformed."""
    return parse_bearer(credential(metadata_value(context, "authorization"), metadata_value(context, API_KEY_HEADER)))


def is_admin_token(token: str, admin_token: str) -> bool:
    """Constant-time comparison with the operators' admin token."""
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())


def require_admin(is_admin: bool) -> None:
    """403 for a known caller who is not an operator. A missing or unknown token is a 401
    before this, on the admin routes as on every other."""
    if not is_admin:
        raise permission_denied("FORBIDDEN", "this call needs the admin token")


def _service_of(method: str) -> str:
    """ "/pkg.Service/Method" -> "pkg.Service"."""
    return method.lstrip("/").partition("/")[0]


class ServiceCredentialCheck(grpc.aio.ServerInterceptor):
    """Refuses calls to the internal services that do not carry the service credential
    (UNAUTHENTICATED, before the handler runs); every other service passes untouched."""

    def __init__(self, credential: str, protected: Iterable[str] = INTERNAL_SERVICES) -> None:
        if not credential:
            raise ValueError("the service credential must not be empty")
        self._credential = credential.encode()
        self._protected = frozenset(protected)

    def _presented(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        for name, value in metadata or ():
            if name in ACCEPTED_CREDENTIAL_KEYS:
                given = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(given, self._credential)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or _service_of(details.method) not in self._protected:
            return handler
        if self._presented(details.invocation_metadata):
            return handler
        return _refusing(handler)


_REFUSAL = "this internal service needs the service credential"


async def _refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)


async def _refuse_stream(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
    yield  # pragma: no cover - abort raises; this makes the function a generator


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape that aborts every call."""
    if handler.unary_unary or handler.stream_unary:
        kind = "unary_unary" if handler.unary_unary else "stream_unary"
        return handler._replace(**{kind: _refuse})
    kind = "unary_stream" if handler.unary_stream else "stream_stream"
    return handler._replace(**{kind: _refuse_stream})


def presenting_credential(credential: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that present the service credential on every call."""
    entries = ((SERVICE_CREDENTIAL_KEY, credential),)
    return adding_metadata(lambda: entries)
