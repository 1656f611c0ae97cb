"""A provider model's price per unit of its task, as /v1/models shows it beside the token prices."""

from __future__ import annotations

from switchboard.router.v1 import router_service_pb2 as router_pb

from services.common.pricing import Price
from services.common.tasks import IMAGE, INPUT_TOKEN, REQUEST, SERVED_TASKS, TOKEN, Task

# The price fields that already price a unit; the other units (seconds, characters) have unit_nano_usd only.
_FIELD_OF_UNIT = {IMAGE: "image_nano_usd", INPUT_TOKEN: "input_token_nano_usd", REQUEST: "request_nano_usd"}
NANO = 1e-9


def task_of_pipeline(pipeline_tag: str) -> Task:
    """The task a catalog model is served for: its pipeline tag, chat for the chat pipelines."""
    return SERVED_TASKS.get(pipeline_tag) or SERVED_TASKS["conversational"]


def per_unit_nano_usd(price: Price, unit: str) -> int:
    """nano-USD per unit, as the Router charges it (services/common/task_formats.py Bill): the field
    that prices images, input tokens or requests, else unit_nano_usd (seconds, characters)."""
    field = _FIELD_OF_UNIT.get(unit)
    return getattr(price, field) if field else price.unit_nano_usd


def unit_price(pipeline_tag: str, price: Price | None) -> router_pb.UnitPrice | None:
    """The entry's unit price; None without one (and for token-priced tasks, whose pricing says it)."""
    task = task_of_pipeline(pipeline_tag)
    amount = per_unit_nano_usd(price, task.unit) if price is not None and task.unit != TOKEN else 0
    if not amount:
        return None
    return router_pb.UnitPrice(task=task.name, unit=task.unit, nano_usd=amount, usd=amount * NANO)
