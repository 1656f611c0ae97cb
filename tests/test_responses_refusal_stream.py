"""A streamed chat refusal (`choices[0].delta.refusal`) in the Responses API: a message item of its
own with a `refusal` part, as in a unary answer, announced and finished with OpenAI's events
(`response.content_part.added`, `response.refusal.delta`..., `response.refusal.done`,
`response.content_part.done`), every one of which the `openai` SDK's types validate and its stream
state folds. The chat stream is relayed as the Router relays a provider's (redacted, with the carry)."""

from __future__ import annotations

import copy
import json

import orjson
import pytest
from google.api import httpbody_pb2
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import (
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseRefusalDeltaEvent,
    ResponseRefusalDoneEvent,
    ResponseStreamEvent,
)
from openai.types.responses import response as response_types
from pydantic import TypeAdapter

from services.common.provider_api import Usage
from services.common.secrets import Redactor, StreamCarry
from services.router.responses_api import Responses
from services.router.upstream import closing, data_event

MODEL = "org/model"
SECRET = "sk-prov-7f3a9c2e1b4d8f6a0c5e"
OPENAI_EVENT = TypeAdapter(ResponseStreamEvent)


def chunk(delta: dict, **choice: object) -> dict:
    return {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, **choice}]}


def relayed(events: list[dict]) -> bytes:
    """The chat stream as the Router relays it from a provider whose key is SECRET."""
    redactor, usage = Redactor([SECRET]), Usage()
    carry = StreamCarry(redactor)
    pieces = [data_event(event, MODEL, usage, False, redactor, carry) for event in copy.deepcopy(events)]
    return b"".join([*pieces, closing(MODEL, usage, redactor, carry)])


async def streamed(events: list[dict]) -> list[dict]:
    """The Responses events a caller reads for the chat stream, each checked against the SDK: its
    type validates, its SSE name is its type, the numbers run from 0 without a gap, and the SDK's
    stream state folds them all."""
    translation = Responses()
    translation.chat_payload({"model": MODEL, "input": "hi", "stream": True})

    async def bodies():
        yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=relayed(events))

    text = b"".join([body.data async for body in translation.answer(bodies())]).decode()
    names = [line[7:] for line in text.split("\n") if line.startswith("event: ")]
    shown = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ")]
    assert names == [event["type"] for event in shown]
    assert [event["sequence_number"] for event in shown] == list(range(len(shown)))
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for event in shown:
        state.handle_event(OPENAI_EVENT.validate_python(event))
    return shown


def kinds(events: list[dict]) -> list[str]:
    """The events' types, a run of deltas as one (the relay's carry may hold a delta's end back for
    the next one, so how many there are is its business)."""
    names = [event["type"] for event in events]
    return [name for i, name in enumerate(names) if not (name.endswith(".delta") and names[i - 1] == name)]


REFUSAL = [
    chunk({"role": "assistant", "refusal": "I can't"}),
    chunk({"refusal": " help with that"}),
    chunk({}, finish_reason="stop"),
]


async def test_a_streamed_refusal_is_a_message_item_with_a_refusal_part() -> None:
    events = await streamed(REFUSAL)
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    classes = {
        "response.output_item.added": ResponseOutputItemAddedEvent,
        "response.content_part.added": ResponseContentPartAddedEvent,
        "response.refusal.delta": ResponseRefusalDeltaEvent,
        "response.refusal.done": ResponseRefusalDoneEvent,
        "response.content_part.done": ResponseContentPartDoneEvent,
        "response.output_item.done": ResponseOutputItemDoneEvent,
    }
    for event in events:
        if event["type"] in classes:  # each as the SDK's own class, with no field it does not know
            parsed = classes[event["type"]].model_validate(event)
            assert parsed.model_dump(exclude_unset=True) == event, event["type"]
    added, part_added, *deltas, done, part_done, item_done, completed = events[2:]
    item_id = added["item"]["id"]
    assert added["item"] == {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant",
                             "content": []}  # fmt: skip
    assert item_id.startswith("msg_")
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    assert part_added == {"type": "response.content_part.added", "sequence_number": 3, **at,
                          "part": {"type": "refusal", "refusal": ""}}  # fmt: skip
    assert [{k: v for k, v in d.items() if k not in ("delta", "sequence_number")} for d in deltas] == [
        {"type": "response.refusal.delta", **at}
    ] * len(deltas)
    assert "".join(d["delta"] for d in deltas) == "I can't help with that"
    assert done == {"type": "response.refusal.done", "sequence_number": done["sequence_number"], **at,
                    "refusal": "I can't help with that"}  # fmt: skip
    whole = {"type": "refusal", "refusal": "I can't help with that"}
    assert part_done["part"] == whole and {k: part_done[k] for k in at} == at
    assert item_done["item"] == {**added["item"], "status": "completed", "content": [whole]}
    final = response_types.Response.model_validate(completed["response"])
    assert final.status == "completed" and final.output_text == ""
    assert completed["response"]["output"] == [item_done["item"]]


def without_ids(output: list[dict]) -> list[dict]:
    return [{key: value for key, value in item.items() if key != "id"} for item in output]


async def test_a_streamed_refusal_after_text_is_shaped_as_the_unary_answer() -> None:
    """Text, then a refusal: two message items, each with its one part, as a unary answer with both
    content and refusal has; the text's events are as they were."""
    events = await streamed([chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo. "}),
                             chunk({"refusal": "No."}), chunk({}, finish_reason="stop")])  # fmt: skip
    assert kinds(events)[2:-1] == [
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.refusal.delta",
        "response.refusal.done", "response.content_part.done", "response.output_item.done",
    ]  # fmt: skip
    text_done = next(e for e in events if e["type"] == "response.output_text.done")
    assert text_done["text"] == "Hello. " and text_done["logprobs"] == []
    refusal_added = [e for e in events if e["type"] == "response.content_part.added"][1]
    assert (refusal_added["output_index"], refusal_added["content_index"]) == (1, 0)
    output = events[-1]["response"]["output"]
    answer = {"choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "Hello. ", "refusal": "No."}}]}  # fmt: skip
    unary = orjson.loads(Responses().unary_body(orjson.dumps(answer)))["output"]
    assert without_ids(output) == without_ids(unary)
    assert [item["content"][0]["type"] for item in output] == ["output_text", "refusal"]


@pytest.mark.parametrize(
    "events",
    [
        # text, a refusal, text again: three items, in the order they came
        [chunk({"content": "a"}), chunk({"refusal": "b"}), chunk({"content": "c"}), chunk({}, finish_reason="stop")],
        # a refusal, then a tool call: the refusal's item is closed before the call's is added
        [chunk({"refusal": "b"}),
         chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}),
         chunk({}, finish_reason="tool_calls")],
        # content and refusal in one delta: the content first
        [chunk({"content": "a", "refusal": "b"}), chunk({}, finish_reason="stop")],
    ],
)  # fmt: skip
async def test_refusals_mixed_with_text_and_tool_calls_close_each_item_once(events: list[dict]) -> None:
    shown = await streamed(events)
    output = shown[-1]["response"]["output"]
    added = [e["item"]["id"] for e in shown if e["type"] == "response.output_item.added"]
    done = [e["item"]["id"] for e in shown if e["type"] == "response.output_item.done"]
    assert added == done == [item["id"] for item in output]
    assert all(item["status"] == "completed" for item in output)
    parts = [part for item in output for part in item.get("content", ())]
    assert [part["refusal"] for part in parts if part["type"] == "refusal"] == ["b"]
    for event in shown:  # a refusal's events name a refusal part, a text's a text part
        if event["type"].startswith(("response.refusal.", "response.output_text.")):
            kind = next(i for i in output if i["id"] == event["item_id"])["content"][event["content_index"]]["type"]
            assert kind == ("refusal" if event["type"].startswith("response.refusal.") else "output_text")


async def test_a_stream_that_breaks_off_in_a_refusal_keeps_what_came_of_it() -> None:
    broken = {"error": {"message": "provider p broke off the stream", "type": "upstream_error", "param": None,
                        "code": "stream_interrupted"}}  # fmt: skip
    events = await streamed([chunk({"refusal": "I can't"}), broken])
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    (item,) = events[-1]["response"]["output"]
    came = "".join(e["delta"] for e in events if e["type"] == "response.refusal.delta")
    assert came and "I can't".startswith(came)  # the carry may hold its end back, then the stream broke
    assert item["content"] == [{"type": "refusal", "refusal": came}] and item["status"] == "in_progress"


async def test_a_provider_key_split_over_refusal_deltas_is_never_joined() -> None:
    events = await streamed([chunk({"refusal": "x " + SECRET[:12]}), chunk({"refusal": SECRET[12:] + " y"}),
                             chunk({}, finish_reason="stop")])  # fmt: skip
    joined = "".join(e["delta"] for e in events if e["type"] == "response.refusal.delta")
    assert SECRET not in joined and SECRET not in json.dumps(events)
    assert joined.startswith("x ") and joined.endswith(" y")
