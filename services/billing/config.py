"""Billing's settings."""

from __future__ import annotations

from pydantic import Field

from services.common.config import ServiceSettings


class BillingSettings(ServiceSettings):
    """Billing service: request ledger, cost reconciliation, usage, credits and limits."""

    registry_address: str = Field("127.0.0.1:50051", description="host:port of the Registry")
