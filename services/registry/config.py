"""The Registry's settings."""

from __future__ import annotations

from pydantic import Field

from services.common.config import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Registry service: providers, model catalog, model mappings, identity, resolution."""

    hub_url: str = Field("https://huggingface.co", description="hub base URL for adapter weight downloads")
