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
# Envoy's JSON writes '<' and '>' as \u003c and \u003e (5 bytes more than the character);
# Python's json leaves them as they are.
ESCAPED_BY_ENVOY_ONLY = ("<", ">")

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
    return key


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
    transcoder writes it. Python's json.dumps escapes every non-ASCII character (6 bytes, 12 for
    one past U+FFFF), never less than Envoy's UTF-8 or escape of it, and every control character,
    quote and backslash as Envoy does; only '<' and '>' are added. The space it writes after each
    ',' and ':' (Envoy writes none) covers a double's digits being written differently."""
    text = json.dumps(value)
    return len(text) + 5 * sum(text.count(c) for c in ESCAPED_BY_ENVOY_ONLY)


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
