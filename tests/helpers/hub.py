"""The hub tasks as huggingface_hub calls them, and what the reference provider answers to each."""

from __future__ import annotations

import io
import wave

import httpx
from huggingface_hub import InferenceClient

from services.common import task_formats
from services.reference_provider import png
from services.reference_provider import tasks as reference


def wav_bytes(seconds: float = 1.0) -> bytes:
    """A real WAV of `seconds` of silence at 8 kHz, 16-bit mono."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))
    return buffer.getvalue()


PICTURE = png.draw("a test picture", 32, 24)


def _video(client: InferenceClient) -> bytes:
    """The hub's text-to-video request to the client's model URL, with its token."""
    headers = {"Authorization": f"Bearer {client.token}"}
    answer = httpx.post(client.model, json={"inputs": "a cat playing"}, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4", answer.text[:300]
    return answer.content


# Every hub task but text-to-image (tested on its own), as huggingface_hub calls it.
HUB_CALLS = {
    "feature-extraction": lambda c: c.feature_extraction("hello"),
    "sentence-similarity": lambda c: c.sentence_similarity("a cat", other_sentences=["a dog", "a car"]),
    "automatic-speech-recognition": lambda c: c.automatic_speech_recognition(wav_bytes()),
    "text-to-speech": lambda c: c.text_to_speech("hello there"),
    # huggingface_hub 2.4 has no hf-inference text_to_video (its providers answer a URL to fetch): the
    # hub's task request as the client's own post sends it.
    "text-to-video": lambda c: _video(c),
    "image-to-image": lambda c: c.image_to_image(PICTURE, prompt="make it blue"),
    "text-classification": lambda c: c.text_classification("I like it"),
    "token-classification": lambda c: c.token_classification("Alice met Bob in Paris"),
    "zero-shot-classification": lambda c: c.zero_shot_classification("a goal", candidate_labels=["sport", "food"]),
    "summarization": lambda c: c.summarization("one two three four five six"),
    "translation": lambda c: c.translation("one two three"),
    "question-answering": lambda c: c.question_answering(question="who?", context="Alice did it"),
    "fill-mask": lambda c: c.fill_mask("I saw [MASK] cat"),
    "image-classification": lambda c: c.image_classification(PICTURE),
    "object-detection": lambda c: c.object_detection(PICTURE),
    "image-segmentation": lambda c: c.image_segmentation(PICTURE),
}


def check_hub_answers(answers: dict[str, object]) -> None:
    assert answers["feature-extraction"].shape == (reference.DIMENSION,)
    assert len(answers["sentence-similarity"]) == 2
    assert answers["automatic-speech-recognition"].text == reference.transcript(wav_bytes())
    assert answers["text-to-speech"] == reference.wav("hello there")
    assert answers["text-to-video"][4:8] == b"ftyp" and task_formats.mp4_seconds(answers["text-to-video"]) == 2
    assert answers["image-to-image"].size == (32, 24)
    assert {c.label for c in answers["text-classification"]} == {"POSITIVE", "NEGATIVE"}
    assert [t.word for t in answers["token-classification"]] == ["Alice", "Bob", "Paris"]
    assert {c.label for c in answers["zero-shot-classification"]} == {"sport", "food"}
    assert answers["summarization"].summary_text == "one two"
    assert answers["translation"].translation_text == "three two one"
    assert answers["question-answering"].answer == "Alice"
    assert answers["fill-mask"][0].sequence == "I saw the cat"
    assert answers["image-classification"][0].label == "POSITIVE"
    assert answers["object-detection"][0].box.xmax == 31
    assert answers["image-segmentation"][0].mask.size == (32, 24)
