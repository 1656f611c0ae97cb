"""Calls to a provider's OpenAI-compatible API, one implementation for every caller: the
Router's inference (services/router/upstream.py), and the Registry's conformance check and
health probes (services/registry/domain/conformance.py, probes.py).

A request is the caller's payload with the provider's model id (and a LoRA to load); an
answer is valid for its route when it is a JSON object with the route's list ("choices"
for chat, "data" for images) and at most `max_answer_bytes` long; a stream is valid when
its first event is such a chat chunk. A retryable failure (connection error, timeout, 429,
500-504, an invalid answer) is an AttemptFailed; any other provider error an ApiError in
OpenAI's shape with the provider's message, every secret of the provider redacted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from services.common import http1, params
from services.common.errors import PROVIDER_CODE_KEY, PROVIDER_KEY, PROVIDER_VERDICTS, ApiError, unavailable
from services.common.pricing import INT64_MAX, NANO_PER_USD
from services.common.providers import PROVIDER_METADATA_KEY, Route
from services.common.secrets import Redactor

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 501, 502, 503, 504})
MAX_ERROR_BODY_BYTES = 64 * 1024  # of a provider's error answer, what is read
CHAT_PATH = "/v1/chat/completions"
IMAGES_PATH = "/v1/images/generations"
# The list a valid 200 answer of each route carries.
ANSWER_LIST = {CHAT_PATH: "choices", IMAGES_PATH: "data"}
MAX_ERROR_MESSAGE = 500
DONE = b"data: [DONE]\n\n"
if TYPE_CHECKING:  # aiohttp is loaded by the Registry's checks that use it, never by the Router
    import aiohttp

    # The Router's lean pool or aiohttp's session (the Registry's checks), and their answers.
    Session = http1.Pool | aiohttp.ClientSession
    Answer = http1.Response | aiohttp.ClientResponse


class AttemptFailed(Exception):
    """A retryable failure of one candidate: `reason` for the caller's error, `kind` (UPPER_SNAKE)
    and `detail` (the provider's own message, redacted) for the provider's health figures."""

    def __init__(self, reason: str, status: int = 0, kind: str = "INVALID_ANSWER", detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.kind = kind
        self.detail = detail


@dataclass
class Usage:
    """What the answer said about its size, and how many stream events carried content."""

    input_tokens: int = 0
    output_tokens: int = 0
    chunks: int = 0
    reported: bool = False  # the provider sent a usage object
    invalid: bool = False  # a count in it was not a non-negative integer within int64: none is believed
    # What the answer costs given its usage so far, in nano-USD (the Router's estimate, as its
    # ledger record will carry it); when set, every usage object the caller gets states it.
    cost: Callable[[], int] | None = field(default=None, repr=False, compare=False)

    def take(self, answer: dict) -> None:
        """Reads the answer's (or stream event's) usage; a count left out or null keeps the last one."""
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return
        self.reported = True
        for name, attribute in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
            value = usage.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
                self.invalid = True  # 1e30, -1, "12", 2^64: a provider may send anything
            else:
                setattr(self, attribute, value)
        if self.cost is not None:
            nano_usd = self.cost()
            usage["cost"], usage["cost_nano_usd"] = nano_usd / NANO_PER_USD, nano_usd


@dataclass
class Opened:
    """A candidate that answered: its route, its request id, and the first part of the answer."""

    route: Route
    provider_request_id: str
    sent_at: float
    first_at: float
    answer: dict = field(default_factory=dict)  # a unary answer, checked
    first_event: dict = field(default_factory=dict)  # a stream's first event, checked
    response: Answer | None = None
    usage: Usage = field(default_factory=Usage)
    failures: list[str] = field(default_factory=list)
    # A task answer (services/common/task_formats.py): its JSON value or first bytes, and their type.
    result: Any = None
    content_type: str = ""


class TaskRequest(Protocol):
    """A request whose body and path depend on how the route's provider is called for the task
    (OpenAI's shape or the hub's), and whose answer is any JSON value or bytes."""

    def prepare(self, route: Route) -> tuple[str, bytes, str]:
        """(path, body, content type) for this route."""
        ...

    def accept(self, route: Route, data: bytes, content_type: str, whole: bool) -> Any:
        """The checked answer (AttemptFailed when not valid); `whole` is False for a stream's first bytes."""
        ...

    def streams(self, route: Route) -> bool:
        """Whether the answer is relayed as it arrives."""
        ...


def error_fields(redactor: Redactor, data: bytes) -> tuple[str, object, object]:
    """(message, param, code) of a provider's error body, every secret of the provider redacted
    from all of it first (it may echo any of them); a body not in OpenAI's shape is the message."""
    message, param, code = "", None, None
    try:
        error = redactor.json(orjson.loads(data)).get("error")
        if isinstance(error, dict):
            message, param, code = str(error.get("message") or ""), error.get("param"), error.get("code")
        elif isinstance(error, str):
            message = error
    except (orjson.JSONDecodeError, AttributeError):
        message = redactor.bytes(data).decode(errors="replace")[:MAX_ERROR_MESSAGE]
    return message, param, code


def provider_error(route: Route, status: int, data: bytes) -> ApiError:
    """A provider's non-retryable error in OpenAI's shape, with the provider's (redacted) message."""
    message, param, code = error_fields(route.provider.redactor, data)
    name = route.provider.id
    if status in (401, 403):
        return unavailable("UPSTREAM_AUTH_ERROR", f"provider {name} refused Switchboard's credentials")
    if status not in PROVIDER_VERDICTS:
        return unavailable("UPSTREAM_ERROR", f"provider {name} answered HTTP {status}: {message}")
    text = f"provider {name}: {message or f'HTTP {status}'}"[:MAX_ERROR_MESSAGE]
    param = param if isinstance(param, str) else None
    metadata = {PROVIDER_KEY: name, **({PROVIDER_CODE_KEY: str(code)} if code else {})}
    grpc_code, reason = PROVIDER_VERDICTS[status]
    answered_by = {PROVIDER_METADATA_KEY: name}
    return ApiError(grpc_code, reason, text, param=param, metadata=metadata, headers=answered_by)


def checked_answer(data: bytes, expected_list: str, *, empty: bool = False) -> dict:
    """The answer as a JSON object carrying the route's list (non-empty unless `empty`);
    AttemptFailed otherwise."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise AttemptFailed("answered 200 with a body that is not JSON") from None
    items = answer.get(expected_list) if isinstance(answer, dict) else None
    if not isinstance(items, list) or not (items or empty):
        raise AttemptFailed(f"answered 200 without a {'' if empty else 'non-empty '}{expected_list!r} list")
    return answer


async def read_capped(response: Answer, most: int) -> bytes:
    """The whole body, or AttemptFailed once it passes `most` bytes (never buffered beyond that)."""
    if response.content_length is not None and response.content_length > most:
        raise AttemptFailed(f"answer larger than {most:,} bytes")
    data = bytearray()
    async for piece in response.content.iter_any():
        data += piece
        if len(data) > most:
            raise AttemptFailed(f"answer larger than {most:,} bytes")
    return bytes(data)


def encode(route: Route, payload: dict) -> bytes:
    """The request body for this route: the provider's model id, no `provider` field, the LoRA."""
    payload["model"] = route.provider_model
    payload.pop("provider", None)
    if route.lora_path:
        payload["loras"] = [{"path": route.lora_path, "scale": 1}]
    return params.dumped(payload)


async def send(
    session: Session, route: Route, body: bytes, path: str, headers: dict[str, str], deadline: float | None = None
) -> Answer:
    """POSTs an encoded body to the provider; the caller releases the response. A redirect is not
    followed: the key would go to wherever the provider points (a 3xx is the provider's error; the
    lean client never follows one). `deadline` is the lean pool's (http1.Pool.post)."""
    url = route.provider.base_url + path
    if isinstance(session, http1.Pool):
        return await session.post(url, data=body, headers=headers, deadline=deadline)
    return await session.post(url, data=body, headers=headers, allow_redirects=False)


async def open_answer(
    session: Session,
    route: Route,
    payload: dict | TaskRequest,
    path: str,
    stream: bool,
    max_answer_bytes: int,
    headers: dict[str, str],
    on_refusal: Callable[[Route, int, ApiError], None] | None = None,
    deadline: float | None = None,
) -> Opened:
    """Sends the request and checks the answer: a unary answer read whole (capped), or a
    stream's first event (the Opened then owns the response). Timeouts are the caller's: with the
    lean pool, `deadline` (loop time) bounds it all (send says how);
    `on_refusal` sees a provider's non-retryable error answer before it is raised."""
    if isinstance(payload, dict):
        body = encode(route, payload)
    else:
        path, body, content_type = payload.prepare(route)
        headers = {**headers, "Content-Type": content_type}
        stream = payload.streams(route)
    sent_at = time.monotonic()
    response = await send(session, route, body, path, headers, deadline)
    try:
        if response.status != 200:
            data = await response.content.read(MAX_ERROR_BODY_BYTES)
            if response.status in RETRYABLE_STATUSES:
                detail = error_fields(route.provider.redactor, data)[0]
                raise AttemptFailed(f"HTTP {response.status}", response.status, "UPSTREAM_HTTP_ERROR", detail)
            error = provider_error(route, response.status, data)
            if on_refusal is not None:
                on_refusal(route, response.status, error)
            raise error
        redactor = route.provider.redactor
        provider_request_id = redactor.text(
            usable_request_id(response.headers.get(route.provider.request_id_header, ""))
        )
        if not isinstance(payload, dict):
            opened = await _task_answer(response, route, payload, stream, max_answer_bytes)
            opened.provider_request_id, opened.sent_at = provider_request_id, sent_at
            response = None if stream else response
            return opened
        expected_list = ANSWER_LIST[path]
        if stream:
            first = await first_event(response, expected_list)
            opened = Opened(route, provider_request_id, sent_at, time.monotonic(), first_event=first)
            opened.response, response = response, None  # the caller's relay owns it now
            return opened
        answer = checked_answer(await read_capped(response, max_answer_bytes), expected_list)
        return Opened(route, provider_request_id, sent_at, time.monotonic(), answer=answer)
    finally:
        if response is not None:
            response.release()


async def _task_answer(
    response: Answer, route: Route, request: TaskRequest, stream: bool, max_answer_bytes: int
) -> Opened:
    """A task's 200 answer checked by its request: read whole (capped), or its first bytes
    (the Opened then owns the response)."""
    content_type = _media_type(response.headers.get("Content-Type", ""), route.provider.redactor)
    data = await response.content.readany() if stream else await read_capped(response, max_answer_bytes)
    result = request.accept(route, data, content_type, not stream)
    opened = Opened(route, "", 0.0, time.monotonic(), result=result, content_type=content_type)
    opened.response = response if stream else None
    return opened


MAX_PROVIDER_REQUEST_ID = 1024  # characters: the ledger keeps it, indexes it and asks the cost API about it


def usable_request_id(value: str) -> str:
    """A provider's request id as the ledger may keep it: printable ASCII, at most
    MAX_PROVIDER_REQUEST_ID characters; any other is none (the answer is recorded unpriced, with
    the reason), not a record that Billing cannot store, the cost API cannot be asked about, or
    that carries bytes aiohttp could not decode."""
    if value.isascii() and value.isprintable() and len(value) <= MAX_PROVIDER_REQUEST_ID:
        return value
    log.warning("a provider's request id was not printable ASCII of at most 1,024 characters: recorded without it")
    return ""


# type/subtype as RFC 9110's tokens write them (lowercased), of a bounded length.
MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,63}/[a-z0-9!#$&^_.+-]{1,63}")


def _media_type(header: str, redactor: Redactor) -> str:
    """A task answer's media type as its caller may be shown it (it becomes the answer's
    Content-Type): type/subtype, nothing of the provider's secrets; else "" (no type, which
    the task's check refuses)."""
    media_type = header.split(";")[0].strip().lower()
    if not MEDIA_TYPE.fullmatch(media_type) or redactor.spans(media_type):
        return ""
    return media_type


async def first_event(response: Answer, expected_list: str) -> dict:
    """A stream's first data event, checked like a unary answer (comment lines before it are dropped)."""
    while True:
        line = await next_line(response)
        if line is None:
            raise AttemptFailed("stream closed before its first chunk")
        if not line.startswith(b":"):
            break
    if not line.startswith(b"data:"):
        raise AttemptFailed("stream did not start with a data event")
    return checked_answer(line[5:].strip(), expected_list, empty=True)


async def next_line(response: Answer) -> bytes | None:
    """The next non-empty SSE line, or None at the end of the stream."""
    while True:
        line = await response.content.readline()
        if not line:
            return None
        line = line.strip()
        if line:
            return line
