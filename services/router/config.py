"""The Router's settings."""

from __future__ import annotations

from pydantic import Field

from services.common.accounts import NAME_PATTERN
from services.common.config import ServiceSettings
from services.router.anonymous import AnonymousLimits

# A user or org name (services/common/accounts.py), or nothing.
ACCOUNT_NAME = rf"^({NAME_PATTERN})?$"


class RouterSettings(ServiceSettings):
    """Router service: the OpenAI-compatible inference API."""

    registry_address: str = Field("127.0.0.1:50051", description="host:port of the Registry")
    billing_address: str = Field("127.0.0.1:50053", description="host:port of Billing")
    hub_url: str = Field("https://huggingface.co", description="base of adapter weight download URLs")
    upstream_connect_timeout_seconds: float = Field(3.0, gt=0, description="connect timeout of one provider attempt")
    upstream_timeout_seconds: float = Field(
        120.0, gt=0, description="deadline of one provider attempt until its answer (unary) or first chunk (stream)"
    )
    stream_idle_timeout_seconds: float = Field(120.0, gt=0, description="longest silence inside a provider's stream")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open a provider's circuit breaker")
    breaker_cooldown_seconds: float = Field(10.0, gt=0, description="how long an open breaker skips its provider")
    health_report_interval_seconds: float = Field(
        1.0, gt=0, description="how often the traffic measured since the last report goes to the shared health records"
    )
    billing_timeout_seconds: float = Field(0.5, gt=0, description="deadline of a reservation call to Billing")
    billing_breaker_failures: int = Field(
        3, ge=1, description="failed reservation calls in a row after which Billing is not asked for a cooldown"
    )
    billing_breaker_cooldown_seconds: float = Field(
        5.0, gt=0, description="how long requests proceed without asking a failing Billing"
    )
    max_answer_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="largest provider answer passed on (a larger one is a 502, not billed)"
    )
    ledger_batch_size: int = Field(1000, ge=1, description="ledger records per RecordRequests call")
    ledger_send_interval_seconds: float = Field(
        0.5,
        ge=0.1,
        le=60,
        description="least time between two RecordRequests calls (a whole batch waiting goes at once); "
        "records reach the spool every 0.1 s",
    )
    counter_store_url: str = Field(
        "",
        description="redis://host:port/db of the store every replica counts API keys' rate limits and budgets "
        "in (docs/api-keys.md); empty: this process's memory, right for a single replica",
    )
    counter_store_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="deadline of one call to the counter store; past it, rate limits fail open, budgets closed",
    )
    anonymous_account: str = Field(
        "",
        pattern=ACCOUNT_NAME,
        description="bill inference calls without an Authorization header to this user or org; off when "
        "empty. Unsafe on a port others can reach: anyone there spends this account's money",
    )
    anonymous_max_concurrent: int = Field(2, ge=1, description="anonymous calls in flight per client address")
    anonymous_requests_per_minute: int = Field(20, ge=1, description="anonymous calls a minute per client address")
    anonymous_max_reservation_nano_usd: int = Field(
        20_000_000, ge=1, description="largest reservation (estimate) of one anonymous call, nano-USD"
    )
    anonymous_spend_per_hour_nano_usd: int = Field(
        100_000_000, ge=1, description="estimates an hour one client address may spend anonymously, nano-USD"
    )

    def anonymous_limits(self) -> AnonymousLimits:
        return AnonymousLimits(
            self.anonymous_max_concurrent,
            self.anonymous_requests_per_minute,
            self.anonymous_max_reservation_nano_usd,
            self.anonymous_spend_per_hour_nano_usd,
        )
