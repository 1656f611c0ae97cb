"""Page sizes and opaque page tokens of the listings (AIP-158).

A page token is the listing's name (a listing under a parent: that parent's, of_parent) and the
last key of the previous page, base64url-encoded: it means nothing to callers, and a token that is
not one of this listing's shape (cut short, another listing's or another parent's, not base64) is
a 400 `invalid_page_token` rather than a page that silently starts somewhere else. Tokens are not
signed: one written by hand in this shape names a position in a listing its caller may read anyway.

A page also ends early (AIP-158 allows fewer items than page_size, with a next_page_token) once its
JSON, as Envoy's transcoder would write it, would pass MAX_PAGE_BYTES (`fitted_page`): the size of a
page is bounded by this budget whatever its items hold, not by page_size times the largest item.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.errors import ApiError, invalid_argument

MAX_PAGE_SIZE = 1_000  # page_size (0: the listing's default)
DEFAULT_PAGE_SIZE = 100
# Characters of a page_token: the longest a listing issues is base64 of a provider's health listing
# (`providerHealth/` and a 96-character provider) and a key of a provider and its model id (256
# characters, up to 4 bytes each in UTF-8): about 1,650.
MAX_PAGE_TOKEN = 2048
# A listing is one answer that Envoy transcodes in one buffer (e.g. the partners listing of one
# provider: new mappings are refused once it would pass this size).
MAX_LISTING_BYTES = 768 * 1024
# One page of a paged listing, as JSON, whatever its items hold (Envoy holds an answer whole)
# (a page of 1,000 mappings with long provider model ids and probe reasons was megabytes).
MAX_PAGE_BYTES = 512 * 1024
# A page's own fields around its items: field names, brackets and a next_page_token (a listing's
# name and one key, base64: MAX_PAGE_TOKEN at most).
PAGE_ENVELOPE_BYTES = 4096
# What Envoy's JSON writer (protobuf's) escapes as \uXXXX (a pair of them past U+FFFF) that Python's
# json, not escaping non-ASCII, writes as its UTF-8: '<', '>', DEL and C1 controls, and format characters.
ESCAPED_BY_ENVOY_ONLY = re.compile(
    "[<>\x7f-\x9f\u00ad\u0600-\u0603\u06dd\u070f\u17b4\u17b5\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u206a-\u206f\ufeff\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)

_CONTROL_IN_KEY = re.compile("[\x00-\x09\x0b-\x1f\x7f]")  # a two-part key's separator, "\n", aside

M = TypeVar("M", bound=Message)


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    """A listing's page size: the default when 0, 400 outside 0..MAX_PAGE_SIZE."""
    if not 0 <= requested <= MAX_PAGE_SIZE:
        raise invalid_argument("INVALID_REQUEST", f"page_size must be between 0 and {MAX_PAGE_SIZE}", "page_size")
    return requested or default


def of_parent(listing: str, parent: str) -> str:
    """The name of a listing under one parent (a provider's mappings, a user's tokens, an org's
    members): a token of another parent's listing is not one of this listing. The parent as a short
    digest: a long parent name must not push tokens past MAX_PAGE_TOKEN."""
    return f"{listing}/{hashlib.sha256(parent.encode()).hexdigest()[:12]}"


def next_page_token(listing: str, last_key: str) -> str:
    """The token of the page after last_key in `listing`."""
    return base64.urlsafe_b64encode(f"{listing}\n{last_key}".encode()).decode().rstrip("=")


def key_after(listing: str, token: str) -> str:
    """The key a page token of `listing` resumes after; "" for the first page; 400 for any other token."""
    if not token:
        return ""
    try:
        if len(token) > MAX_PAGE_TOKEN:
            raise ValueError
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        text = ""
    name, newline, key = text.partition("\n")
    if name != listing or not newline or not key or next_page_token(listing, key) != token:
        raise _invalid_page_token()
    if _CONTROL_IN_KEY.search(key):  # no listing's key holds one (a NUL is no text PostgreSQL can compare)
        raise _invalid_page_token()
    return key


def pair_after(listing: str, token: str) -> tuple[str, str] | None:
    """The two-part key ("first\nsecond") a page token of `listing` resumes after; None for the first
    page; 400 for any other token."""
    key = key_after(listing, token)
    if not key:
        return None
    first, newline, second = key.partition("\n")
    if not newline:
        raise _invalid_page_token()
    return first, second


def number_after(listing: str, token: str) -> int:
    """The number a page token of `listing` (whose keys are numbers) resumes after; 0 for the
    first page; 400 for any other token (one made up to carry something else too)."""
    key = key_after(listing, token)
    if key and not (key.isascii() and key.isdigit()):
        raise _invalid_page_token()
    return int(key or 0)


def _invalid_page_token() -> ApiError:
    return invalid_argument("INVALID_PAGE_TOKEN", "page_token is not a next_page_token of this listing", "page_token")


def json_bytes(value: object) -> int:
    """At least the size of JSON data (dicts, lists, strings, numbers, booleans) as Envoy's
    transcoder writes it: UTF-8, control characters, quotes and backslashes escaped as Python's
    json writes them, and the characters only Envoy escapes counted as their escapes. The space
    json writes after each ',' and ':' (Envoy writes none) covers a double's digits being written
    differently."""
    text = json.dumps(value, ensure_ascii=False)
    escaped = ESCAPED_BY_ENVOY_ONLY.findall(text)
    size = len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate (never valid in a message) as 3 bytes
    return size + sum((12 if c > "\uffff" else 6) - len(c.encode()) for c in escaped)


def message_json_bytes(message: Message) -> int:
    """At least the size of a message as Envoy's transcoder writes it (every field without
    presence printed, as its print option always_print_primitive_fields says)."""
    return json_bytes(json_format.MessageToDict(message, always_print_fields_with_no_presence=True))


def fitted(messages: Iterable[M], budget: int = MAX_PAGE_BYTES) -> list[M]:
    """The first of a page's items that fit one answer of at most `budget` bytes of JSON: at
    least one, so that every page makes progress (no item any listing allows is larger than the
    budget). `messages` is read lazily: items past the first that does not fit are never built."""
    page: list[M] = []
    total = PAGE_ENVELOPE_BYTES
    for message in messages:
        total += message_json_bytes(message) + 1  # its comma
        if page and total > budget:
            break
        page.append(message)
    return page


def fitted_page(listing: str, keys: Sequence[str], messages: Iterable[M], more: bool) -> tuple[list[M], str]:
    """One page of `listing`: the first messages that fit (keys[i] is the key of the i-th) and the
    next page's token, which resumes after the last one kept when it ended early or `more` follow."""
    page = fitted(messages)
    ended_early = len(page) < len(keys)
    return page, next_page_token(listing, keys[len(page) - 1]) if page and (more or ended_early) else ""
