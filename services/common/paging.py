"""Page sizes and opaque page tokens of the listings (AIP-158).

A page token is the listing's name (a listing under a parent: that parent's, of_parent) and the
last key of the previous page, base64url-encoded: it means nothing to callers, and a token that is
not one of this listing's shape (cut short, another listing's or another parent's, not base64) is
a 400 `invalid_page_token` rather than a page that silently starts somewhere else. Tokens are not
signed: one written by hand in this shape names a position in a listing its caller may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

from services.common.errors import ApiError, invalid_argument

MAX_PAGE_SIZE = 1_000  # page_size (0: the listing's default)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_TOKEN = 200  # characters of a page_token
# A listing is one answer that Envoy transcodes in one buffer (e.g. the partners listing of one
# provider: new mappings are refused once it would pass this size).
MAX_LISTING_BYTES = 768 * 1024  # Envoy's buffer is 1 MiB (the listener's per-connection limit)


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


def fitting(sizes: Iterable[int], budget: int = MAX_LISTING_BYTES) -> int:
    """How many items of a page (their encoded sizes in order) fit in one answer Envoy
    can transcode: at least one, so that every page makes progress."""
    total = kept = 0
    for size in sizes:
        total += size
        if kept and total > budget:
            break
        kept += 1
    return kept
