"""The translations to and from chat completions (services/router/*_api.py), without a stack:
requests become the chat bodies they should, and any chat stream (text pieces, tool calls
with their arguments in fragments, usage or none, a finish reason, cut off or not) becomes
events that the `openai` and `anthropic` SDKs validate and fold into the same answer."""

from __future__ import annotations

import copy
import json
from functools import cache

import orjson
import pytest
from google.api import httpbody_pb2
from hypothesis import given
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from openai.types.responses import response as response_types
from pydantic import TypeAdapter

from services.common.errors import ApiError
from services.common.provider_api import Usage, encode
from services.common.providers import Route
from services.common.secrets import Redactor, StreamCarry
from services.router.completions_api import Completions
from services.router.messages_api import Messages, input_tokens
from services.router.responses_api import Responses
from services.router.translation import DONE, chunks
from services.router.upstream import closing, data_event, rewrite

MODEL = "org/model"
OPENAI_EVENT = TypeAdapter(ResponseStreamEvent)


@cache
def anthropic_event() -> TypeAdapter:
    """Anthropic's stream event type. The anthropic SDK is imported by the tests that use it, not at
    collection: it is a second of CPU on every parallel worker, and most run none of them."""
    from anthropic.types import RawMessageStreamEvent

    return TypeAdapter(RawMessageStreamEvent)


# --- requests --------------------------------------------------------------------------------


def test_responses_input_items_become_chat_messages() -> None:
    body = {
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                         {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "reasoning", "id": "r1", "summary": []},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "max_output_tokens": 50,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        "store": False,
        "provider": "p1 p2",
    }  # fmt: skip
    payload = Responses().chat_payload(body)
    assert payload["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    assert payload["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert payload["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert payload["max_tokens"] == 50 and payload["provider"] == "p1 p2"
    assert payload["response_format"]["type"] == "json_schema"
    assert "stream" not in payload


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": {"id": "c"}}, "conversation"),
        ({"background": True}, "background"),
        ({"surprise": 1}, "surprise"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": None}, "input"),
    ],
)
def test_responses_refusals_name_the_field(change: dict, param: str) -> None:
    with pytest.raises(ApiError) as raised:
        Responses().chat_payload({"model": MODEL, "input": "hi", **change})
    assert raised.value.http_status == 400 and raised.value.param == param


def test_messages_blocks_become_chat_messages() -> None:
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                              {"type": "text", "text": "Let me look."},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                 "content": [{"type": "text", "text": "no"},
                             {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
                {"type": "text", "text": "and?"}]},
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": True,
    }  # fmt: skip
    payload = Messages().chat_payload(body)
    assert payload["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "Error: no"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                                     {"type": "text", "text": "and?"}]},
    ]  # fmt: skip
    assert payload["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert payload["tool_choice"] == "required" and payload["parallel_tool_calls"] is False
    assert payload["stop"] == ["END"] and payload["user"] == "u1" and payload["max_tokens"] == 100
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"mcp_servers": [{"url": "x"}]}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0].type"),
        ({"temperature": 1.5}, "temperature"),
        ({"extra": True}, "extra"),
    ],
)
def test_messages_refusals_name_the_field(change: dict, param: str) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(ApiError) as raised:
        Messages().chat_payload(body)
    assert raised.value.http_status == 400 and raised.value.param == param


def test_completions_prompt_becomes_one_user_message() -> None:
    payload = Completions().chat_payload({"model": MODEL, "prompt": ["hi"], "n": 2, "best_of": 1})
    assert payload == {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "n": 2}
    for refused in ({"echo": True}, {"suffix": "x"}, {"best_of": 3}, {"prompt": [1, 2]}):
        with pytest.raises(ApiError):
            Completions().chat_payload({"model": MODEL, "prompt": "hi", **refused})


# --- answers ---------------------------------------------------------------------------------

CHAT_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me see.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}  # fmt: skip


def test_unary_answers_validate_as_each_sdks_types() -> None:
    responses = Responses()
    responses.chat_payload({"model": MODEL, "input": "hi"})
    parsed = response_types.Response.model_validate_json(responses.unary(json.loads(json.dumps(CHAT_ANSWER))))
    assert parsed.output_text == "Let me see." and parsed.output[1].type == "function_call"
    assert parsed.usage.input_tokens == 5 and parsed.usage.output_tokens == 7

    from anthropic.types import Message

    messages = Messages()
    messages.chat_payload({"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]})
    message = Message.model_validate_json(messages.unary(json.loads(json.dumps(CHAT_ANSWER))))
    assert message.stop_reason == "tool_use" and message.content[1].input == {"a": 1}

    completions = Completions()
    completions.chat_payload({"model": MODEL, "prompt": "hi"})
    shaped = orjson.loads(completions.unary(json.loads(json.dumps(CHAT_ANSWER))))
    assert shaped["object"] == "text_completion" and shaped["choices"][0]["text"] == "Let me see."


# --- streams ---------------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
ARGUMENTS = st.dictionaries(st.sampled_from(["city", "days", "ünits"]), st.one_of(st.integers(), TEXT), max_size=3)


@st.composite
def tool_call(draw: st.DrawFn) -> tuple[str, list[str], dict]:
    """A tool call: its name, its arguments' JSON cut in fragments, and the arguments."""
    arguments = draw(ARGUMENTS)
    text = json.dumps(arguments)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4)))
    fragments = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if text[a:b]]
    return draw(st.sampled_from(["f", "get_weather"])), fragments, arguments


CALL = tool_call()
STREAM = st.fixed_dictionaries(
    {
        "texts": st.lists(TEXT, max_size=5),
        "refusals": st.lists(TEXT, max_size=3),  # after the text: a model's refusal (delta.refusal)
        "calls": st.lists(CALL, max_size=3),
        "usage": st.booleans(),
        "finish": st.sampled_from(["stop", "length", "tool_calls"]),
        "broken": st.booleans(),
    }
)


def chat_stream(spec: dict) -> list[bytes]:
    """The chat route's SSE pieces for a stream spec: text, its refusal, then the tool calls in turn."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}

    def piece(delta: dict, finish: str | None = None) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    pieces = [piece({"role": "assistant", "content": ""})]
    pieces += [piece({"content": text}) for text in spec["texts"]]
    pieces += [piece({"refusal": refusal}) for refusal in spec["refusals"]]
    for index, (name, fragments, _) in enumerate(spec["calls"]):
        first = {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": ""}}
        pieces.append(piece({"tool_calls": [first]}))
        pieces += [piece({"tool_calls": [{"index": index, "function": {"arguments": f}}]}) for f in fragments]
    if spec["broken"]:
        error = {"error": {"message": "provider p broke off the stream", "type": "upstream_error",
                           "param": None, "code": "stream_interrupted"}}  # fmt: skip
        return [*pieces, b"data: " + orjson.dumps(error) + b"\n\n", b"data: [DONE]\n\n"]
    pieces.append(piece({}, spec["finish"]))
    if spec["usage"]:
        usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        pieces.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    return [*pieces, b"data: [DONE]\n\n"]


def sse_events(pieces: list[bytes], translation) -> list[tuple[str, dict]]:
    out = b"".join(event for piece in pieces for chunk in chunks(piece) for event in translation.events(chunk))
    events = []
    for block in out.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            events.append((name.removeprefix(b"event: ").decode(), json.loads(data.removeprefix(b"data: "))))
    return events


@given(spec=STREAM)
def test_any_chat_stream_becomes_responses_events_the_sdk_folds(spec: dict) -> None:
    translation = Responses()
    translation.chat_payload({"model": MODEL, "input": "hi", "stream": True})
    events = sse_events(chat_stream(spec), translation)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for _, data in events:
        state.handle_event(OPENAI_EVENT.validate_python(data))
    last = events[-1][1]
    if spec["broken"]:
        assert [events[-2][0], events[-1][0]] == ["error", "response.failed"]
        return
    final = response_types.Response.model_validate(last["response"])
    assert last["type"] == ("response.incomplete" if spec["finish"] == "length" else "response.completed")
    assert final.output_text == "".join(spec["texts"])
    parts = [part for item in final.output if item.type == "message" for part in item.content]
    assert "".join(part.refusal for part in parts if part.type == "refusal") == "".join(spec["refusals"])
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [(name, args) for name, _, args in spec["calls"]]
    assert final.usage.output_tokens == (4 if spec["usage"] else 0)


@given(spec=STREAM)
def test_any_chat_stream_becomes_anthropic_events_the_sdk_folds(spec: dict) -> None:
    translation = Messages()
    translation.chat_payload({"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}],
                              "stream": True})  # fmt: skip
    events = sse_events(chat_stream(spec), translation)
    assert all(name == data["type"] for name, data in events)
    assert events[0][0] == "message_start"
    if spec["broken"]:
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
        return
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot, buffers = None, {}
    for _, data in events:
        snapshot = accumulate_event(event=anthropic_event().validate_python(data), current_snapshot=snapshot,
                                    json_bufs=buffers)  # fmt: skip
    assert [name for name, _ in events[-2:]] == ["message_delta", "message_stop"]
    texts = [block.text for block in snapshot.content if block.type == "text"]
    assert "".join(texts) == "".join(spec["texts"] + spec["refusals"])  # a refusal is a text block
    uses = [(block.name, block.input) for block in snapshot.content if block.type == "tool_use"]
    assert uses == [(name, args) for name, _, args in spec["calls"]]
    stop_reasons = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
    assert snapshot.stop_reason == ("refusal" if spec["refusals"] else stop_reasons[spec["finish"]])
    assert snapshot.usage.output_tokens == (4 if spec["usage"] else 0)


@given(spec=STREAM)
def test_any_chat_stream_becomes_text_completion_chunks(spec: dict) -> None:
    translation = Completions()
    translation.chat_payload({"model": MODEL, "prompt": "hi", "stream": True})
    pieces = [chunk for piece in chat_stream(spec) for chunk in chunks(piece)]
    out = b"".join(event for chunk in pieces for event in translation.events(chunk))
    assert out.endswith(b"data: [DONE]\n\n")
    shown = [json.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    text = "".join(c["choices"][0]["text"] for c in shown if c.get("choices"))
    assert text == "".join(spec["texts"] + spec["refusals"])  # a refusal is the text
    assert not any("usage" in c for c in shown)  # not asked for
    assert any("error" in c for c in shown) == spec["broken"]
    assert DONE is None


# --- what a provider sends that the chat checks let pass -----------------------------------------

SECRET = "sk-prov-7f3a9c2e1b4d8f6a0c5e"


def relayed(events: list[dict]) -> bytes:
    """The chat stream as the Router relays it from a provider whose key is SECRET (redacted, the
    end of a joined field that could begin the key held back for the next event). The carry changes
    the events it is given: it gets copies (a test's events serve every API)."""
    redactor, usage = Redactor([SECRET]), Usage()
    carry = StreamCarry(redactor)
    pieces = [data_event(event, MODEL, usage, False, redactor, carry) for event in copy.deepcopy(events)]
    return b"".join([*pieces, closing(MODEL, usage, redactor, carry)])


async def translated(translation, wire: bytes) -> str:
    """The translation's answer to the relayed chat stream, as the caller reads it."""
    translation.stream, translation.request = True, {}

    async def bodies():
        yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=wire)

    return b"".join([body.data async for body in translation.answer(bodies())]).decode()


def strings(value: object) -> list[str]:
    """Every string in a JSON value, in order: what a caller joining any of its fields could join."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def chunk(index: int, delta: dict, **choice: object) -> dict:
    return {"id": "c", "model": "m", "choices": [{"index": index, "delta": delta, **choice}]}


def function(name: str, arguments: str = "") -> dict:
    return {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": name, "arguments": arguments}}]}


@pytest.mark.parametrize("api", [Responses, Messages, Completions])
@pytest.mark.parametrize(
    "events",
    [
        # a tool call's name split over two events
        [
            chunk(0, function(SECRET[:12])),
            chunk(0, function(SECRET[12:], "{}")),
            chunk(0, {}, finish_reason="tool_calls"),
        ],
        # another choice's text, finished, then choice 0's
        [chunk(1, {"content": "x " + SECRET[:12]}, finish_reason="stop"), chunk(0, {"content": SECRET[12:] + " y"})],
        # choice 0's text after the event that finished it
        [chunk(0, {"content": "x " + SECRET[:12]}, finish_reason="stop"), chunk(0, {"content": SECRET[12:] + " y"})],
    ],
)
async def test_a_provider_key_split_over_stream_events_is_never_joined(api, events: list[dict]) -> None:
    wire = relayed(events)
    assert SECRET.encode() not in wire
    text = await translated(api(), wire)
    answers = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    assert SECRET not in text and SECRET not in "".join(strings(answers))


def joined_deltas(answers: list[dict]) -> list[str]:
    """The texts a caller joins up from the deltas: each Responses item's, each Messages block's, and
    each completions choice's by its index (0.0 is 0)."""
    joined: dict[object, str] = {}
    for answer in answers:
        delta = answer.get("delta")
        if isinstance(delta, str):
            pieces = [(answer["item_id"], delta)]
        elif answer.get("type") == "content_block_delta":
            pieces = [(answer["index"], delta.get("text") or delta.get("partial_json"))]
        else:
            pieces = [(choice["index"], choice["text"]) for choice in answer.get("choices") or []]
        for at, piece in pieces:
            joined[at] = joined.get(at, "") + piece
    return list(joined.values())


KEY_AS_CHOICE_0_THEN_0_0 = [
    chunk(0, {"content": "x " + SECRET[:12]}, finish_reason="stop"),
    {"id": "c", "choices": [{"index": 1}, {"index": 0.0, "delta": {"content": SECRET[12:] + " y"}}]},
]
KEY_AS_TOOL_CALL_1_THEN_1_0 = [
    chunk(0, {"tool_calls": [{"index": 1, "id": "call_1", "function": {"name": "f", "arguments": SECRET[:12]}}]}),
    chunk(0, {"tool_calls": [{"index": 1.0, "function": {"arguments": SECRET[12:]}}]}, finish_reason="tool_calls"),
]


@pytest.mark.parametrize(
    ("api", "events"),
    [
        (Responses, KEY_AS_CHOICE_0_THEN_0_0),
        (Messages, KEY_AS_CHOICE_0_THEN_0_0),
        (Completions, KEY_AS_CHOICE_0_THEN_0_0),
        (Responses, KEY_AS_TOOL_CALL_1_THEN_1_0),
        (Messages, KEY_AS_TOOL_CALL_1_THEN_1_0),
    ],
)
async def test_an_index_that_is_no_integer_never_joins_a_key_split_over_events(api, events: list[dict]) -> None:
    """Choice 0.0 at place 1 is choice 1, tool call 1.0 at place 0 is tool call 0: to the stream's carry
    and to every translation alike, so no caller joins their text to choice 0's or tool call 1's."""
    text = await translated(api(), relayed(events))
    answers = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    assert SECRET not in text and not any(SECRET in joined for joined in joined_deltas(answers))


# Stream events the chat checks let pass that a translation cannot read (found by a review).
BROKEN = {
    "tool calls that are a number": {"tool_calls": 5},
    "a finish reason that is a list": "finish",
}


@pytest.mark.parametrize("api", [Responses, Messages])
@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_a_stream_event_no_translation_can_read_ends_the_stream_with_an_error_event(api, broken: str) -> None:
    """The provider's failure, in the API's own error event, then the stream's end; nothing after it."""
    delta = BROKEN[broken]
    bad = chunk(0, {"content": "a"}, finish_reason=["stop"]) if delta == "finish" else chunk(0, delta)
    events = [chunk(0, {"content": "a"}), bad, chunk(0, {"content": "after"})]
    wire = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    names = [line[7:] for line in (await translated(api(), wire)).split("\n") if line.startswith("event: ")]
    assert names[names.index("error") :] == (["error", "response.failed"] if api is Responses else ["error"])


@pytest.mark.parametrize("api", [Responses, Messages])
@pytest.mark.parametrize("index", [[1], {}, 1.0, True])
async def test_a_tool_calls_index_that_is_no_integer_is_its_place_as_the_carry_reads_it(api, index: object) -> None:
    """Tool call 1, then one with index `index` at place 0: two tool calls, each with its own arguments."""
    calls = [{"index": 1, "id": "c1", "function": {"name": "f", "arguments": "{}"}},
             {"index": index, "id": "c2", "function": {"name": "g", "arguments": "[]"}}]  # fmt: skip
    events = [
        chunk(0, {"tool_calls": calls[:1]}),
        chunk(0, {"tool_calls": calls[1:]}),
        chunk(0, {}, finish_reason="tool_calls"),
    ]
    wire = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    names = [line[7:] for line in (await translated(api(), wire)).split("\n") if line.startswith("event: ")]
    started = "response.output_item.added" if api is Responses else "content_block_start"
    assert "error" not in names and names.count(started) == 2


UNREADABLE_TOOL_CALLS = {"choices": [{"index": 0, "message": {"tool_calls": ["x"]}}]}


@pytest.mark.parametrize(
    ("api", "answer"),
    [(Responses, UNREADABLE_TOOL_CALLS), (Messages, UNREADABLE_TOOL_CALLS), (Completions, {"choices": "abc"})],
)
def test_a_unary_answer_no_translation_can_read_is_the_providers_failure(api, answer: dict) -> None:
    with pytest.raises(ApiError) as raised:
        api().unary_body(orjson.dumps(answer))
    assert (raised.value.grpc_code.name, raised.value.reason) == ("UNAVAILABLE", "UPSTREAM_ERROR")


DEEP = orjson.loads(b"[" * 300 + b"]" * 300)  # parsed (orjson reads 1,024 levels), never written (255)


def test_a_body_nested_deeper_than_a_json_writer_goes_is_a_400_not_a_500() -> None:
    block = {"type": "tool_use", "id": "t", "name": "f", "input": {"a": DEEP}}
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "assistant", "content": [block]}]}
    for call in (lambda: input_tokens(body), lambda: Messages().chat_payload(body)):
        with pytest.raises(ApiError) as refused:
            call()
        assert (refused.value.grpc_code.name, refused.value.param) == ("INVALID_ARGUMENT", None)
    with pytest.raises(ApiError) as refused:
        encode(Route(provider=None, provider_model="m"), {"messages": DEEP})  # type: ignore[arg-type]
    assert "nested too deeply" in refused.value.message


@pytest.mark.parametrize("api", [Responses, Messages])
async def test_a_bare_error_message_in_a_stream_is_the_apis_error_event(api) -> None:
    """TGI reports a stream's failure as {"error": "...", "error_type": ...}: not the end of a complete answer."""
    events = [chunk(0, {"content": "a"}), {"error": "out of memory", "error_type": "generation"}]
    wire = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    text = await translated(api(), wire)
    names = [line[7:] for line in text.split("\n") if line.startswith("event: ")]
    assert "out of memory" in text
    assert names[names.index("error") :] == (["error", "response.failed"] if api is Responses else ["error"])


@pytest.mark.parametrize("api", [Responses, Messages, Completions])
@pytest.mark.parametrize("content", [7, {"a": "b"}, ["b"]])
def test_a_unary_answer_without_readable_text_is_an_empty_answer(api, content: object) -> None:
    answer = {"choices": [{"index": 0, "message": {"content": content}}]}
    assert "'" not in api().unary_body(orjson.dumps(answer)).decode()  # no Python repr of a value


@pytest.mark.parametrize("api", [Responses, Messages, Completions])
def test_a_unary_answers_text_parts_are_its_text(api) -> None:
    """Some providers answer with a list of content parts; their text is the answer's text."""
    parts = [{"type": "text", "text": "Hel"}, {"type": "thinking", "text": "hm"}, {"type": "text", "text": "lo"}]
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": parts}, "finish_reason": "stop"}]}
    texts = strings(orjson.loads(api().unary_body(orjson.dumps(answer))))
    assert "Hello" in texts and not any("hm" in text for text in texts)


@pytest.mark.parametrize("api", [None, Responses, Messages, Completions])
def test_a_key_split_over_content_parts_is_never_joined(api) -> None:
    """Parts each harmless alone: the chat answer a caller joins up, and each API's text (which joins
    them), never hold the key."""
    parts = [{"type": "text", "text": "a " + SECRET[:10]}, {"type": "text", "text": SECRET[10:] + " b"}]
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": parts}, "finish_reason": "stop"}]}
    data = rewrite(answer, "m", Usage(), Redactor([SECRET]))
    if api is None:  # the chat answer, its parts' text joined as a caller joins them
        content = orjson.loads(data)["choices"][0]["message"]["content"]
        shown = content if isinstance(content, str) else "".join(part["text"] for part in content)
    else:
        shown = "".join(strings(orjson.loads(api().unary_body(data))))
    assert SECRET not in shown


# Text, then two tool calls whose names end in what could begin the key ("s": "sk-prov-..."), the first's
# arguments in an event of their own: the relay holds those ends back until the choice moves past them.
TOOL_STREAM = [
    chunk(0, {"role": "assistant", "content": "Checking the files"}),
    chunk(0, {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "list_items", "arguments": ""}}]}),
    chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "pens"}'}}]}),
    chunk(0, {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "get_times", "arguments": "{}"}}]}),
    chunk(0, {}, finish_reason="tool_calls"),
]
TOOL_ANSWER = [("text", "Checking the files"), ("list_items", '{"q": "pens"}'), ("get_times", "{}")]


def data_lines(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]


async def test_a_messages_stream_has_whole_tool_names_after_its_text_and_no_delta_after_a_stop() -> None:
    blocks, stopped = [], set()
    for event in data_lines(await translated(Messages(), relayed(TOOL_STREAM))):
        if event["type"] == "content_block_start":
            blocks.append(dict(event["content_block"], partial=""))
        elif event["type"] == "content_block_delta":
            assert event["index"] not in stopped
            delta = event["delta"]
            blocks[event["index"]]["text" if "text" in delta else "partial"] += delta.get(
                "text", delta.get("partial_json")
            )
        elif event["type"] == "content_block_stop":
            stopped.add(event["index"])
    shown = [("text", b["text"]) if b["type"] == "text" else (b["name"], b["partial"]) for b in blocks]
    assert shown == TOOL_ANSWER


async def test_a_responses_stream_has_whole_tool_names_after_its_text() -> None:
    events = data_lines(await translated(Responses(), relayed(TOOL_STREAM)))
    output = next(e for e in events if e["type"] == "response.completed")["response"]["output"]
    shown = [
        ("text", o["content"][0]["text"]) if o["type"] == "message" else (o["name"], o["arguments"]) for o in output
    ]
    assert shown == TOOL_ANSWER
    added = [e["item"]["name"] for e in events if e["type"] == "response.output_item.added" and "name" in e["item"]]
    assert added == ["list_items", "get_times"]


async def test_a_completions_stream_passes_every_choice_and_reads_a_null_error_as_none() -> None:
    events = [{**chunk(0, {"content": "zero"}), "error": None}, chunk(1, {"content": "one"}),
              chunk(0, {}, finish_reason="stop"), chunk(1, {}, finish_reason="stop")]  # fmt: skip
    translation = Completions()
    translation.show_usage = False
    texts = {}
    for event in data_lines(await translated(translation, relayed(events))):
        for choice in event["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "zero", 1: "one"}


@pytest.mark.parametrize("api", [Responses, Messages])
def test_a_refusal_is_part_of_the_answer(api) -> None:
    answer = {
        "choices": [{"index": 0, "message": {"content": None, "refusal": "I can't help"}, "finish_reason": "stop"}]
    }
    shown = orjson.loads(api().unary_body(orjson.dumps(answer)))
    assert "I can't help" in strings(shown)
    assert api is Responses or shown["stop_reason"] == "refusal"


def test_responses_writes_object_arguments_as_json_text() -> None:
    call = {"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}
    answer = {"choices": [{"index": 0, "message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    (item,) = orjson.loads(Responses().unary_body(orjson.dumps(answer)))["output"]
    assert item["arguments"] == '{"a":1}'


@pytest.mark.parametrize(
    ("change", "param"),
    [({"reasoning": {"effort": 5}}, "reasoning.effort"),
     ({"instructions": "be brief", "input": [{"role": "user", "content": "x"}] * 10_000}, "input")],
)  # fmt: skip
def test_responses_refusals_name_this_apis_field_not_the_chat_one(change: dict, param: str) -> None:
    with pytest.raises(ApiError) as raised:
        Responses().chat_payload({"model": MODEL, "input": "hi", **change})
    assert raised.value.param == param


def test_completions_logprobs_0_is_refused_not_ignored() -> None:
    """0 asks for the top 0 logprobs, which is still logprobs (0 == False must not read as none)."""
    with pytest.raises(ApiError) as raised:
        Completions().chat_payload({"model": MODEL, "prompt": "hi", "logprobs": 0})
    assert raised.value.param == "logprobs"


async def test_a_responses_stream_that_cannot_be_closed_numbers_its_events_without_a_gap() -> None:
    events = [chunk(0, {"content": "a"}), chunk(0, {}, finish_reason=["stop"])]  # a list: no status to close with
    numbers = [e["sequence_number"] for e in data_lines(await translated(Responses(), relayed(events)))]
    assert numbers == list(range(len(numbers)))


async def test_a_messages_stream_of_a_refusal_is_its_text_with_stop_reason_refusal() -> None:
    events = [chunk(0, {"role": "assistant", "refusal": "I can't"}), chunk(0, {"refusal": " help"}),
              chunk(0, {}, finish_reason="stop")]  # fmt: skip
    lines = data_lines(await translated(Messages(), relayed(events)))
    text = "".join(e["delta"].get("text", "") for e in lines if e["type"] == "content_block_delta")
    stop = next(e["delta"]["stop_reason"] for e in lines if e["type"] == "message_delta")
    assert (text, stop) == ("I can't help", "refusal")


def test_a_completions_answer_that_is_a_refusal_gives_the_refusal_as_its_text() -> None:
    completions = Completions()
    completions.chat_payload({"model": MODEL, "prompt": "hi"})
    answer = {"id": "chatcmpl-1", "created": 1, "model": MODEL, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
         "finish_reason": "stop"}]}  # fmt: skip
    assert orjson.loads(completions.unary(answer))["choices"][0]["text"] == "I can't help with that."
