"""The task routes (docs/tasks.md) through the real stack with the demo's reference provider:
the `openai` SDK's embeddings, transcriptions and speech; huggingface_hub's InferenceClient for
every hub task with a slash model id (base_url, model=<url> and the per-provider form);
providers called in the hub's format; failover and provider selection on the new routes; one
ledger record per answer, priced in the task's unit; hostile bodies answered 4xx in OpenAI's
error shape."""

from __future__ import annotations

import base64
import io
import re
import sqlite3
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import openai
import pytest
from helpers.clients import http_client
from helpers.hub import HUB_CALLS, PICTURE, check_hub_answers, wav_bytes
from helpers.stacks import DemoStack
from helpers.waiting import eventually
from huggingface_hub import InferenceClient
from PIL import Image

from services.common import task_formats
from services.demo import ORG, PROVIDER, TASK_MODELS, USER, AdminApi, reference_provider_argv
from services.launcher import Stack, free_port, http_ok
from services.reference_provider import tasks as reference

pytestmark = pytest.mark.slow

EMBED = TASK_MODELS["feature-extraction"]
ASR = TASK_MODELS["automatic-speech-recognition"]
TTS = TASK_MODELS["text-to-speech"]
EMBEDDING_PRICE = 20  # nano-USD per input token: the demo's price of reference-feature-extraction


def flac_header(seconds: int, rate: int = 16_000) -> bytes:
    """A FLAC stream's header (STREAMINFO) that says it holds `seconds` of 16-bit mono audio."""
    info = (rate << 44) | (15 << 36) | (rate * seconds)
    return b"fLaC" + b"\x80\x00\x00\x22" + b"\x00" * 10 + info.to_bytes(8, "big") + b"\x00" * 16


@dataclass
class Demo:
    stack: Stack
    base_url: str
    admin: AdminApi
    token: str
    spare_url: str  # a second reference provider (no key), for providers of the tests' own

    def http(self) -> httpx.Client:
        return http_client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.token, max_retries=0, timeout=60)

    def hub(self, path: str) -> InferenceClient:
        return InferenceClient(base_url=f"{self.base_url}{path}", api_key=self.token, timeout=60)

    def ledger(self, request_id: str) -> dict:
        """The request's ledger row once Billing has it (a stream's: once final)."""
        query = (
            "SELECT task, provider, input_tokens, images, estimated_nano_usd FROM ledger"
            " WHERE request_id = ? AND NOT provisional"
        )

        def rows() -> list[tuple]:
            with sqlite3.connect(f"file:{self.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
                return db.execute(query, (request_id,)).fetchall()

        found = eventually(rows, f"the ledger row of {request_id}")
        assert len(found) == 1, request_id
        return dict(zip(("task", "provider", "input_tokens", "images", "estimate"), found[0], strict=True))


@pytest.fixture(scope="module")
def demo(shared_demo: DemoStack) -> Iterator[Demo]:
    stack, base_url, admin_token, lines = shared_demo
    token = re.search(r"demo token \(user demo\): (\S+)", lines).group(1)
    port = free_port()
    spare_url = f"http://127.0.0.1:{port}"
    spare = stack.start("spare_provider", reference_provider_argv(port), http_ok(f"{spare_url}/health"))
    stack.wait_ready()
    yield Demo(stack, base_url, AdminApi(base_url, admin_token), token, spare_url)
    stack.children.remove(spare)  # the shared stack goes on without this module's provider
    spare.process.terminate()
    spare.process.wait(timeout=10)


def own_provider(demo: Demo, name: str, path: str = "", **fields: object) -> str:
    """A provider of the spare reference provider (under a /knobs/ path when given); its id."""
    provider = f"{name}-{uuid.uuid4().hex[:6]}"
    body = {"id": provider, "org": ORG, "base_url": demo.spare_url + path, "tasks": ["feature-extraction"], **fields}
    demo.admin.ensure_provider(body)
    return provider


def own_model(demo: Demo, task: str, *providers: str) -> str:
    """A catalog model mapped for the task to each provider (reference-<task>, so the reference
    provider answers that task)."""
    model = f"tasks/{task}-{uuid.uuid4().hex[:6]}"
    demo.admin.call("POST", "/admin/v1/models:batchUpsert", {"models": [{"id": model, "pipeline_tag": task}]})
    for provider in providers:
        mapping = {"task": task, "hfModel": model, "providerModel": f"reference-{task}", "status": "live"}
        demo.admin.add_mappings(provider, [mapping])
    return model


# --- OpenAI's shapes -----------------------------------------------------------------------------


def test_openai_embeddings_float_and_base64_batched_with_usage_and_one_ledger_record(demo: Demo) -> None:
    client = demo.openai()
    texts = ["hello", "a somewhat longer sentence", "ünïcode"]
    floats = client.embeddings.with_raw_response.create(model=EMBED, input=texts, encoding_format="float")
    answer = floats.parse()
    assert [d.index for d in answer.data] == [0, 1, 2] and answer.model == EMBED
    assert all(len(d.embedding) == reference.DIMENSION for d in answer.data)
    assert answer.data[0].embedding == pytest.approx(reference.embedding("hello"), abs=1e-6)
    tokens = sum(map(reference.tokens, texts))
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens
    # The SDK's default asks for base64 and decodes it: the same vectors.
    decoded = client.embeddings.create(model=EMBED, input=texts)
    for plain, packed in zip(answer.data, decoded.data, strict=True):
        assert packed.embedding == pytest.approx(plain.embedding, abs=1e-6)
    with demo.http() as http:
        raw = http.post("/v1/embeddings", json={"model": EMBED, "input": "hello", "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert vector.tolist() == pytest.approx(reference.embedding("hello"), abs=1e-6)
    record = demo.ledger(floats.headers["x-request-id"])
    assert record["task"] == "feature-extraction" and record["input_tokens"] == tokens
    assert record["estimate"] == EMBEDDING_PRICE * tokens


@pytest.mark.parametrize("response_format", ["json", "text", "verbose_json"])
def test_openai_transcriptions_in_each_response_format(demo: Demo, response_format: str) -> None:
    audio = wav_bytes(2.5)
    answer = demo.openai().audio.transcriptions.with_raw_response.create(
        model=ASR, file=("speech.wav", audio, "audio/wav"), response_format=response_format
    )
    text = reference.transcript(audio)
    parsed = answer.parse()
    if response_format == "text":
        assert parsed.strip() == text and answer.headers["content-type"].startswith("text/plain")
    else:
        assert parsed.text == text
    if response_format == "verbose_json":
        assert parsed.duration == 3  # 2.5 s, billed (and told) in whole seconds rounded up
    assert demo.ledger(answer.headers["x-request-id"])["task"] == "automatic-speech-recognition"


def test_openai_speech_streams_a_real_wav(demo: Demo) -> None:
    text = "Hello from the speech route. " * 20
    with demo.openai().audio.speech.with_streaming_response.create(
        model=TTS, input=text, voice="alloy", response_format="wav"
    ) as answer:
        assert answer.headers["content-type"] == "audio/wav"
        pieces = list(answer.iter_bytes(4096))
        request_id = answer.headers["x-request-id"]
    data = b"".join(pieces)
    assert data == reference.wav(text) and len(pieces) > 1
    with wave.open(io.BytesIO(data)) as audio:
        assert audio.getframerate() == reference.SAMPLE_RATE and audio.getnframes() > 0
    assert demo.ledger(request_id)["task"] == "text-to-speech"


# --- the hub's task format -------------------------------------------------------------------------


def test_inference_client_with_a_base_url_for_every_hub_task(demo: Demo) -> None:
    answers = {task: HUB_CALLS[task](demo.hub(f"/models/{model}")) for task, model in TASK_MODELS.items()}
    check_hub_answers(answers)


def test_inference_client_with_model_urls_and_the_per_provider_form(demo: Demo) -> None:
    answers = {
        task: HUB_CALLS[task](InferenceClient(model=f"{demo.base_url}/models/{model}", api_key=demo.token))
        for task, model in TASK_MODELS.items()
    }
    check_hub_answers(answers)
    per_provider = {task: HUB_CALLS[task](demo.hub(f"/{PROVIDER}/models/reference-{task}")) for task in TASK_MODELS}
    check_hub_answers(per_provider)


def test_a_hub_call_bills_its_unit_and_names_its_provider(demo: Demo) -> None:
    with demo.http() as http:
        image = http.post(f"/models/{TASK_MODELS['image-classification']}", content=PICTURE)
        video = http.post(f"/models/{TASK_MODELS['text-to-video']}", json={"inputs": "a cat"})
        named = http.post(f"/models/{EMBED}/pipeline/feature-extraction", json={"inputs": ["a", "b"]})
    assert image.status_code == video.status_code == named.status_code == 200
    assert image.headers["x-inference-provider"] == PROVIDER and video.headers["content-type"] == "video/mp4"
    assert len(named.json()) == 2
    assert demo.ledger(image.headers["x-request-id"])["images"] == 1
    assert demo.ledger(video.headers["x-request-id"])["task"] == "text-to-video"


def test_text_to_image_on_the_hub_route_is_unchanged(demo: Demo) -> None:
    with demo.http() as http:
        answer = http.post("/models/demo/image-model", json={"inputs": "a cat", "parameters": {"width": 40}})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).format == "PNG"


# --- providers called in the hub's format; selection and failover ----------------------------------


def test_a_provider_called_in_the_hub_format_serves_openais_shapes(demo: Demo) -> None:
    formats = {"feature-extraction": "hub", "automatic-speech-recognition": "hub", "text-to-speech": "hub"}
    tasks = list(formats)
    provider = own_provider(demo, "hub", tasks=tasks, task_formats=formats)
    with demo.http() as http:
        shown = http.get(f"/v1/providers/{provider}").json()
    assert shown["task_formats"] == formats
    client = demo.openai()
    embed, asr, tts = (own_model(demo, task, provider) for task in tasks)
    answer = client.embeddings.with_raw_response.create(model=embed, input=["x", "yy"], encoding_format="float")
    assert answer.headers["x-inference-provider"] == provider
    assert answer.parse().data[1].embedding == pytest.approx(reference.embedding("yy"), abs=1e-6)
    transcript = client.audio.transcriptions.create(model=asr, file=("a.wav", wav_bytes(), "audio/wav"))
    assert transcript.text == reference.transcript(wav_bytes())
    with client.audio.speech.with_streaming_response.create(model=tts, input="hi", voice="alloy") as speech:
        assert speech.read() == reference.wav("hi")
    last = httpx.get(f"{demo.spare_url}/debug/last-request", timeout=30).json()
    assert last["path"] == "/models/reference-text-to-speech"


def test_embeddings_fail_over_and_honour_the_provider_field(demo: Demo) -> None:
    down = own_provider(demo, "down", "/knobs/fail=503", default_rank=-100)
    up = own_provider(demo, "up")
    model = own_model(demo, "feature-extraction", down, up)
    client = demo.openai()
    answer = client.embeddings.with_raw_response.create(model=model, input="hello", encoding_format="float")
    assert answer.headers["x-inference-provider"] == up
    record = demo.ledger(answer.headers["x-request-id"])
    assert record["provider"] == up and record["task"] == "feature-extraction"
    with demo.http() as http:
        chosen = http.post("/v1/embeddings", json={"model": model, "input": "x", "provider": up})
        only_down = http.post("/v1/embeddings", json={"model": f"{model}:{down}", "input": "x"})
        hub = http.post(f"/models/{model}:cheapest", json={"inputs": "hello"})
        ceiling = http.post("/v1/embeddings", json={"model": model, "input": "x", "max_price": {"input": 1}})
    assert "max_price" in _error(ceiling)["message"]  # neither provider has a price to hold to it
    assert chosen.headers["x-inference-provider"] == up
    assert only_down.status_code == 502 and only_down.json()["error"]["code"] == "upstream_error"
    assert hub.status_code == 200 and len(hub.json()) == reference.DIMENSION


# --- hostile input ------------------------------------------------------------------------------------


def _error(answer: httpx.Response, status: int | tuple[int, ...] = 400) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert answer.status_code in statuses, (answer.status_code, answer.text[:300])
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    return error


def test_hostile_embeddings_bodies_are_4xx(demo: Demo) -> None:
    too_many = ["x"] * (task_formats.MAX_EMBEDDING_INPUTS + 1)
    with demo.http() as http:
        post = lambda body: http.post("/v1/embeddings", json=body)  # noqa: E731
        assert "2048" in _error(post({"model": EMBED, "input": too_many}))["message"]
        assert _error(post({"model": EMBED, "input": 5}))["param"] == "input"
        assert "token arrays" in _error(post({"model": EMBED, "input": [[1, 2]]}))["message"]
        assert _error(post({"model": EMBED, "input": "x", "encoding_format": "hex"}))["param"] == "encoding_format"
        assert _error(post({"model": EMBED, "input": "x", "dimensions": 0}))["param"] == "dimensions"
        assert _error(post({"model": EMBED, "input": "x" * (task_formats.MAX_INPUT_CHARS + 1)}))["param"] == "input"
        assert _error(post({"input": "x"}))["param"] == "model"
        raw = http.post("/v1/embeddings", content=wav_bytes(), headers={"Content-Type": "audio/wav"})
        assert "not valid JSON" in _error(raw)["message"]
        huge = http.post("/v1/embeddings", json={"model": EMBED, "input": ["x" * 30_000] * 200})
        _error(huge, 413)


def test_hostile_audio_bodies_are_4xx(demo: Demo) -> None:
    with demo.http() as http:
        files = {"file": ("a.wav", wav_bytes(), "audio/wav")}
        as_json = http.post("/v1/audio/transcriptions", json={"model": ASR, "file": "x"})
        assert "multipart" in _error(as_json)["message"]
        no_file = http.post("/v1/audio/transcriptions", data={"model": ASR}, files={"other": ("x", b"x")})
        assert _error(no_file)["param"] == "file"
        not_audio = http.post("/v1/audio/transcriptions", data={"model": ASR}, files={"file": ("a.wav", b"hello")})
        assert "not audio" in _error(not_audio)["message"]
        srt = http.post("/v1/audio/transcriptions", data={"model": ASR, "response_format": "srt"}, files=files)
        assert _error(srt)["param"] == "response_format"
        too_long = http.post(f"/models/{ASR}", content=flac_header(task_formats.MAX_AUDIO_SECONDS + 1))
        assert "seconds" in _error(too_long)["message"]
        big = b"RIFF" + b"\x00" * (task_formats.MAX_AUDIO_BYTES + 1)
        assert "bytes" in _error(http.post(f"/models/{ASR}", content=big))["message"]
        hub_json = http.post(f"/models/{ASR}", json={"inputs": "not base64!"})
        assert _error(hub_json)["param"] == "inputs"
        speech = lambda body: http.post("/v1/audio/speech", json={"model": TTS, "voice": "alloy", **body})  # noqa: E731
        assert _error(speech({"input": "x" * (task_formats.MAX_SPEECH_CHARS + 1)}))["param"] == "input"
        assert _error(speech({"input": "hi", "response_format": "mp4"}))["param"] == "response_format"
        assert _error(speech({"input": "hi", "speed": "fast"}))["param"] == "speed"
        raw = http.post("/v1/audio/speech", content=wav_bytes(), headers={"Content-Type": "audio/wav"})
        assert "not valid JSON" in _error(raw)["message"]
        _error(http.post("/v1/audio/speech", json={"model": TTS, "input": "x" * 70_000}), 413)


def test_hostile_hub_bodies_are_4xx(demo: Demo) -> None:
    with demo.http() as http:
        text_model = TASK_MODELS["text-classification"]
        raw = http.post(f"/models/{text_model}", content=PICTURE, headers={"Content-Type": "image/png"})
        assert "not valid JSON" in _error(raw)["message"]
        assert _error(http.post(f"/models/{text_model}", json={"inputs": 5}))["param"] == "inputs"
        assert _error(http.post(f"/models/{text_model}", json={"text": "x"}))["param"] == "inputs"
        params = http.post(f"/models/{text_model}", json={"inputs": "x", "parameters": [1]})
        assert _error(params)["param"] == "parameters"
        image_model = TASK_MODELS["image-classification"]
        assert "not image" in _error(http.post(f"/models/{image_model}", content=b"plain text"))["message"]
        similarity = http.post(f"/models/{TASK_MODELS['sentence-similarity']}", json={"inputs": "x"})
        assert _error(similarity)["param"] == "inputs"
        labels = ["l"] * (task_formats.MAX_LABELS + 1)
        zero_shot = {"inputs": "x", "parameters": {"candidate_labels": labels}}
        assert (
            "64" in _error(http.post(f"/models/{TASK_MODELS['zero-shot-classification']}", json=zero_shot))["message"]
        )
        unknown = http.post(f"/models/{EMBED}/pipeline/no-such-task", json={"inputs": "x"})
        assert _error(unknown)["param"] == "model"
        chat_task = http.post(f"/models/{EMBED}/pipeline/conversational", json={"inputs": "x"})
        _error(chat_task)


def test_a_model_without_the_task_is_a_404_that_says_so(demo: Demo) -> None:
    with demo.http() as http:
        answer = http.post("/v1/embeddings", json={"model": "demo/chat-model", "input": "x"})
        missing = http.post("/v1/audio/speech", json={"model": "nobody/nothing", "input": "x", "voice": "a"})
    assert "feature-extraction" in _error(answer, 404)["message"]
    assert _error(missing, (400, 404))["code"]


def test_the_user_is_the_ledger_account(demo: Demo) -> None:
    with demo.http() as http:
        answer = http.post(f"/models/{TASK_MODELS['fill-mask']}", json={"inputs": "a [MASK]"})
    query = "SELECT account, task FROM ledger WHERE request_id = ?"
    demo.ledger(answer.headers["x-request-id"])
    with sqlite3.connect(f"file:{demo.stack.data_dir / 'billing.db'}?mode=ro", uri=True) as db:
        assert db.execute(query, (answer.headers["x-request-id"],)).fetchone() == (USER, "fill-mask")


def test_the_reference_mp4_has_its_length() -> None:
    assert task_formats.mp4_seconds(reference.mp4("x", 3.5)) == 3.5
    assert task_formats.header_seconds(reference.wav("a" * 100)) == pytest.approx(2.0)
