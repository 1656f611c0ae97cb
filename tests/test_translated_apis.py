"""The APIs translated to chat completions, through the real Envoy port of a demo stack (the
reference provider behind it), each with the client that really calls it: OpenAI's Responses
API (`openai` responses.create, unary and streamed, with a function call round trip),
Anthropic's Messages API (`anthropic` messages.create and messages.stream with a tool use,
errors in Anthropic's shape), the legacy completions; x-api-key as a credential, and
placeholder keys in anonymous mode."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from helpers.clients import http_client
from helpers.node import NODE_DIR, node_with_packages
from helpers.stacks import Stacks

from services.demo import ANONYMOUS_ACCOUNT, CHAT_MODEL, start_demo
from services.launcher import Stack, UpOptions, free_port, start_stack

if TYPE_CHECKING:  # the SDK is imported where a test uses it: at collection it was a second of CPU per worker
    import anthropic

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Demo:
    stack: Stack
    base_url: str
    admin_token: str
    token: str  # the demo user's

    def openai(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=key or self.token, max_retries=0, timeout=30)

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        import anthropic

        return anthropic.Anthropic(base_url=self.base_url, api_key=key or self.token, max_retries=0, timeout=30)

    def http(self) -> httpx.Client:
        return http_client(base_url=self.base_url, timeout=30)


@pytest.fixture(scope="module")
def demo(stacks: Stacks) -> Iterator[Demo]:
    """The demo stack in anonymous mode: calls without a key are billed to the anonymous account."""
    port = free_port()
    options = UpOptions(port, stacks.data_dir("translated"), "", demo=True, anonymous_account=ANONYMOUS_ACCOUNT)
    stack, admin_token, _ = start_stack(options)
    try:
        base_url = f"http://127.0.0.1:{port}"
        lines = start_demo(stack, base_url, admin_token, ANONYMOUS_ACCOUNT)
        token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
        yield Demo(stack, base_url, admin_token, token)
    finally:
        stack.stop()


# --- OpenAI's Responses API ------------------------------------------------------------------


def test_responses_create_answers_text(demo: Demo) -> None:
    response = demo.openai().responses.create(model=CHAT_MODEL, instructions="Be brief.", input="say hello")
    assert response.status == "completed"
    assert response.output_text.startswith("Reference answer to: say hello")
    assert response.model == CHAT_MODEL
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


def test_responses_function_call_round_trip(demo: Demo) -> None:
    client = demo.openai()
    tools = [{"type": "function", **WEATHER_TOOL}]
    first = client.responses.create(model=CHAT_MODEL, input="weather in Paris?", tools=tools)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": "reference"}
    history = [
        {"role": "user", "content": "weather in Paris?"},
        *[call.model_dump(exclude_none=True) for call in calls],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
    ]
    second = client.responses.create(model=CHAT_MODEL, input=history, tools=tools)
    assert [item.type for item in second.output] == ["message"]
    assert "sunny, 21 C" in second.output_text


def test_responses_stream_typed_events(demo: Demo) -> None:
    client = demo.openai()
    events = list(client.responses.create(model=CHAT_MODEL, input="say hello", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text.startswith("Reference answer to: say hello")
    assert events[-1].response.output_text == text
    assert events[-1].response.usage.output_tokens > 0
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):  # fmt: skip
        assert kind in kinds


def test_responses_stream_helper_with_a_function_call(demo: Demo) -> None:
    tools = [{"type": "function", **WEATHER_TOOL}]
    with demo.openai().responses.stream(model=CHAT_MODEL, input="weather?", tools=tools) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "reference"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("previous_response_id", "resp_123"), ("store", True), ("conversation", "conv_1"), ("background", True)],
)
def test_responses_state_between_turns_is_refused_naming_the_field(demo: Demo, field: str, value: object) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        demo.openai().responses.create(model=CHAT_MODEL, input="hi", extra_body={field: value})
    assert raised.value.body["param"] == field
    assert field in raised.value.body["message"]


def test_responses_unknown_field_is_refused(demo: Demo) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        demo.openai().responses.create(model=CHAT_MODEL, input="hi", extra_body={"frobnicate": 1})
    assert raised.value.body["code"] == "unknown_field" and raised.value.body["param"] == "frobnicate"


# --- Anthropic's Messages API ----------------------------------------------------------------

ANTHROPIC_TOOL = {
    "name": WEATHER_TOOL["name"],
    "description": WEATHER_TOOL["description"],
    "input_schema": WEATHER_TOOL["parameters"],
}


def test_messages_create_with_a_system_prompt(demo: Demo) -> None:
    message = demo.anthropic().messages.create(
        model=CHAT_MODEL, max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "say hello"}]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Reference answer to: say hello")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_messages_tool_use_round_trip(demo: Demo) -> None:
    client = demo.anthropic()
    question = {"role": "user", "content": "weather in Paris?"}
    first = client.messages.create(model=CHAT_MODEL, max_tokens=64, messages=[question], tools=[ANTHROPIC_TOOL])
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "reference"}
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}
    turns = [question, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = client.messages.create(model=CHAT_MODEL, max_tokens=64, messages=turns, tools=[ANTHROPIC_TOOL])
    assert second.stop_reason == "end_turn"
    assert "sunny, 21 C" in second.content[0].text


def test_messages_stream_with_a_tool_use(demo: Demo) -> None:
    messages = [{"role": "user", "content": "weather?"}]
    with demo.anthropic().messages.stream(
        model=CHAT_MODEL, max_tokens=64, messages=messages, tools=[ANTHROPIC_TOOL]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "message_stop" in kinds
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "reference"}
    assert final.usage.output_tokens > 0


def test_messages_stream_text(demo: Demo) -> None:
    messages = [{"role": "user", "content": "say hello"}]
    with demo.anthropic().messages.stream(model=CHAT_MODEL, max_tokens=64, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Reference answer to: say hello")
    assert final.content[0].text == text and final.stop_reason == "end_turn"


def anthropic_error(answer: httpx.Response) -> dict:
    body = answer.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return body["error"]


def test_messages_errors_in_anthropic_shape(demo: Demo) -> None:
    body = {"model": CHAT_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with demo.http() as http:
        wrong_key = http.post("/v1/messages", json=body, headers={"x-api-key": "sb-" + secrets.token_urlsafe(32)})
        assert wrong_key.status_code == 401
        assert anthropic_error(wrong_key)["type"] == "authentication_error"
        unknown = http.post("/v1/messages", json={**body, "frobnicate": 1}, headers={"x-api-key": demo.token})
        assert unknown.status_code == 400
        assert anthropic_error(unknown)["type"] == "invalid_request_error"
        assert "frobnicate" in anthropic_error(unknown)["message"]
        missing = http.post("/v1/messages", json={"model": CHAT_MODEL, "messages": body["messages"]},
                            headers={"x-api-key": demo.token})  # fmt: skip
        assert missing.status_code == 400 and "max_tokens" in anthropic_error(missing)["message"]
        no_model = http.post("/v1/messages", json={**body, "model": "nobody/none"}, headers={"x-api-key": demo.token})
        assert no_model.status_code == 404
        assert anthropic_error(no_model)["type"] == "not_found_error"
        huge = http.post("/v1/messages", content=b"x" * (9 * 1024 * 1024), headers={"x-api-key": demo.token})
        assert huge.status_code == 413
        assert anthropic_error(huge)["type"] == "request_too_large"
        query = http.post("/v1/messages?beta=true&x=1", json=body, headers={"x-api-key": demo.token})
        assert query.status_code == 400 and anthropic_error(query)["type"] == "invalid_request_error"
        # Claude Code's calls: ?beta=true, the anthropic-version and anthropic-beta headers.
        headers = {"x-api-key": demo.token, "anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"}
        assert http.post("/v1/messages?beta=true", json=body, headers=headers).status_code == 200


def test_messages_errors_raise_the_anthropic_sdk_classes(demo: Demo) -> None:
    import anthropic

    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):
        demo.anthropic("sb-" + secrets.token_urlsafe(32)).messages.create(
            model=CHAT_MODEL, max_tokens=8, messages=messages
        )
    with pytest.raises(anthropic.NotFoundError):
        demo.anthropic().messages.create(model="nobody/none", max_tokens=8, messages=messages)


# --- legacy completions ----------------------------------------------------------------------


def test_legacy_completions_unary_and_streamed(demo: Demo) -> None:
    client = demo.openai()
    completion = client.completions.create(model=CHAT_MODEL, prompt="say hello", max_tokens=20)
    assert completion.object == "text_completion"
    assert completion.choices[0].text.startswith("Reference answer to: say hello")
    assert completion.usage.completion_tokens > 0
    chunks = list(client.completions.create(model=CHAT_MODEL, prompt="say hello", max_tokens=20, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == completion.choices[0].text


def test_legacy_completions_refuse_echo(demo: Demo) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        demo.openai().completions.create(model=CHAT_MODEL, prompt="hi", echo=True)
    assert raised.value.body["param"] == "echo"


# --- credentials -----------------------------------------------------------------------------


def test_x_api_key_is_a_credential_and_placeholders_are_anonymous(demo: Demo) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with demo.http() as http:
        assert http.post("/v1/chat/completions", json=body, headers={"x-api-key": demo.token}).status_code == 200
        wrong = "sb-" + secrets.token_urlsafe(32)
        for headers in ({"x-api-key": wrong}, {"Authorization": f"Bearer {wrong}"}):
            answer = http.post("/v1/chat/completions", json=body, headers=headers)
            assert answer.status_code == 401, headers
        for placeholder in ("EMPTY", "sk-no-key-required"):
            for headers in ({"x-api-key": placeholder}, {"Authorization": f"Bearer {placeholder}"}):
                answer = http.post("/v1/chat/completions", json=body, headers=headers)
                assert answer.status_code == 200, (headers, answer.text)
        models = http.get("/v1/models", headers={"Authorization": "Bearer EMPTY"})
        assert models.status_code == 200


def test_openai_sdk_with_a_placeholder_key_in_anonymous_mode(demo: Demo) -> None:
    response = demo.openai("sk-no-key-required").responses.create(model=CHAT_MODEL, input="say hello")
    assert response.output_text.startswith("Reference answer")


# --- the npm packages ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/node's pinned packages installed (as tests/test_clients.py does)."""
    return node_with_packages()


def test_npm_openai_and_anthropic_sdks(demo: Demo, node: str) -> None:
    run = subprocess.run(
        [node, str(NODE_DIR / "translated.mjs"), demo.base_url, demo.token, CHAT_MODEL],
        capture_output=True, text=True, timeout=120, cwd=NODE_DIR,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    answer = "Reference answer to: say hello"
    assert result["responses"]["unary"] == answer
    assert result["responses"]["stream"] == {"text": answer, "first": "response.created", "last": "response.completed"}
    assert result["messages"]["unary"] == {"text": answer, "stop_reason": "end_turn"}
    streamed = result["messages"]["stream"]
    assert streamed["text"] == answer and streamed["stop_reason"] == "end_turn" and streamed["output_tokens"] > 0


def test_x_api_key_on_the_registry_and_billing_routes(demo: Demo) -> None:
    with demo.http() as http:
        for path in ("/v1/me", "/v1/billing/usage?account=demo"):
            assert http.get(path, headers={"x-api-key": demo.token}).status_code == 200, path
            wrong = http.get(path, headers={"x-api-key": "sb-" + secrets.token_urlsafe(32)})
            assert wrong.status_code == 401, path


def test_messages_count_tokens(demo: Demo) -> None:
    messages = [{"role": "user", "content": "weather in Paris?"}]
    short = demo.anthropic().messages.count_tokens(model=CHAT_MODEL, messages=messages)
    longer = demo.anthropic().messages.count_tokens(model=CHAT_MODEL, messages=messages, tools=[ANTHROPIC_TOOL])
    assert 0 < short.input_tokens < longer.input_tokens
    with demo.http() as http:
        body = {"model": CHAT_MODEL, "messages": messages}
        wrong = http.post(
            "/v1/messages/count_tokens", json=body, headers={"x-api-key": "sb-" + secrets.token_urlsafe(32)}
        )
        assert wrong.status_code == 401 and anthropic_error(wrong)["type"] == "authentication_error"
        unknown = http.post("/v1/messages/count_tokens", json={**body, "x": 1}, headers={"x-api-key": demo.token})
        assert unknown.status_code == 400 and "x" in anthropic_error(unknown)["message"]
