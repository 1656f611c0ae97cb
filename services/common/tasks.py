"""The tasks Switchboard serves: what each takes and answers, how a provider is called for it
(and names its request in its answer), and the unit it is sold in. One table, read by the Registry
(a task not here cannot be mapped), the Router (how to call a provider and bill the answer),
Billing, the reference provider and the documentation."""

from __future__ import annotations

from dataclasses import dataclass

# How a provider is called for a task: OpenAI's path and shape for it, or the hub's task format
# (POST <base_url>/models/<provider model> with {"inputs", "parameters"}, or raw bytes).
OPENAI_FORMAT = "openai"
HUB_FORMAT = "hub"
FORMATS = (OPENAI_FORMAT, HUB_FORMAT)
HUB_PATH = "/models/{model}"
# The response header that carries the provider's id of a request; its cost API is asked by that id.
DEFAULT_REQUEST_ID_HEADER = "Inference-Id"

# The units tasks are sold in (LedgerRecord.unit): one billed unit of the task's price.
TOKEN = "token"  # input plus output tokens, priced per input and per output token
INPUT_TOKEN = "input_token"  # embeddings: the input's tokens
IMAGE = "image"  # images made or read
AUDIO_SECOND = "audio_second"  # seconds of audio transcribed
CHARACTER = "character"  # characters of text spoken
VIDEO_SECOND = "video_second"  # seconds of video made
REQUEST = "request"  # one answer
UNITS = (TOKEN, INPUT_TOKEN, IMAGE, AUDIO_SECOND, CHARACTER, VIDEO_SECOND, REQUEST)

# What a hub task route takes as its body, and what it answers.
JSON = "json"
AUDIO = "audio"
IMAGE_BYTES = "image"
VIDEO = "video"


@dataclass(frozen=True)
class Task:
    """A task Switchboard serves."""

    name: str
    unit: str
    # OpenAI's provider path for the task; "" where OpenAI has no shape (hub format only).
    openai_path: str = ""
    takes: str = JSON
    answers: str = JSON

    @property
    def default_format(self) -> str:
        """How a provider is called for the task unless its registration says otherwise."""
        return OPENAI_FORMAT if self.openai_path else HUB_FORMAT


def _tasks(*tasks: Task) -> dict[str, Task]:
    return {task.name: task for task in tasks}


SERVED_TASKS: dict[str, Task] = _tasks(
    Task("conversational", TOKEN, "/v1/chat/completions"),
    Task("text-generation", TOKEN),
    Task("text-to-image", IMAGE, "/v1/images/generations", answers=IMAGE_BYTES),
    Task("feature-extraction", INPUT_TOKEN, "/v1/embeddings"),
    Task("sentence-similarity", INPUT_TOKEN),
    Task("automatic-speech-recognition", AUDIO_SECOND, "/v1/audio/transcriptions", takes=AUDIO),
    Task("text-to-speech", CHARACTER, "/v1/audio/speech", answers=AUDIO),
    Task("text-to-video", VIDEO_SECOND, answers=VIDEO),
    Task("image-to-image", IMAGE, takes=IMAGE_BYTES, answers=IMAGE_BYTES),
    Task("text-classification", REQUEST),
    Task("token-classification", REQUEST),
    Task("zero-shot-classification", REQUEST),
    Task("summarization", TOKEN),
    Task("translation", TOKEN),
    Task("question-answering", REQUEST),
    Task("fill-mask", REQUEST),
    Task("image-classification", IMAGE, takes=IMAGE_BYTES),
    Task("object-detection", IMAGE, takes=IMAGE_BYTES),
    Task("image-segmentation", IMAGE, takes=IMAGE_BYTES),
)


# Tasks called in OpenAI's shape only: their routes translate nothing else.
OPENAI_ONLY = frozenset({"conversational", "text-to-image"})


def formats_of(task: str) -> tuple[str, ...]:
    """The formats a provider may be called in for the task (its default first)."""
    entry = SERVED_TASKS[task]
    if entry.name in OPENAI_ONLY:
        return (OPENAI_FORMAT,)
    return (OPENAI_FORMAT, HUB_FORMAT) if entry.openai_path else (HUB_FORMAT,)


def format_of(task: str, registered: dict[str, str]) -> str:
    """How a provider with these registered formats is called for the task."""
    entry = SERVED_TASKS.get(task)
    if entry is None:
        return OPENAI_FORMAT
    chosen = registered.get(task, "")
    return chosen if chosen in formats_of(task) else entry.default_format


def served(task: str) -> Task | None:
    """The task's entry, or None when Switchboard does not serve it."""
    return SERVED_TASKS.get(task)
