"""Strict reading of a provider cost API's answer.

The answer is {"requests": [{"requestId": str, "costNanoUsd": int}, ...]}.
A cost must be a JSON integer (orjson keeps 1 and 1.0 / 1e3 apart; true is
a bool, not an int) with 0 <= cost < 2**63. An entry that breaks a rule is
rejected and its request stays pending; an answer that is not such an
object at all is invalid as a whole and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field

import orjson

from services.common.secrets import NO_SECRETS, Redactor

MAX_COST_NANO_USD = 2**63 - 1


class InvalidCostAnswer(ValueError):
    """The whole answer is unusable (not JSON, or not the expected object)."""


@dataclass
class Rejection:
    """A cost entry that was not accepted, and why."""

    provider_request_id: str
    reason: str


@dataclass
class CostAnswer:
    """Accepted costs by provider request id, rejected entries, and ids nobody asked for."""

    costs: dict[str, int] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _cost_problem(cost: object) -> str | None:
    """Why a costNanoUsd value is not acceptable, or None when it is."""
    if isinstance(cost, bool) or not isinstance(cost, int):
        return f"costNanoUsd must be a JSON integer, got {type(cost).__name__} {cost!r}"[:200]
    if cost < 0:
        return f"costNanoUsd must not be negative, got {cost}"
    if cost > MAX_COST_NANO_USD:
        return "costNanoUsd does not fit in 64 bits"
    return None


def _entry(entry: object, answer: CostAnswer, asked: Collection[str], seen: set[str]) -> None:
    if not isinstance(entry, dict):
        answer.rejected.append(Rejection("", f"entry is not an object: {entry!r}"[:200]))
        return
    request_id = entry.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        answer.rejected.append(Rejection(str(request_id)[:200], "requestId missing or not a string"))
        return
    if request_id not in asked:
        answer.unknown.append(request_id)
        return
    if request_id in seen:
        # Two answers for one id: trust neither, ask again later.
        answer.costs.pop(request_id, None)
        answer.rejected.append(Rejection(request_id, "requestId answered more than once"))
        return
    seen.add(request_id)
    problem = "costNanoUsd missing" if "costNanoUsd" not in entry else _cost_problem(entry["costNanoUsd"])
    if problem:
        answer.rejected.append(Rejection(request_id, problem))
    else:
        answer.costs[request_id] = entry["costNanoUsd"]


def _document(body: bytes) -> object:
    """The answer's JSON. A number orjson cannot read (past a double's range: 1e400) fails only
    its entry: the standard parser reads it (as infinity), and the entry's rules reject it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidCostAnswer("the answer is not valid JSON") from exc


def parse_cost_answer(body: bytes, asked: Collection[str], redactor: Redactor = NO_SECRETS) -> CostAnswer:
    """Reads a cost API answer to a request for the `asked` provider request ids; the
    provider's secrets are redacted from all of it (what it rejects is logged)."""
    document = redactor.json(_document(body))
    if not isinstance(document, dict) or not isinstance(document.get("requests"), list):
        raise InvalidCostAnswer('the answer is not an object with a "requests" list')
    answer = CostAnswer()
    seen: set[str] = set()
    for entry in document["requests"]:
        _entry(entry, answer, asked, seen)
    return answer
