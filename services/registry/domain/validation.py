"""Input checks shared by the Registry's APIs; each failure is a 400 naming the field.

Every string the Registry accepts has a maximum length, every list a maximum count
and every number a range: the table below is the one place they are set (docs/registry.md
repeats it). Every check is linear in its input, and no message repeats more than
SHOWN_CHARS characters of what the caller sent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sized
from urllib.parse import urlparse

from services.common.accounts import MAX_NAME, NAME
from services.common.errors import invalid_argument
from services.common.paging import MAX_LISTING_BYTES, MAX_PAGE_SIZE, page_size  # noqa: F401  (re-exported)
from services.common.providers import reserved_header
from services.common.secrets import MIN_SECRET_LENGTH
from services.common.tasks import OPENAI_FORMAT, SERVED_TASKS, formats_of

# --- limits (one table) ------------------------------------------------------------------------
MAX_MODEL_ID_PART = 96  # hub model id "namespace/name": each part, as the hub allows
MAX_MODEL_ID = 200  # hub model id as a whole
MAX_PROVIDER_MODEL = 256  # a provider's own model id
MAX_TAG = 256  # one tag ("base_model:adapter:<model id>" needs more than 200)
MAX_TAGS_PER_FILTER = 100  # tags of one tag-filter mapping
MAX_TAGS_PER_MODEL = 1_000  # tags of one catalog model
MAX_TASK = 64  # a task or pipeline tag
MAX_TASKS = 64  # tasks of one provider
MAX_URL = 2_048  # baseUrl, billingUrl
MAX_HEADER_NAME = 128  # requestIdHeader
MAX_SECRET = 4_096  # apiKey, billingAuthorization
MAX_PATH = 1_024  # adapterWeightsPath
MAX_MODELS_PER_BATCH = 10_000  # models of one batchUpsert
MAX_PRICES = 10_000  # prices of one provider
MAX_PROVIDERS = 100  # providers named in one request (preferences, resolution)
MAX_RANK = 1_000_000  # |defaultRank|
MAX_NANO_USD = 2**63 - 1  # prices, nano-USD, 0 or more
SHOWN_CHARS = 64  # of the caller's input, in any message

# Names no user or org may have (compared case-insensitively): they would pass for Switchboard
# itself, its operators or one of its services. The operators' own account ("_operators",
# services/common/accounts.py) cannot be a name at all: names start with a letter or digit.
RESERVED_NAMES = frozenset(
    {
        "admin",
        "administrator",
        "administrators",
        "api",
        "billing",
        "help",
        "hub",
        "internal",
        "me",
        "models",
        "null",
        "operator",
        "operators",
        "registry",
        "root",
        "router",
        "security",
        "settings",
        "superuser",
        "support",
        "switchboard",
        "system",
        "undefined",
        "user",
        "users",
        "org",
        "orgs",
    }
)

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
_MODEL_PART = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_MODEL_ID_PART - 1}}}"
MODEL_ID = re.compile(rf"^(?:{_MODEL_PART}/)?{_MODEL_PART}\Z")
HEADER_NAME = re.compile(rf"^[A-Za-z0-9!#$%&'*+.^_`|~-]{{1,{MAX_HEADER_NAME}}}\Z")
PRINTABLE = re.compile(r"^[ -~]*\Z")  # printable ASCII, one line (\Z: $ would let a last line break in)
# What a secret may hold: printable ASCII on one line, no quote and no backslash (JSON writes
# those escaped, so their redaction from JSON answers could not be exact).
SECRET_CHARACTERS = re.compile(r"^[ !#-\[\]-~]*\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(value: str) -> str:
    """The caller's input as a message may quote it: a short prefix, quoted."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


def require(value: str, param: str, most: int = MAX_NAME) -> str:
    """A non-blank string of at most `most` characters, without control characters."""
    if not value.strip():
        raise invalid_argument("INVALID_REQUEST", f"{param} is required", param)
    check_length(value, most, param)
    if CONTROL.search(value):
        raise invalid_argument("INVALID_REQUEST", f"{param} must not contain control characters", param)
    return value


def check_length(value: str, most: int, param: str) -> str:
    if len(value) > most:
        raise invalid_argument("INVALID_REQUEST", f"{param} must be at most {most} characters, not {len(value)}", param)
    return value


def check_count(items: Sized, most: int, param: str) -> None:
    if len(items) > most:
        raise invalid_argument("INVALID_REQUEST", f"{param}: at most {most} per request, got {len(items)}", param)


def check_range(value: int, least: int, most: int, param: str) -> int:
    if not least <= value <= most:
        raise invalid_argument("INVALID_REQUEST", f"{param} must be between {least} and {most}", param)
    return value


def check_unique(items: Iterable[str], param: str, what: str) -> None:
    """No item twice: one pass with a Counter (linear), the first few repeats named."""
    repeated = [item for item, seen in Counter(items).items() if seen > 1]
    if repeated:
        named = ", ".join(shown(item) for item in sorted(repeated)[:3])
        raise invalid_argument("INVALID_REQUEST", f"{param} must not repeat a {what}: {named}", param)


def check_name(value: str, param: str) -> str:
    """Org, user, provider and token names: letters, digits, '.', '_', '-'."""
    require(value, param)
    if not NAME.fullmatch(value):
        raise invalid_argument(
            "INVALID_REQUEST",
            f"{param} must be 1-{MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit",
            param,
        )
    return value


def check_account_name(value: str, param: str = "name") -> str:
    """A user or org name: a name, and not a reserved one."""
    check_name(value, param)
    if value.lower() in RESERVED_NAMES:
        raise invalid_argument("RESERVED_NAME", f"{param} {shown(value)} is reserved", param)
    return value


def check_model_id(value: str, param: str) -> str:
    """A hub model id as the hub allows it: "namespace/name" (or a bare name), each part
    1-96 letters, digits, '.', '_' or '-' starting with a letter or digit."""
    require(value, param, MAX_MODEL_ID)
    if not MODEL_ID.match(value):
        raise invalid_argument(
            "INVALID_MODEL_ID",
            f'{param} {shown(value)} is not a hub model id ("namespace/name", each part 1-{MAX_MODEL_ID_PART} '
            "letters, digits, '.', '_' or '-')",
            param,
        )
    return value


def check_provider_model(value: str, param: str = "providerModel") -> str:
    return require(value, param, MAX_PROVIDER_MODEL)


def check_mapped_provider_model(value: str, param: str = "providerModel") -> str:
    """A new mapping's provider model id: it may go in the path of the provider's URL (the hub's
    format), so no segment of it may be empty, "." or ".." (a path that leaves the provider's base
    URL). Only new mappings are held to it: names that mappings made before carry stay usable."""
    check_provider_model(value, param)
    if any(segment in ("", ".", "..") for segment in value.split("/")):
        raise invalid_argument(
            "INVALID_REQUEST", f"{param} {shown(value)} has an empty, '.' or '..' path segment", param
        )
    return value


def check_task(task: str, param: str = "task") -> str:
    require(task, param, MAX_TASK)
    if task not in KNOWN_TASKS:
        raise invalid_argument("INVALID_REQUEST", f"{param} {shown(task)} is not a known task", param)
    return task


def check_served_task(task: str, param: str = "task") -> str:
    """A task a mapping may have: a known task that Switchboard serves (services/common/tasks.py)."""
    check_task(task, param)
    if task not in SERVED_TASKS:
        raise invalid_argument(
            "TASK_NOT_SERVED", f"{param} {task!r} is not served by Switchboard: {SERVED_LIST}", param
        )
    return task


SERVED_LIST = "a mapping's task must be one of " + ", ".join(SERVED_TASKS)


def check_task_formats(formats: Mapping[str, str], param: str = "taskFormats") -> None:
    """Each named task known, each format one the task can be called in (services/common/tasks.py)."""
    check_count(formats, MAX_TASKS, param)
    for task, chosen in formats.items():
        check_task(task, param)
        allowed = formats_of(task) if task in SERVED_TASKS else (OPENAI_FORMAT,)
        if chosen not in allowed:
            words = " or ".join(f'"{f}"' for f in allowed)
            raise invalid_argument("INVALID_REQUEST", f"{param}.{task} must be {words}", f"{param}.{task}")


def check_tasks(tasks: Iterable[str], param: str = "tasks") -> list[str]:
    tasks = list(tasks)
    check_count(tasks, MAX_TASKS, param)
    for task in tasks:
        check_task(task, param)
    check_unique(tasks, param, "task")
    return tasks


def check_status(status: str, param: str = "status") -> str:
    if status not in STATUSES:
        raise invalid_argument("INVALID_REQUEST", f'{param} must be "live" or "staging", not {shown(status)}', param)
    return status


def check_role(role: str) -> str:
    if role not in ROLES:
        raise invalid_argument("INVALID_REQUEST", f"role must be one of {', '.join(ROLES)}, not {shown(role)}", "role")
    return role


def check_base_url(url: str, param: str) -> str:
    """A provider's base URL: an http(s) URL that paths are appended to and every caller is shown
    (GET /v1/providers), so with no query or fragment: a key in one (?key=...) would be shown, and
    the paths appended after it would not reach the provider anyway."""
    base = check_url(url, param)
    parsed = urlparse(base)
    if parsed.query or parsed.fragment or url.endswith(("?", "#")):
        raise invalid_argument("INVALID_REQUEST", f"{param} must not carry a query or a fragment", param)
    return base


def check_url(url: str, param: str) -> str:
    """An http(s) URL; the message never repeats the value (it may hold credentials)."""
    check_length(url, MAX_URL, param)
    try:
        parsed = urlparse(url)
        hostname = parsed.hostname
    except ValueError:  # e.g. a malformed IPv6 literal
        hostname = None
    if not hostname or parsed.scheme not in ("http", "https") or CONTROL.search(url):
        raise invalid_argument("INVALID_REQUEST", f"{param} must be an http:// or https:// URL", param)
    if "@" in parsed.netloc:  # shown to every caller by GET /v1/providers: secrets go in their own fields
        raise invalid_argument("INVALID_REQUEST", f"{param} must not carry credentials (user:password@host)", param)
    return url.rstrip("/")


def check_header_name(name: str, param: str) -> str:
    if not HEADER_NAME.match(name):
        raise invalid_argument(
            "INVALID_REQUEST", f"{param} must be an HTTP header name of at most {MAX_HEADER_NAME} characters", param
        )
    return name


def check_request_id_header(name: str, param: str) -> str:
    """A header name an answer's metadata can carry: not one Switchboard or HTTP sets itself."""
    check_header_name(name, param)
    if reserved_header(name):
        raise invalid_argument("INVALID_REQUEST", f"{param} {name} is a header Switchboard or HTTP sets itself", param)
    return name


def check_secret(value: str, param: str) -> str:
    """Secrets are sent in headers: printable ASCII without line breaks, none (empty) or at least
    MIN_SECRET_LENGTH characters, the credential after an auth scheme too ("Bearer X": X), since a
    shorter one cannot be redacted from answers without cutting words out of them. Never echoed."""
    check_length(value, MAX_SECRET, param)
    if not SECRET_CHARACTERS.match(value):
        message = f"{param} must be printable ASCII on one line, without a quote or a backslash"
        raise invalid_argument("INVALID_REQUEST", message, param)
    credential = value.partition(" ")[2].strip()
    if value and min(len(value), len(credential or value)) < MIN_SECRET_LENGTH:
        raise invalid_argument(
            "INVALID_REQUEST",
            f"{param} must be at least {MIN_SECRET_LENGTH} characters long (its credential too, after a scheme)",
            param,
        )
    return value


def check_tags(tags: list[str], param: str = "tags") -> tuple[str, ...]:
    """A tag-filter's tags: 1-100, none empty, none with ',', none twice; returned sorted."""
    if not tags:
        raise invalid_argument("INVALID_REQUEST", f"{param} must list at least one tag", param)
    check_model_tags(tags, param, MAX_TAGS_PER_FILTER)
    if any("," in tag for tag in tags):
        raise invalid_argument("INVALID_REQUEST", f"{param} must not contain ','", param)
    check_unique(tags, param, "tag")
    return tuple(sorted(tags))


def check_model_tags(tags: list[str], param: str, most: int = MAX_TAGS_PER_MODEL) -> list[str]:
    """A catalog model's tags: at most `most`, each 1-256 characters."""
    check_count(tags, most, param)
    if any(not tag.strip() for tag in tags):
        raise invalid_argument("INVALID_REQUEST", f"{param} must not contain an empty tag", param)
    for tag in tags:
        require(tag, param, MAX_TAG)
    return tags


def check_model_fits_task(model_id: str, pipeline_tag: str, tags: tuple[str, ...], task: str) -> None:
    """The model's pipeline_tag is the task, or a conversational-tagged chat model for "conversational"."""
    if pipeline_tag == task:
        return
    if task == "conversational" and pipeline_tag in CONVERSATIONAL_PIPELINES and "conversational" in tags:
        return
    if task == "conversational":
        raise invalid_argument(
            "INVALID_REQUEST",
            f"task 'conversational' needs a model whose pipeline_tag is text-generation or image-text-to-text "
            f"and that is tagged 'conversational'; {shown(model_id)} has pipeline_tag {shown(pipeline_tag)}"
            + ("" if "conversational" in tags else " and no 'conversational' tag"),
            "task",
        )
    message = f"task {task!r} does not match the pipeline_tag {shown(pipeline_tag)} of {shown(model_id)}"
    raise invalid_argument("INVALID_REQUEST", message, "task")
