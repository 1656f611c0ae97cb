"""The conformance check against a hostile provider: endless and huge answers, garbage,
calls that never answer, secrets echoed everywhere. The check still answers (through real
Envoy, within its route timeout), fails those checks with their reasons, and no secret
reaches the report or the logs."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from helpers.registry import ALL_SECRETS, assert_no_secret, ok

from services.demo import AdminApi
from services.launcher import free_port

API_KEY = "sk-hostile-" + uuid.uuid4().hex
BILLING = "Bearer hostile-billing-" + uuid.uuid4().hex
# Each round of the check's calls: only the hanging tools call is meant to meet it, so it leaves room for a
# busy machine's stalls (at 2 s the other answers missed it under load); two rounds stay within Envoy's 15 s.
CALL_SECONDS = 5


async def chat(request: web.Request) -> web.StreamResponse:
    """Each kind of chat request gets its own misbehaviour; every answer echoes the key."""
    body = orjson.loads(await request.read())
    echoed = {"Inference-Id": request.headers.get("Authorization", "")}
    if not isinstance(body.get("messages"), list):  # the bad request: refused, echoing the key
        error = {"message": f"bad request from {request.headers['Authorization']}", "type": "x", "param": None}
        return web.json_response({"error": {**error, "code": API_KEY}}, status=400, headers=echoed)
    if body.get("tools"):
        await asyncio.sleep(3600)  # never answers
    if body.get("response_format"):
        return web.Response(body=b"\x00\xff garbage " + API_KEY.encode(), content_type="application/json")
    response = web.StreamResponse(headers={**echoed, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    if not body.get("stream"):  # a unary answer that never stops growing
        while True:
            await response.write(b" " * 65536)
    first = {"choices": [{"index": 0, "delta": {"content": API_KEY}}]}
    await response.write(b"data: " + orjson.dumps(first) + b"\n\n")
    while True:  # an endless stream
        await response.write(b"data: " + orjson.dumps(first) + b"\n\n")


async def costs(request: web.Request) -> web.Response:
    return web.json_response({"requests": [{"requestId": API_KEY, "costNanoUsd": 1e300}]})


class HostileProvider:
    """The hostile provider on its own event loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/billing/costs", costs)
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)

    def __enter__(self) -> HostileProvider:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileProvider]:
    with HostileProvider() as provider:
        yield provider


def test_a_hostile_provider_cannot_hang_the_check_or_leak_a_secret(make_stack, hostile) -> None:
    ALL_SECRETS.extend([API_KEY, BILLING])
    stack = make_stack(SWITCHBOARD_CONFORMANCE_CALL_SECONDS=str(CALL_SECONDS))
    api = AdminApi(stack.base_url, stack.admin_token)
    provider, model = f"hostile-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:8]}/chat"
    api.call("POST", "/admin/v1/orgs", {"name": f"org-{provider}"})
    api.ensure_provider(
        {
            "id": provider,
            "org": f"org-{provider}",
            "baseUrl": hostile.url,
            "apiKey": API_KEY,
            "tasks": ["conversational"],
            "billingUrl": f"{hostile.url}/v1/billing/costs",
            "billingAuthorization": BILLING,
        }
    )
    catalog = [{"id": model, "pipelineTag": "text-generation", "tags": ["conversational"]}]
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": catalog})
    body = {"task": "conversational", "hfModel": model, "providerModel": "m"}
    mapping_id = api.call("POST", f"/api/partners/{provider}/models", body)["_id"]
    with stack.admin() as admin:
        report = ok(admin.post(f"/api/partners/{provider}/models/{mapping_id}:check", json={}))
    got = {check["name"]: (check["result"], check["got"]) for check in report["checks"]}
    assert report["passed"] is False
    assert got["chat"] == ("fail", "answer larger than 8,388,608 bytes")
    assert got["chat_stream"] == ("fail", "the stream passed 1,048,576 bytes without data: [DONE]")
    assert got["tools"] == ("fail", f"no complete answer within {CALL_SECONDS} s")
    assert got["response_format"] == ("fail", "answered 200 with a body that is not JSON")
    assert got["error_shape"] == ("pass", "HTTP 400: bad request from Bearer [redacted]")
    assert got["request_id"] == ("pass", "1 answers, 1 different ids")  # the echoed key, redacted
    assert got["cost_api"][0] == "fail"
    assert_no_secret(str(report))
    assert_no_secret(stack.logs())
