"""Billing's settings."""

from __future__ import annotations

from pydantic import Field

from services.common.config import ServiceSettings


class BillingSettings(ServiceSettings):
    """Billing service: request ledger, cost reconciliation, usage, credits and limits."""

    registry_address: str = Field("127.0.0.1:50051", description="host:port of the Registry")
    reconcile_interval_seconds: float = Field(
        10.0, ge=0, description="time between background reconciliation passes (0: none, on demand only)"
    )
    reconcile_batch_size: int = Field(1000, ge=1, description="request ids per cost API call")
    reconcile_concurrency: int = Field(4, ge=1, description="cost API calls in flight per provider")
    cost_api_timeout_seconds: float = Field(30.0, gt=0, description="timeout of one cost API call")
    cost_api_backoff_max_seconds: float = Field(300.0, gt=0, description="longest wait after a failing cost API")
    unpriced_after_seconds: float = Field(
        3 * 86400.0, gt=0, description="a request still pending this long after it ended becomes unpriced"
    )
    reservation_ttl_seconds: float = Field(
        900.0, gt=0, description="a reservation neither recorded nor released expires after this long"
    )
