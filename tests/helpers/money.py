"""The money tests' provider and ledger: a mock provider that answers as each request asks
(well, garbage, without usage or choices, oversize, cut off, a 500, absurd usage, held), and a
read-only look at Billing's ledger."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading

import orjson
from aiohttp import web

DRAIN_SECONDS = 180.0  # the Router's ledger sender backs off (and gRPC reconnects) after a long outage
OVERSIZE_BYTES = 200_000  # the stack's --max-answer-bytes is 100,000
CHAT_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
GOOD, NO_USAGE, GARBAGE, NO_CHOICES, OVERSIZE, CUT, ERROR, ABSURD = (
    "good", "no-usage", "garbage", "no-choices", "oversize", "cut", "error-500", "absurd-usage",
)  # fmt: skip
BEHAVIOURS = (GOOD, NO_USAGE, GARBAGE, NO_CHOICES, OVERSIZE, CUT, ERROR, ABSURD)
# What an ABSURD provider reports as completion tokens, in turn: never believed (billed as no usage).
ABSURD_COUNTS = (2**63 - 1, 1e30, -5, "12", 10**8, 2.5)
AUDIO_PIECE = b"RIFF" + b"\x00" * 4092  # what the mock's speech answers carry, piece by piece
HELD = "held"  # a stream that stops after its first event until the test releases it
UNREADABLE = "unreadable"  # a unary chat answer the chat checks let pass, without usage; no translation reads it
WORDS = ("one", " two", " three")
USAGE = {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}  # told apart from counted events
# The APIs translated to chat completions (services/router/*_api.py) ride the chat path: the same
# invariants; embeddings and speech are task routes, billed in their tasks' units.
CHAT_ROUTE, RESPONSES_ROUTE, MESSAGES_ROUTE = "chat", "responses", "messages"
EMBEDDINGS, SPEECH = "embeddings", "speech"


def chat(model: str, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def ledger_rows(sb, account: str) -> list[tuple[str, int, int]]:
    """(request id, output tokens, estimate) of the account's ledger rows (read-only look at billing.db);
    a stream's row once its final record completed its provisional one (Billing may have the
    provisional record a moment before)."""
    query = (
        "SELECT request_id, output_tokens, estimated_nano_usd FROM ledger"
        " WHERE account = ? AND NOT provisional ORDER BY request_id"
    )
    with sqlite3.connect(f"file:{sb.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        return list(db.execute(query, (account,)))


# --- the mock provider ------------------------------------------------------------------------


def _event(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


class MockProvider:
    """Providers' chat, embeddings and speech APIs on one 127.0.0.1 port: POST /<tag>/<p1|p2>/v1/...
    p2 always answers well; p1 answers as the last message (the input) says (one of BEHAVIOURS).
    Each answer has a fresh provider request id `<tag>-<p1|p2>-<n>`, in Inference-Id and as its id."""

    def __init__(self) -> None:
        self.url = ""
        self._ids = itertools.count()
        self.release = threading.Event()  # ends held streams
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        provider, route = request.match_info["provider"], request.match_info.route.name
        asked = body["messages"][-1]["content"] if route == CHAT_ROUTE else body["input"]
        behaviour = GOOD if provider == "p2" else asked
        provider_request_id = f"{request.match_info['tag']}-{provider}-{next(self._ids)}"
        headers = {"Inference-Id": provider_request_id}
        if behaviour == ERROR:
            return web.json_response({"error": {"message": "overloaded"}}, status=500, headers=headers)
        if behaviour == GARBAGE:
            return web.Response(body=b"<html>not json</html>", content_type="text/html", headers=headers)
        if route == SPEECH:
            return await self._speech(request, behaviour, headers)
        if body.get("stream"):
            return await self._stream(request, behaviour, provider_request_id, body)
        answer = {**CHAT_ANSWER, "id": provider_request_id}
        if route == EMBEDDINGS:
            answer = {"id": provider_request_id, "data": [{"embedding": [0.5, 0.25], "index": 0}], "usage": USAGE}
        elif behaviour == ABSURD:
            answer["usage"] = absurd_usage(provider_request_id)
        listed = "choices" if route == CHAT_ROUTE else "data"
        if behaviour in (NO_USAGE, NO_CHOICES, UNREADABLE):
            del answer["usage"]
        if behaviour == UNREADABLE:
            answer["choices"] = [{"index": 0, "message": {"role": "assistant", "tool_calls": ["x"]}}]
        if behaviour == NO_CHOICES:
            del answer[listed]
        if behaviour == OVERSIZE:
            answer["padding"] = "x" * OVERSIZE_BYTES
        if behaviour == CUT:  # says how long it is, sends half, hangs up
            data = orjson.dumps(answer)
            response = web.StreamResponse(headers=headers)
            response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            request.transport.abort()
            return response
        return web.json_response(answer, headers=headers)

    async def _stream(
        self, request: web.Request, behaviour: str, provider_request_id: str, body: dict
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Inference-Id": provider_request_id, "Content-Type": "text/event-stream"}
        )
        await response.prepare(request)
        chunk = {"id": provider_request_id, "object": "chat.completion.chunk", "model": "upstream-model"}
        events = [{**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in WORDS]
        if behaviour == NO_CHOICES:
            events = [chunk]
        if behaviour == OVERSIZE:
            events[0]["padding"] = "x" * OVERSIZE_BYTES
        asked_for_usage = (body.get("stream_options") or {}).get("include_usage") is True
        if behaviour == GOOD and asked_for_usage:
            events.append({**chunk, "choices": [], "usage": USAGE})
        if behaviour == ABSURD:
            events.append({**chunk, "choices": [], "usage": absurd_usage(provider_request_id)})
        if behaviour in (CUT, HELD):  # the connection drops after two events (held: one, and a wait)
            for event in events[: 1 if behaviour == HELD else 2]:
                await response.write(_event(event))
            if behaviour == HELD:
                await asyncio.to_thread(self.release.wait, DRAIN_SECONDS)
            if request.transport is not None:  # a held stream's caller may have gone
                request.transport.abort()
            return response
        for event in events:
            await response.write(_event(event))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _speech(self, request: web.Request, behaviour: str, headers: dict) -> web.StreamResponse:
        """Audio in pieces: none (no-choices), many (oversize), two then a dropped connection (cut)."""
        response = web.StreamResponse(headers={**headers, "Content-Type": "audio/wav"})
        await response.prepare(request)
        pieces = {NO_CHOICES: 0, OVERSIZE: OVERSIZE_BYTES // len(AUDIO_PIECE) + 1, CUT: 2}.get(behaviour, 3)
        for _ in range(pieces):
            await response.write(AUDIO_PIECE)
        if behaviour == CUT:
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    async def __aenter__(self) -> MockProvider:
        app = web.Application()
        paths = {CHAT_ROUTE: "chat/completions", EMBEDDINGS: "embeddings", SPEECH: "audio/speech"}
        for route, path in paths.items():
            app.router.add_post(f"/{{tag}}/{{provider}}/v1/{path}", self._handle, name=route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def absurd_usage(provider_request_id: str) -> dict:
    count = ABSURD_COUNTS[int(provider_request_id.rpartition("-")[2]) % len(ABSURD_COUNTS)]
    return {"prompt_tokens": 3, "completion_tokens": count, "total_tokens": count}
