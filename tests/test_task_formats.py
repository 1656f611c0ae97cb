"""services/common/task_formats.py without a network: which task a hub call is for, the units an
answer is billed, lengths read from media headers, and how a provider's answer is checked."""

from __future__ import annotations

import base64
import io
import math
import struct
import wave

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import task_formats, tasks
from services.common.errors import ApiError
from services.common.pricing import Price
from services.common.provider_api import AttemptFailed
from services.common.providers import ProviderEntry, Route
from services.common.task_formats import TaskCall, TaskInput
from services.reference_provider import png
from services.reference_provider import tasks as reference

TASKS = tasks.SERVED_TASKS


def wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(rate * seconds))
    return buffer.getvalue()


def route(formats: dict[str, str] | None = None) -> Route:
    entry = ProviderEntry("p", "http://p", {}, "Inference-Id", (), 0, {}, task_formats=formats or {})
    return Route(entry, "m")


def test_a_body_picks_its_task_among_the_mapped_ones() -> None:
    mapped = ["feature-extraction", "sentence-similarity", "automatic-speech-recognition", "image-classification"]
    choose = task_formats.choose_task
    assert choose(mapped, b'{"inputs": "hello"}', "application/json") == "feature-extraction"
    pair = b'{"inputs": {"source_sentence": "a", "sentences": ["b"]}}'
    assert choose(mapped, pair, "application/json") == "sentence-similarity"
    assert choose(mapped, wav(0.1), "") == "automatic-speech-recognition"
    assert choose(mapped, png.draw("x", 2, 2), "image/png") == "image-classification"
    assert choose(["question-answering", "text-classification"], b'{"inputs": "x"}', "") == "text-classification"
    assert choose(["summarization"], b"not json", "") == "summarization"  # its own checks say what is wrong


def test_audio_seconds_come_from_the_header_else_the_bytes_bound_the_providers_word() -> None:
    two_and_a_half = TaskInput(TASKS["automatic-speech-recognition"], "m", data=wav(2.5))
    assert task_formats.audio_seconds(two_and_a_half) == 3
    assert task_formats.audio_seconds(two_and_a_half, said=3600) == 3  # the header wins over the provider
    mp3 = TaskInput(TASKS["automatic-speech-recognition"], "m", data=b"ID3" + b"\x00" * 39_997)
    bound = math.ceil(40_000 / task_formats.MIN_AUDIO_BYTES_PER_SECOND)
    assert task_formats.audio_seconds(mp3) == bound
    assert task_formats.audio_seconds(mp3, said=7.2) == 8
    assert task_formats.audio_seconds(mp3, said=10**9) == bound
    assert task_formats.audio_seconds(mp3, said=True) == bound
    # A header that claims a huge byte rate cannot make a large upload cheap.
    fast = bytearray(wav(0.01))
    fast[28:32] = struct.pack("<I", 2**32 - 1)
    fast += b"\x00" * 3_000_000
    fast[40:44] = struct.pack("<I", len(fast) - 44)
    assert task_formats.audio_seconds(TaskInput(TASKS["automatic-speech-recognition"], "m", data=bytes(fast))) == 3


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8), st.integers(-5, 10**6))
def test_embedding_tokens_are_the_providers_only_within_the_bound(texts: list[str], said: int) -> None:
    call = TaskCall(TaskInput(TASKS["feature-extraction"], "m", texts))
    bill = task_formats.served_bill(call, {"vectors": [], "tokens": said})
    bound = sum(len(t.encode()) + 2 for t in texts)
    assert bill.unit == tasks.INPUT_TOKEN and bill.units == bill.input_tokens
    assert 0 < bill.units <= bound
    if 0 < said <= bound:
        assert bill.units == said


def test_each_unit_is_billed_and_priced() -> None:
    price = Price(input_token_nano_usd=2, output_token_nano_usd=3, request_nano_usd=5, image_nano_usd=7,
                  unit_nano_usd=11)  # fmt: skip
    speech = TaskCall(TaskInput(TASKS["text-to-speech"], "m", "hello"))
    assert task_formats.served_bill(speech, b"RIFF").estimate(price, "text-to-speech") == 5 + 11 * 5
    video = TaskCall(TaskInput(TASKS["text-to-video"], "m", "a cat"))
    assert task_formats.served_bill(video, reference.mp4("a cat", 2.2)).units == 3
    assert task_formats.served_bill(video, b"not an mp4").units == 1
    image = task_formats.served_bill(TaskCall(TaskInput(TASKS["object-detection"], "m")), [])
    assert (image.unit, image.images, image.estimate(price, "object-detection")) == (tasks.IMAGE, 1, 5 + 7)
    summary = TaskCall(TaskInput(TASKS["summarization"], "m", "x" * 40))
    tokens = task_formats.served_bill(summary, [{"summary_text": "x" * 8}])
    assert (tokens.unit, tokens.input_tokens, tokens.output_tokens, tokens.units) == (tasks.TOKEN, 11, 3, 14)
    request = task_formats.served_bill(TaskCall(TaskInput(TASKS["fill-mask"], "m", "a [MASK]")), [])
    assert (request.unit, request.units) == (tasks.REQUEST, 1)
    assert task_formats.reservation(TaskInput(TASKS["text-to-video"], "m", "x")).units == 600


def test_answers_are_checked_and_rendered_in_the_callers_shape() -> None:
    value = TaskInput(TASKS["feature-extraction"], "m", ["a", "b"], route=tasks.OPENAI_FORMAT,
                      options={"encoding_format": "base64"})  # fmt: skip
    call, openai_route = TaskCall(value), route()
    answer = {"data": [{"embedding": [0.5], "index": 1}, {"embedding": [0.25], "index": 0}], "usage": {}}
    result = call.accept(openai_route, orjson.dumps(answer), "application/json", True)
    assert result["vectors"] == [[0.25], [0.5]]
    bill = task_formats.Bill("x", 2, 2)
    rendered = orjson.loads(task_formats.render(call, openai_route, "hub/m", result, "", bill).data)
    assert struct.unpack("<f", base64.b64decode(rendered["data"][0]["embedding"])) == (0.25,)
    cost = bill.estimate(None, "feature-extraction")  # the usage states the record's estimate
    assert rendered["usage"] == {"prompt_tokens": 2, "total_tokens": 2, "cost": cost / 1e9, "cost_nano_usd": cost}
    assert rendered["model"] == "hub/m"
    for wrong in ({"data": [{"embedding": [0.5], "index": 0}]}, {"data": [{"embedding": ["x"]}] * 2}, [1]):
        with pytest.raises(AttemptFailed):
            call.accept(openai_route, orjson.dumps(wrong), "application/json", True)
    hub_route = route({"feature-extraction": "hub"})
    path, body, _ = call.prepare(hub_route)
    assert path == "/models/m" and orjson.loads(body) == {"inputs": ["a", "b"]}
    speech = TaskCall(TaskInput(TASKS["text-to-speech"], "m", "hi"))
    with pytest.raises(AttemptFailed):
        speech.accept(hub_route, b"<html>", "text/html", True)
    assert speech.accept(hub_route, b"RIFF", "audio/wav", True) == b"RIFF"


def test_uploads_and_forms_are_checked() -> None:
    asr = TASKS["automatic-speech-recognition"]
    assert task_formats.hub_input(asr, "m", wav(0.1), "audio/wav").media_type == "audio/wav"
    encoded = base64.b64encode(wav(0.1)).decode()
    assert task_formats.hub_input(asr, "m", orjson.dumps({"inputs": encoded}), "application/json").data == wav(0.1)
    for body in (b"hello", b"", b'{"inputs": 5}', b'{"inputs": "%%%"}', b'{"parameters": {}}'):
        with pytest.raises(ApiError):
            task_formats.hub_input(asr, "m", body, "")
    boundary = "b0undary"
    form = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + wav(0.1) + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    value = task_formats.transcription_input(asr, form, f"multipart/form-data; boundary={boundary}")
    assert (value.model, value.data, value.options) == ("m", wav(0.1), {"response_format": "json"})
    with pytest.raises(ApiError):
        task_formats.transcription_input(asr, form, "application/json")


@given(st.sampled_from([b"RIFF\x00\x00\x00\x00WAVE", b"fLaC", b"\x00\x00\x00\x00ftypisom"]), st.binary(max_size=200))
def test_any_header_reads_as_a_length_or_none(magic: bytes, rest: bytes) -> None:
    """Whatever a caller's (or provider's) bytes hold after their magic, reading their length never fails."""
    for read in (task_formats.header_seconds, task_formats.mp4_seconds):
        seconds = read(magic + rest)
        assert seconds is None or seconds >= 0
