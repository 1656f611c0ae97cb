"""Calls to provider upstreams: one pooled aiohttp session, failover across
candidates before anything reached the caller, and SSE relaying.

A retryable failure (connection error, timeout, 429, 500-504, an answer that
is not valid for its route) moves on to the next candidate; any other
provider error is the caller's answer. A 200 is valid when it is a JSON
object with the route's list ("choices" for chat, "data" for images) and at
most `max_answer_bytes` long; a stream is valid when its first event is such
a chat chunk. Nothing invalid reaches the caller or the ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from services.common import telemetry
from services.common.errors import PROVIDER_CODE_KEY, PROVIDER_KEY, PROVIDER_VERDICTS, ApiError, Code, unavailable
from services.common.pricing import INT64_MAX
from services.common.secrets import NO_SECRETS, Redactor
from services.router.breaker import Breakers
from services.router.measurements import UNAVAILABLE, Measurements
from services.router.selection import Route

RETRYABLE_STATUSES = frozenset({429, 500, 501, 502, 503, 504})
MAX_ERROR_BODY_BYTES = 64 * 1024  # of a provider's error answer, what is read
CHAT_PATH = "/v1/chat/completions"
IMAGES_PATH = "/v1/images/generations"
# The list a valid 200 answer of each route carries.
ANSWER_LIST = {CHAT_PATH: "choices", IMAGES_PATH: "data"}
MAX_ERROR_MESSAGE = 500
DONE = b"data: [DONE]\n\n"


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

    def take(self, answer: dict) -> None:
        usage = answer.get("usage")
        if isinstance(usage, dict):
            self.reported = True
            self.input_tokens = _int(usage.get("prompt_tokens"), self.input_tokens)
            self.output_tokens = _int(usage.get("completion_tokens"), self.output_tokens)


def _int(value: Any, default: int) -> int:
    """A non-negative count, saturated at int64 (a provider may send anything)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return default
    return min(value, INT64_MAX)


@dataclass
class Opened:
    """A candidate that answered: its route, its request id, and the first part of the answer."""

    route: Route
    provider_request_id: str
    sent_at: float
    first_at: float
    answer: dict = field(default_factory=dict)  # a unary answer, checked
    first_event: dict = field(default_factory=dict)  # a stream's first event, checked
    response: aiohttp.ClientResponse | None = None
    usage: Usage = field(default_factory=Usage)
    failures: list[str] = field(default_factory=list)


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
    answered_by = {"x-inference-provider": name}
    return ApiError(grpc_code, reason, text, param=param, metadata=metadata, headers=answered_by)


def rewrite(answer: dict, model: str, usage: Usage, redactor: Redactor = NO_SECRETS, hide_usage: bool = False) -> bytes:
    """The answer for the caller: its model set back to the hub model id, its usage noted,
    every provider secret redacted; with hide_usage, usage the caller did not ask for is
    taken out ("" for a usage-only event)."""
    if "model" in answer:
        answer["model"] = model
    usage.take(answer)
    if hide_usage and "usage" in answer:
        if not answer.get("choices"):
            return b""
        del answer["usage"]
    return redactor.dumps(answer)


def _checked(data: bytes, expected_list: str, *, empty: bool = False) -> dict:
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


async def _read_capped(response: aiohttp.ClientResponse, most: int) -> bytes:
    """The whole body, or AttemptFailed once it passes `most` bytes (never buffered beyond that)."""
    if response.content_length is not None and response.content_length > most:
        raise AttemptFailed(f"answer larger than {most:,} bytes")
    data = bytearray()
    async for piece in response.content.iter_any():
        data += piece
        if len(data) > most:
            raise AttemptFailed(f"answer larger than {most:,} bytes")
    return bytes(data)


class Upstreams:
    """The pooled HTTP client and the failover loop."""

    def __init__(
        self,
        breakers: Breakers,
        connect_timeout: float,
        attempt_timeout: float,
        idle_timeout: float,
        max_answer_bytes: int,
        measurements: Measurements | None = None,
    ) -> None:
        self.breakers = breakers
        self.measurements = measurements or Measurements()
        self.attempt_timeout = attempt_timeout
        self.max_answer_bytes = max_answer_bytes
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=idle_timeout)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout, json_serialize=lambda o: orjson.dumps(o).decode()
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def first_answer(
        self,
        routes: list[Route],
        payload: dict,
        path: str,
        stream: bool,
        deadline: float | None,
        operation: str = "chat",
        traceparent: str = "",
    ) -> Opened:
        """Tries the routes in order until one answers; raises the caller's error otherwise.
        `operation` names the call in traces; `traceparent` is passed on while tracing is off."""
        failures: list[str] = []
        statuses: list[int] = []
        for index, route in enumerate(routes):
            name = route.provider.id
            has_next = index + 1 < len(routes)
            if not self.breakers.allow(name):
                self.measurements.skipped(name, route.provider_model)
                failures.append(f"{name}: skipped, failing recently (circuit open)")
                telemetry.attempted(name, "circuit_open", has_next)
                continue
            try:
                with telemetry.provider_span(operation, route.provider_model, name):
                    opened = await self._attempt(
                        route, payload, path, stream, deadline, len(routes) - index, traceparent
                    )
            except AttemptFailed as exc:
                self.breakers.failed(name)
                message = f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
                self._failed(route, exc.status, exc.kind, message)
                failures.append(f"{name}: {exc.reason}")
                statuses.append(exc.status)
                telemetry.attempted(name, "retryable_error", has_next)
                continue
            except ApiError:
                self.breakers.succeeded(name)  # the provider is up; the request was at fault
                telemetry.attempted(name, "provider_error")
                raise
            except BaseException:
                self.breakers.released(name)
                telemetry.attempted(name, "abandoned")
                raise
            self.breakers.succeeded(name)
            self.measurements.answered(name, route.provider_model)
            telemetry.attempted(name, "ok")
            opened.failures = failures
            return opened
        raise _all_failed(failures, statuses)

    def _failed(self, route: Route, status: int, kind: str, message: str, counted: bool = False) -> None:
        """Notes a failure of the provider's in its health figures."""
        measurements = self.measurements
        error = measurements.error(status, UNAVAILABLE, kind, message, route.provider.redactor.text)
        measurements.failed(route.provider.id, route.provider_model, error, counted=counted)

    def _refused(self, route: Route, status: int, error: ApiError) -> None:
        """Notes a provider's non-retryable error answer: a refusal of the request, or (UNAVAILABLE:
        refused credentials, an unexpected status) a failure of the provider's."""
        measurements = self.measurements
        record = measurements.error(
            status, error.grpc_code.name, error.reason, error.message, route.provider.redactor.text
        )
        if error.grpc_code == Code.UNAVAILABLE:
            measurements.failed(route.provider.id, route.provider_model, record)
        else:
            measurements.rejected(route.provider.id, route.provider_model, record)

    def stream_broke(self, route: Route, exc: BaseException) -> None:
        """A stream that had begun broke off: a failure for the breaker and the health figures."""
        self.breakers.failed(route.provider.id)
        message = f"the stream broke off after it began ({type(exc).__name__})"
        self._failed(route, 0, "STREAM_INTERRUPTED", message, counted=True)

    def _encode(self, route: Route, payload: dict) -> bytes:
        payload["model"] = route.provider_model
        payload.pop("provider", None)
        if route.lora_path:
            payload["loras"] = [{"path": route.lora_path, "scale": 1}]
        return orjson.dumps(payload)

    async def _attempt(
        self,
        route: Route,
        payload: dict,
        path: str,
        stream: bool,
        deadline: float | None,
        routes_left: int,
        traceparent: str,
    ) -> Opened:
        """One candidate. Under a caller's deadline, each remaining candidate gets an equal share of it."""
        assert self.session is not None
        budget = self.attempt_timeout
        bounded_by_deadline = False  # whether running out of time ends the whole call
        if deadline is not None:
            remaining = deadline - time.monotonic()
            budget = min(budget, remaining / routes_left)
            bounded_by_deadline = routes_left == 1 and remaining <= self.attempt_timeout
            if remaining <= 0:
                raise _deadline_passed()
        body = self._encode(route, payload)
        sent_at = time.monotonic()
        response = None
        try:
            async with asyncio.timeout(budget):
                headers = telemetry.trace_headers(route.provider.headers, traceparent)
                response = await self.session.post(route.provider.base_url + path, data=body, headers=headers)
                if response.status != 200:
                    data = await response.content.read(MAX_ERROR_BODY_BYTES)
                    response.release()
                    if response.status in RETRYABLE_STATUSES:
                        detail = error_fields(route.provider.redactor, data)[0]
                        raise AttemptFailed(f"HTTP {response.status}", response.status, "UPSTREAM_HTTP_ERROR", detail)
                    error = provider_error(route, response.status, data)
                    self._refused(route, response.status, error)
                    raise error
                redactor = route.provider.redactor
                provider_request_id = redactor.text(response.headers.get(route.provider.request_id_header, ""))
                expected_list = ANSWER_LIST[path]
                if stream:
                    first = await _first_event(response, expected_list)
                    opened = Opened(route, provider_request_id, sent_at, time.monotonic(), first_event=first)
                    opened.response, response = response, None  # the caller's relay owns it now
                    return opened
                answer = _checked(await _read_capped(response, self.max_answer_bytes), expected_list)
                return Opened(route, provider_request_id, sent_at, time.monotonic(), answer=answer)
        except TimeoutError:
            if bounded_by_deadline:
                raise _deadline_passed() from None
            raise AttemptFailed(f"no answer within {budget:.1f}s", kind="UPSTREAM_TIMEOUT") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise AttemptFailed(f"connection failed ({type(exc).__name__})", kind="UPSTREAM_UNREACHABLE") from None
        finally:
            if response is not None:
                response.release()


def _deadline_passed() -> ApiError:
    return ApiError(Code.DEADLINE_EXCEEDED, "TIMEOUT", "the request's deadline passed before a provider answered")


def _all_failed(failures: list[str], statuses: list[int]) -> ApiError:
    detail = "; ".join(failures)
    if statuses and all(s == 429 for s in statuses):
        return ApiError(Code.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", f"every provider is rate limiting: {detail}")
    if not statuses:
        return unavailable("PROVIDERS_UNAVAILABLE", f"no provider available right now: {detail}")
    return unavailable("UPSTREAM_ERROR", f"every provider failed: {detail}")


async def _first_event(response: aiohttp.ClientResponse, expected_list: str) -> dict:
    """A stream's first data event, checked like a unary answer (comment lines before it are dropped)."""
    while True:
        line = await _next_line(response)
        if line is None:
            raise AttemptFailed("stream closed before its first chunk")
        if not line.startswith(b":"):
            break
    if not line.startswith(b"data:"):
        raise AttemptFailed("stream did not start with a data event")
    return _checked(line[5:].strip(), expected_list, empty=True)


async def _next_line(response: aiohttp.ClientResponse) -> bytes | None:
    """The next non-empty SSE line, or None at the end of the stream."""
    while True:
        line = await response.content.readline()
        if not line:
            return None
        line = line.strip()
        if line:
            return line


def data_event(event: dict, model: str, usage: Usage, hide_usage: bool, redactor: Redactor) -> bytes:
    """One data event for the caller, rewritten ("" when nothing is left of it)."""
    if event.get("choices"):
        usage.chunks += 1
    data = rewrite(event, model, usage, redactor, hide_usage)
    return b"data: " + data + b"\n\n" if data else b""


def sse_event(line: bytes, model: str, usage: Usage, hide_usage: bool, redactor: Redactor = NO_SECRETS) -> bytes:
    """One SSE line for the caller, the provider's secrets redacted: data events get the hub
    model id back; others pass as they are."""
    if not line.startswith(b"data:"):
        return redactor.bytes(line) + b"\n"
    data = line[5:].strip()
    if data == b"[DONE]":
        return DONE
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return redactor.bytes(line) + b"\n\n"
    if not isinstance(event, dict):
        return redactor.bytes(line) + b"\n\n"
    return data_event(event, model, usage, hide_usage, redactor)


async def relay(opened: Opened, model: str, hide_usage: bool) -> AsyncIterator[bytes]:
    """The stream's events for the caller, as SSE lines; raises on a broken stream.
    Stops after [DONE]; a provider that ends without one gets it added."""
    assert opened.response is not None
    response, redactor = opened.response, opened.route.provider.redactor
    try:
        first = data_event(opened.first_event, model, opened.usage, hide_usage, redactor)
        if first:
            yield first
        while (line := await _next_line(response)) is not None:
            event = sse_event(line, model, opened.usage, hide_usage, redactor)
            if event:
                yield event
            if event is DONE:
                return
        yield DONE
    finally:
        response.release()
