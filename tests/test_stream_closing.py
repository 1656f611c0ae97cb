"""Streams whose callers leave mid-way, many at once (issue 24, finding 7): the Router closes each
answer's generators in the call's own task, so its log never says `aclose(): asynchronous generator
is already running` (nor any other error), and every stream begun is billed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import web
from helpers.billing import serving_in_thread
from helpers.clients import async_http_client
from helpers.money import MockProvider, ledger_rows
from helpers.waiting import eventually

from services.demo import AdminApi

pytestmark = pytest.mark.slow

CALLERS = 40
EVENTS = 30


class SlowStream(MockProvider):
    """A provider whose chat streams send an event every few milliseconds (at /<tag>/<p>/v1/...)."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Inference-Id": uuid.uuid4().hex})
        await response.prepare(request)
        event = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "w"}}]}
        chunk = b"data: " + json.dumps(event).encode() + b"\n\n"
        try:
            for _ in range(EVENTS):
                await response.write(chunk)
                await asyncio.sleep(0.01)
            await response.write(b"data: [DONE]\n\n")
        except ConnectionError:
            pass
        return response


@pytest.fixture(scope="module")
def world(quiet_stack) -> Iterator[tuple[object, str, str, str]]:
    sb = quiet_stack
    with serving_in_thread(SlowStream()) as provider:
        api = AdminApi(sb.base_url, sb.admin_token)
        tag = uuid.uuid4().hex[:8]
        org, user, model = f"org-{tag}", f"user-{tag}", f"org-{tag}/chat"
        api.ensure_member(org, user)
        entry = {"id": model, "pipeline_tag": "text-generation", "tags": ["conversational"]}
        api.call("POST", "/admin/v1/models:batchUpsert", {"models": [entry]})
        api.ensure_provider({"id": f"slow-{tag}", "org": org, "base_url": f"{provider.url}/t/p",
                             "api_key": "sk-slow-0123456789", "tasks": ["conversational"]})  # fmt: skip
        api.add_mappings(f"slow-{tag}", [{"task": "conversational", "hfModel": model,
                                          "providerModel": "m", "status": "live"}])  # fmt: skip
        yield sb, api.new_token(user), user, model


async def caller(base_url: str, token: str, model: str, leave_after: int) -> str:
    """One stream, left after `leave_after` pieces (0: read to the end); its x-request-id."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        async_http_client(base_url=base_url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as answer,
    ):
        assert answer.status_code == 200
        pieces = 0
        async for _ in answer.aiter_raw():
            pieces += 1
            if pieces == leave_after:
                break  # the connection closes with the client: the caller is gone
        return answer.headers["x-request-id"]


def test_many_callers_leaving_streams_mid_way_log_no_error(world) -> None:
    sb, token, user, model = world
    since = sb.log_marks()  # what the modules sharing the stack logged is theirs to judge

    async def everyone() -> list[str]:
        return await asyncio.gather(*(caller(sb.base_url, token, model, n % 4) for n in range(CALLERS)))

    for _ in range(3):
        request_ids = asyncio.run(everyone())
    eventually(lambda: set(request_ids) <= {row[0] for row in ledger_rows(sb, user)}, "every stream begun billed")
    router_log = sb.log("router", since)
    assert "asynchronous generator" not in router_log and '"level":"ERROR"' not in router_log, router_log[-3000:]
