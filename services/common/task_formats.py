"""The task formats (docs/tasks.md): what each task route takes from a caller and answers, in the
hub's task format or OpenAI's embeddings and audio shapes; how a provider is called for the task
(its registered format, services/common/tasks.py); the documented caps; the units billed.

A caller's request becomes one TaskInput, whichever route it came by; a TaskCall sends it to each
route in the provider's format, checks the provider's answer (a retryable failure when it is not
valid: nothing invalid reaches the caller) and renders it in the caller's shape. Every byte and
string passed back goes through the provider's redactor.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import quote

import orjson

from services.common import params, tasks
from services.common.errors import ApiError, invalid_argument
from services.common.pricing import NANO_PER_USD, Price, estimate_nano_usd, saturated
from services.common.provider_api import AttemptFailed
from services.common.providers import Route
from services.common.tasks import HUB_FORMAT, OPENAI_FORMAT, Task

JSON_TYPE = "application/json"
# The GenAI semantic conventions' gen_ai.operation.name of each task (others: GENERATE).
GENERATE = "generate_content"
OPERATIONS = {"conversational": "chat", "text-to-image": GENERATE, "feature-extraction": "embeddings",
              "sentence-similarity": "embeddings"}  # fmt: skip
# Documented caps (docs/tasks.md); Envoy's body limit (8 MiB) bounds every body before them.
MAX_EMBEDDING_INPUTS = 2048  # strings in one embeddings `input`
MAX_INPUT_CHARS = 32_768  # one text: an embeddings input, a text task's text, a sentence
MAX_TOTAL_INPUT_CHARS = 1_048_576  # every text of one request together
MAX_SPEECH_CHARS = 4096  # text-to-speech input
MAX_AUDIO_BYTES = 6 * 1024 * 1024  # an audio upload
MAX_AUDIO_SECONDS = 1800  # an audio upload's length, where its header tells it
MAX_IMAGE_BYTES = 6 * 1024 * 1024  # an image upload
MAX_LABELS = 64  # zero-shot candidate labels
MAX_SENTENCES = 512  # sentence-similarity sentences to compare
MAX_DIMENSIONS = 8192  # an embedding's length, asked or answered
MAX_PARAMETERS_BYTES = 16 * 1024  # the `parameters` object of a hub task call
MAX_VIDEO_SECONDS = 600  # what a text-to-video answer can be billed
# Audio without a header that gives its length is billed at most this many bytes a second (16 kbit/s).
MIN_AUDIO_BYTES_PER_SECOND = 2000
# Audio is billed at least its bytes at this rate (uncompressed 24-bit stereo at 192 kHz), whatever its
# header says: a header that claims a huge rate cannot make a large upload cheap.
MAX_AUDIO_BYTES_PER_SECOND = 192_000 * 2 * 3
# WAV sample formats whose block is one frame of samples (PCM, IEEE float, A-law, mu-law): only for these
# do the sample rate and block align give the bytes a second. WAVE_FORMAT_EXTENSIBLE names its own inside.
FRAMED_WAV_FORMATS = frozenset({1, 3, 6, 7})
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The largest finite float32: a base64 embedding is packed as float32, so its numbers must fit.
FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
# Hub parameters that bound a generation's new tokens: text-generation's own, and summarization's and
# translation's inside `generate_parameters`. Past params.MAX_OUTPUT_TOKENS (chat's ceiling) they count as it.
OUTPUT_TOKEN_PARAMETERS = ("max_new_tokens", "max_length")
DEFAULT_OUTPUT_TOKENS = 1024  # a generation that names no bound (a hub token task, or chat without max_tokens)
# The answer field holding each token task's generated text: its output tokens are counted there only.
GENERATED_FIELDS = {"text-generation": "generated_text", "summarization": "summary_text",
                    "translation": "translation_text"}  # fmt: skip
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
SPEECH_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                  "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
DEFAULT_VOICE = "alloy"
# The JSON value each hub task answers with (besides the binary ones).
_ANSWER_TYPES: dict[str, tuple[type, ...]] = {
    "question-answering": (dict, list),
    "automatic-speech-recognition": (dict,),
}
# Magic numbers of the uploads Switchboard accepts: prefix (at an offset) -> media type.
_AUDIO_MAGIC = (
    (0, b"RIFF", "audio/wav"), (0, b"fLaC", "audio/flac"), (0, b"ID3", "audio/mpeg"), (0, b"\xff\xfb", "audio/mpeg"),
    (0, b"\xff\xf3", "audio/mpeg"), (0, b"\xff\xf2", "audio/mpeg"), (0, b"OggS", "audio/ogg"),
    (4, b"ftyp", "audio/mp4"), (0, b"\x1a\x45\xdf\xa3", "audio/webm"),
)  # fmt: skip
_IMAGE_MAGIC = ((0, b"\x89PNG\r\n\x1a\n", "image/png"), (0, b"\xff\xd8\xff", "image/jpeg"), (0, b"GIF8", "image/gif"),
                (8, b"WEBP", "image/webp"), (0, b"BM", "image/bmp"))  # fmt: skip
_EXTENSIONS = {"audio/wav": "wav", "audio/flac": "flac", "audio/mpeg": "mp3", "audio/ogg": "ogg",
               "audio/mp4": "m4a", "audio/webm": "webm"}  # fmt: skip


def _bad(message: str, param: str | None = None) -> Exception:
    return invalid_argument("INVALID_REQUEST", message, param)


# --- what the caller sent ---------------------------------------------------------------------


@dataclass
class TaskInput:
    """A task request, whichever route it came by."""

    task: Task
    model: str
    inputs: Any = None  # a text, a list of texts, or an object (question-answering, sentence-similarity)
    parameters: dict = field(default_factory=dict)
    data: bytes = b""  # an audio or image upload
    media_type: str = ""  # the upload's type
    # The caller's route and what it asked of the answer's shape.
    route: str = HUB_FORMAT
    options: dict = field(default_factory=dict)
    provider: str = ""  # the `provider` field: providers to use, in order

    @property
    def input_param(self) -> str:
        """The request field that holds the input, as the caller's route names it."""
        if self.route == HUB_FORMAT:
            return "inputs"
        return "file" if self.data else "input"

    max_price: dict | None = None  # the caller's price ceiling (params.max_price checked it)

    @property
    def texts(self) -> list[str]:
        """Every text of the request (what input tokens and characters are counted on)."""
        value = self.inputs
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        if isinstance(value, dict):
            return [v for v in value.values() if isinstance(v, str)] + [
                s for v in value.values() if isinstance(v, list) for s in v if isinstance(s, str)
            ]
        return []

    def payload(self) -> dict:
        """The selection fields _routes reads."""
        return {"model": self.model, **({"provider": self.provider} if self.provider else {})}


def _json_object(data: bytes, shape: str) -> dict:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _bad(f"the request body is not valid JSON: this route takes {shape}") from None
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object: {shape}")
    return body


def _text(value: object, param: str, most: int = MAX_INPUT_CHARS) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{param} must be a non-empty string", param)
    if len(value) > most:
        raise _bad(f"{param} is longer than {most} characters", param)
    return value


def _texts(value: object, param: str, most: int) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{param} must be a non-empty list of strings", param)
    if len(value) > most:
        raise _bad(f"{param} has more than {most} items", param)
    texts = [_text(item, f"{param}[{i}]") for i, item in enumerate(value)]
    if sum(map(len, texts)) > MAX_TOTAL_INPUT_CHARS:
        raise _bad(f"{param} holds more than {MAX_TOTAL_INPUT_CHARS} characters in all", param)
    return texts


def _parameters(value: object) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("parameters must be a JSON object", "parameters")
    if len(orjson.dumps(value)) > MAX_PARAMETERS_BYTES:
        raise _bad(f"parameters is larger than {MAX_PARAMETERS_BYTES} bytes", "parameters")
    return value


def sniff(data: bytes, magic: tuple[tuple[int, bytes, str], ...]) -> str:
    """The media type the bytes start like, or ""."""
    return next((kind for at, prefix, kind in magic if data[at : at + len(prefix)] == prefix), "")


def _upload(data: bytes, task: Task, param: str) -> tuple[bytes, str]:
    """An audio or image upload, checked: size, a format Switchboard recognises, audio's length."""
    audio = task.takes == tasks.AUDIO
    kind, most = ("audio", MAX_AUDIO_BYTES) if audio else ("image", MAX_IMAGE_BYTES)
    if not data:
        raise _bad(f"{param} is empty: send the {kind}'s bytes", param)
    if len(data) > most:
        raise _bad(f"the {kind} is larger than {most:,} bytes", param)
    media_type = sniff(data, _AUDIO_MAGIC if audio else _IMAGE_MAGIC)
    if not media_type:
        known = "WAV, FLAC, MP3, OGG, MP4/M4A or WebM" if audio else "PNG, JPEG, GIF, WebP or BMP"
        raise _bad(f"{param} is not {kind} Switchboard recognises ({known})", param)
    seconds = header_seconds(data)
    if audio and seconds is not None and seconds > MAX_AUDIO_SECONDS:
        raise _bad(f"the audio is longer than {MAX_AUDIO_SECONDS} seconds", param)
    return data, media_type


def hub_input(task: Task, model: str, data: bytes, content_type: str) -> TaskInput:
    """A hub task call: JSON {"inputs", "parameters"}, or (tasks that take audio or images) the
    raw bytes, or JSON whose inputs are the bytes in base64."""
    is_json = content_type.split(";")[0].strip().lower() == JSON_TYPE or data[:1] == b"{"
    if task.takes != tasks.JSON and not is_json:
        upload, media_type = _upload(data, task, "body")
        return TaskInput(task, model, data=upload, media_type=media_type)
    shape = '{"inputs": ..., "parameters": {...}}'
    body = _json_object(data, shape)
    if "inputs" not in body:
        raise _bad(f"the body must be {shape}: inputs is missing", "inputs")
    parameters = _parameters(body.get("parameters"))
    if task.takes != tasks.JSON:
        encoded = body["inputs"]
        if not isinstance(encoded, str):
            raise _bad("inputs must be the file's bytes in base64", "inputs")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("inputs must be the file's bytes in base64 (URLs are not fetched)", "inputs") from None
        upload, media_type = _upload(raw, task, "inputs")
        return TaskInput(task, model, parameters=parameters, data=upload, media_type=media_type)
    return TaskInput(task, model, _hub_inputs(task, body["inputs"], parameters), parameters)


def choose_task(mapped: list[str], data: bytes, content_type: str) -> str:
    """Of the tasks a model is mapped for (in services/common/tasks.py's order), the one a hub
    call's body fits: the upload's kind for raw bytes, else the shape of inputs and parameters;
    the first mapped task when none fits (its own checks then say what is wrong)."""
    if data[:1] != b"{":
        kind = tasks.AUDIO if sniff(data, _AUDIO_MAGIC) else tasks.IMAGE_BYTES if sniff(data, _IMAGE_MAGIC) else ""
        return next((t for t in mapped if tasks.SERVED_TASKS[t].takes == kind), mapped[0])
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return mapped[0]
    inputs = body.get("inputs") if isinstance(body, dict) else None
    parameters = body.get("parameters") if isinstance(body, dict) else None
    keys = set(inputs) if isinstance(inputs, dict) else set()
    wanted = (
        "sentence-similarity" if "source_sentence" in keys
        else "question-answering" if "question" in keys
        else "zero-shot-classification" if isinstance(parameters, dict) and "candidate_labels" in parameters
        else ""
    )  # fmt: skip
    if wanted in mapped:
        return wanted
    fits_json = [t for t in mapped if tasks.SERVED_TASKS[t].takes == tasks.JSON and t not in _SHAPED]
    return fits_json[0] if fits_json else mapped[0]


# Tasks whose inputs have their own shape (choose_task picks them by it).
_SHAPED = ("sentence-similarity", "question-answering", "zero-shot-classification")


def _hub_inputs(task: Task, inputs: object, parameters: dict) -> object:
    """The `inputs` of a JSON hub task, checked for its task."""
    name = task.name
    if name == "feature-extraction":
        return _texts(inputs, "inputs", MAX_EMBEDDING_INPUTS) if isinstance(inputs, list) else _text(inputs, "inputs")
    if name == "sentence-similarity":
        if not isinstance(inputs, dict):
            raise _bad('inputs must be {"source_sentence": str, "sentences": [str, ...]}', "inputs")
        return {
            "source_sentence": _text(inputs.get("source_sentence"), "inputs.source_sentence"),
            "sentences": _texts(inputs.get("sentences"), "inputs.sentences", MAX_SENTENCES),
        }
    if name == "question-answering":
        if not isinstance(inputs, dict):
            raise _bad('inputs must be {"question": str, "context": str}', "inputs")
        return {"question": _text(inputs.get("question"), "inputs.question"),
                "context": _text(inputs.get("context"), "inputs.context")}  # fmt: skip
    if name == "zero-shot-classification":
        _texts(parameters.get("candidate_labels"), "parameters.candidate_labels", MAX_LABELS)
    most = MAX_SPEECH_CHARS if name == "text-to-speech" else MAX_INPUT_CHARS
    return _text(inputs, "inputs", most)


def embeddings_input(task: Task, data: bytes) -> TaskInput:
    """POST /v1/embeddings: {"model", "input": str or [str], "encoding_format"?, "dimensions"?}."""
    body = _json_object(data, '{"model": ..., "input": ...}')
    params.check_body(body, params.COMMON, {"model", "input"})
    value = body.get("input")
    if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
        raise _bad("input must be a string or a list of strings (token arrays are not accepted)", "input")
    inputs = _texts(value, "input", MAX_EMBEDDING_INPUTS) if isinstance(value, list) else _text(value, "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _bad('encoding_format must be "float" or "base64"', "encoding_format")
    options: dict[str, Any] = {"encoding_format": encoding}
    parameters: dict[str, Any] = {}
    if body.get("dimensions") is not None:
        dimensions = body["dimensions"]
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
            raise _bad(f"dimensions must be an integer 1..{MAX_DIMENSIONS}", "dimensions")
        parameters["dimensions"] = dimensions
    return TaskInput(task, body["model"], inputs, parameters, route=OPENAI_FORMAT, options=options,
                     provider=body.get("provider") or "", max_price=body.get("max_price"))  # fmt: skip


def speech_input(task: Task, data: bytes) -> TaskInput:
    """POST /v1/audio/speech: {"model", "input", "voice", "response_format"?, "speed"?, "instructions"?}."""
    body = _json_object(data, '{"model": ..., "input": ..., "voice": ...}')
    params.check_body(body, params.COMMON, {"model", "input"})
    text = _text(body.get("input"), "input", MAX_SPEECH_CHARS)
    voice = body.get("voice", DEFAULT_VOICE)
    if isinstance(voice, dict):
        voice = voice.get("id")
    voice = _text(voice, "voice", 256)
    response_format = body.get("response_format", "mp3")
    if not isinstance(response_format, str) or response_format not in SPEECH_FORMATS:
        raise _bad(f"response_format must be one of {', '.join(SPEECH_FORMATS)}", "response_format")
    if body.get("stream_format", "audio") != "audio":
        raise _bad('stream_format must be "audio": the audio is streamed as it is made', "stream_format")
    options: dict[str, Any] = {"voice": voice, "response_format": response_format}
    speed = body.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise _bad("speed must be a number 0.25..4.0", "speed")
        options["speed"] = speed
    if body.get("instructions") is not None:
        options["instructions"] = _text(body["instructions"], "instructions", MAX_SPEECH_CHARS)
    return TaskInput(task, body["model"], text, route=OPENAI_FORMAT, options=options,
                     provider=body.get("provider") or "", max_price=body.get("max_price"))  # fmt: skip


def _form_fields(data: bytes, content_type: str) -> dict[str, tuple[bytes, str]]:
    """A multipart/form-data body's fields: name -> (value, content type)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise _bad("the body must be multipart/form-data (a file upload) with a boundary")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + data)
    if not message.is_multipart():
        raise _bad("the multipart/form-data body could not be read")
    found: dict[str, tuple[bytes, str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            found[name] = (part.get_payload(decode=True) or b"", part.get_content_type())
    return found


def transcription_input(task: Task, data: bytes, content_type: str) -> TaskInput:
    """POST /v1/audio/transcriptions: multipart file, model, response_format?, language?, prompt?, temperature?."""
    fields = _form_fields(data, content_type)
    if "file" not in fields:
        raise _bad("the upload has no file field", "file")

    def text(name: str, most: int = 512) -> str:
        value = fields.get(name, (b"", ""))[0]
        try:
            return value.decode()[: most + 1]
        except UnicodeDecodeError:
            raise _bad(f"{name} must be UTF-8 text", name) from None

    model = _text(text("model"), "model", 512)
    upload, media_type = _upload(fields["file"][0], task, "file")
    response_format = text("response_format") or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise _bad(f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}", "response_format")
    options: dict[str, Any] = {"response_format": response_format}
    for name, most in (("language", 16), ("prompt", MAX_INPUT_CHARS)):
        if text(name, most):
            options[name] = _text(text(name, most), name, most)
    if text("temperature"):
        try:
            temperature = float(text("temperature"))
        except ValueError:
            raise _bad("temperature must be a number 0..1", "temperature") from None
        if not 0 <= temperature <= 1:
            raise _bad("temperature must be a number 0..1", "temperature")
        options["temperature"] = temperature
    return TaskInput(task, model, data=upload, media_type=media_type, route=OPENAI_FORMAT, options=options,
                     provider=text("provider"))  # fmt: skip


# --- lengths read from media headers ------------------------------------------------------------


def _frame_bytes_per_second(fmt: bytes) -> int:
    """A WAV fmt chunk's sample rate x block align: the bytes a second its decoder plays (its byte-rate
    field is not read, nor is it by decoders). 0 for a format without frames, or a rate past any audio's."""
    if len(fmt) < 14:
        return 0
    tag, _, sample_rate, _, block_align = struct.unpack("<HHIIH", fmt[:14])
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the SubFormat GUID starts with the format's tag
    rate = sample_rate * block_align
    return rate if tag in FRAMED_WAV_FORMATS and 0 < rate <= MAX_AUDIO_BYTES_PER_SECOND else 0


def _wav_seconds(data: bytes) -> float | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, rate = 12, 0
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        if kind == b"fmt ":
            rate = _frame_bytes_per_second(data[at + 8 : at + 8 + size])
        elif kind == b"data":
            rest = len(data) - at - 8
            # A size of 0 is "until the end" to decoders (ffmpeg), like 0xFFFFFFFF.
            return min(size or rest, rest) / rate if rate else None
        at += 8 + size + (size & 1)
    return None


def _flac_seconds(data: bytes) -> float | None:
    if data[:4] != b"fLaC" or len(data) < 26:
        return None
    info = int.from_bytes(data[18:26], "big")  # STREAMINFO: 20 bits rate, 3 channels, 5 depth, 36 samples
    rate, samples = info >> 44, info & ((1 << 36) - 1)
    return samples / rate if rate and samples else None  # 0 samples: FLAC's "unknown"


def header_seconds(data: bytes) -> float | None:
    """An audio upload's length from its header (WAV, FLAC), or None where it has none."""
    return _wav_seconds(data) if data[:4] == b"RIFF" else _flac_seconds(data)


def mp4_seconds(data: bytes) -> float | None:
    """A video's length from its MP4 movie header (mvhd), or None."""
    at = data.find(b"mvhd")
    if at < 4 or at + 24 > len(data):
        return None
    version = data[at + 4]
    if version == 1 and at + 36 <= len(data):
        scale, length = struct.unpack(">IQ", data[at + 24 : at + 36])
    else:
        scale, length = struct.unpack(">II", data[at + 16 : at + 24])
    return length / scale if scale else None


def audio_bound(data: bytes) -> int:
    """The most seconds a provider's word can bill for an upload: what its bytes carry at 16 kbit/s."""
    return max(1, math.ceil(len(data) / MIN_AUDIO_BYTES_PER_SECOND))


def audio_seconds(value: TaskInput, said: object = None) -> int:
    """The seconds billed for an upload: the provider's word held to audio_bound, but never less than
    its header's length (a header can be edited to say less; the provider heard the audio); without
    the word, the header's length, else the bound. Never less than the bytes last at the highest rate
    audio has; rounded up, at least 1."""
    header = header_seconds(value.data)
    if _is_number(said) and said > 0:
        seconds = max(header or 0, min(said, audio_bound(value.data)))
    else:
        seconds = audio_bound(value.data) if header is None else header
    return max(1, math.ceil(seconds), math.ceil(len(value.data) / MAX_AUDIO_BYTES_PER_SECOND))


# --- calling providers -------------------------------------------------------------------------


def _hub_path(route: Route) -> str:
    """The provider model's URL path, each segment percent-encoded (as aiohttp would send it: the
    Router's client and the Registry's checks call the same URL)."""
    return tasks.HUB_PATH.format(model=quote(route.provider_model, safe="/"))


def _multipart(fields: dict[str, str], file: bytes, media_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    name = f"audio.{_EXTENSIONS.get(media_type, 'bin')}"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
    parts.append(f"{head}Content-Type: {media_type}\r\n\r\n".encode() + file + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class TaskCall:
    """One task request as each route's provider is called for it (provider_api.TaskRequest)."""

    value: TaskInput

    @property
    def task(self) -> Task:
        return self.value.task

    def streams(self, route: Route) -> bool:
        return self.value.route == OPENAI_FORMAT and self.task.name == "text-to-speech"

    def prepare(self, route: Route) -> tuple[str, bytes, str]:
        if route.provider.format_of(self.task.name) == OPENAI_FORMAT:
            return self._openai(route)
        value = self.value
        if value.data and not value.parameters:
            return _hub_path(route), value.data, value.media_type
        inputs = base64.b64encode(value.data).decode() if value.data else value.inputs
        parameters = value.parameters
        if self.task.name == "text-to-speech" and value.route == OPENAI_FORMAT:
            parameters = {**parameters, **value.options}
        body = {"inputs": inputs, **({"parameters": parameters} if parameters else {})}
        return _hub_path(route), orjson.dumps(body), JSON_TYPE

    def _openai(self, route: Route) -> tuple[str, bytes, str]:
        value, model, path = self.value, route.provider_model, self.task.openai_path
        if self.task.name == "automatic-speech-recognition":
            fields = {"model": model, "response_format": "verbose_json"}
            fields.update({k: str(v) for k, v in value.options.items() if k != "response_format"})
            body, content_type = _multipart(fields, value.data, value.media_type)
            return path, body, content_type
        if self.task.name == "text-to-speech":
            options = value.options or {"voice": DEFAULT_VOICE, "response_format": "wav"}
            return path, orjson.dumps({"model": model, "input": value.inputs, **options}), JSON_TYPE
        # Of the hub's parameters, OpenAI's shape has dimensions only.
        dimensions = {"dimensions": value.parameters["dimensions"]} if "dimensions" in value.parameters else {}
        payload = {"model": model, "input": value.inputs, "encoding_format": "float", **dimensions}
        return path, orjson.dumps(payload), JSON_TYPE

    def accept(self, route: Route, data: bytes, content_type: str, whole: bool) -> Any:
        """The provider's answer, checked for the task (AttemptFailed when it is not valid)."""
        if self.task.answers != tasks.JSON:
            if not content_type.startswith(self.task.answers + "/") or not data:
                raise AttemptFailed(f"answered 200 without {self.task.answers} (got {content_type or 'no type'})")
            return data
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise AttemptFailed("answered 200 with a body that is not JSON") from None
        name = self.task.name
        if name == "feature-extraction":
            return self._vectors(route, answer)
        if name == "sentence-similarity":
            return self._scores(answer)
        if not isinstance(answer, _ANSWER_TYPES.get(name, (list,))):
            raise AttemptFailed(f"answered 200 without the {name} answer's shape")
        if name == "automatic-speech-recognition" and not isinstance(answer.get("text"), str):
            raise AttemptFailed("answered 200 without a transcript's text")
        return _writable(answer)

    def _vectors(self, route: Route, answer: object) -> dict:
        """{"vectors": [[float, ...], ...], "tokens": the provider's count or None}."""
        tokens = None
        if route.provider.format_of(self.task.name) == OPENAI_FORMAT:
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise AttemptFailed("answered 200 without a 'data' list of embeddings")
            vectors = [i.get("embedding") for i in sorted(items, key=lambda i: _index(i.get("index")))]
            usage = answer.get("usage") if isinstance(answer, dict) else None
            tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        else:
            single = isinstance(self.value.inputs, str) and isinstance(answer, list) and answer
            vectors = [answer] if single and not isinstance(answer[0], list) else answer
        count = len(self.value.inputs) if isinstance(self.value.inputs, list) else 1
        if not isinstance(vectors, list) or len(vectors) != count or not all(map(_is_vector, vectors)):
            raise AttemptFailed(f"answered 200 without {count} embedding vector(s) of at most {MAX_DIMENSIONS} numbers")
        if self.value.options.get("encoding_format") == "base64" and not all(map(_fits_float32, vectors)):
            raise AttemptFailed("answered 200 with an embedding number past float32's range (asked for base64)")
        return {"vectors": vectors, "tokens": tokens}

    def _scores(self, answer: object) -> list:
        count = len(self.value.inputs["sentences"])
        if not isinstance(answer, list) or len(answer) != count or not all(map(_is_number, answer)):
            raise AttemptFailed(f"answered 200 without {count} similarity scores")
        return answer


def _index(value: object) -> int:
    return value if isinstance(value, int) else 0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_vector(value: object) -> bool:
    return isinstance(value, list) and 0 < len(value) <= MAX_DIMENSIONS and all(map(_is_number, value))


def _fits_float32(vector: list[float]) -> bool:
    return max(map(abs, vector)) <= FLOAT32_MAX


def _writable(answer: Any) -> Any:
    """The answer, if it can be written back to the caller: orjson reads JSON nested 1,024 levels deep
    but writes at most 254 (params.dumped, the same limit for a caller's body)."""
    try:
        params.dumped(answer)
    except ApiError:
        raise AttemptFailed("answered 200 with JSON nested too deeply to pass on") from None
    return answer


# --- answering the caller ----------------------------------------------------------------------


def _embedding(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@dataclass(frozen=True)
class Answer:
    """What the caller gets: the body and its content type."""

    data: bytes
    content_type: str = JSON_TYPE


def render(call: TaskCall, route: Route, model: str, result: Any, content_type: str, units: Bill) -> Answer:
    """The provider's checked answer in the caller's shape, the provider's secrets redacted."""
    redactor, value = route.provider.redactor, call.value
    if isinstance(result, bytes):
        return Answer(redactor.binary(result), content_type)  # refused (502) when it carries a secret
    name = call.task.name
    if name == "feature-extraction":
        vectors = result["vectors"]
        # Through the redactor too: a number can hold a secret, and so can float32s packed as base64.
        if value.route == HUB_FORMAT:
            return Answer(redactor.dumps(vectors[0] if isinstance(value.inputs, str) else vectors))
        encoding = value.options["encoding_format"]
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(v, encoding)} for i, v in enumerate(vectors)
        ]
        cost = units.estimate(route.provider.prices.get(route.provider_model), name)  # the record's estimate
        usage = {"prompt_tokens": units.input_tokens, "total_tokens": units.input_tokens,
                 "cost": cost / NANO_PER_USD, "cost_nano_usd": cost}  # fmt: skip
        return Answer(redactor.dumps({"object": "list", "data": data, "model": model, "usage": usage}))
    if name == "automatic-speech-recognition":
        text = redactor.text(result["text"])
        response_format = value.options.get("response_format", "json") if value.route == OPENAI_FORMAT else "json"
        if response_format == "text":
            return Answer(text.encode() + b"\n", "text/plain; charset=utf-8")
        if response_format == "verbose_json":
            language = result.get("language") if isinstance(result.get("language"), str) else ""
            segments = result.get("segments") if isinstance(result.get("segments"), list) else []
            verbose = {"task": "transcribe", "language": language or value.options.get("language", ""),
                       "duration": units.units, "text": text, "segments": segments}  # fmt: skip
            return Answer(redactor.dumps(verbose))
        return Answer(orjson.dumps({"text": text}))
    return Answer(redactor.dumps(result))


# --- billing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bill:
    """An answer's ledger usage: the task's unit and count, and the fields the older units fill."""

    unit: str
    units: int
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0

    def estimate(self, price: Price | None, task: str) -> int:
        """What the prices give for it (the per-unit price for seconds and characters)."""
        per_unit = self.units if self.unit in (tasks.AUDIO_SECOND, tasks.CHARACTER, tasks.VIDEO_SECOND) else 0
        return estimate_nano_usd(price, task, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                                 images=self.images, units=per_unit)  # fmt: skip


def _tokens(texts: list[str]) -> int:
    """Tokens of texts as prompts are estimated (~4 bytes a token, at least one each)."""
    return saturated(sum(len(t.encode()) // 4 + 1 for t in texts))


def _token_bound(texts: list[str]) -> int:
    """The most tokens texts can hold: a byte each, and two markers per text."""
    return saturated(sum(len(t.encode()) + 2 for t in texts))


def _bill(task: Task, input_tokens: int = 0, output_tokens: int = 0, units: int = 1) -> Bill:
    unit = task.unit
    if unit == tasks.INPUT_TOKEN:
        return Bill(unit, input_tokens, input_tokens=input_tokens)
    if unit == tasks.TOKEN:
        return Bill(unit, saturated(input_tokens + output_tokens), input_tokens, output_tokens)
    if unit == tasks.IMAGE:
        return Bill(unit, units, images=units)
    return Bill(unit, units)


def output_bound(value: TaskInput) -> int:
    """The most output tokens a token task's request can be billed: the largest OUTPUT_TOKEN_PARAMETERS
    value it gives (a positive integer, at most params.MAX_OUTPUT_TOKENS), else DEFAULT_OUTPUT_TOKENS."""
    nested = value.parameters.get("generate_parameters")
    places = (value.parameters, nested if isinstance(nested, dict) else {})
    asked = [place[name] for place in places for name in OUTPUT_TOKEN_PARAMETERS if _is_count(place.get(name))]
    return min(max(asked), params.MAX_OUTPUT_TOKENS) if asked else DEFAULT_OUTPUT_TOKENS


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _generated(task: Task, answer: list) -> list[str]:
    """The texts a token task's answer generated: its GENERATED_FIELDS field of each item only."""
    name = GENERATED_FIELDS[task.name]
    return [item[name] for item in answer if isinstance(item, dict) and isinstance(item.get(name), str)]


def reservation(value: TaskInput) -> Bill:
    """The usage a reservation holds before the provider answers: the most the request can use."""
    task = value.task
    if task.unit == tasks.AUDIO_SECOND:  # the provider's word can be believed up to the bound
        return _bill(task, units=audio_seconds(value, said=audio_bound(value.data)))
    if task.unit == tasks.CHARACTER:
        return _bill(task, units=len(value.inputs))
    if task.unit == tasks.VIDEO_SECOND:
        return _bill(task, units=MAX_VIDEO_SECONDS)
    if task.unit == tasks.TOKEN:
        return _bill(task, _token_bound(value.texts), output_bound(value))
    return _bill(task, _token_bound(value.texts))


def served_bill(call: TaskCall, result: Any) -> Bill:
    """The usage of a served answer, each count bounded by what the request could use."""
    value, task = call.value, call.task
    if task.unit == tasks.INPUT_TOKEN:
        said = result.get("tokens") if isinstance(result, dict) else None
        bound = _token_bound(value.texts)
        given = isinstance(said, int) and not isinstance(said, bool) and 0 < said <= bound
        return _bill(task, said if given else _tokens(value.texts))
    if task.unit == tasks.AUDIO_SECOND:
        return _bill(task, units=audio_seconds(value, result.get("duration")))
    if task.unit == tasks.VIDEO_SECOND:
        seconds = mp4_seconds(result) if isinstance(result, bytes) else None
        return _bill(task, units=max(1, min(MAX_VIDEO_SECONDS, math.ceil(seconds or 1))))
    if task.unit == tasks.TOKEN:
        output = min(_tokens(_generated(task, result)), output_bound(value))
        return _bill(task, _tokens(value.texts), output)
    return reservation(value) if task.unit == tasks.CHARACTER else _bill(task)
