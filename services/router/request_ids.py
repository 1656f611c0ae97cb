"""Request ids: UUIDv7 (RFC 9562), a millisecond timestamp then 74 random bits.

Time-ordered ids land next to each other in the ledger's indexes on request_id (its primary key
and the reconciler's), so a batch of inserts touches a few pages at the right edge of each
B-tree instead of one random page per record; and one costs a quarter of str(uuid.uuid4()).
The random bits come from os.urandom read a few hundred ids at a time: the same source, one
system call per RANDOM_BATCH ids instead of one per id.
"""

from __future__ import annotations

import os
import time

# The Router's request id of an answer (as in the ledger), in the answer's metadata; Envoy presents
# it to REST callers under OpenAI's request id header (envoy/answers.lua).
REQUEST_ID_METADATA_KEY = "switchboard-request-id"

_VERSION_AND_VARIANT = (0x7 << 76) | (0x2 << 62)
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 80) - 1)
_RANDOM_BYTES = 10  # of an id (74 of its 80 bits are kept)
RANDOM_BATCH = 256  # ids' random bytes read from os.urandom at once
_random = memoryview(b"")


def _random_bits() -> int:
    """The next id's 80 random bits, each byte used once. Not thread-safe: ids are drawn on the
    event loop's thread only (the servicer's)."""
    global _random
    if not _random:
        _random = memoryview(os.urandom(_RANDOM_BYTES * RANDOM_BATCH))
    taken, _random = _random[:_RANDOM_BYTES], _random[_RANDOM_BYTES:]
    return int.from_bytes(taken)


def _forget_random() -> None:
    """A forked child draws bytes of its own, never its parent's."""
    global _random
    _random = memoryview(b"")


os.register_at_fork(after_in_child=_forget_random)


def request_id() -> str:
    """A new UUIDv7 in its canonical text form."""
    value = (time.time_ns() // 1_000_000) << 80 | (_random_bits() & _RANDOM_BITS) | _VERSION_AND_VARIANT
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
