"""An API token's own limits (ApiTokenLimits): checked when a token is made, stored with it
as proto3 JSON, and handed to the Router with the caller (AuthenticateToken), which enforces
them (services/router/key_limits.py; docs/api-keys.md)."""

from __future__ import annotations

import time

from google.protobuf import json_format
from switchboard.registry.v1 import admin_service_pb2 as admin_pb

from services.common.errors import invalid_argument
from services.common.pricing import MAX_NANO_USD
from services.registry.domain.validation import check_count, check_model_id, check_range, check_unique

MAX_REQUESTS_PER_MINUTE = 1_000_000
MAX_TOKENS_PER_MINUTE = 1_000_000_000
MAX_ALLOWED_MODELS = 100
MAX_EXPIRY_SECONDS = 10 * 366 * 86_400  # ten years ahead
BUDGET_PERIODS = ("daily", "weekly", "monthly")
NANOS_PER_SECOND = 1_000_000_000


def checked(limits: admin_pb.ApiTokenLimits, param: str = "limits") -> admin_pb.ApiTokenLimits:
    """The limits as given when each is in range (a 400 naming the first one that is not)."""
    if limits.requests_per_minute:
        check_range(limits.requests_per_minute, 1, MAX_REQUESTS_PER_MINUTE, f"{param}.requestsPerMinute")
    if limits.tokens_per_minute:
        check_range(limits.tokens_per_minute, 1, MAX_TOKENS_PER_MINUTE, f"{param}.tokensPerMinute")
    if limits.budget_nano_usd or limits.budget_period:
        check_range(limits.budget_nano_usd, 1, MAX_NANO_USD, f"{param}.budgetNanoUsd")
        if limits.budget_period not in BUDGET_PERIODS:
            periods = ", ".join(f'"{p}"' for p in BUDGET_PERIODS)
            raise invalid_argument("INVALID_REQUEST", f"{param}.budgetPeriod must be one of {periods}", param)
    if limits.HasField("expire_time"):
        now = int(time.time())
        check_range(limits.expire_time.seconds, now + 1, now + MAX_EXPIRY_SECONDS, f"{param}.expireTime")
        check_range(limits.expire_time.nanos, 0, NANOS_PER_SECOND - 1, f"{param}.expireTime.nanos")  # native gRPC
    check_count(limits.allowed_models, MAX_ALLOWED_MODELS, f"{param}.allowedModels")
    for model in limits.allowed_models:
        check_model_id(model, f"{param}.allowedModels")
    check_unique(limits.allowed_models, f"{param}.allowedModels", "model")
    return limits


def stored(limits: admin_pb.ApiTokenLimits) -> str | None:
    """The limits as the tokens table keeps them; None when there are none."""
    return json_format.MessageToJson(limits, indent=None) if limits.ByteSize() else None


def loaded(text: str | None) -> admin_pb.ApiTokenLimits | None:
    return json_format.Parse(text, admin_pb.ApiTokenLimits()) if text else None
