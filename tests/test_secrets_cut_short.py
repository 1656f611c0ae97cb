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


def json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def html_referenced(text: str) -> str:
    return "".join(f"&#{ord(c)};" for c in text)


@pytest.mark.parametrize("write", [json_escaped, html_referenced])
@pytest.mark.parametrize("cut", [PARTIAL_SECRET_CHARS, 25, len(KEY) - 1])
def test_most_of_a_key_written_with_escapes_is_cut_short_too(write, cut: int) -> None:
    """Escaped, a key's beginning takes many more characters than the key: all of them are read."""
    out = orjson.loads(REDACTOR.dumps(unary(content='{"k": "' + write(KEY[:cut]))))
    assert out["choices"][0]["message"]["content"] == '{"k": "' + PLACEHOLDER


@pytest.mark.parametrize(
    "text", ["AT&Tmobile", "Q&Aresults", "x=1&amp;category", "https://a.example/s?q=cats&category",
             "write it as " + json_escaped("sk"), "a%26category"],
)  # fmt: skip
def test_an_escape_cut_off_at_the_end_is_not_a_beginning_and_escapes_count_as_read(text: str) -> None:
    """Ordinary text that ends with what could open an escape, or with a short escaped beginning,
    goes out as it is."""
    assert orjson.loads(REDACTOR.dumps(unary(content=text)))["choices"][0]["message"]["content"] == text


def test_logprobs_ending_with_most_of_a_key_are_null_unary_and_streamed() -> None:
    tokens = ["key", ": ", KEY[:12], KEY[12:24]]
    logprobs = {"content": [{"token": t, "logprob": -0.1, "bytes": None, "top_logprobs": []} for t in tokens]}
    answer = unary(content="key: " + KEY[:24])
    answer["choices"][0]["logprobs"] = logprobs
    assert orjson.loads(REDACTOR.dumps(copy.deepcopy(answer)))["choices"][0]["logprobs"] is None
    carry, shown_tokens = StreamCarry(REDACTOR), []
    for i, token in enumerate(tokens):
        entry = {"token": token, "logprob": -0.1, "bytes": None, "top_logprobs": []}
        finish = "length" if i == len(tokens) - 1 else None
        choice = {"index": 0, "delta": {"content": token}, "logprobs": {"content": [entry]}, "finish_reason": finish}
        for event in carry.events({"choices": [choice]}):
            for c in event.get("choices", []):
                shown_tokens += [e["token"] for e in (c.get("logprobs") or {}).get("content") or []]
    assert KEY[:PARTIAL_SECRET_CHARS] not in "".join(shown_tokens)


def test_a_texts_last_part_a_function_calls_arguments_and_an_audio_transcript_are_read_so() -> None:
    cut = KEY[:20]
    answer = unary(
        content=[{"type": "text", "text": "a"}, {"type": "text", "text": "key: " + cut}],
        function_call={"name": "f", "arguments": '{"k": "' + cut},
        audio={"id": "a", "transcript": "key " + cut},
    )
    assert KEY[:PARTIAL_SECRET_CHARS] not in shown(REDACTOR.dumps(answer))
