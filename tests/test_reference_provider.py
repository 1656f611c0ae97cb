"""The reference provider on its own: the provider side of the contract, in process."""

from __future__ import annotations

import base64
import io
import uuid

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from services.reference_provider.app import Knobs, State, create_app

API_KEY = "provider-key"
BILLING_TOKEN = "billing-token"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "tell me about otters"}]}


@pytest.fixture
async def provider():
    state = State(Knobs(), API_KEY, BILLING_TOKEN)
    client = TestClient(TestServer(create_app(state)))
    await client.start_server()
    yield client
    await client.close()


async def post(client: TestClient, path: str, body: dict, headers: dict | None = None):
    return await client.post(path, data=orjson.dumps(body), headers=AUTH if headers is None else headers)


async def test_chat_answer_is_deterministic_with_usage_and_a_fresh_inference_id(provider) -> None:
    first, second = (
        await post(provider, "/v1/chat/completions", CHAT),
        await post(provider, "/v1/chat/completions", CHAT),
    )
    a, b = await first.json(), await second.json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert "otters" in a["choices"][0]["message"]["content"]
    assert a["usage"]["completion_tokens"] > 0 and a["usage"]["prompt_tokens"] == 4
    ids = {first.headers["Inference-Id"], second.headers["Inference-Id"]}
    assert len(ids) == 2 and all(uuid.UUID(i) for i in ids)


async def test_content_parts_stop_and_max_tokens(provider) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three four"}]}],
        "max_tokens": 5,
        "stop": ["three"],
    }
    answer = await (await post(provider, "/v1/chat/completions", body)).json()
    assert answer["choices"][0]["message"]["content"] == "Reference answer to: one two"


async def test_stream_sends_chunks_usage_and_done(provider) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await post(provider, "/v1/chat/completions", body)
    assert response.headers["Content-Type"].startswith("text/event-stream") and response.headers["Inference-Id"]
    events = [line[6:] for line in (await response.text()).split("\n\n") if line]
    assert events[-1] == "data: [DONE]"[6:]
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "otters" in text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(text.split())


async def test_tools_give_a_tool_call_with_schema_arguments(provider) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        },
    }
    answer = await (await post(provider, "/v1/chat/completions", {**CHAT, "tools": [tool]})).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and orjson.loads(call["arguments"]) == {"city": "reference", "days": 1}
    none = await (await post(provider, "/v1/chat/completions", {**CHAT, "tools": [tool], "tool_choice": "none"})).json()
    assert none["choices"][0]["finish_reason"] == "stop"


async def test_json_schema_response_format(provider) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {}}}}
    body = {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    answer = await (await post(provider, "/v1/chat/completions", body)).json()
    assert orjson.loads(answer["choices"][0]["message"]["content"]) == {"name": "reference", "tags": ["reference"]}


async def test_images_as_url_and_b64_are_real_pngs_and_loras_are_recorded(provider) -> None:
    body = {"model": "img", "prompt": "a red boat", "size": "32x16", "n": 2}
    answer = await (await post(provider, "/v1/images/generations", body)).json()
    assert len(answer["data"]) == 2
    served = await provider.get(answer["data"][0]["url"].split(str(provider.port), 1)[1])
    assert Image.open(io.BytesIO(await served.read())).size == (32, 16)
    loras = [{"path": "https://hub/x/resolve/main/w.safetensors", "scale": 1}]
    b64 = await (
        await post(provider, "/v1/images/generations", {**body, "response_format": "b64_json", "loras": loras})
    ).json()
    image = Image.open(io.BytesIO(base64.b64decode(b64["data"][0]["b64_json"])))
    assert image.format == "PNG" and image.size == (32, 16)
    last = await (await provider.get("/debug/last-request")).json()
    assert last["body"]["loras"] == loras


async def test_inference_needs_the_api_key(provider) -> None:
    response = await post(provider, "/v1/chat/completions", CHAT, headers={"Authorization": "Bearer wrong"})
    assert response.status == 401 and (await response.json())["error"]["type"] == "authentication_error"


async def test_cost_api_prices_served_requests_from_their_usage(provider) -> None:
    served = await post(provider, "/v1/chat/completions", CHAT)
    usage = (await served.json())["usage"]
    request_id = served.headers["Inference-Id"]
    auth = {"Authorization": f"Bearer {BILLING_TOKEN}"}
    body = {"requestIds": [request_id, request_id]}
    answer = await (await provider.post("/v1/billing/costs", data=orjson.dumps(body), headers=auth)).json()
    expected = 1_000 + 100 * usage["prompt_tokens"] + 300 * usage["completion_tokens"]
    assert answer["requests"][0] == {"requestId": request_id, "costNanoUsd": expected}
    again = await (await provider.post("/v1/billing/costs", data=orjson.dumps(body), headers=auth)).json()
    assert again == answer
    refused = await provider.post("/v1/billing/costs", data=orjson.dumps(body), headers=AUTH)
    assert refused.status == 401


async def test_knobs_inject_failures_per_process_and_per_url(provider) -> None:
    failing = await post(provider, "/knobs/fail=503/v1/chat/completions", CHAT)
    assert failing.status == 503 and failing.headers["Inference-Id"]
    await provider.post("/debug/knobs", data=orjson.dumps({"fail_rate": 1, "fail_status": 429}))
    assert (await post(provider, "/v1/chat/completions", CHAT)).status == 429
    await provider.post("/debug/knobs", data=orjson.dumps({"fail_rate": 0}))
    assert (await post(provider, "/v1/chat/completions", CHAT)).status == 200
    unknown = await provider.post("/debug/knobs", data=orjson.dumps({"nope": 1}))
    assert unknown.status == 400
