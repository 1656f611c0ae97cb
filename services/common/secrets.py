"""Provider secrets: redacted from whatever a provider sends back, encrypted at rest.

A provider knows every secret it was given (its API key, its billing
authorization) and may echo any of them anywhere: in an error's message,
param or code, in a nested object, in a header; plain, URL-encoded or
base64. A Redactor is built once per provider from its secrets and scrubs
text, bytes and parsed JSON before anything reaches a caller or a log.

At rest, secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under
a key from SWITCHBOARD_SECRETS_KEY or <data-dir>/secrets.key (created, mode
0600, on first start), and the data directory is kept private (0700, its
files 0600).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr, Generic

import orjson
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel.sql.sqltypes import AutoString

PLACEHOLDER = "[redacted]"
SECRETS_KEY_ENV = "SWITCHBOARD_SECRETS_KEY"
SECRETS_KEY_FILE = "secrets.key"
SCALAR_CHARACTERS = frozenset("0123456789.-+eEInfinityNaNtruefalsenull")
ENCRYPTED_PREFIX = "enc:v1:"  # marks a value encrypted at rest (a plaintext one has no such prefix)


def _forms(secret: str) -> set[str]:
    """The secret, the credential after its auth scheme ("Bearer X" -> X), and their base64."""
    scheme, _, credential = secret.partition(" ")
    plain = {secret, credential.strip()} if scheme and credential.strip() else {secret}
    encoded = {
        coded.decode().rstrip("=")
        for value in plain
        for coded in (base64.b64encode(value.encode()), base64.urlsafe_b64encode(value.encode()))
    }
    return {form for form in plain | encoded if form}


def _char_pattern(char: str) -> str:
    """The character as itself or percent-encoded (either hex case; "+" for a space)."""
    encoded = "".join(f"%{byte:02x}" for byte in char.encode())
    percent = re.sub(r"[a-f]", lambda m: f"[{m[0]}{m[0].upper()}]", encoded)
    alternatives = [re.escape(char), percent] + ([r"\+"] if char == " " else [])
    return "(?:" + "|".join(alternatives) + ")"


def _pattern(forms: Iterable[str]) -> str:
    """One alternation of every form, longest first, each character possibly percent-encoded."""
    ordered = sorted(forms, key=lambda f: (-len(f), f))
    return "|".join("".join(_char_pattern(c) for c in form) for form in ordered)


@dataclass(frozen=True)
class _Scrubber(Generic[AnyStr]):
    """Replaces every form of the secrets in str or bytes values."""

    pattern: re.Pattern[AnyStr]
    literals: tuple[AnyStr, ...]  # without a "%" only these can be there: substring search is far faster
    percent: AnyStr
    placeholder: AnyStr

    def may_hold(self, value: AnyStr) -> bool:
        return self.percent in value or any(literal in value for literal in self.literals)

    def __call__(self, value: AnyStr) -> AnyStr:
        """The value with every secret replaced; when a replacement and its neighbours
        form a secret again, nothing of the value is kept."""
        if not self.may_hold(value) or not self.pattern.search(value):
            return value
        scrubbed = self.pattern.sub(self.placeholder, value)
        return self.placeholder if self.pattern.search(scrubbed) else scrubbed


class Redactor:
    """Scrubs a provider's secrets from text, bytes and JSON values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in _forms(secret)}
        # Only a secret made of these characters can be inside a number, true, false or null.
        self._in_scalars = any(set(form) <= SCALAR_CHARACTERS for form in forms)
        self._text: _Scrubber[str] | None = None
        self._bytes: _Scrubber[bytes] | None = None
        self._serialized: _Scrubber[bytes] | None = None  # literals as they look inside a JSON document
        if not forms:
            return
        pattern = re.compile(_pattern(forms), re.DOTALL)
        literals = tuple(sorted(forms | {form.replace(" ", "+") for form in forms}))
        # A placeholder that itself holds a secret (a one-letter key) cannot stand in for it.
        placeholder = "" if pattern.search(PLACEHOLDER) else PLACEHOLDER
        self._text = _Scrubber(pattern, literals, "%", placeholder)
        bytes_pattern = re.compile(pattern.pattern.encode(), re.DOTALL)
        self._bytes = _Scrubber(bytes_pattern, tuple(lit.encode() for lit in literals), b"%", placeholder.encode())
        escaped = tuple(orjson.dumps(literal)[1:-1] for literal in literals)
        self._serialized = _Scrubber(bytes_pattern, escaped, b"%", placeholder.encode())

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, value: str) -> str:
        return value if self._text is None else self._text(value)

    def bytes(self, value: bytes) -> bytes:
        """Like text(), on bytes (an SSE line, a body that is not JSON)."""
        return value if self._bytes is None else self._bytes(value)

    def json(self, value: Any) -> Any:
        """A parsed JSON value with every secret redacted from its strings, keys and scalars as written.
        One look at the whole document first: walking it is needed only when a secret may be there."""
        if self._serialized is None:
            return value
        try:
            if not self._serialized.may_hold(orjson.dumps(value)):
                return value
        except TypeError:  # an integer beyond 64 bits: no quick look
            pass
        return self._walk(value)

    def dumps(self, value: Any) -> bytes:
        """A parsed JSON value serialized, every secret redacted: one serialization, unless a
        secret may be in it (then its strings, keys and scalars are walked)."""
        data = orjson.dumps(value)
        if self._serialized is None or not self._serialized.may_hold(data):
            return data
        return orjson.dumps(self._walk(value))

    def _walk(self, value: Any) -> Any:
        assert self._text is not None
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {self._text(str(k)): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if not self._in_scalars:
            return value
        return self._text.placeholder if self._text.pattern.search(written(value)) else value


def written(scalar: Any) -> str:
    """A JSON scalar as Switchboard writes it (orjson; the standard library beyond 64-bit integers)."""
    try:
        return orjson.dumps(scalar).decode()
    except TypeError:
        return json.dumps(scalar)


NO_SECRETS = Redactor(())


class SecretBox:
    """Encrypts and decrypts secrets at rest; values without the prefix are plaintext (before migration)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, plaintext: str) -> str:
        if not plaintext or plaintext.startswith(ENCRYPTED_PREFIX):
            return plaintext
        return ENCRYPTED_PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(ENCRYPTED_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(ENCRYPTED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise RuntimeError(f"a stored secret does not decrypt with the key: is {SECRETS_KEY_ENV} right?") from None


_box: SecretBox | None = None  # the process's at-rest key (one Registry database per process)


def use_secrets_key(key: bytes) -> None:
    """Sets the key SealedString columns encrypt and decrypt with."""
    global _box
    _box = SecretBox(key)


def secret_box() -> SecretBox:
    if _box is None:
        raise RuntimeError("no secrets key loaded: call use_secrets_key() first")
    return _box


class SealedString(TypeDecorator[str]):
    """A string column stored encrypted; reading a plaintext value (not yet migrated) gives it as it is."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value and secret_box().seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if not value or not value.startswith(ENCRYPTED_PREFIX):
            return value
        return secret_box().open(value)


def read_or_create_secret(path: Path, new: Callable[[], str]) -> str:
    """The secret in the file, created (mode 0600) from `new()` when missing. Several
    processes may race to create it: exactly one wins, all read the same."""
    private_directory(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(new())
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty: delete it or put a secret in it")
    return value


def secrets_key(data_dir: Path, environment: dict[str, str] | os._Environ = os.environ) -> bytes:
    """The at-rest key: SWITCHBOARD_SECRETS_KEY, else <data-dir>/secrets.key, created (0600) when missing."""
    from_env = environment.get(SECRETS_KEY_ENV, "").strip()
    if from_env:
        return from_env.encode()
    return read_or_create_secret(data_dir / SECRETS_KEY_FILE, lambda: Fernet.generate_key().decode()).encode()


def private_directory(path: Path) -> None:
    """Creates the directory (mode 0700) or takes group and others' access away from it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def private_file(path: Path) -> None:
    """Creates the file empty (mode 0600) or takes group and others' access away from it.
    SQLite gives a database's -wal and -shm files the database file's mode."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.chmod(0o600)


def private_tree(root: Path) -> None:
    """Makes every directory under root (root included) 0700 and every file 0600."""
    private_directory(root)
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            (Path(directory) / name).chmod(0o700)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(0o600)
