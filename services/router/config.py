"""The Router's settings."""

from __future__ import annotations

from pydantic import Field

from services.common.config import ServiceSettings


class RouterSettings(ServiceSettings):
    """Router service: the OpenAI-compatible inference API."""

    registry_address: str = Field("127.0.0.1:50051", description="host:port of the Registry")
    billing_address: str = Field("127.0.0.1:50053", description="host:port of Billing")
