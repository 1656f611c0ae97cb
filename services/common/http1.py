"""A lean HTTP/1.1 client for the Router's provider calls: a keep-alive pool per origin, answers
parsed by httptools inside an asyncio Protocol, bodies handed on as they arrive.

aiohttp's request and response machinery was a fifth of the Router's GIL time under load
(bench/README.md). This does only what a provider call needs: POST a body in one write, read the
status, the headers and a body (content-length, chunked, or until the connection closes), with a
connect timeout, a read timeout on every wait and back-pressure on streams. A Response answers the
part of aiohttp's ClientResponse that services/common/provider_api.py reads, so the Registry's
checks keep aiohttp and both share one implementation of a provider call.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

# Buffered body bytes at which reading pauses until the reader catches up; also the longest
# stream line read (an SSE event longer than this is an error, as with aiohttp's readline).
HIGH_WATER = 256 * 1024
MAX_HEADER_BYTES = 64 * 1024  # an answer's header names and values, all told (aiohttp: 8,190 per line)
IDLE_SECONDS = 60.0  # a connection idle longer is closed, not reused
MAX_IDLE_PER_ORIGIN = 512  # idle connections kept per origin; more are closed
_LINE_BREAKS = re.compile("[\r\n\0]")


class HttpError(ConnectionError):
    """The server broke HTTP/1.1, or the connection ended before the answer did."""


class StaleConnection(HttpError):
    """A reused keep-alive connection the server had closed: nothing was answered on it."""


class Headers(dict[str, str]):
    """Response headers by lower-case name; repeated ones joined with ", "."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


@dataclass(frozen=True)
class Origin:
    """Where a connection goes: host, port, TLS, and the Host header."""

    host: str
    port: int
    tls: bool
    host_header: str


@lru_cache(maxsize=4096)
def _target(url: str) -> tuple[Origin, str]:
    """(origin, request target) of an http(s) URL; parsed once per URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {parts.scheme}://…")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == (443 if tls else 80) else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(host, port, tls, host_header), target


def _request_head(origin: Origin, target: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [
        f"POST {target} HTTP/1.1\r\nHost: {origin.host_header}\r\nContent-Length: {length}\r\n"
        "User-Agent: switchboard\r\nAccept: */*\r\n"
    ]
    for name, value in headers.items():
        if name.lower() not in ("host", "content-length"):
            lines.append(f"{name}: {value}\r\n")
    if _LINE_BREAKS.search("".join(headers) + "".join(headers.values())):  # every name and value at once
        raise HttpError("a request header carries a line break")
    lines.append("\r\n")
    return "".join(lines).encode()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it feeds the bytes it receives to the current answer's parser."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or self.parser is None:  # bytes nobody asked for: not reusable
            self.close()
            return
        response.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(HttpError(f"the provider's answer is not valid HTTP/1.1 ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response.lost()

    def start(self, response: Response, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.response = response
        self.parser = httptools.HttpResponseParser(response)
        self.transport.write(head + body if len(body) < 64 * 1024 else head)
        if len(body) >= 64 * 1024:
            self.transport.write(body)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Response:
    """One answer: status, headers, content_length, and its body read through `content`
    (read, iter_any, readline: what provider_api reads of aiohttp's); release() when done."""

    def __init__(self, pool: Pool, origin: Origin, connection: _Connection) -> None:
        self.status = 0
        self.headers = Headers()
        self.content_length: int | None = None
        self.content = self  # aiohttp's shape: response.content.readline()
        self.got_bytes = False
        self._pool, self._origin, self._connection = pool, origin, connection
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._header_bytes = 0
        self._headers_done = False
        self._complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._keep_alive = False
        # The loop time by which the caller's attempt must be done (Pool.post's `deadline`); None: no such bound.
        self.deadline: float | None = None

    # --- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            error = HttpError(f"the provider's answer headers pass {MAX_HEADER_BYTES // 1024} KiB")
            self.fail(error)  # the answer's error (the first kept), then raised to stop the parser
            raise error
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        assert self._connection.parser is not None
        self.status = self._connection.parser.get_status_code()
        self._keep_alive = self._connection.parser.should_keep_alive()  # llhttp forgets it once the answer ended
        length = self.headers.get("content-length", "")
        self.content_length = int(length) if length.isdigit() else None
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._buffer += body
        if len(self._buffer) >= HIGH_WATER and not self._paused and not self._connection.closed:
            self._paused = True
            assert self._connection.transport is not None
            self._connection.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()

    # --- the connection's events -----------------------------------------------------------

    def fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def lost(self) -> None:
        """The connection closed: the end of a body read until close, else a broken answer."""
        if self._complete:
            return
        if self._headers_done and self._until_close():
            self._complete, self._keep_alive = True, False
        elif not self.got_bytes and self._connection.reused:
            self.fail(StaleConnection("the provider had closed the kept-alive connection"))
        else:
            self.fail(HttpError("the connection closed before the answer ended"))
        self._wake()

    def _until_close(self) -> bool:
        return self.content_length is None and "chunked" not in (self.headers.get("transfer-encoding") or "").lower()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None], at_deadline: bool) -> None:
        if not waiter.done():
            why = "the deadline passed" if at_deadline else f"no data within {self._pool.read_timeout:g}s"
            waiter.set_exception(TimeoutError(why))
            self._error = self._error or HttpError("read timed out")
            self._connection.close()

    async def _wait(self) -> None:
        """Until the connection delivers something; TimeoutError after the read timeout or at the
        deadline, whichever comes first (one timer for both)."""
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        wait, at_deadline = self._pool.read_timeout, False
        if self.deadline is not None and self.deadline - self._loop.time() < wait:
            wait, at_deadline = self.deadline - self._loop.time(), True
        timer = self._loop.call_later(wait, self._timed_out, waiter, at_deadline)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def wait_headers(self) -> None:
        while not self._headers_done:
            await self._wait()

    # --- the body --------------------------------------------------------------------------

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._paused and len(self._buffer) < HIGH_WATER // 2 and not self._connection.closed:
            self._paused = False
            assert self._connection.transport is not None
            self._connection.transport.resume_reading()
        return data

    async def read(self, most: int = -1) -> bytes:
        """Up to `most` bytes (all, when negative) of the body, waiting until that many or its end."""
        while not self._complete and (most < 0 or len(self._buffer) < most):
            await self._wait()
        return self._take(len(self._buffer) if most < 0 else most)

    async def readany(self) -> bytes:
        """What of the body has arrived, waiting for some; b"" at its end (aiohttp's name)."""
        while not self._buffer and not self._complete:
            await self._wait()
        return self._take(len(self._buffer))

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive."""
        while piece := await self.readany():
            yield piece

    async def readline(self) -> bytes:
        """The next line with its line feed; the rest at the end of the body, b"" after it."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                return self._take(end + 1)
            if self._complete:
                return self._take(len(self._buffer))
            if len(self._buffer) >= HIGH_WATER:
                raise ValueError(f"a stream line longer than {HIGH_WATER:,} bytes")
            await self._wait()

    def buffered_line(self) -> bytes | None:
        """The next non-empty line already received, stripped (as provider_api.next_line reads
        one), or None when no whole line is buffered: it never waits (the lean client's own)."""
        while (end := self._buffer.find(b"\n")) >= 0:
            line = self._take(end + 1).strip()
            if line:
                return line
        return None

    def release(self) -> None:
        """Done with the answer: a connection that ended it cleanly goes back to the pool."""
        connection = self._connection
        if connection.response is not self:  # released already
            return
        connection.response = connection.parser = None
        if self._complete and self._error is None and self._keep_alive:
            self._pool.put_back(self._origin, connection)
        else:
            connection.close()


class Pool:
    """Keep-alive connections per origin; post() sends a request and returns once its headers came."""

    def __init__(self, connect_timeout: float, read_timeout: float, tls: ssl.SSLContext | None = None) -> None:
        """`tls` verifies https origins; the system's trusted CAs by default."""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._tls = tls

    async def post(self, url: str, data: bytes, headers: Mapping[str, str], deadline: float | None = None) -> Response:
        """`deadline` (loop time) bounds the connect and every wait for the answer's bytes until the
        caller clears the answer's `deadline`: a TimeoutError, as asyncio.timeout_at would raise,
        without a timer of its own."""
        origin, target = _target(url)
        head = _request_head(origin, target, headers, len(data))
        while True:
            connection = self._take_idle(origin) or await self._connect(origin, deadline)
            response = Response(self, origin, connection)
            response.deadline = deadline
            try:
                connection.start(response, head, data)
                await response.wait_headers()
                return response
            except StaleConnection:
                connection.close()  # the server closed it while idle: try the next one
            except BaseException:
                connection.close()
                raise

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest = time.monotonic() - IDLE_SECONDS
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= oldest:
                connection.reused = True
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, deadline: float | None = None) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.tls else None
        give_up = loop.time() + self.connect_timeout
        async with asyncio.timeout_at(give_up if deadline is None else min(give_up, deadline)):
            _, connection = await loop.create_connection(
                _Connection, origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None
            )
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def put_back(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, deque())
        if connection.closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
