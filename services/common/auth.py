"""Bearer tokens from gRPC metadata (Envoy passes HTTP headers as metadata)."""

from __future__ import annotations

import hmac

import grpc

from services.common.errors import ApiError


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """A request header / metadata value, or None."""
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    """The token of "Authorization: Bearer <token>"; 401 when missing."""
    header = metadata_value(context, "authorization")
    if not header:
        raise ApiError(
            401, "missing Authorization header: send 'Authorization: Bearer <token>'", code="invalid_api_key"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "the Authorization header must be 'Bearer <token>'", code="invalid_api_key")
    return token.strip()


def is_admin_token(token: str, admin_token: str) -> bool:
    """Constant-time comparison with the operators' admin token."""
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())


def require_admin(context: grpc.aio.ServicerContext, admin_token: str) -> None:
    """401 without a token, 403 with any token but the admin token."""
    if not is_admin_token(bearer_token(context), admin_token):
        raise ApiError(403, "this call needs the admin token", code="forbidden")
