"""services/common/task_formats.py without a network: which task a hub call is for, the units an
answer is billed, lengths read from media headers, and how a provider's answer is checked."""

from __future__ import annotations

import base64
import io
import math
import struct
import wave
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import params, task_formats, tasks
from services.common.errors import ApiError
from services.common.pricing import Price
from services.common.provider_api import AttemptFailed
from services.common.providers import ProviderEntry, Route
from services.common.secrets import Redactor
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


def route(formats: dict[str, str] | None = None, secret: str = "") -> Route:
    entry = ProviderEntry("p", "http://p", {}, "Inference-Id", (), 0, {}, redactor=Redactor([secret]),
                          task_formats=formats or {})  # fmt: skip
    return Route(entry, "m")


def embeddings(inputs: str | list[str], encoding: str = "float") -> TaskCall:
    options = {"encoding_format": encoding}
    return TaskCall(TaskInput(TASKS["feature-extraction"], "m", inputs, route=tasks.OPENAI_FORMAT, options=options))


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


def transcription(data: bytes) -> TaskInput:
    return TaskInput(TASKS["automatic-speech-recognition"], "m", data=data)


# Where wave's 44-byte header holds these 32-bit fields.
SAMPLE_RATE_AT, BYTE_RATE_AT, DATA_SIZE_AT = 24, 28, 40


def pcm_wav(data_bytes: int, edits: dict[int, int] | None = None) -> bytes:
    """A mono 16 kHz 16-bit WAV of data_bytes bytes, its header's 32-bit fields edited (offset -> value)."""
    audio = bytearray(wav(0, rate=16_000))
    for at, value in {DATA_SIZE_AT: data_bytes, **(edits or {})}.items():
        audio[at : at + 4] = struct.pack("<I", value)
    return bytes(audio) + b"\x00" * data_bytes


def flac(samples: int, size: int, rate: int = 44_100) -> bytes:
    info = rate << 44 | 15 << 36 | samples  # mono (channels - 1 = 0), 16 bits (depth - 1 = 15)
    head = b"fLaC" + b"\x80\x00\x00\x22" + b"\x00" * 10 + info.to_bytes(8, "big") + b"\x00" * 16
    return head + b"\x00" * (size - len(head))


def test_audio_seconds_are_the_providers_word_within_the_bytes_bound_never_below_the_header() -> None:
    two_and_a_half = transcription(wav(2.5))
    bound = task_formats.audio_bound(two_and_a_half.data)
    assert task_formats.audio_seconds(two_and_a_half) == 3
    assert task_formats.audio_seconds(two_and_a_half, said=1) == 3  # never below the header
    assert task_formats.audio_seconds(two_and_a_half, said=3600) == bound
    mp3 = transcription(b"ID3" + b"\x00" * 39_997)
    bound = math.ceil(40_000 / task_formats.MIN_AUDIO_BYTES_PER_SECOND)
    assert task_formats.audio_seconds(mp3) == bound
    assert task_formats.audio_seconds(mp3, said=7.2) == 8
    assert task_formats.audio_seconds(mp3, said=10**9) == bound
    assert task_formats.audio_seconds(mp3, said=True) == bound


def test_an_edited_audio_header_cannot_make_an_upload_cheap() -> None:
    really = 188  # 6,000,000 bytes of mono 16 kHz 16-bit: 187.5 s
    byte_rate = pcm_wav(6_000_000, {BYTE_RATE_AT: 2**32 - 1})  # the byte-rate field: decoders do not read it
    assert task_formats.header_seconds(byte_rate) == 187.5
    assert task_formats.audio_seconds(transcription(byte_rate)) == really
    until_the_end = pcm_wav(6_000_000, {DATA_SIZE_AT: 0})  # a data size of 0: decoders read to the end
    assert task_formats.audio_seconds(transcription(until_the_end)) == really
    # A sample rate past any audio's gives no length: the provider's word, held to the bytes, counts.
    sample_rate = pcm_wav(6_000_000, {SAMPLE_RATE_AT: 2**32 - 1, BYTE_RATE_AT: 2**32 - 1})
    assert task_formats.header_seconds(sample_rate) is None
    assert task_formats.audio_seconds(transcription(sample_rate), said=187.5) == really
    compressed = bytearray(byte_rate)
    compressed[20:22] = struct.pack("<H", 0x55)  # MP3 in a WAV: a block is not a frame
    assert task_formats.header_seconds(bytes(compressed)) is None
    # FLAC's 0 samples is "unknown", not 0 seconds.
    assert task_formats.header_seconds(flac(441_000, 400_000)) == 10
    assert task_formats.header_seconds(flac(0, 400_000)) is None
    assert task_formats.audio_seconds(transcription(flac(0, 400_000)), said=100) == 100


def test_a_transcriptions_reservation_holds_what_its_provider_can_be_billed() -> None:
    for upload in (wav(2.5), flac(441_000, 400_000), pcm_wav(6_000_000, {SAMPLE_RATE_AT: 2**32 - 1})):
        value = transcription(upload)
        reserved = task_formats.reservation(value).units
        assert reserved == task_formats.audio_bound(upload)
        for said in (None, 1, 10**9):
            assert task_formats.served_bill(TaskCall(value), {"text": "", "duration": said}).units <= reserved


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8), st.integers(-5, 10**6))
def test_embedding_tokens_are_the_providers_only_within_the_bound(texts: list[str], said: int) -> None:
    call = TaskCall(TaskInput(TASKS["feature-extraction"], "m", texts))
    bill = task_formats.served_bill(call, {"vectors": [], "tokens": said})
    bound = sum(len(t.encode()) + 2 for t in texts)
    assert bill.unit == tasks.INPUT_TOKEN and bill.units == bill.input_tokens
    assert 0 < bill.units <= bound
    if 0 < said <= bound:
        assert bill.units == said


def test_token_tasks_reserve_and_bill_at_most_the_output_the_request_allows() -> None:
    novel = TaskInput(TASKS["text-generation"], "m", "Write a novel", {"max_new_tokens": 200_000})
    assert task_formats.reservation(novel).output_tokens == 200_000
    assert task_formats.served_bill(TaskCall(novel), [{"generated_text": "x" * 7_000_000}]).output_tokens == 200_000
    unbounded = TaskInput(TASKS["text-generation"], "m", "Write a novel")
    assert task_formats.reservation(unbounded).output_tokens == task_formats.DEFAULT_OUTPUT_TOKENS
    answer = [{"generated_text": "x" * 7_000_000}]
    assert task_formats.served_bill(TaskCall(unbounded), answer).output_tokens == task_formats.DEFAULT_OUTPUT_TOKENS
    for parameters, bound in (
        ({"max_new_tokens": 10**12}, params.MAX_OUTPUT_TOKENS),
        ({"max_new_tokens": True}, task_formats.DEFAULT_OUTPUT_TOKENS),
        ({"max_new_tokens": "50"}, task_formats.DEFAULT_OUTPUT_TOKENS),
        ({"max_length": 0}, task_formats.DEFAULT_OUTPUT_TOKENS),
        ({"generate_parameters": {"max_length": 50, "max_new_tokens": 40}}, 50),
    ):
        summary = TaskInput(TASKS["summarization"], "m", "x" * 40, parameters)
        assert task_formats.reservation(summary).output_tokens == bound


def test_only_a_token_tasks_answer_field_is_billed() -> None:
    call = TaskCall(TaskInput(TASKS["translation"], "m", "hello"))
    answer = [{"translation_text": "x" * 40, "details": "y" * 4000}, "z" * 4000, {"summary_text": "w" * 4000}]
    assert task_formats.served_bill(call, answer).output_tokens == 11
    hub_token_tasks = {t.name for t in TASKS.values() if t.unit == tasks.TOKEN} - {"conversational"}  # chat's
    assert hub_token_tasks == set(task_formats.GENERATED_FIELDS)


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


def test_answers_that_cannot_be_written_back_are_the_providers_failure() -> None:
    deep = b"[" * 300 + b"1" + b"]" * 300  # orjson reads 1,024 levels, writes 254
    with pytest.raises(AttemptFailed, match="nested"):
        TaskCall(TaskInput(TASKS["text-classification"], "m", "x")).accept(route(), deep, "application/json", True)
    asr = TaskCall(transcription(wav(0.1)))
    transcript = b'{"text": "hi", "segments": ' + deep + b"}"
    with pytest.raises(AttemptFailed, match="nested"):
        asr.accept(route(), transcript, "application/json", True)
    past_float32 = {"data": [{"embedding": [0.5, 1e39], "index": 0}]}
    with pytest.raises(AttemptFailed, match="float32"):
        embeddings("a", "base64").accept(route(), orjson.dumps(past_float32), "application/json", True)
    assert embeddings("a").accept(route(), orjson.dumps(past_float32), "application/json", True)  # JSON holds it
    largest = {"data": [{"embedding": [-task_formats.FLOAT32_MAX], "index": 0}]}
    accepted = embeddings("a", "base64").accept(route(), orjson.dumps(largest), "application/json", True)
    assert task_formats.render(embeddings("a", "base64"), route(), "m", accepted, "", task_formats.Bill("x", 1))


def test_embeddings_go_through_the_providers_redactor() -> None:
    number = "4111222233334444555"  # an api key a number can hold
    numeric = route(secret=number)
    answer = orjson.dumps({"data": [{"embedding": [0.5, int(number)], "index": 0}]})
    for call in (embeddings("a"), TaskCall(TaskInput(TASKS["feature-extraction"], "m", "a"))):
        result = call.accept(numeric, answer, "application/json", True)
        rendered = task_formats.render(call, numeric, "m", result, "", task_formats.Bill("x", 1)).data
        assert number.encode() not in rendered and b"[redacted]" in rendered
    # float32s whose bytes are a key: base64 would hand the caller base64(key).
    key = "sk-abcdefghijklmnop"
    packed = struct.unpack("<5f", key.encode() + b"\x00")
    call = embeddings("a", "base64")
    keyed = route(secret=key)
    result = call.accept(keyed, orjson.dumps({"data": [{"embedding": packed, "index": 0}]}), "application/json", True)
    rendered = task_formats.render(call, keyed, "m", result, "", task_formats.Bill("x", 1)).data
    assert base64.b64encode(key.encode()[:18]) not in rendered


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


def test_a_provider_model_in_a_url_path_is_percent_encoded() -> None:
    """As aiohttp (the Registry's checks) sends it: both call the same URL."""
    route = SimpleNamespace(provider_model="org/model v1é")
    assert task_formats._hub_path(route) == "/models/org/model%20v1%C3%A9"
