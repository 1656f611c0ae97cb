"""A provider as callers of its HTTP API need it, and what Switchboard assumes of that API
unless the provider's registration says otherwise."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.pricing import Price
from services.common.secrets import NO_SECRETS, Redactor
from services.common.tasks import DEFAULT_REQUEST_ID_HEADER, format_of

# What a provider model supports, as the same optional fields of a mapping (Registry), a
# resolution candidate and a /v1/models provider entry (Router); unset while unknown.
CAPABILITY_FIELDS = ("supports_tools", "supports_structured_output", "context_length")

_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*")
# Names a provider's request id cannot travel under in an answer's metadata: the Router's own
# (switchboard-provider, switchboard-request-id, switchboard-timing-bin, ...), gRPC's, Envoy's and
# HTTP's framing, which it would fake or break. The Registry refuses them; a row stored before
# that check passes its header on under the default name.
RESERVED_HEADER_PREFIXES = ("switchboard-", "grpc-", "x-envoy-", "content-", "proxy-")
RESERVED_HEADERS = frozenset({"connection", "host", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"})
# The provider that served an answer (or refused it), in an answer's metadata or an error's
# trailers; Envoy presents it to REST callers as a header of the REST API (envoy/answers.lua).
PROVIDER_METADATA_KEY = "switchboard-provider"
# Providers whose redactors are kept (a few per provider: its secrets change seldom).
KEPT_REDACTORS = 1024


@lru_cache(maxsize=KEPT_REDACTORS)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    """One redactor per set of secrets: building one takes milliseconds (every encoded form of
    each secret), and every resolution that names the provider carries the same secrets."""
    return Redactor(secrets)


def reserved_header(name: str) -> bool:
    """Whether a provider's request id header has a name its answers' metadata cannot carry."""
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES)


@dataclass(frozen=True)
class ProviderEntry:
    """A provider as the hot path needs it; its request headers (with the key) are built once."""

    id: str
    base_url: str
    headers: dict[str, str] = field(repr=False)
    request_id_header: str
    tasks: tuple[str, ...]
    default_rank: int
    prices: dict[str, Price]

    # The request id header as a gRPC metadata key (Envoy passes it on as that HTTP header).
    request_id_metadata_key: str = DEFAULT_REQUEST_ID_HEADER.lower()
    # Scrubs every secret of the provider from what it sends back.
    redactor: Redactor = field(default=NO_SECRETS, repr=False, compare=False)
    # The org whose write members manage the provider.
    org: str = ""
    # How the provider is called per task, as registered ("openai" or "hub"); others take their default.
    task_formats: dict[str, str] = field(default_factory=dict)

    def format_of(self, task: str) -> str:
        """How the provider is called for the task: "openai" or "hub"."""
        return format_of(task, self.task_formats)

    @classmethod
    def from_config(cls, config: internal_pb.ProviderConfig) -> ProviderEntry:
        p = config.provider
        prices = {
            price.provider_model: Price(
                price.input_token_nano_usd,
                price.output_token_nano_usd,
                price.request_nano_usd,
                price.image_nano_usd,
                price.unit_nano_usd,
            )
            for price in config.prices
        }
        header = p.request_id_header or DEFAULT_REQUEST_ID_HEADER
        key = header.lower()
        if not _METADATA_KEY.fullmatch(key) or reserved_header(key):
            key = DEFAULT_REQUEST_ID_HEADER.lower()
        return cls(
            id=p.id,
            base_url=p.base_url.rstrip("/"),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {p.api_key}"} if p.api_key else {}),
            },
            request_id_header=header,
            tasks=tuple(p.tasks),
            default_rank=p.default_rank,
            prices=prices,
            request_id_metadata_key=key,
            redactor=_redactor((p.api_key, *config.redact)),
            org=p.org,
            task_formats=dict(p.task_formats),
        )


@dataclass(frozen=True)
class Route:
    """One candidate to try: the provider, the model id to send, and a LoRA to load, if any."""

    provider: ProviderEntry
    provider_model: str
    lora_path: str = ""
    # The Registry's candidate: what the provider model supports.
    candidate: internal_pb.Candidate = field(default_factory=internal_pb.Candidate, compare=False, repr=False)
