"""The reference provider: an OpenAI-compatible chat, images, embeddings and audio API, every
other served task in the hub's task format (POST /models/<model>, see tasks.py), a request id
header, a cost API with bearer auth, and knobs for latency and failures.

It answers deterministically from the request, so partners (and tests) can check
exactly what reached it: GET /debug/last-request shows the last inference body.

Knobs come from the command line, from POST /debug/knobs, or per URL: the same
routes under /knobs/<name>=<value>,.../ (e.g. /knobs/fail=503/v1/chat/completions,
/knobs/latency=2000/..., /knobs/cut=2/... to drop a stream after two chunks), so
one process can play several providers with different behaviours.

Switches break one part of the contract each, so partners can see what each failure
of the conformance check looks like (--break NAME, repeatable; $REFERENCE_PROVIDER_BREAK,
comma-separated; or /knobs/break=NAME/ in a URL, the cost API's too):
  no-request-id           answers carry no request id header
  duplicate-request-ids   every answer carries the same request id
  float-costs             the cost API answers costs as floats (1000.0)
  negative-costs          the cost API answers negative costs
  ignore-tools            tools and tool_choice are ignored: plain text comes back
  ignore-response-format  response_format is ignored: plain text comes back
  no-done                 streams end without data: [DONE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import os
import random
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from services.common.tasks import DEFAULT_REQUEST_ID_HEADER, SERVED_TASKS
from services.common.tasks import JSON as JSON_TAKES
from services.reference_provider import API_KEY_ENV, BILLING_TOKEN_ENV, BREAK_ENV, png, tasks
from services.reference_provider.answers import chat_answer, chat_chunks, usage_of

REQUEST_ID_HEADER = DEFAULT_REQUEST_ID_HEADER
# What each switch breaks (see the module's docstring).
BREAKS = (
    "no-request-id",
    "duplicate-request-ids",
    "float-costs",
    "negative-costs",
    "ignore-tools",
    "ignore-response-format",
    "no-done",
)
DUPLICATE_REQUEST_ID = "00000000-0000-4000-8000-000000000000"
MAX_REMEMBERED_REQUESTS = 200_000
MAX_STORED_IMAGES = 512
MAX_IMAGES_PER_REQUEST = 4
# Deterministic costs, nano-USD.
COST_PER_REQUEST = 1_000
COST_PER_INPUT_TOKEN = 100
COST_PER_OUTPUT_TOKEN = 300
COST_PER_IMAGE = 5_000_000
SPEECH_PIECE_BYTES = 4096  # a speech answer is written in pieces of this size
# On SIGTERM, answers in flight (e.g. sleeping out a latency knob) get this long to finish, then are cancelled.
SHUTDOWN_TIMEOUT_SECONDS = 0.5


@dataclass
class Knobs:
    """Behaviour that tests and demos change: latency and injected failures."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 500
    # A stream is cut (connection dropped) after this many chunks; -1 never.
    stream_fail_after: int = -1
    # Switches of BREAKS that are on.
    breaks: frozenset[str] = frozenset()


def checked_breaks(names: Iterable[object]) -> frozenset[str]:
    """Switch names as a set; ValueError naming an unknown one (a string is not a list of names)."""
    chosen = frozenset(names)
    unknown = sorted(str(name) for name in chosen - set(BREAKS))
    if unknown:
        raise ValueError(f"unknown switch {unknown[0]!r}; known: {', '.join(BREAKS)}")
    return chosen  # type: ignore[return-value]  # every name is one of BREAKS


@dataclass
class State:
    """What the provider remembers: usage per request id (bounded), images, the last request."""

    knobs: Knobs
    api_key: str = ""
    billing_token: str = ""
    price_unknown_ids: bool = True
    usage: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    last_request: dict[str, Any] = field(default_factory=dict)

    def remember(self, request_id: str, prompt_tokens: int, completion_tokens: int, images: int) -> None:
        if len(self.usage) >= MAX_REMEMBERED_REQUESTS:
            del self.usage[next(iter(self.usage))]  # oldest first: dicts keep insertion order
        self.usage[request_id] = (prompt_tokens, completion_tokens, images)

    def store_image(self, data: bytes) -> str:
        if len(self.images) >= MAX_STORED_IMAGES:
            del self.images[next(iter(self.images))]
        image_id = uuid.uuid4().hex
        self.images[image_id] = data
        return image_id

    def cost_of(self, request_id: str) -> int | None:
        usage = self.usage.get(request_id)
        if usage is None:
            # Ids it never served (e.g. a benchmark's synthetic ledger) get a stable price from the id.
            return 1_000 + zlib.crc32(request_id.encode()) % 100_000 if self.price_unknown_ids else None
        prompt, completion, images = usage
        if images:
            return COST_PER_IMAGE * images
        return COST_PER_REQUEST + COST_PER_INPUT_TOKEN * prompt + COST_PER_OUTPUT_TOKEN * completion


STATE = web.AppKey("state", State)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, error_type: str, request_id: str | None = None) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    body = {"error": {"message": message, "type": error_type, "param": None, "code": str(status)}}
    return _json(body, status, headers)


def _id_header(knobs: Knobs, request_id: str) -> dict[str, str]:
    """The request id header of an answer (none with the no-request-id switch)."""
    return {} if "no-request-id" in knobs.breaks else {REQUEST_ID_HEADER: request_id}


def _ignoring(body: dict, knobs: Knobs) -> dict:
    """The body as a provider that ignores tools or response_format (by its switches) reads it."""
    ignored = {"tools", "tool_choice"} if "ignore-tools" in knobs.breaks else set()
    ignored |= {"response_format"} if "ignore-response-format" in knobs.breaks else set()
    return {k: v for k, v in body.items() if k not in ignored}


def _cost_as_sent(cost: int, knobs: Knobs) -> int | float:
    """A cost as the cost API writes it (a float or negative by the switches)."""
    if "negative-costs" in knobs.breaks:
        return -cost
    return float(cost) if "float-costs" in knobs.breaks else cost


def _bearer_ok(request: web.Request, expected: str) -> bool:
    if not expected:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())


_URL_KNOBS = {"latency": "latency_ms", "cut": "stream_fail_after"}


def knobs_of(request: web.Request) -> Knobs:
    """The process's knobs, overridden by a /knobs/<name>=<value>,... URL prefix."""
    knobs = request.app[STATE].knobs
    spec = request.match_info.get("knobs")
    if not spec:
        return knobs
    changes: dict[str, float | int] = {}
    for item in spec.split(","):
        name, _, value = item.partition("=")
        if name == "fail":
            changes.update(fail_rate=1.0, fail_status=int(value))
        elif name == "break":
            changes["breaks"] = changes.get("breaks", knobs.breaks) | checked_breaks([value])
        elif name in _URL_KNOBS:
            changes[_URL_KNOBS[name]] = float(value) if name == "latency" else int(value)
    return replace(knobs, **changes)


async def _inference_prelude(request: web.Request, raw: bool = False) -> tuple[Any, str, web.Response | None]:
    """Auth, body, latency and injected failures shared by every inference route; with `raw`, a
    body that is not JSON (an upload) comes back as bytes, a multipart form as {"form": fields}."""
    state = request.app[STATE]
    try:
        knobs = knobs_of(request)
    except ValueError:
        return None, "", _error(400, "malformed /knobs/ URL", "invalid_request_error")
    request_id = DUPLICATE_REQUEST_ID if "duplicate-request-ids" in knobs.breaks else str(uuid.uuid4())
    if not _bearer_ok(request, state.api_key):
        return None, request_id, _error(401, "invalid API key", "authentication_error", request_id)
    body: Any
    if raw and request.content_type == "multipart/form-data":
        body = {"form": {name: value for name, value in (await request.post()).items()}}
    elif raw and request.content_type != "application/json":
        body = await request.read()
    else:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None, request_id, _error(400, "the body is not JSON", "invalid_request_error", request_id)
        if not isinstance(body, dict):
            return None, request_id, _error(400, "the body must be a JSON object", "invalid_request_error", request_id)
    shown = body
    if isinstance(body, bytes) or "form" in body:
        shown = {"bytes": len(body)} if isinstance(body, bytes) else {"form": sorted(body["form"])}
    state.last_request = {"path": request.path, "body": shown}
    if knobs.latency_ms > 0:
        await asyncio.sleep(knobs.latency_ms / 1000)
    if knobs.fail_rate > 0 and random.random() < knobs.fail_rate:
        status = knobs.fail_status
        return body, request_id, _error(status, f"injected failure ({status})", "server_error", request_id)
    return body, request_id, None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body, request_id, failure = await _inference_prelude(request)
    if failure is not None:
        return failure
    assert body is not None
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _error(400, "messages must be a non-empty list", "invalid_request_error", request_id)
    state, knobs = request.app[STATE], knobs_of(request)
    answer = chat_answer(_ignoring(body, knobs), request_id)
    prompt_tokens, completion_tokens = usage_of(answer)
    state.remember(request_id, prompt_tokens, completion_tokens, 0)
    if not body.get("stream"):
        return _json(answer, headers=_id_header(knobs, request_id))
    response = web.StreamResponse(headers={**_id_header(knobs, request_id), "Content-Type": "text/event-stream"})
    await response.prepare(request)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    for sent, chunk in enumerate(chat_chunks(answer, include_usage)):
        if sent == knobs.stream_fail_after:
            assert request.transport is not None
            request.transport.abort()  # a provider dying mid-stream
            return response
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    if "no-done" not in knobs.breaks:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def image_generations(request: web.Request) -> web.Response:
    body, request_id, failure = await _inference_prelude(request)
    if failure is not None:
        return failure
    assert body is not None
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _error(400, "prompt must be a non-empty string", "invalid_request_error", request_id)
    count = body.get("n") or 1
    if not isinstance(count, int) or not 1 <= count <= MAX_IMAGES_PER_REQUEST:
        return _error(400, f"n must be 1..{MAX_IMAGES_PER_REQUEST}", "invalid_request_error", request_id)
    state = request.app[STATE]
    width, height = png.parse_size(body.get("size"))
    loras = body.get("loras") or []
    tint = "|".join(str(lora.get("path")) for lora in loras if isinstance(lora, dict))
    data = []
    for index in range(count):
        image = png.draw(prompt + tint, width, height, index)
        if body.get("response_format") == "b64_json":
            data.append({"b64_json": base64.b64encode(image).decode()})
        else:
            image_id = state.store_image(image)
            data.append({"url": f"{request.scheme}://{request.host}/images/{image_id}.png"})
    state.remember(request_id, 0, 0, count)
    return _json({"created": int(time.time()), "data": data}, headers=_id_header(knobs_of(request), request_id))


async def embeddings(request: web.Request) -> web.Response:
    body, request_id, failure = await _inference_prelude(request)
    if failure is not None:
        return failure
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _error(400, "input must be a string or a list of strings", "invalid_request_error", request_id)
    dimension = body.get("dimensions") or tasks.DIMENSION
    if not isinstance(dimension, int) or not 1 <= dimension <= tasks.DIMENSION:
        return _error(400, f"dimensions must be 1..{tasks.DIMENSION}", "invalid_request_error", request_id)
    data = [
        {"object": "embedding", "index": i, "embedding": tasks.embedding(text, dimension)}
        for i, text in enumerate(texts)
    ]
    prompt_tokens = sum(map(tasks.tokens, texts))
    request.app[STATE].remember(request_id, prompt_tokens, 0, 0)
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    answer = {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    return _json(answer, headers=_id_header(knobs_of(request), request_id))


async def transcriptions(request: web.Request) -> web.Response:
    body, request_id, failure = await _inference_prelude(request, raw=True)
    if failure is not None:
        return failure
    upload = body.get("form", {}).get("file") if isinstance(body, dict) else None
    if not isinstance(upload, web.FileField):
        return _error(400, "the multipart body needs a file", "invalid_request_error", request_id)
    data = upload.file.read()
    request.app[STATE].remember(request_id, 0, 0, 0)
    text, headers = tasks.transcript(data), _id_header(knobs_of(request), request_id)
    response_format = body["form"].get("response_format", "json")
    if response_format == "text":
        return web.Response(text=text + "\n", headers=headers)
    if response_format == "verbose_json":
        verbose = {"task": "transcribe", "language": "english", "duration": tasks.wav_seconds(data), "text": text}
        return _json({**verbose, "segments": []}, headers=headers)
    return _json({"text": text}, headers=headers)


async def speech(request: web.Request) -> web.StreamResponse:
    """The speech as a WAV, written in pieces (a streamed answer; the cut knob drops it mid-way)."""
    body, request_id, failure = await _inference_prelude(request)
    if failure is not None:
        return failure
    text = body.get("input")
    if not isinstance(text, str) or not text:
        return _error(400, "input must be a non-empty string", "invalid_request_error", request_id)
    request.app[STATE].remember(request_id, 0, 0, 0)
    knobs = knobs_of(request)
    response = web.StreamResponse(headers={**_id_header(knobs, request_id), "Content-Type": "audio/wav"})
    await response.prepare(request)
    audio = tasks.wav(text)
    for sent, start in enumerate(range(0, len(audio), SPEECH_PIECE_BYTES)):
        if sent == knobs.stream_fail_after:
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(audio[start : start + SPEECH_PIECE_BYTES])
    await response.write_eof()
    return response


async def hub_task(request: web.Request) -> web.Response:
    """POST /models/<model>: the hub's task format, for the task tasks.task_of reads."""
    body, request_id, failure = await _inference_prelude(request, raw=True)
    if failure is not None:
        return failure
    task = tasks.task_of(request.match_info["model"], body)
    data, inputs, parameters = (body, None, {}) if isinstance(body, bytes) else (b"", body.get("inputs"), {})
    if isinstance(body, dict):
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        if SERVED_TASKS[task].takes != JSON_TAKES and isinstance(inputs, str):
            data = base64.b64decode(inputs)
    if inputs is None and not data:
        return _error(400, "the body needs inputs", "invalid_request_error", request_id)
    answer, media_type = tasks.hub_answer(task, inputs, data, parameters)
    texts = inputs if isinstance(inputs, list) else [inputs] if isinstance(inputs, str) else []
    request.app[STATE].remember(request_id, sum(tasks.tokens(str(t)) for t in texts), 0, 0)
    headers = _id_header(knobs_of(request), request_id)
    if isinstance(answer, bytes):
        return web.Response(body=answer, content_type=media_type, headers=headers)
    return _json(answer, headers=headers)


async def image_file(request: web.Request) -> web.Response:
    image = request.app[STATE].images.get(request.match_info["image_id"])
    if image is None:
        return _error(404, "no such image", "not_found_error")
    return web.Response(body=image, content_type="image/png")


async def billing_costs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _bearer_ok(request, state.billing_token):
        return _error(401, "invalid billing token", "authentication_error")
    try:
        knobs = knobs_of(request)
    except ValueError:
        return _error(400, "malformed /knobs/ URL", "invalid_request_error")
    try:
        ids = orjson.loads(await request.read()).get("requestIds")
    except (orjson.JSONDecodeError, AttributeError):
        ids = None
    if not isinstance(ids, list):
        return _error(400, 'the body must be {"requestIds": [...]}', "invalid_request_error")
    answered = []
    for request_id in ids:
        cost = state.cost_of(request_id) if isinstance(request_id, str) else None
        if cost is not None:
            answered.append({"requestId": request_id, "costNanoUsd": _cost_as_sent(cost, knobs)})
    return _json({"requests": answered})


async def last_request(request: web.Request) -> web.Response:
    return _json(request.app[STATE].last_request)


async def update_knobs(request: web.Request) -> web.Response:
    """Changes latency/failure knobs at run time (demos and tests)."""
    knobs = request.app[STATE].knobs
    try:
        changes = orjson.loads(await request.read())
        for name, value in changes.items():
            if name not in asdict(knobs):
                return _error(400, f"unknown knob {name!r}", "invalid_request_error")
            setattr(knobs, name, checked_breaks(value) if name == "breaks" else type(getattr(knobs, name))(value))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return _error(400, "the body must be a JSON object of knobs", "invalid_request_error")
    return _json({**asdict(knobs), "breaks": sorted(knobs.breaks)})


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(state: State) -> web.Application:
    """The provider's aiohttp application."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE] = state
    for prefix in ("", "/knobs/{knobs}"):
        app.router.add_post(prefix + "/v1/chat/completions", chat_completions)
        app.router.add_post(prefix + "/v1/images/generations", image_generations)
        app.router.add_post(prefix + "/v1/embeddings", embeddings)
        app.router.add_post(prefix + "/v1/audio/transcriptions", transcriptions)
        app.router.add_post(prefix + "/v1/audio/speech", speech)
        app.router.add_post(prefix + "/models/{model:.+}", hub_task)
    app.router.add_get("/images/{image_id}.png", image_file)
    for prefix in ("", "/knobs/{knobs}"):
        app.router.add_post(prefix + "/v1/billing/costs", billing_costs)
    app.router.add_get("/debug/last-request", last_request)
    app.router.add_post("/debug/knobs", update_knobs)
    app.router.add_get("/health", health)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.reference_provider", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each inference answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of inference calls that fail (0..1)")
    parser.add_argument("--fail-status", type=int, default=500, help="HTTP status of injected failures")
    parser.add_argument("--stream-fail-after", type=int, default=-1, help="drop streams after N chunks")
    parser.add_argument(
        "--break",
        dest="breaks",
        action="append",
        choices=BREAKS,
        help=f"break one part of the contract (repeatable; default: ${BREAK_ENV}, comma-separated)",
    )
    # Secrets never on the command line (ps shows it to everyone): a file, else the environment.
    parser.add_argument(
        "--api-key-file", help=f"file of the bearer token required on inference routes (default: ${API_KEY_ENV})"
    )
    parser.add_argument(
        "--billing-token-file",
        help=f"file of the bearer token required on the cost API (default: ${BILLING_TOKEN_ENV})",
    )
    parser.add_argument(
        "--no-price-unknown-ids",
        action="store_true",
        help="leave ids it never served out of cost answers (default: price them from the id)",
    )
    return parser.parse_args(argv)


def secret(path: str | None, variable: str) -> str:
    """The secret in the file when one is named, else in the environment variable ("" for none)."""
    return Path(path).read_text().strip() if path else os.environ.get(variable, "")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    breaks = args.breaks or [name for name in os.environ.get(BREAK_ENV, "").split(",") if name]
    knobs = Knobs(args.latency_ms, args.fail_rate, args.fail_status, args.stream_fail_after, checked_breaks(breaks))
    api_key, billing_token = secret(args.api_key_file, API_KEY_ENV), secret(args.billing_token_file, BILLING_TOKEN_ENV)
    state = State(knobs, api_key, billing_token, not args.no_price_unknown_ids)
    import uvloop

    uvloop.install()
    web.run_app(
        create_app(state),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        handler_cancellation=True,  # a request its caller abandoned stops sleeping at once
    )
