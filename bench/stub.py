"""The fast upstream stub every target is pointed at.

An Envoy `direct_response` listener answers chat completions (one listener for
unary JSON, one for a whole SSE stream) and image generations, each with a fresh
`inference-id` header, at ~10k requests/s here, so it is never the bottleneck.
A tiny aiohttp server sends SSE chunks paced apart, so the harness can tell a
stream passed on chunk by chunk from one buffered until the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

STUB_MODEL = "stub-model"
CREATED = 1_700_000_000
PACED_CHUNKS = 5
PACED_GAP_SECONDS = 0.02
# A paced stream sends PACED_CHUNKS words, a final chunk and [DONE], a gap before each after the first.
PACED_SPAN_SECONDS = (PACED_CHUNKS + 1) * PACED_GAP_SECONDS

CHAT_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": CREATED,
    "model": STUB_MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello from the stub."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
}

IMAGE_RESPONSE = {"created": CREATED, "data": [{"url": "http://127.0.0.1/bench/image.png"}]}
EMBED_RESPONSE = {
    "object": "list",
    "data": [{"object": "embedding", "index": i, "embedding": [0.125] * 128} for i in range(2)],
    "model": "stub-model",
    "usage": {"prompt_tokens": 9, "total_tokens": 9},
}


def sse_chunk(content: str, finish_reason: str | None = None, role: bool = False) -> str:
    """One `data:` event of a streamed chat completion."""
    delta: dict[str, str] = {"role": "assistant"} if role else {}
    if content:
        delta["content"] = content
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": STUB_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"


def sse_events(words: list[str]) -> list[str]:
    """A whole stream: one chunk per word, a final chunk, then [DONE]."""
    events = [sse_chunk(w, role=i == 0) for i, w in enumerate(words)]
    return [*events, sse_chunk("", finish_reason="stop"), "data: [DONE]\n\n"]


def _route(path_regex: str, content_type: str, body: str) -> list[str]:
    return [
        f'                - match: {{safe_regex: {{regex: "{path_regex}"}}}}',
        "                  direct_response:",
        "                    status: 200",
        f"                    body: {{inline_string: {json.dumps(body)}}}",
        "                  response_headers_to_add:",
        f"                    - header: {{key: content-type, value: {content_type}}}",
        "                    - header: {key: inference-id, value: '%UNIQUE_ID%'}",
    ]


def _listener(name: str, port: int, routes: list[str]) -> str:
    head = [
        f"    - name: {name}",
        f"      address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}",
        "      filter_chains:",
        "        - filters:",
        "            - name: envoy.filters.network.http_connection_manager",
        "              typed_config:",
        '                "@type": type.googleapis.com/envoy.extensions.filters.network.'
        "http_connection_manager.v3.HttpConnectionManager",
        f"                stat_prefix: {name}",
        "                codec_type: AUTO",
        "                http_filters:",
        # Reading the whole request first keeps connections alive: Envoy closes one
        # whose request body was still arriving when the direct response went out.
        "                  - name: envoy.filters.http.buffer",
        "                    typed_config:",
        '                      "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer',
        "                      max_request_bytes: 1048576",
        "                  - name: envoy.filters.http.router",
        "                    typed_config:",
        '                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
        "                route_config:",
        "                  virtual_hosts:",
        f"                    - name: {name}",
        '                      domains: ["*"]',
        "                      routes:",
    ]
    indented = ["      " + line for line in routes]
    return "\n".join(head + indented)


def envoy_stub_config(admin_port: int, unary_port: int, stream_port: int) -> str:
    """Envoy YAML: `unary_port` answers chat JSON and images; `stream_port` answers a whole SSE stream."""
    completion = json.dumps(CHAT_COMPLETION, separators=(",", ":"))
    image = json.dumps(IMAGE_RESPONSE, separators=(",", ":"))
    stream = "".join(sse_events(["Hello", " from", " the", " stub."]))
    embed = json.dumps(EMBED_RESPONSE, separators=(",", ":"))
    unary_routes = (
        _route(".*/chat/completions", "application/json", completion)
        + _route(".*/images/generat(e|ions)", "application/json", image)
        + _route(".*/embeddings", "application/json", embed)
    )
    stream_routes = _route(".*/chat/completions", "text/event-stream", stream)
    listeners = "\n".join(
        [_listener("stub_unary", unary_port, unary_routes), _listener("stub_stream", stream_port, stream_routes)]
    )
    return (
        f"admin:\n  address:\n    socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}\n"
        f"static_resources:\n  listeners:\n{listeners}\n"
    )


@dataclass
class StubPorts:
    """Where the stub answers."""

    admin: int
    unary: int
    stream: int
    paced: int

    def url(self, kind: str) -> str:
        """Base URL (ending in /v1) of the "unary", "stream" or "paced" upstream."""
        return f"http://127.0.0.1:{getattr(self, kind)}/v1"


async def _paced_stream(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers={"content-type": "text/event-stream", "inference-id": "paced"})
    await response.prepare(request)
    words = [f" w{i}" for i in range(PACED_CHUNKS)]
    for i, event in enumerate(sse_events(words)):
        if i:
            await asyncio.sleep(PACED_GAP_SECONDS)
        await response.write(event.encode())
    await response.write_eof()
    return response


def run_paced_stub(port: int) -> None:
    """Serves the paced SSE stream on every `/chat/completions` path until killed."""
    app = web.Application()
    app.router.add_post("/{prefix:.*}chat/completions", _paced_stream)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def envoy_argv(envoy: str, config: Path, base_id: int) -> list[str]:
    """One worker thread: the stub must not take both cores from the targets."""
    return [envoy, "-c", str(config), "--concurrency", "1", "--log-level", "error", "--base-id", str(base_id)]


if __name__ == "__main__":
    run_paced_stub(int(sys.argv[1]))
