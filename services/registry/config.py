"""The Registry's settings."""

from __future__ import annotations

from pydantic import Field

from services.common.config import ServiceSettings
from services.registry.domain.probes import ProbeSettings


class RegistrySettings(ServiceSettings):
    """Registry service: providers, model catalog, model mappings, identity, resolution."""

    hub_url: str = Field("https://huggingface.co", description="hub base URL for adapter weight downloads")
    conformance_call_seconds: float = Field(
        5.0, gt=0, description="timeout of each call of a conformance check (a check makes two rounds of calls)"
    )
    probes_enabled: bool = Field(True, description="probe every live mapping's provider at an interval")
    probe_interval_seconds: float = Field(60.0, gt=0, description="time between two probes of a mapping")
    probe_failure_threshold: int = Field(
        3, ge=1, description="consecutive failed probes after which a live mapping becomes error"
    )
    probe_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one probe")
    probe_concurrency: int = Field(16, ge=1, description="probes in flight at once per replica")

    def probes(self) -> ProbeSettings:
        return ProbeSettings(
            self.probes_enabled,
            self.probe_interval_seconds,
            max(1, self.probe_failure_threshold),
            self.probe_timeout_seconds,
            self.probe_concurrency,
        )
