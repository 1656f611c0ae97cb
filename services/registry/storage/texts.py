"""Text from outside that the Registry stores per mapping: a health probe's failure reason, which
comes from the partner's upstream (its error message, a content type, ...) and is kept as the
mapping's status_reason, its probe state's last_failure and its health record's last_probe_failure.

Bounded where it is recorded (services/registry/domain/probes.py and the writes in queries.py and
health_records.py): no listing, record or change notice grows with what an upstream sends.
"""

from __future__ import annotations

import re

MAX_REASON = 200  # characters of a probe's failure reason, as stored
CUT_MARK = "…"  # the last character of a reason that was cut
# Control characters (C0, DEL, C1) and lone surrogates: a reason is one line of text; JSON writes
# each control character as 6 bytes, PostgreSQL cannot store NUL and UTF-8 cannot encode a lone
# surrogate (the write of the probe's outcome would fail, and the mapping never turn to error).
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def one_line(text: str) -> str:
    """`text` with each unsafe character a space (before it is redacted: a secret written with one
    in place of its space would otherwise become the secret after the redactor read it)."""
    return UNSAFE.sub(" ", text)


def bounded_reason(text: str, most: int = MAX_REASON) -> str:
    """`text` as stored: one line, at most `most` characters, cut on a character (a code point:
    never inside its UTF-8 bytes) with CUT_MARK last when it was longer. Idempotent: a stored
    reason is stored again unchanged."""
    text = one_line(text)
    return text if len(text) <= most else text[: most - 1] + CUT_MARK
