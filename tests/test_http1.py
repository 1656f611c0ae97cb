"""The Router's lean HTTP/1.1 client (services/common/http1.py) against raw asyncio servers
that answer each way a provider may: content-length, chunked, until close, broken, silent."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.common.http1 import HttpError, Pool
from services.common.provider_api import AttemptFailed, Opened, first_event, read_capped, usable_request_id
from services.common.secrets import Redactor
from services.router.directory import ProviderEntry
from services.router.selection import Route
from services.router.upstream import DONE, JOINED_BYTES, relay

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'{"choices": [1]}'


class Server:
    """A loopback server answering each request with `answer`; counts its connections."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))  # fmt: skip
                await reader.readexactly(length)
                await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[Server, str]]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> tuple[Server, str]:
        server = Server(answer)
        listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(listening)
        return server, f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v1/chat/completions"

    yield start
    for listening in servers:
        listening.close()


def content_length(body: bytes = OK) -> Answer:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nInference-Id: abc\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return answer


async def test_a_content_length_answer_and_the_connection_kept_alive(serve) -> None:
    server, url = await serve(content_length())
    pool = Pool(1, 5)
    for _ in range(3):
        response = await pool.post(url, b"{}", {"Content-Type": "application/json"})
        assert response.status == 200 and response.headers.get("inference-id") == "abc"
        assert await read_capped(response, 1000) == OK
        response.release()
    assert server.connections == 1
    await pool.close()


def chunked_in_two(first: bytes, rest: bytes, go_on: asyncio.Event) -> Answer:
    """A chunked answer: `first` (whole chunks), then once `go_on` is set `rest` (the last ones)."""

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + first)
        await go_on.wait()
        writer.write(rest)

    return answer


async def test_a_chunked_stream_is_read_line_by_line_as_it_arrives(serve) -> None:
    go_on = asyncio.Event()
    server, url = await serve(chunked_in_two(b"8\r\ndata: 1\n\r\n", b"9\r\n\ndata: 2\n\r\n0\r\n\r\n", go_on))
    pool = Pool(1, 5)
    response = await pool.post(url, b"{}", {})
    assert await response.content.readline() == b"data: 1\n"  # before the rest was sent
    go_on.set()
    assert [await response.content.readline() for _ in range(4)] == [b"\n", b"data: 2\n", b"", b""]
    response.release()
    response = await pool.post(url, b"{}", {})  # the same connection, reused
    assert await response.content.readline() == b"data: 1\n"
    response.release()  # the answer unfinished: its connection is closed, not reused
    assert server.connections == 1
    await pool.close()


async def test_buffered_lines_are_what_arrived_never_a_wait(serve) -> None:
    go_on = asyncio.Event()
    _, url = await serve(chunked_in_two(b"17\r\ndata: 1\n\n\ndata: 2\n\ndata\r\n", b"5\r\n: 3\n\n\r\n0\r\n\r\n", go_on))
    pool = Pool(1, 5)
    response = await pool.post(url, b"{}", {})
    assert await response.content.readline() == b"data: 1\n"
    assert [response.buffered_line(), response.buffered_line()] == [b"data: 2", None]  # blank lines skipped
    go_on.set()
    assert await response.content.readline() == b"data: 3\n"  # the part line waited for the rest
    assert response.buffered_line() is None
    response.release()
    await pool.close()


async def test_a_body_until_close_and_a_server_that_closed_an_idle_connection(serve) -> None:
    async def until_close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + OK)
        await writer.drain()
        writer.close()

    _, url = await serve(until_close)
    pool = Pool(1, 5)
    response = await pool.post(url, b"{}", {})
    assert await read_capped(response, 1000) == OK
    response.release()

    server, url = await serve(content_length())
    response = await pool.post(url, b"{}", {})
    await response.read()
    response.release()
    server.writers[0].close()  # the server ends the kept-alive connection while it is idle
    await asyncio.sleep(0.05)
    response = await pool.post(url, b"{}", {})
    assert await response.read() == OK and server.connections == 2
    response.release()
    await pool.close()


async def test_caps_timeouts_and_broken_answers(serve) -> None:
    # Only the silent server meets the short read timeout; the others must meet their own defect
    # (the servers share this event loop, which a busy machine may stall for longer than 0.2 s).
    pool, impatient = Pool(1, 30), Pool(1, 0.2)
    _, url = await serve(content_length(b"x" * 5000))
    with pytest.raises(AttemptFailed, match="larger than"):
        await read_capped(await pool.post(url, b"{}", {}), 1000)

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")

    _, url = await serve(silent)
    response = await impatient.post(url, b"{}", {})
    with pytest.raises(TimeoutError):
        await response.content.readline()
    response.release()
    await impatient.close()

    async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")

    _, url = await serve(garbage)
    with pytest.raises(HttpError):
        await pool.post(url, b"{}", {})
    with pytest.raises(HttpError, match="line break"):
        await pool.post(url, b"{}", {"X-Evil": "a\r\nHost: elsewhere"})
    await pool.close()


@pytest.mark.parametrize("header", [b"Inference-Id: " + b"i" * 70_000, b"X-Pad: p\r\n" * 12_000])
async def test_headers_past_64_kib_are_a_broken_answer(serve, header: bytes) -> None:
    """One huge header or many: the answer is refused (the attempt fails), never kept whole."""

    async def padded(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + header.rstrip(b"\r\n") + b"\r\nContent-Length: 2\r\n\r\n{}")

    _, url = await serve(padded)
    pool = Pool(1, 30)
    with pytest.raises(HttpError, match="64 KiB"):
        await pool.post(url, b"{}", {})
    await pool.close()


@pytest.mark.parametrize(
    ("said", "kept"),
    [("req-1", "req-1"), ("r" * 1024, "r" * 1024), ("r" * 1025, ""), ("req-\xff", ""), ("req\x01", ""), ("", "")],
)
def test_a_providers_request_id_is_kept_only_when_the_ledger_can_use_it(said: str, kept: str) -> None:
    """Printable ASCII of at most 1,024 characters; any other is recorded as none (the answer unpriced)."""
    assert usable_request_id(said) == kept


async def test_a_deadline_bounds_every_wait_until_it_is_cleared(serve) -> None:
    """The deadline ends a wait long before the read timeout would; cleared, a slow line is read."""
    go_on = asyncio.Event()
    _, url = await serve(chunked_in_two(b"8\r\ndata: 1\n\r\n", b"8\r\ndata: 2\n\r\n0\r\n\r\n", go_on))
    pool, loop = Pool(1, 30), asyncio.get_running_loop()
    # Short deadlines are set once the first line is in: a busy machine may stall this loop (and the
    # server on it) for longer than any short deadline before that.
    response = await pool.post(url, b"{}", {}, deadline=loop.time() + 30)
    assert await response.content.readline() == b"data: 1\n"
    response.deadline = loop.time() + 0.2
    with pytest.raises(TimeoutError, match="the deadline passed"):  # not the read timeout
        await response.content.readline()
    response.release()
    response = await pool.post(url, b"{}", {}, deadline=loop.time() + 30)
    assert await response.content.readline() == b"data: 1\n"
    deadline = response.deadline = loop.time() + 0.2
    response.deadline = None
    loop.call_at(deadline + 0.3, go_on.set)  # the rest comes after the cleared deadline
    assert await response.content.readline() == b"data: 2\n"
    response.release()
    await pool.close()


async def test_a_kept_alive_connection_closed_unanswered_is_retried_on_a_new_one(serve) -> None:
    answered: dict[asyncio.StreamWriter, int] = {}

    async def once_per_connection(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered[writer] = answered.get(writer, 0) + 1
        if answered[writer] > 1:  # as a server that timed the idle connection out just as the request came
            writer.close()
            return
        await content_length()(_, writer)

    server, url = await serve(once_per_connection)
    pool = Pool(1, 5)
    for _ in range(3):
        response = await pool.post(url, b"{}", {})
        assert await response.read() == OK
        response.release()
    assert server.connections == 3  # each reuse met a closed connection and went on to a new one
    await pool.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for `localhost` signed by its own key: (certificate, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


async def test_https_verifies_the_providers_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    server = Server(content_length())
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=serving)
    url = f"https://localhost:{listening.sockets[0].getsockname()[1]}/v1/chat/completions"
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        pool = Pool(1, 5, trusting)
        for _ in range(2):
            response = await pool.post(url, b"{}", {})
            assert await response.read() == OK and server.connections == 1
            response.release()
        await pool.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await Pool(1, 5).post(url, b"{}", {})  # the system's CAs do not know it
    finally:
        listening.close()


async def test_a_burst_of_events_leaves_in_messages_of_bounded_size(serve) -> None:
    """The Router's relay joins events that arrived together, JOINED_BYTES at most a message
    (the loop gets its turn at each write), the first event and the end each alone."""
    event = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
    body = event * 4000 + b"data: [DONE]\n\n"
    _, url = await serve(content_length(event + body))
    pool = Pool(1, 5)
    response = await pool.post(url, b"{}", {})
    first = await first_event(response, "choices")
    route = Route(ProviderEntry("p", "http://p", {}, "", ("conversational",), 0, {}), "m")
    opened = Opened(route, "", 0.0, 0.0, first_event=first, response=response)
    messages = [message async for message in relay(opened, "hub/m", hide_usage=False)]
    await pool.close()
    middle = messages[1:-1]
    assert messages[0].count(b"data:") == 1 and messages[-1].endswith(DONE) and messages[-1].count(b"data:") == 1
    assert sum(m.count(b"data:") for m in middle) == 4000 and len(middle) > 1
    assert all(len(m) <= JOINED_BYTES + len(event) * 2 for m in middle)


@pytest.mark.parametrize(("end", "shown"), [("sk-pro", "sk-pro"), ("sk-provider-key-01234", "[redacted]")])
async def test_a_stream_that_breaks_still_gives_the_text_the_carry_held(serve, end: str, shown: str) -> None:
    """The relay holds back a delta's end that could begin a provider's key (StreamCarry); when the
    stream then breaks, that text was the caller's all the same: it leaves, checked, before the error
    (most of the key, cut short by the break, as the placeholder)."""
    key = "sk-provider-key-0123456789"
    first_line = b'data: {"choices": [{"index": 0, "delta": {"content": "hello"}}]}\n\n'
    second = {"choices": [{"index": 0, "delta": {"content": " world " + end}}]}
    body = first_line + b"data: " + orjson.dumps(second) + b"\n\n"

    async def broken(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body) + 100, body))
        await writer.drain()
        writer.close()  # 100 bytes short: the provider broke off

    _, url = await serve(broken)
    pool = Pool(1, 5)
    response = await pool.post(url, b"{}", {})
    first = await first_event(response, "choices")
    provider = ProviderEntry("p", "http://p", {}, "", ("conversational",), 0, {}, redactor=Redactor([key]))
    opened = Opened(Route(provider, "m"), "", 0.0, 0.0, first_event=first, response=response)
    messages: list[bytes] = []
    with pytest.raises((OSError, ValueError)):
        async for message in relay(opened, "hub/m", hide_usage=False):
            messages.append(message)
    await pool.close()
    text = "".join(
        orjson.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in b"".join(messages).split(b"\n\n") if line.startswith(b"data: {")
    )  # fmt: skip
    assert text == "hello world " + shown
