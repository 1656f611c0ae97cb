"""What the console reads of Billing: an account's usage per UTC day (with the largest
models and providers of each day and the rest summed) and each provider's reconciliation state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message
from switchboard.billing.v1 import billing_service_pb2 as billing_pb

from services.billing import ledger
from services.billing.reconciler import CostApiRecord
from services.common.errors import invalid_argument
from services.common.pricing import saturated

DEFAULT_DAYS, MAX_DAYS = 30, 90  # the daily usage series' length


def usage_days(days: int) -> int:
    """The series' length: DEFAULT_DAYS when 0, 400 outside 1..MAX_DAYS."""
    if days == 0:
        return DEFAULT_DAYS
    if not 1 <= days <= MAX_DAYS:
        raise invalid_argument("INVALID_DAYS", f"days must be between 1 and {MAX_DAYS}, got {days}", "days")
    return days


def series_bounds(days: int, now: datetime) -> tuple[date, datetime, datetime]:
    """The series' first day, and the instants its first day starts and the day after today starts."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    return first, datetime.combine(first, time.min, UTC), datetime.combine(today + timedelta(days=1), time.min, UTC)


def _usage_slice(sums: list[int], **key: str) -> billing_pb.UsageSlice:
    settled, pending, unpriced, requests = (saturated(v) for v in sums)
    return billing_pb.UsageSlice(
        settled_nano_usd=settled, pending_nano_usd=pending, unpriced_nano_usd=unpriced, requests=requests, **key
    )


# How many models and providers a breakdown lists (the rest are summed): the daily series
# stays far below what Envoy transcodes in one answer, whatever an account used.
DAY_SLICES, PERIOD_SLICES = 10, 100


def _largest_first(item: tuple[str, list[int]]) -> tuple[int, int, str]:
    key, (settled, pending, unpriced, requests) = item
    return -(settled + pending + unpriced), -requests, key


def _accumulate(sums: list[int], amounts: Iterable[int]) -> None:
    for position, amount in enumerate(amounts):
        sums[position] += amount


def _fill_largest(
    listed: RepeatedCompositeFieldContainer,
    others: billing_pb.UsageSlice,
    sums: dict[str, list[int]],
    most: int,
    key: str,
) -> None:
    """The `most` largest entries of sums into listed (by key), the rest summed into others."""
    ranked = sorted(sums.items(), key=_largest_first)
    listed.extend(_usage_slice(amounts, **{key: name}) for name, amounts in sorted(ranked[:most]))
    rest = [0, 0, 0, 0]
    for _, amounts in ranked[most:]:
        _accumulate(rest, amounts)
    others.CopyFrom(_usage_slice(rest))


@dataclass
class Breakdown:
    """Sums of (settled, pending, unpriced, requests): in all, by model, by provider."""

    total: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    by_model: dict[str, list[int]] = field(default_factory=dict)
    by_provider: dict[str, list[int]] = field(default_factory=dict)

    def add(self, row: ledger.DayUsage) -> None:
        _accumulate(self.total, row.amounts)
        _accumulate(self.by_model.setdefault(row.model, [0, 0, 0, 0]), row.amounts)
        _accumulate(self.by_provider.setdefault(row.provider, [0, 0, 0, 0]), row.amounts)

    def fill(self, message: billing_pb.DailyUsage | billing_pb.UsageDay, most: int) -> None:
        """Sets the message's total, its `most` largest models and providers and the others' sums
        (both messages have these fields)."""
        message.total.CopyFrom(_usage_slice(self.total))
        _fill_largest(message.by_model, message.other_models, self.by_model, most, "model")
        _fill_largest(message.by_provider, message.other_providers, self.by_provider, most, "provider")


def daily_usage_message(account: str, first: date, days: int, rows: list[ledger.DayUsage]) -> billing_pb.DailyUsage:
    """Every day from `first` on, oldest first (days without requests at zero), and the period's sums."""
    period, by_day = Breakdown(), {}
    for row in rows:
        period.add(row)
        by_day.setdefault(row.day, Breakdown()).add(row)
    dates = [(first + timedelta(days=n)).isoformat() for n in range(days)]
    answer = billing_pb.DailyUsage(account=account, start_date=dates[0], end_date=dates[-1])
    period.fill(answer, PERIOD_SLICES)
    for day in dates:
        by_day.get(day, Breakdown()).fill(answer.days.add(date=day), DAY_SLICES)
    return answer


def stamp(message: Message, name: str, moment: datetime | None) -> None:
    if moment is not None:
        getattr(message, name).FromDatetime(moment)


def reconciliation_message(
    provider: str, counts: tuple[int, int], record: CostApiRecord
) -> billing_pb.ProviderReconciliation:
    message = billing_pb.ProviderReconciliation(
        provider=provider,
        has_cost_api=record.has_cost_api,
        pending_requests=counts[0],
        unpriced_requests=counts[1],
        cost_api_failures=record.failures,
        consecutive_failures=record.consecutive_failures,
        last_failure_reason=record.last_failure_reason,
    )
    stamp(message, "last_failure_time", record.last_failure_time)
    stamp(message, "last_attempt_time", record.last_attempt_time)
    return message
