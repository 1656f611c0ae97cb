"""Calls to provider upstreams: one lean keep-alive pool (services/common/http1.py), failover across
candidates before anything reached the caller, and SSE relaying.

A retryable failure (connection error, timeout, 429, 500-504, an answer that
is not valid for its route) moves on to the next candidate; any other
provider error is the caller's answer. A 200 is valid when it is a JSON
object with the route's list ("choices" for chat, "data" for images) and at
most `max_answer_bytes` long; a stream is valid when its first event is such
a chat chunk. Nothing invalid reaches the caller or the ledger. Building the
request and checking the answer are services/common/provider_api.py's, shared
with the Registry's conformance check and health probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson

from services.common import telemetry
from services.common.errors import ApiError, Code, unavailable
from services.common.http1 import Pool, Response
from services.common.provider_api import (
    CHAT_PATH,
    DONE,
    IMAGES_PATH,
    AttemptFailed,
    Opened,
    TaskRequest,
    Usage,
    next_line,
    open_answer,
    provider_error,
)
from services.common.secrets import NO_SECRETS, Redactor, StreamCarry
from services.router.breaker import Breakers
from services.router.measurements import UNAVAILABLE, Measurements
from services.router.selection import Route

# Re-exported: the Router's servicer and tests name them here.
__all__ = ["CHAT_PATH", "DONE", "IMAGES_PATH", "Opened", "Upstreams", "Usage", "provider_error", "relay", "rewrite"]


def rewrite(
    answer: dict,
    model: str,
    usage: Usage,
    redactor: Redactor = NO_SECRETS,
    hide_usage: bool = False,
    whole: bool = True,
) -> bytes:
    """The answer for the caller: its model set back to the hub model id, its usage noted,
    every provider secret redacted (a `whole` answer also as a caller joins it up; a stream's
    events were by its carry); with hide_usage, usage the caller did not ask for is taken out
    ("" for a usage-only event)."""
    if "model" in answer:
        answer["model"] = model
    usage.take(answer)
    if hide_usage and "usage" in answer:
        if not answer.get("choices"):
            return b""
        del answer["usage"]
    return redactor.dumps(answer, whole)


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
        # The connect timeout bounds each new connection; the idle timeout each wait for a provider's bytes.
        self.session = Pool(connect_timeout, idle_timeout)

    async def close(self) -> None:
        await self.session.close()

    async def first_answer(
        self,
        routes: list[Route],
        payload: dict | TaskRequest,
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

    async def _attempt(
        self,
        route: Route,
        payload: dict | TaskRequest,
        path: str,
        stream: bool,
        deadline: float | None,
        routes_left: int,
        traceparent: str,
    ) -> Opened:
        """One candidate. Under a caller's deadline, each remaining candidate gets an equal share of it."""
        budget = self.attempt_timeout
        bounded_by_deadline = False  # whether running out of time ends the whole call
        if deadline is not None:
            remaining = deadline - time.monotonic()
            budget = min(budget, remaining / routes_left)
            bounded_by_deadline = routes_left == 1 and remaining <= self.attempt_timeout
            if remaining <= 0:
                raise _deadline_passed()
        # The budget bounds every wait of the attempt (the pool's read timer serves it: one timer, not two).
        give_up = asyncio.get_running_loop().time() + budget
        try:
            headers = telemetry.trace_headers(route.provider.headers, traceparent)
            opened = await open_answer(
                self.session, route, payload, path, stream, self.max_answer_bytes, headers, self._refused, give_up
            )
        except TimeoutError:
            if bounded_by_deadline:
                raise _deadline_passed() from None
            raise AttemptFailed(f"no answer within {budget:.1f}s", kind="UPSTREAM_TIMEOUT") from None
        except OSError as exc:
            raise AttemptFailed(f"connection failed ({type(exc).__name__})", kind="UPSTREAM_UNREACHABLE") from None
        if isinstance(opened.response, Response):  # a stream's later reads: the read timeout alone
            opened.response.deadline = None
        return opened


def _deadline_passed() -> ApiError:
    return ApiError(Code.DEADLINE_EXCEEDED, "TIMEOUT", "the request's deadline passed before a provider answered")


def _all_failed(failures: list[str], statuses: list[int]) -> ApiError:
    detail = "; ".join(failures)
    if statuses and all(s == 429 for s in statuses):
        return ApiError(Code.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", f"every provider is rate limiting: {detail}")
    if not statuses:
        return unavailable("PROVIDERS_UNAVAILABLE", f"no provider available right now: {detail}")
    return unavailable("UPSTREAM_ERROR", f"every provider failed: {detail}")


def data_event(
    event: dict, model: str, usage: Usage, hide_usage: bool, redactor: Redactor, carry: StreamCarry | None = None
) -> bytes:
    """One data event for the caller, rewritten ("" when nothing is left of it); with a carry, the
    text a secret split over events could begin with is held back for the next one."""
    if event.get("choices"):
        usage.chunks += 1
    events = carry.events(event) if carry is not None else [event]
    return b"".join(
        b"data: " + data + b"\n\n"
        for e in events
        if (data := rewrite(e, model, usage, redactor, hide_usage, whole=carry is None))
    )


def closing(model: str, usage: Usage, redactor: Redactor, carry: StreamCarry | None) -> bytes:
    """The end of a stream for the caller: what the carry still holds, then [DONE]."""
    return held_back(model, usage, redactor, carry) + DONE


def held_back(model: str, usage: Usage, redactor: Redactor, carry: StreamCarry | None) -> bytes:
    """What the carry still holds, as an event, once the stream is over (b"" when nothing)."""
    held = carry.end() if carry is not None else None
    return data_event(held, model, usage, False, redactor) if held else b""


def sse_event(
    line: bytes,
    model: str,
    usage: Usage,
    hide_usage: bool,
    redactor: Redactor = NO_SECRETS,
    carry: StreamCarry | None = None,
) -> bytes:
    """One SSE line for the caller, the provider's secrets redacted: data events get the hub
    model id back; others pass as they are."""
    if not line.startswith(b"data:"):
        return redactor.bytes(line) + b"\n"
    data = line[5:].strip()
    if data == b"[DONE]":
        return closing(model, usage, redactor, carry)
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return redactor.bytes(line) + b"\n\n"
    if not isinstance(event, dict):
        return redactor.bytes(line) + b"\n\n"
    return data_event(event, model, usage, hide_usage, redactor, carry)


JOINED_BYTES = 64 * 1024  # at most this much of a burst in one message: the loop gets its turn at each write


class Joined:
    """Events gathered for one message: joined once when taken (linear in their size)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, event: bytes) -> None:
        self.parts.append(event)
        self.size += len(event)

    def take(self) -> bytes:
        joined = b"".join(self.parts)
        self.parts, self.size = [], 0
        return joined


async def relay(opened: Opened, model: str, hide_usage: bool) -> AsyncIterator[bytes]:
    """The stream's events for the caller, as SSE lines; raises on a broken stream.
    Stops after [DONE]; a provider that ends without one gets it added. The first event and the
    end ([DONE], with what the carry still held) leave in messages of their own; between them,
    events that arrived together leave together, up to JOINED_BYTES a message: what is already
    received goes with the event before it (one gRPC write instead of one per event); nothing
    waits for more."""
    assert isinstance(opened.response, Response)
    response, redactor = opened.response, opened.route.provider.redactor
    carry = StreamCarry(redactor)  # a secret split over events
    ready = Joined()
    try:
        first = data_event(opened.first_event, model, opened.usage, hide_usage, redactor, carry)
        if first:
            yield first  # the caller's first byte waits for no other event's rewriting
        while True:
            line = response.buffered_line() if ready.size < JOINED_BYTES else None
            if line is None:
                if ready.parts:
                    yield ready.take()
                line = await next_line(response)
                if line is None:
                    yield closing(model, opened.usage, redactor, carry)
                    return
            event = sse_event(line, model, opened.usage, hide_usage, redactor, carry)
            if event.endswith(DONE):  # the end leaves in a message of its own, as before
                if ready.parts:
                    yield ready.take()
                yield event
                return
            if event:  # an event the carry holds back for now says nothing yet
                ready.add(event)
    except Exception:  # a broken stream: the events before it, and the text the carry held, were the caller's
        if held := held_back(model, opened.usage, redactor, carry):
            ready.add(held)
        if ready.parts:
            yield ready.take()
        raise
    finally:
        response.release()
