"""Checks of the OpenAI request bodies at the Router's boundary.

Bodies pass through to providers unchanged, so only what Switchboard reads
or what a provider could be hurt by is checked: types, and a documented
range for every number (docs/calling-models.md, "Request limits"). Each failure is a 400
naming the parameter; a message never echoes more than a short prefix of
the input. Every check is constant time per parameter, on an already parsed
body.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from services.common.errors import invalid_argument
from services.common.pricing import INT64_MAX

MAX_MODEL_ID_LENGTH = 300  # a hub id (org/name, <= 193) plus a ":<provider or policy>" suffix
MAX_PROVIDERS_PER_REQUEST = 32
MAX_PROVIDER_ID_LENGTH = 96
MAX_OUTPUT_TOKENS = 1_000_000
MAX_MESSAGES = 10_000
MAX_CHAT_CHOICES = 128
MAX_IMAGES = 10
MAX_PROMPT_CHARACTERS = 100_000
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
MAX_IMAGE_SIDE = 8192
MAX_PRICE_USD = 1_000_000  # any part of max_price, in USD (per million tokens, request or image)
PRICE_PARTS = ("input", "output", "request", "image")
# The provider object's max_price parts (OpenRouter's names; prompt and completion per million tokens).
PROVIDER_PRICE_PARTS = ("prompt", "completion", "request", "image")
SORTS = ("price", "throughput", "latency")
ECHOED = 40  # characters of a bad value a message may repeat

Check = Callable[[str, Any], None]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= ECHOED else text[:ECHOED] + "..."


def _fail(name: str, expected: str, value: Any) -> None:
    raise invalid_argument("INVALID_PARAMETER", f"{name} must be {expected}, got {_shown(value)}", name)


def integer(low: int, high: int) -> Check:
    """An integer (not a bool, not a float) in [low, high]."""

    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _fail(name, f"an integer from {low} to {high}", value)

    return check


def number(low: float, high: float) -> Check:
    """A finite JSON number in [low, high]."""

    def check(name: str, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            _fail(name, f"a number from {low:g} to {high:g}", value)

    return check


def of_type(kind: type | tuple[type, ...], expected: str) -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, kind):
            _fail(name, expected, value)

    return check


def text(most: int, *, empty: bool = True) -> Check:
    """A string of at most `most` characters."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or len(value) > most or (not empty and not value.strip()):
            _fail(name, f"a {'' if empty else 'non-empty '}string of at most {most:,} characters", value)

    return check


def array(most: int, *, items: type | None = None, empty: bool = True) -> Check:
    """A list of at most `most` items (of one type, when given)."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, list) or len(value) > most or (not empty and not value):
            _fail(name, f"a {'' if empty else 'non-empty '}list of at most {most:,} items", value)
        if items is not None and not all(isinstance(item, items) for item in value):
            _fail(name, f"a list of {items.__name__} values", value)

    return check


def stop(name: str, value: Any) -> None:
    if isinstance(value, str):
        return
    array(MAX_STOP_SEQUENCES, items=str)(name, value)


def providers(name: str, value: Any) -> None:
    """Provider ids separated by spaces (a bounded number of bounded ids), or OpenRouter's
    provider object (docs/provider-selection.md)."""
    if isinstance(value, dict):
        provider_object(name, value)
        return
    if not isinstance(value, str):
        _fail(name, "a string of provider ids separated by spaces, or a provider object", value)
    ids = value.split(maxsplit=MAX_PROVIDERS_PER_REQUEST)
    if len(ids) > MAX_PROVIDERS_PER_REQUEST:
        _fail(name, f"at most {MAX_PROVIDERS_PER_REQUEST} provider ids", value)
    if any(len(i) > MAX_PROVIDER_ID_LENGTH for i in ids):
        _fail(name, f"provider ids of at most {MAX_PROVIDER_ID_LENGTH} characters", value)


def provider_ids(name: str, value: Any) -> None:
    """A list of at most MAX_PROVIDERS_PER_REQUEST provider ids, each a non-empty bounded string."""
    array(MAX_PROVIDERS_PER_REQUEST, items=str)(name, value)
    if any(not i or len(i) > MAX_PROVIDER_ID_LENGTH or i != i.strip() for i in value):
        _fail(name, f"provider ids of 1 to {MAX_PROVIDER_ID_LENGTH} characters, without spaces", value)


def price_object(parts: tuple[str, ...]) -> Check:
    """A non-empty object of these parts, each a number of USD."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, dict) or not value or any(key not in parts for key in value):
            listed = ", ".join(f'"{part}"' for part in parts)
            _fail(name, f"an object with any of {listed}: prices in USD", value)
        price = number(0, MAX_PRICE_USD)
        for key, amount in value.items():
            price(f"{name}.{key}", amount)

    return check


def provider_object(name: str, value: dict) -> None:
    """OpenRouter's provider object: only its routing fields, each of its type (null counts as absent)."""
    for key, item in value.items():
        check = PROVIDER_OBJECT.get(key)
        if check is None:
            field = f"{name}.{key[:ECHOED]}"
            message = f"{field} is not a provider field (one of {', '.join(PROVIDER_OBJECT)})"
            raise invalid_argument("INVALID_PARAMETER", message, field)
        if item is not None:
            check(f"{name}.{key}", item)


def one_of(*choices: str) -> Check:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            _fail(name, " or ".join(f'"{c}"' for c in choices), value)

    return check


def image_size(name: str, value: Any) -> None:
    """ "auto" or "<width>x<height>", each from 1 to MAX_IMAGE_SIDE pixels."""
    if value == "auto":
        return
    width, x, height = value.partition("x") if isinstance(value, str) else ("", "", "")
    sides = (width, height) if x and width.isdigit() and height.isdigit() and len(value) <= 11 else ()
    if not sides or not all(1 <= int(side) <= MAX_IMAGE_SIDE for side in sides):
        _fail(name, f'"auto" or "<width>x<height>" with sides from 1 to {MAX_IMAGE_SIDE}', value)


OBJECT = of_type(dict, "an object")
BOOLEAN = of_type(bool, "true or false")
# The caller's price ceiling: a non-empty object of PRICE_PARTS, each a number of USD.
max_price = price_object(PRICE_PARTS)
PROVIDER_OBJECT: dict[str, Check] = {
    "order": provider_ids,
    "only": provider_ids,
    "ignore": provider_ids,
    "allow_fallbacks": BOOLEAN,
    "require_parameters": BOOLEAN,
    "sort": one_of(*SORTS),
    "max_price": price_object(PROVIDER_PRICE_PARTS),
}
TOKENS = integer(1, MAX_OUTPUT_TOKENS)
COMMON: dict[str, Check] = {
    "model": text(MAX_MODEL_ID_LENGTH, empty=False),
    "provider": providers,
    "max_price": max_price,
}
CHAT: dict[str, Check] = {
    **COMMON,
    "messages": array(MAX_MESSAGES, items=dict, empty=False),
    "stream": BOOLEAN,
    "stream_options": OBJECT,
    "max_tokens": TOKENS,
    "max_completion_tokens": TOKENS,
    "n": integer(1, MAX_CHAT_CHOICES),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(-(2**63), INT64_MAX),
    "logprobs": BOOLEAN,
    "top_logprobs": integer(0, 20),
    "logit_bias": OBJECT,
    "stop": stop,
    "tools": array(MAX_TOOLS, items=dict),
    "tool_choice": of_type((str, dict), "a string or an object"),
    "parallel_tool_calls": BOOLEAN,
    "response_format": OBJECT,
    "reasoning_effort": text(32),
    "user": text(256),
    "metadata": OBJECT,
}
IMAGES: dict[str, Check] = {
    **COMMON,
    "prompt": text(MAX_PROMPT_CHARACTERS, empty=False),
    "n": integer(1, MAX_IMAGES),
    "size": image_size,
    "response_format": one_of("url", "b64_json"),
}
REQUIRED_CHAT = {"model", "messages"}
REQUIRED_IMAGES = {"model", "prompt"}


def check_body(body: dict, checks: dict[str, Check], required: set[str]) -> None:
    """400 naming the first parameter that is missing or out of its range (null counts as absent)."""
    for name in required:
        if body.get(name) is None:
            raise invalid_argument("MISSING_PARAMETER", f"{name} is required", name)
    for name, check in checks.items():
        value = body.get(name)
        if value is not None:
            check(name, value)


def dumped(value: Any) -> bytes:
    """A caller's JSON (a parsed body, or part of one) written again: 400 when it is nested deeper
    than a JSON writer goes (orjson: 254 levels; the parser took up to 1,024)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        raise invalid_argument(
            "INVALID_REQUEST", "the request body is nested too deeply (at most 254 levels)"
        ) from None
