"""The conformance check's call for a mapping's task (every served task but chat and text-to-image,
which have checks of their own): a small sample request sent the way the Router sends it (in OpenAI's
shape or the hub's task format, as the provider's registration says for the task), and the answer
checked the way the Router checks it (services/common/task_formats.py: shared by both, so that a
mapping passes exactly when the Router could serve its answers)."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

from services.common.task_formats import TaskCall, TaskInput
from services.common.tasks import SERVED_TASKS

# An 8x8 PNG and one second of 8 kHz silence: real files of the smallest useful size.
SAMPLE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAATklEQVR4nGO4ffbqueNHDx7ctmX38uVbZ8xa39G7srJhcRYDVtHiudEMWEVTp"
    "/swYBWNnGjDgFXUp1uXAauofascA1ZRo3p+BqyiqpUMALV4Yzw0SACKAAAAAElFTkSuQmCC"
)


def _silence(seconds: int = 1, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * rate * seconds)
    return buffer.getvalue()


SAMPLE_WAV = _silence()
# Each task's sample: (inputs, parameters) for text tasks, bytes and their type for uploads.
_TEXT_SAMPLES: dict[str, tuple[Any, dict]] = {
    "text-generation": ("Once upon a time", {"max_new_tokens": 8}),
    "feature-extraction": ("Switchboard checks this sentence.", {}),
    "sentence-similarity": ({"source_sentence": "a cat", "sentences": ["a dog", "a car"]}, {}),
    "text-to-speech": ("Hello there.", {}),
    "text-to-video": ("a cat playing", {}),
    "text-classification": ("I like it", {}),
    "token-classification": ("Alice met Bob in Paris", {}),
    "zero-shot-classification": ("a goal", {"candidate_labels": ["sport", "food"]}),
    "summarization": ("one two three four five six", {}),
    "translation": ("one two three", {}),
    "question-answering": ({"question": "who?", "context": "Alice did it"}, {}),
    "fill-mask": ("I saw [MASK] cat", {}),
}
_UPLOADS = {
    "automatic-speech-recognition": (SAMPLE_WAV, "audio/wav"),
    "image-to-image": (SAMPLE_PNG, "image/png"),
    "image-classification": (SAMPLE_PNG, "image/png"),
    "object-detection": (SAMPLE_PNG, "image/png"),
    "image-segmentation": (SAMPLE_PNG, "image/png"),
}
CHECKED_TASKS = frozenset(_TEXT_SAMPLES) | frozenset(_UPLOADS)


def sample_call(task: str, provider_model: str) -> TaskCall:
    """The task's sample request for the provider model (a task in CHECKED_TASKS)."""
    if task in _UPLOADS:
        data, media_type = _UPLOADS[task]
        return TaskCall(TaskInput(SERVED_TASKS[task], provider_model, data=data, media_type=media_type))
    inputs, parameters = _TEXT_SAMPLES[task]
    return TaskCall(TaskInput(SERVED_TASKS[task], provider_model, inputs=inputs, parameters=dict(parameters)))


def described(result: Any, content_type: str) -> str:
    """What a checked answer was, in brief."""
    if isinstance(result, bytes):
        return f"{len(result):,} bytes of {content_type}"
    if isinstance(result, dict) and "vectors" in result:
        vectors = result["vectors"]
        return f"{len(vectors)} vector(s) of {len(vectors[0])} numbers"
    if isinstance(result, list):
        return f"a JSON list of {len(result)} item(s)"
    return f"a JSON object with {', '.join(sorted(result)[:6])}" if isinstance(result, dict) else "a JSON value"
