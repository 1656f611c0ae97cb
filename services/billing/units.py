"""A ledger record's unit: checked, and the charge of a record that came without an estimate
(per unit of its task, so that a long transcription is not charged as a short one)."""

from __future__ import annotations

from switchboard.billing.v1 import billing_service_pb2 as billing_pb

from services.common.errors import invalid_argument
from services.common.pricing import MAX_NANO_USD, estimate_nano_usd
from services.common.tasks import (
    AUDIO_SECOND,
    CHARACTER,
    IMAGE,
    INPUT_TOKEN,
    REQUEST,
    TOKEN,
    UNITS,
    VIDEO_SECOND,
    served,
)

# nano-USD per unit when the provider model has no price (about what the hub's providers ask).
DEFAULT_UNIT_NANO_USD: dict[str, int] = {
    TOKEN: 1_000,  # 1 USD per million tokens
    INPUT_TOKEN: 20,  # 0.02 USD per million input tokens
    IMAGE: 10_000_000,  # 0.01 USD per image
    AUDIO_SECOND: 100_000,  # 0.006 USD per minute of audio
    CHARACTER: 15_000,  # 15 USD per million characters spoken
    VIDEO_SECOND: 100_000_000,  # 0.1 USD per second of video
    REQUEST: 100_000,  # 0.0001 USD per answer
}


def check_unit(unit: str, param: str = "records.unit") -> str:
    """A record's unit: one of services/common/tasks.py's, or "" (a record from before units)."""
    if unit and unit not in UNITS:
        raise invalid_argument(
            "INVALID_REQUEST", f"{param} must be one of {', '.join(UNITS)}, not {unit[:40]!r}", param
        )
    return unit


def record_units(record: billing_pb.LedgerRecord) -> tuple[str, int]:
    """The record's unit and units; a record without a unit (a Router from before units) counts in
    its task's unit what it carries: tokens (input plus output) or images."""
    unit = check_unit(record.unit)
    if unit:
        return unit, max(0, record.units)
    task = served(record.task)
    if task is None or task.unit not in (TOKEN, IMAGE):
        return "", 0
    used = max(0, record.input_tokens) + max(0, record.output_tokens) if task.unit == TOKEN else max(0, record.images)
    return task.unit, min(used, MAX_NANO_USD)


def default_estimate(task: str, unit: str, units: int) -> int:
    """What a record without an estimate is charged until priced: its units at the unit's
    default price, else the task's default estimate; never zero."""
    per_unit = DEFAULT_UNIT_NANO_USD.get(unit, 0)
    if units > 0 and per_unit:
        return min(units * per_unit, MAX_NANO_USD)
    return estimate_nano_usd(None, task)
