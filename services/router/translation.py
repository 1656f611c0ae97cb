"""What the APIs translated to chat completions share (responses_api.py, messages_api.py,
completions_api.py): the strict field check, the chat request's common parts, and turning
the chat route's answer (one JSON body, or SSE chunks ending with [DONE]) into another
API's answer.

A translation runs inside the chat path (RouterServicer._chat): the caller is identified
first, then `chat_payload` turns the parsed body into a chat request that goes through
the same checks, selection, failover, reservation and ledger record as a chat call.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from typing import Any

import orjson
from google.api import httpbody_pb2

from services.common import params
from services.common.errors import invalid_argument, unavailable
from services.common.secrets import item_index

log = logging.getLogger(__name__)

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
# Switchboard's own fields, accepted on every translated route.
SWITCHBOARD_FIELDS = ("provider", "max_price")
MAX_ITEMS = params.MAX_MESSAGES
MAX_ID_LENGTH = 256


def new_id(prefix: str) -> str:
    """An id for an answer's parts: 128 random bits (not a secret, so no system call per id)."""
    return f"{prefix}{random.getrandbits(128):032x}"


def json_object(raw: bytes) -> dict:
    """A request body as a JSON object; 400 otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_argument("INVALID_REQUEST", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_argument("INVALID_REQUEST", "the request body must be a JSON object")
    return body


def check_fields(body: dict, accepted: Collection[str], refused: Mapping[str, str]) -> None:
    """400 naming the first field that is unknown, or that asks for what is refused (a
    refused field passes when it is null, false or empty: it asks for nothing)."""
    for name, value in body.items():
        if name in accepted or name in SWITCHBOARD_FIELDS:
            continue
        if name in refused:
            if value is None or value is False or value in ("", [], {}):  # not 0: 0 == False, and it asks
                continue
            raise invalid_argument("UNSUPPORTED_PARAMETER", f"{name} is not supported: {refused[name]}", name)
        shown = name if len(name) <= params.ECHOED else name[: params.ECHOED] + "..."
        raise invalid_argument("UNKNOWN_FIELD", f"unknown field {shown} in the request body", name)


def check(body: dict, checks: Mapping[str, params.Check], required: Collection[str] = ()) -> None:
    """The shared range checks (params.py) on the translated API's own field names."""
    params.check_body(body, dict(checks), set(required))


def common_chat(body: dict, stream: bool) -> dict:
    """The chat request's parts every translation sets alike: model, Switchboard's selection
    fields, and a stream that reports its usage (the translated answers carry it)."""
    payload: dict[str, Any] = {"model": body["model"]}
    for name in SWITCHBOARD_FIELDS:
        if body.get(name) is not None:
            payload[name] = body[name]
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


def text_of(content: Any, name: str, kinds: Collection[str] = ("text",)) -> str:
    """A string, or the text of a list of text parts (400 for any other part)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_argument("INVALID_PARAMETER", f"{name} must be a string or a list of text parts", name)
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in kinds or not isinstance(part.get("text"), str):
            allowed = " or ".join(f'"{kind}"' for kind in kinds)
            raise invalid_argument("INVALID_PARAMETER", f"{name}[{index}] must be a part of type {allowed}", name)
        texts.append(part["text"])
    return "\n".join(texts)


def answer_text(content: Any) -> str:
    """A chat answer's content as text: a string, or the text of its text parts (some providers
    answer with a list of parts); anything else, as in a stream's deltas, is no text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
                   and part.get("type", "text") == "text")  # fmt: skip


def item_list(value: Any, name: str) -> list[dict]:
    params.array(MAX_ITEMS, items=dict)(name, value)
    return value


def arguments_object(arguments: Any) -> dict:
    """A tool call's arguments as an object (a provider's text that is no JSON object: {})."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


# --- the chat route's answer ------------------------------------------------------------

DONE = None  # what chunks() yields for "data: [DONE]"


def chunks(data: bytes) -> Iterator[dict | None]:
    """The chat chunks in one piece of the chat route's SSE answer; DONE for [DONE]."""
    for line in data.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            yield DONE
            continue
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield event


def first_choice(answer: dict) -> dict:
    """The choice a translation reads: index 0 as the stream's carry of secrets reads it (item_index:
    an index that is no integer is the choice's place in the list), never another choice's text
    joined to it; {} when none."""
    choices = answer.get("choices")
    for place, choice in enumerate(choices if isinstance(choices, list) else ()):
        if isinstance(choice, dict) and item_index(choice, place) == 0:
            return choice
    return {}


def stream_error(chunk: dict) -> dict | None:
    """The error a chat stream event reports: OpenAI's object, or a bare message (TGI's
    {"error": "...", "error_type": ...}) as one; None when it reports none."""
    error = chunk.get("error")
    if isinstance(error, str) and error:
        return {"message": error}
    return error if isinstance(error, dict) else None


def usage_numbers(usage: Any) -> tuple[int, int]:
    """(input tokens, output tokens) of a chat usage object (0 when absent)."""
    if not isinstance(usage, dict):
        return 0, 0
    counts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return tuple(c if isinstance(c, int) and not isinstance(c, bool) and c >= 0 else 0 for c in counts)  # type: ignore[return-value]


def usage_cost(usage: Any) -> dict:
    """The estimated cost a chat usage object states (usage.cost, usage.cost_nano_usd), to carry
    over into another API's usage."""
    if not isinstance(usage, dict):
        return {}
    return {name: usage[name] for name in ("cost", "cost_nano_usd") if name in usage}


# What a provider's answer the chat checks let pass can raise in a translation.
UNTRANSLATABLE = (TypeError, ValueError, AttributeError, KeyError, IndexError)
UNTRANSLATABLE_MESSAGE = "the provider's answer could not be read as this API's answer"
UNTRANSLATABLE_EVENT = {
    "error": {"message": UNTRANSLATABLE_MESSAGE, "type": "upstream_error", "code": "upstream_error"}
}


class Translation:
    """One translated call: the chat request it becomes, and its answer in the API's shape.
    Subclasses implement chat_payload, unary (a chat completion -> the API's JSON) and
    events (a chat chunk, or DONE -> the API's SSE events)."""

    stream = False

    def chat_payload(self, body: dict) -> dict:
        raise NotImplementedError

    def unary(self, answer: dict) -> bytes:
        raise NotImplementedError

    def events(self, chunk: dict | None) -> Iterator[bytes]:
        raise NotImplementedError

    broken = False  # a stream event could not be translated: the rest of the provider's stream is not
    sequence = 0  # the next event's number, for an API that numbers its events (Responses)

    async def answer(self, bodies: AsyncIterator[httpbody_pb2.HttpBody]) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """The chat answer's bodies in this API's shape: a unary answer was translated by the chat
        path (unary_body), before it was billed; a stream's events are translated here."""
        async for body in bodies:
            if not self.stream:
                yield body
                continue
            data = b"".join(self._events(chunk) for chunk in chunks(body.data))
            if data:
                yield httpbody_pb2.HttpBody(content_type=EVENT_STREAM, data=data)

    def unary_body(self, data: bytes) -> bytes:
        """A chat completion's JSON in this API's shape. A provider's answer the chat checks let
        pass but this API cannot be made of (a list where a string goes, a null choice...) is the
        provider's failure: a 502 (a stream's: its error event and its end), never a 500."""
        try:
            return self.unary(orjson.loads(data))
        except UNTRANSLATABLE:
            raise unavailable("UPSTREAM_ERROR", UNTRANSLATABLE_MESSAGE) from None

    def _events(self, chunk: dict | None) -> bytes:
        if self.broken:
            return b""
        numbered = self.sequence
        try:
            return b"".join(self.events(chunk))
        except UNTRANSLATABLE:
            self.broken = True
            self.sequence = numbered  # the events made before the failure were not sent: no gap in the numbers
            log.warning("a provider's stream event could not be translated", extra={"api": type(self).__name__})
        try:  # the provider's failure, as a chat error event would say it, then the stream's end
            return b"".join(self.events(UNTRANSLATABLE_EVENT)) + b"".join(self.events(DONE))
        except UNTRANSLATABLE:
            return b""


def sse(event: str, data: dict) -> bytes:
    """One named SSE event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
