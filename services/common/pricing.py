"""Cost estimates from the operator's price table (nano-USD).

One place for the arithmetic: the Router estimates a reservation before a
provider call and the served request's estimate after it; Billing charges the
estimate of a request the provider never priced.
"""

from __future__ import annotations

from dataclasses import dataclass

# Money and counts are int64 on the wire and in the database: every result saturates here.
INT64_MAX = 2**63 - 1
MAX_NANO_USD = INT64_MAX
NANO_PER_USD = 1_000_000_000

# What a request costs when its provider model has no price, per task family.
DEFAULT_ESTIMATE_NANO_USD: dict[str, int] = {
    "conversational": 100_000,  # 0.0001 USD
    "text-to-image": 10_000_000,  # 0.01 USD
}


def saturated(amount: int) -> int:
    """The amount clamped into int64's range, as every int64 money field carries it."""
    return max(-MAX_NANO_USD, min(amount, MAX_NANO_USD))


@dataclass(frozen=True)
class Price:
    """The operator's price for one provider model."""

    input_token_nano_usd: int = 0
    output_token_nano_usd: int = 0
    request_nano_usd: int = 0
    image_nano_usd: int = 0
    # The price of one unit of the task's own unit (services/common/tasks.py), for the units
    # that have no field above: seconds of audio or video, characters.
    unit_nano_usd: int = 0

    @property
    def is_set(self) -> bool:
        return any(
            (
                self.input_token_nano_usd,
                self.output_token_nano_usd,
                self.request_nano_usd,
                self.image_nano_usd,
                self.unit_nano_usd,
            )
        )


def estimate_nano_usd(
    price: Price | None,
    task: str,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    images: int = 0,
    units: int = 0,
) -> int:
    """What the prices give for this usage; the task's default when there is no price."""
    if price is None or not price.is_set:
        return DEFAULT_ESTIMATE_NANO_USD.get(task, DEFAULT_ESTIMATE_NANO_USD["conversational"])
    total = (
        price.request_nano_usd
        + price.input_token_nano_usd * max(0, input_tokens)
        + price.output_token_nano_usd * max(0, output_tokens)
        + price.image_nano_usd * max(0, images)
        + price.unit_nano_usd * max(0, units)
    )
    return min(total, MAX_NANO_USD)


def prompt_tokens_estimate(body_bytes: int) -> int:
    """A cheap upper-side guess of prompt tokens from the request size (~4 bytes a token)."""
    return min(body_bytes // 4 + 1, MAX_NANO_USD)
