"""The reference provider's answers for every served task but chat and images, deterministic
from the request: vectors of a fixed dimension, labels and scores, real WAV, PNG and MP4 bytes.

In the hub's task format (POST /models/<model>) the task is the one named in the model id
(e.g. "reference/text-to-speech"); without one, the body decides: audio is transcribed, an
image classified, {"source_sentence", ...} compared, {"question", ...} answered, a text with
candidate_labels classified, and any other text embedded.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

from services.common.tasks import SERVED_TASKS
from services.reference_provider import png

DIMENSION = 16  # every embedding's length unless `dimensions` asks fewer
SAMPLE_RATE = 8000  # speech: 8 kHz mono 16-bit PCM
SECONDS_PER_CHARACTER = 0.02
MAX_SPEECH_SECONDS = 60
DEFAULT_VIDEO_SECONDS = 2
MAX_VIDEO_SECONDS = 60
MASKS = ("[MASK]", "<mask>")
WORD = re.compile(r"\S+")


def _digest(text: str | bytes) -> bytes:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).digest()


def _score(text: str | bytes) -> float:
    """A stable score in (0, 1) from the input."""
    return round((_digest(text)[0] + 1) / 258, 4)


def tokens(text: str) -> int:
    """The tokens the provider counts for a text (~4 bytes a token)."""
    return len(text.encode()) // 4 + 1


def embedding(text: str, dimension: int = DIMENSION) -> list[float]:
    """A unit vector from the text's hash."""
    digest = _digest(text) * (1 + dimension // 32)
    raw = [digest[i] - 127.5 for i in range(dimension)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def wav(text: str) -> bytes:
    """Speech for a text: a WAV of SECONDS_PER_CHARACTER a character, a tone pitched by the text."""
    seconds = min(MAX_SPEECH_SECONDS, max(0.1, len(text) * SECONDS_PER_CHARACTER))
    count = int(SAMPLE_RATE * seconds)
    pitch = 200 + _digest(text)[0] * 2
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * pitch * i / SAMPLE_RATE))) for i in range(count)
    )
    header = struct.pack("<4sI4s", b"RIFF", 36 + len(samples), b"WAVE")
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    return header + fmt + struct.pack("<4sI", b"data", len(samples)) + samples


def wav_seconds(data: bytes) -> float:
    """A WAV's length as this provider reads it (its own WAVs' layout); 0 for anything else."""
    if data[:4] != b"RIFF" or len(data) < 44:
        return 0.0
    rate = struct.unpack("<I", data[28:32])[0]
    return len(data[44:]) / rate if rate else 0.0


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4(prompt: str, seconds: float) -> bytes:
    """A small MP4 container: ftyp, a movie header (mvhd) of the video's length, the prompt's digest."""
    timescale = 1000
    mvhd = struct.pack(">B3xIIII", 0, 0, 0, timescale, int(seconds * timescale))
    mvhd += struct.pack(">I", 0x00010000) + struct.pack(">H", 0x0100) + b"\x00" * 10
    mvhd += struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000) + b"\x00" * 24
    mvhd += struct.pack(">I", 1)  # next track id
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    return ftyp + _box(b"moov", _box(b"mvhd", mvhd)) + _box(b"free", _digest(prompt))


def _labels(text: str | bytes) -> list[dict]:
    score = _score(text)
    return [{"label": "POSITIVE", "score": score}, {"label": "NEGATIVE", "score": round(1 - score, 4)}]


def _image_size(data: bytes) -> tuple[int, int]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return png.DEFAULT_SIDE, png.DEFAULT_SIDE


def transcript(data: bytes) -> str:
    return f"reference transcript {_digest(data)[:4].hex()} of {len(data)} bytes"


def _text_task(task: str, text: str, parameters: dict) -> Any:
    words = WORD.findall(text)
    if task == "token-classification":
        return [
            {"entity_group": "MISC", "score": _score(m.group()), "word": m.group(), "start": m.start(), "end": m.end()}
            for m in WORD.finditer(text)
            if m.group()[:1].isupper()
        ]
    if task == "zero-shot-classification":
        labels = [str(label) for label in parameters.get("candidate_labels") or []]
        raw = [_score(text + label) for label in labels]
        total = sum(raw) or 1.0
        ranked = sorted(zip(labels, raw, strict=True), key=lambda pair: -pair[1])
        return [{"label": label, "score": round(score / total, 4)} for label, score in ranked]
    if task == "text-generation":
        return [{"generated_text": f"{text} {' '.join(reversed(words))}"}]
    if task == "summarization":
        return [{"summary_text": " ".join(words[: max(1, len(words) // 3)])}]
    if task == "translation":
        return [{"translation_text": " ".join(reversed(words))}]
    if task == "fill-mask":
        mask = next((m for m in MASKS if m in text), MASKS[0])
        return [
            {"sequence": text.replace(mask, token, 1), "score": score, "token": index, "token_str": token}
            for index, (token, score) in enumerate((("the", 0.6), ("a", 0.3)))
        ]
    return [_labels(text)]  # text-classification: one list of labels per input, as the hub answers it


def _image_task(task: str, data: bytes, parameters: dict) -> Any:
    width, height = _image_size(data)
    if task == "object-detection":
        box = {"xmin": 0, "ymin": 0, "xmax": max(0, width - 1), "ymax": max(0, height - 1)}
        return [{"label": "object", "score": _score(data), "box": box}]
    if task == "image-segmentation":
        mask = base64.b64encode(png.draw(data.hex()[:64], width, height)).decode()
        return [{"label": "object", "score": _score(data), "mask": mask}]
    return _labels(data)  # image-classification


def task_of(model: str, body: Any) -> str:
    """The task a hub-format call is for: the one its model id names, else the body's shape."""
    named = [task for task in SERVED_TASKS if task in model]
    if named:
        return max(named, key=len)  # "text-to-image" over "image" tasks it contains, etc.
    if isinstance(body, bytes):
        return (
            "image-classification"
            if body[:4] == b"\x89PNG" or body[:3] == b"\xff\xd8\xff"
            else ("automatic-speech-recognition")
        )
    inputs = body.get("inputs")
    if isinstance(inputs, dict):
        return "sentence-similarity" if "source_sentence" in inputs else "question-answering"
    if "candidate_labels" in (body.get("parameters") or {}):
        return "zero-shot-classification"
    return "feature-extraction"


def hub_answer(task: str, inputs: Any, data: bytes, parameters: dict) -> tuple[Any, str]:
    """(answer, media type): a JSON value, or bytes of the media type."""
    if task == "feature-extraction":
        if isinstance(inputs, list):
            return [embedding(str(text)) for text in inputs], "application/json"
        return embedding(str(inputs)), "application/json"
    if task == "sentence-similarity":
        source = embedding(str(inputs.get("source_sentence")))
        sentences = inputs.get("sentences") or []
        scores = [round(sum(a * b for a, b in zip(source, embedding(str(s)), strict=True)), 6) for s in sentences]
        return scores, "application/json"
    if task == "question-answering":
        context = str(inputs.get("context") or "")
        first = WORD.search(context)
        answer = first.group() if first else ""
        start = first.start() if first else 0
        return {"answer": answer, "score": _score(context), "start": start, "end": start + len(answer)}, (
            "application/json"
        )
    if task == "automatic-speech-recognition":
        return {"text": transcript(data)}, "application/json"
    if task == "text-to-speech":
        return wav(str(inputs)), "audio/wav"
    if task == "text-to-video":
        frames, fps = parameters.get("num_frames"), parameters.get("fps") or 8
        counted = isinstance(frames, int) and isinstance(fps, int) and fps > 0
        seconds = frames / fps if counted else DEFAULT_VIDEO_SECONDS
        return mp4(str(inputs), min(MAX_VIDEO_SECONDS, max(0.1, seconds))), "video/mp4"
    if task in ("image-to-image", "text-to-image"):
        prompt = str(parameters.get("prompt") or "") + (data.hex()[:64] if data else str(inputs))
        width, height = _image_size(data) if data else (png.DEFAULT_SIDE, png.DEFAULT_SIDE)
        return png.draw(prompt, width, height), "image/png"
    if data:
        return _image_task(task, data, parameters), "application/json"
    return _text_task(task, str(inputs), parameters), "application/json"
