"""Where a secret may hide in a text: the forms a provider may echo it in, and reading it back."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus, unquote


def json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in text)


def encodings(secret: str) -> list[str]:
    """The forms a provider may echo a secret in (each whole; recoverable() finds it inside others)."""
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(secret, safe=""))
    data = secret.encode()
    b64 = base64.b64encode(data).decode()
    return [secret, quote(secret, safe=""), quote(secret), quote_plus(secret), lower, b64.rstrip("="),
            b64, base64.urlsafe_b64encode(data).decode(), data.hex(), data.hex().upper(), json_escaped(secret),
            quote(b64, safe="")]  # fmt: skip


def assert_gone(secret: str, text: str) -> None:
    for form in encodings(secret):
        assert form not in text, (form, text)


def recoverable(secret: str, text: str) -> bool:
    """Whether the middle of the secret (its edges may leave a few bits in partly made characters)
    can be read back from the text: as it is, or decoded from percent or JSON escapes, then from
    any run of base64 (either alphabet, any alignment) or hex (either case) in it."""
    core = secret.encode()[2:-2]
    unescaped = unquote(re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text))
    for candidate in (text, unescaped):
        if core in candidate.encode():
            return True
        for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", candidate):
            run = run.replace("-", "+").replace("_", "/")
            for shift in range(4):
                chunk = run[shift:][: (len(run) - shift) // 4 * 4]
                if core in base64.b64decode(chunk):
                    return True
        for run in re.findall(r"[0-9a-fA-F]{8,}", candidate):
            if any(core in bytes.fromhex(run[s:][: (len(run) - s) // 2 * 2]) for s in range(2)):
                return True
    return False
