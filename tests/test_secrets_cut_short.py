"""A provider's key cut short at the end of an answer's text (max_tokens reached mid-key, a stream
that broke off, a field the answer moved past) is still most of the key: from
PARTIAL_SECRET_CHARS characters of its beginning on, that end goes out as the placeholder, in unary
answers and in streams alike. A shorter end (an ordinary "sk-") goes out as it is."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.secrets import PARTIAL_SECRET_CHARS, PLACEHOLDER, Redactor, StreamCarry

KEY = "sk-provider-key-0a1b2c3d4e5f6a7b8c9d"
LEAD = "the key you asked for is "
REDACTOR = Redactor([KEY])


def unary(**message: object) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "length"}]}


def shown(data: bytes) -> str:
    return data.decode()


@given(cut=st.integers(PARTIAL_SECRET_CHARS, len(KEY) - 1))
def test_a_unary_answer_ending_in_most_of_a_key_ends_with_the_placeholder(cut: int) -> None:
    out = orjson.loads(REDACTOR.dumps(unary(content=LEAD + KEY[:cut])))
    assert out["choices"][0]["message"]["content"] == LEAD + PLACEHOLDER


@pytest.mark.parametrize("field", ["refusal", "reasoning_content", "reasoning"])
def test_every_text_of_a_unary_answer_is_read_so(field: str) -> None:
    out = REDACTOR.dumps(unary(**{field: LEAD + KEY[:20]}))
    assert KEY[:PARTIAL_SECRET_CHARS] not in shown(out)


def test_a_completions_text_and_tool_arguments_are_read_so() -> None:
    answer = {"choices": [{"index": 0, "text": LEAD + KEY[:12]}]}
    assert KEY[:PARTIAL_SECRET_CHARS] not in shown(REDACTOR.dumps(answer))
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"k": "' + KEY[:15]}}
    assert KEY[:PARTIAL_SECRET_CHARS] not in shown(REDACTOR.dumps(unary(tool_calls=[call])))


@pytest.mark.parametrize("end", ["sk-", "sk-provi", KEY, KEY + " and more"])
def test_a_short_beginning_stays_and_a_whole_key_is_redacted_as_before(end: str) -> None:
    content = orjson.loads(REDACTOR.dumps(unary(content=LEAD + end)))["choices"][0]["message"]["content"]
    expected = {"sk-": LEAD + "sk-", "sk-provi": LEAD + PLACEHOLDER, KEY: LEAD + PLACEHOLDER,
                KEY + " and more": LEAD + PLACEHOLDER + " and more"}  # fmt: skip
    assert content == expected[end]


def streamed(deltas: list[str], finish: str | None, end: bool) -> str:
    """The text a caller joins from a stream of content deltas through the carry."""
    carry, out = StreamCarry(REDACTOR), []
    events = [{"choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    if finish:
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    for event in copy.deepcopy(events):
        out += carry.events(event)
    if end and (held := carry.end()) is not None:
        out.append(held)
    return "".join(e["choices"][0]["delta"].get("content", "") for e in out if e.get("choices"))


@given(cut=st.integers(PARTIAL_SECRET_CHARS, len(KEY) - 1), split=st.integers(0, 30))
def test_a_stream_ending_in_most_of_a_key_ends_with_the_placeholder(cut: int, split: int) -> None:
    text = LEAD + KEY[:cut]
    deltas = [text[:split], text[split:]]
    assert streamed(deltas, "length", end=False) == LEAD + PLACEHOLDER  # finished: max_tokens
    assert streamed(deltas, None, end=True) == LEAD + PLACEHOLDER  # ended (or broke off) unfinished
