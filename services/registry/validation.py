"""Input checks shared by the Registry's APIs; each failure is a 400 naming the field."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from services.common.errors import bad_request

# The hub's tasks (pipeline tags), plus "conversational" for chat models.
KNOWN_TASKS = frozenset(
    [
        "conversational",
        "text-generation",
        "text2text-generation",
        "image-text-to-text",
        "text-to-image",
        "image-to-image",
        "image-to-text",
        "text-to-video",
        "image-to-video",
        "video-text-to-text",
        "text-to-speech",
        "text-to-audio",
        "audio-to-audio",
        "automatic-speech-recognition",
        "audio-classification",
        "audio-text-to-text",
        "voice-activity-detection",
        "feature-extraction",
        "sentence-similarity",
        "text-ranking",
        "fill-mask",
        "summarization",
        "translation",
        "question-answering",
        "table-question-answering",
        "text-classification",
        "token-classification",
        "zero-shot-classification",
        "image-classification",
        "zero-shot-image-classification",
        "object-detection",
        "zero-shot-object-detection",
        "image-segmentation",
        "mask-generation",
        "depth-estimation",
        "keypoint-detection",
        "image-feature-extraction",
        "unconditional-image-generation",
        "visual-question-answering",
        "document-question-answering",
        "visual-document-retrieval",
        "video-classification",
        "image-to-3d",
        "text-to-3d",
        "any-to-any",
        "tabular-classification",
        "tabular-regression",
        "time-series-forecasting",
        "reinforcement-learning",
        "robotics",
        "graph-ml",
        "other",
    ]
)
# Models a "conversational" mapping may point at (when tagged "conversational").
CONVERSATIONAL_PIPELINES = frozenset({"text-generation", "image-text-to-text"})
STATUSES = ("live", "staging")
ROLES = ("read", "write", "admin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")


def require(value: str, param: str) -> str:
    if not value.strip():
        raise bad_request(f"{param} is required", param)
    return value


def check_name(value: str, param: str) -> str:
    """Org, user, provider and token names: letters, digits, '.', '_', '-'."""
    require(value, param)
    if not NAME.match(value):
        raise bad_request(
            f"{param} must be 1-96 letters, digits, '.', '_' or '-', starting with a letter or digit", param
        )
    return value


def check_task(task: str, param: str = "task") -> str:
    require(task, param)
    if task not in KNOWN_TASKS:
        raise bad_request(f"{param} {task!r} is not a known task", param)
    return task


def check_status(status: str, param: str = "status") -> str:
    if status not in STATUSES:
        raise bad_request(f'{param} must be "live" or "staging", not {status!r}', param)
    return status


def check_role(role: str) -> str:
    if role not in ROLES:
        raise bad_request(f"role must be one of {', '.join(ROLES)}, not {role!r}", "role")
    return role


def check_url(url: str, param: str) -> str:
    """An http(s) URL; the message never repeats the value (it may hold credentials)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise bad_request(f"{param} must be an http:// or https:// URL", param)
    if "@" in parsed.netloc:  # shown to every caller by GET /v1/providers: secrets go in their own fields
        raise bad_request(f"{param} must not carry credentials (user:password@host)", param)
    return url.rstrip("/")


def check_header_name(name: str, param: str) -> str:
    if not HEADER_NAME.match(name):
        raise bad_request(f"{param} must be an HTTP header name", param)
    return name


def check_secret(value: str, param: str) -> str:
    """Secrets are sent in headers: printable ASCII without line breaks. Never echoed."""
    if value and not all(" " <= c <= "~" for c in value):
        raise bad_request(f"{param} must be printable ASCII on one line", param)
    return value


def check_tags(tags: list[str], param: str = "tags") -> tuple[str, ...]:
    """Non-empty, no empty tag, no duplicate; returned sorted."""
    if not tags:
        raise bad_request(f"{param} must list at least one tag", param)
    if any(not tag.strip() for tag in tags):
        raise bad_request(f"{param} must not contain an empty tag", param)
    if "," in "".join(tags):
        raise bad_request(f"{param} must not contain ','", param)
    duplicates = sorted({tag for tag in tags if tags.count(tag) > 1})
    if duplicates:
        raise bad_request(f"{param} must not repeat a tag: {', '.join(duplicates)}", param)
    return tuple(sorted(tags))


def check_model_fits_task(model_id: str, pipeline_tag: str, tags: tuple[str, ...], task: str) -> None:
    """The model's pipeline_tag is the task, or a conversational-tagged chat model for "conversational"."""
    if pipeline_tag == task:
        return
    if task == "conversational" and pipeline_tag in CONVERSATIONAL_PIPELINES and "conversational" in tags:
        return
    if task == "conversational":
        raise bad_request(
            f"task 'conversational' needs a model whose pipeline_tag is text-generation or image-text-to-text "
            f"and that is tagged 'conversational'; {model_id!r} has pipeline_tag {pipeline_tag!r}"
            + ("" if "conversational" in tags else " and no 'conversational' tag"),
            "task",
        )
    raise bad_request(f"task {task!r} does not match the pipeline_tag {pipeline_tag!r} of {model_id!r}", "task")


def page_size(requested: int, default: int = 100, most: int = 1000) -> int:
    """A listing's page size: the default when 0, at most `most`."""
    if requested < 0:
        raise bad_request("page_size must not be negative", "page_size")
    return min(requested or default, most)
