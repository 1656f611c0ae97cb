"""Unit tests of services/common/secrets.py: the Redactor never lets a secret
through, in any form it knows; secrets at rest decrypt only with their key."""

from __future__ import annotations

import base64
import html
import os
import re
import sqlite3
import stat
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import orjson
import pytest
from alembic import command
from alembic.config import Config
from helpers.secrets import assert_gone, encodings, json_escaped, recoverable
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.config import ServiceSettings
from services.common.costs import parse_cost_answer
from services.common.db import Database, migrate
from services.common.errors import ApiError, Code
from services.common.providers import KEPT_REDACTORS
from services.common.secrets import (
    ENCRYPTED_PREFIX,
    MIN_SECRET_LENGTH,
    PARTIAL_SECRET_CHARS,
    PLACEHOLDER,
    Redactor,
    SecretBox,
    StreamCarry,
    secrets_key,
    use_secrets_key,
    written,
)
from services.registry.server import MIGRATIONS as REGISTRY_MIGRATIONS
from services.registry.storage.tables import ProviderRow
from services.router.directory import ProviderEntry
from services.router.selection import Route
from services.router.upstream import Usage, provider_error, rewrite, sse_event

API_KEY = "sk-live-0123456789abcdef0123456789abcdef"
AUTHORIZATION = "Bearer bill-9876543210fedcba"


def strings_of(value: Any) -> Iterator[str]:
    """Every string a JSON value holds: keys, values, numbers as written."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)
    elif isinstance(value, str):
        yield value
    else:
        yield written(value)


secrets_st = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=MIN_SECRET_LENGTH, max_size=24),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=MIN_SECRET_LENGTH, max_size=40),
    st.from_regex(r"Bearer [A-Za-z0-9_\-]{16,32}", fullmatch=True),
    st.from_regex(r"sk-[A-Za-z0-9/+=%]{16,40}", fullmatch=True),
)


FORMS = 2 * len(encodings("x"))  # both secrets' forms
# Stand-ins for the secrets' forms: the JSON strategy is built once (building it per example cost
# most of the test's time); each example puts its own forms in their places.
FORM_SLOTS = {f"\U000f0000{i}\U000f0001": i for i in range(FORMS)}
SLOT = re.compile("|".join(FORM_SLOTS))


def json_with_slots() -> st.SearchStrategy[Any]:
    """Random JSON whose strings (keys included) may carry a form's slot anywhere."""
    embedded = st.builds(lambda a, form, b: a + form + b, st.text(max_size=8), st.sampled_from(sorted(FORM_SLOTS)),
                         st.text(max_size=8))  # fmt: skip
    strings = st.one_of(st.text(max_size=12), embedded)
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), strings)
    return st.recursive(
        leaves, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4))
    )


def with_forms(value: Any, forms: list[str]) -> Any:
    """The JSON value with each slot replaced by its form."""
    if isinstance(value, dict):
        return {with_forms(key, forms): with_forms(item, forms) for key, item in value.items()}
    if isinstance(value, list):
        return [with_forms(item, forms) for item in value]
    return SLOT.sub(lambda m: forms[FORM_SLOTS[m[0]]], value) if isinstance(value, str) else value


@settings(max_examples=200, deadline=None)
@given(json_with_slots(), secrets_st, secrets_st)
def test_no_secret_survives_in_random_json(slotted: Any, first: str, second: str) -> None:
    document = with_forms(slotted, encodings(first) + encodings(second))
    redacted = Redactor([first, second]).json(document)
    for text in strings_of(redacted):
        assert_gone(first, text)
        assert_gone(second, text)


@settings(max_examples=200, deadline=None)
@given(secrets_st, st.text(max_size=20), st.text(max_size=20), st.integers(0, 11))
def test_no_secret_survives_in_text_or_bytes(secret: str, before: str, after: str, which: int) -> None:
    text = before + encodings(secret)[which] + after
    redactor = Redactor([secret])
    assert_gone(secret, redactor.text(text))
    scrubbed = redactor.bytes(text.encode()).decode(errors="replace")
    assert_gone(secret, scrubbed)


# What may stand before a secret and read, with the secret's first characters, as an escape.
ESCAPE_LEADS = st.sampled_from(["%", "%4", "%A", "\\", "\\u", "\\u0", "\\u00", "\\u004", "\\\\", "%%"])


@settings(max_examples=300, deadline=None)
@given(secrets_st, ESCAPE_LEADS, st.sampled_from('nrtbfu/"\\0123456789abcdefABCDEF'), st.integers(0, 11))
def test_a_secret_right_after_part_of_an_escape_is_found(secret: str, lead: str, first: str, which: int) -> None:
    """Text that reads as the start of an escape ("%", "%4", a backslash, "\\u00"), before a secret
    whose first characters would complete it ("%" + "7a...", "\\" + "n...", "\\u00" + "41..."), leaves
    the secret in view (its last character is one a form may percent-encode: no reading of the text
    as written finds it)."""
    secret = first + secret[1:-1] + ":"
    assert_gone(secret, Redactor([secret]).text(f"x{lead}{encodings(secret)[which]}y"))


def test_a_secret_that_begins_with_another_is_redacted_whole() -> None:
    """An API key and a billing authorization that starts with it: the longer one goes whole."""
    key = "41bcdefgh1234567"
    authorization = key + "-billing-Q7x9Lm2Rt5Vw8Kp3Zy6:"
    for lead in ("%", "\\u00", ""):
        redacted = Redactor([key, authorization]).text(f"x{lead}{quote(authorization, safe='')}y")
        assert "billing" not in redacted, redacted


def test_a_body_of_escapes_that_repeat_a_key_is_redacted_whole() -> None:
    """A provider's key made to repeat itself, in a body where every escape begins it again: the
    readings that hold it outnumber what the text has room for, and nothing of it is kept."""
    key = "41" + "A" * 198
    assert Redactor([key]).text("%41" * 5_000) == PLACEHOLDER


def test_every_form_is_replaced_and_the_rest_kept() -> None:
    redactor = Redactor([API_KEY, AUTHORIZATION])
    for form in encodings(API_KEY) + encodings(AUTHORIZATION) + encodings("bill-9876543210fedcba"):
        assert redactor.text(f"key: {form}.") == f"key: {PLACEHOLDER}."
    assert redactor.text("nothing secret, 100% sure") == "nothing secret, 100% sure"
    body = {"error": {"message": API_KEY, "param": [quote(API_KEY)], "code": {AUTHORIZATION: 1}}}
    assert redactor.json(body) == {"error": {"message": PLACEHOLDER, "param": [PLACEHOLDER], "code": {PLACEHOLDER: 1}}}


def test_a_number_that_is_a_secret_is_replaced() -> None:
    redacted = Redactor(["4242424242424242"]).json({"code": 142424242424242421, "n": 7, "ok": True, "no": None})
    assert redacted == {"code": PLACEHOLDER, "n": 7, "ok": True, "no": None}


def test_a_secret_found_in_the_placeholder_is_cut_out() -> None:
    assert Redactor(["redacted"]).text("was redacted here") == "was  here"


@pytest.mark.parametrize("legacy", ["k", "1", "0123456", "prompt_t", "12345678", "Bearer 1"])
def test_short_legacy_secrets_never_break_an_answer(legacy: str) -> None:
    """A secret stored before the 16-character rule: under 8 characters it is not looked for; from 8
    it is redacted in strings, never in a key's middle of a number turned into a string."""
    answer = {"id": "c1", "created": 1712345678, "usage": {"prompt_tokens": 12345678, "completion_tokens": 1}}
    assert orjson.loads(Redactor([legacy]).dumps(answer)) == answer
    assert Redactor([legacy]).json(answer) == answer


def test_no_secrets_change_nothing() -> None:
    redactor = Redactor(["", ""])
    assert not redactor
    assert redactor.text(API_KEY) == API_KEY
    assert redactor.json({"k": [API_KEY]}) == {"k": [API_KEY]}


def test_a_kept_redactor_is_small() -> None:
    """The Router keeps up to KEPT_REDACTORS redactors (one per set of a provider's secrets): each
    must stay small, or hundreds of providers take hundreds of MB per Router (these were ~420 KiB)."""
    Redactor(["warm-up-secret-" + "x" * 16])  # the shared character classes of base64 and hex
    tracing = tracemalloc.is_tracing()  # on already under -X tracemalloc: left on
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [
            Redactor([f"sk-{n:04d}-" + "Qz8_vR2-kL5mN7pW" * 3, f"Bearer billing-{n:04d}-0123456789abcdef"])
            for n in range(8)
        ]
        size = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        if not tracing:
            tracemalloc.stop()
    assert size * KEPT_REDACTORS < 64 * 2**20, f"{size / 1024:.0f} KiB per redactor"


def test_secrets_at_rest_need_their_key(tmp_path: Path) -> None:
    key = secrets_key(tmp_path / "data", {})
    box = SecretBox(key)
    sealed = box.seal(API_KEY)
    assert sealed.startswith(ENCRYPTED_PREFIX)
    assert API_KEY not in sealed
    assert box.open(sealed) == API_KEY
    assert box.open("plaintext-before-migration") == "plaintext-before-migration"
    assert box.seal("") == ""
    with pytest.raises(RuntimeError, match="SWITCHBOARD_SECRETS_KEY"):
        SecretBox(secrets_key(tmp_path / "other", {})).open(sealed)


def test_the_key_file_is_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = secrets_key(data_dir, {})
    assert secrets_key(data_dir, {}) == first
    assert stat.S_IMODE(os.stat(data_dir / "secrets.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    from_env = base64.urlsafe_b64encode(b"k" * 32)
    assert secrets_key(data_dir, {"SWITCHBOARD_SECRETS_KEY": from_env.decode()}) == from_env


def echoing_route(secrets: tuple[str, ...] = (API_KEY, AUTHORIZATION)) -> Route:
    provider = admin_pb.Provider(id="echo", base_url="http://echo", api_key=secrets[0])
    config = internal_pb.ProviderConfig(provider=provider, redact=secrets)
    return Route(ProviderEntry.from_config(config), "m")


def everywhere(secret: str) -> dict:
    """An error body with the secret in every field, plain and URL-encoded."""
    return {
        "error": {
            "message": f"key {secret} / {quote(secret, safe='')}",
            "param": quote_plus(secret),
            "code": {"nested": [secret]},
            "type": secret,
        }
    }


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 418, 401])
@pytest.mark.parametrize("secret", [API_KEY, AUTHORIZATION])
def test_provider_errors_never_carry_a_secret(status: int, secret: str) -> None:
    for body in (orjson.dumps(everywhere(secret)), f"<html>{quote(secret)}</html>".encode()):
        error = provider_error(echoing_route(), status, body)
        shown = " ".join(map(str, (error.message, error.param, error.code, error.headers)))
        assert_gone(secret, shown)
        assert_gone("bill-9876543210fedcba", shown)


def test_stream_lines_never_carry_a_secret() -> None:
    redactor = echoing_route().provider.redactor
    for line in (
        b"data: " + orjson.dumps({"choices": [], "x": API_KEY}),
        b"data: {" + API_KEY.encode(),
        b": " + API_KEY.encode(),
    ):
        assert_gone(API_KEY, sse_event(line, "m", Usage(), False, redactor).decode())


def test_cost_answers_are_redacted_before_anything_is_logged() -> None:
    echoes = [
        everywhere(API_KEY),
        AUTHORIZATION,
        {"requestId": AUTHORIZATION},
        {"requestId": "r1", "costNanoUsd": API_KEY},
    ]
    body = orjson.dumps({"requests": echoes})
    answer = parse_cost_answer(body, {"r1"}, Redactor([API_KEY, AUTHORIZATION]))
    logged = str((answer.rejected, answer.unknown, answer.costs))
    assert_gone(API_KEY, logged)
    assert_gone(AUTHORIZATION, logged)
    assert len(answer.rejected) == 3 and answer.unknown == [PLACEHOLDER]


def test_migration_encrypts_plaintext_secrets_and_leaves_no_trace(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = ServiceSettings(data_dir=data_dir).database_url_for("registry")
    config = Config()
    config.set_main_option("script_location", str(REGISTRY_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0002")  # a database from before encryption, with plaintext secrets in it
    with sqlite3.connect(data_dir / "registry.db") as connection:
        connection.execute(
            "INSERT INTO providers VALUES ('p', 'o', 'http://p', ?, '[]', 'Inference-Id', '', ?, 0, '2026-01-01')",
            (API_KEY, AUTHORIZATION),
        )
    use_secrets_key(secrets_key(data_dir, {}))
    migrate(url, REGISTRY_MIGRATIONS)
    database = Database(url)
    with Session(database.engine) as session:
        row = session.exec(select(ProviderRow)).one()
        assert (row.api_key, row.billing_authorization) == (API_KEY, AUTHORIZATION)
        names = sorted(path.name for path in data_dir.iterdir())
        assert names == ["registry.db", "registry.db-shm", "registry.db-wal", "secrets.key"]
        for path in data_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            for secret in (API_KEY, AUTHORIZATION, "bill-9876543210fedcba"):
                assert secret.encode() not in path.read_bytes(), path
    database.close()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


# What the Registry accepts as a secret (validation.check_secret): no space, quote or backslash here.
SECRET_CHARACTERS = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"\\')
ascii_secrets = st.text(SECRET_CHARACTERS, min_size=MIN_SECRET_LENGTH, max_size=48)
TEXT_ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "b64": lambda b: base64.b64encode(b).decode(),
    "b64-unpadded": lambda b: base64.b64encode(b).decode().rstrip("="),
    "b64url": lambda b: base64.urlsafe_b64encode(b).decode(),
    "hex": bytes.hex,
    "HEX": lambda b: b.hex().upper(),
    "plain": lambda b: b.decode("latin-1"),
}
ESCAPES: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "percent": lambda s: quote(s, safe=""),
    "percent-all": lambda s: "".join(f"%{ord(c):02X}" for c in s),
    "json": json_escaped,
    "html-decimal": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "html-hex": lambda s: "".join(f"&#X{ord(c):x};" for c in s),
    "html-named": lambda s: s.replace("&", "&amp;").replace("/", "&sol;").replace("<", "&lt;"),
    "json-then-percent": lambda s: "".join(f"\\u0025{ord(c):02x}" for c in s),  # \u0025 is "%"
    "percent-twice": lambda s: quote(quote(s, safe=""), safe=""),
    "percent-of-html": lambda s: quote("".join(f"&#{ord(c)};" for c in s), safe=""),
}


def readable(secret: str, text: str) -> bool:
    """Whether the secret can be read back from the text (recoverable()), also once its HTML character
    references and escapes are decoded again and again, and in any case."""
    for _ in range(4):
        if recoverable(secret, text) or secret[2:-2].lower() in text.lower():
            return True
        text = html.unescape(unquote(re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)))
    return False


@settings(max_examples=200, deadline=None)
@given(
    ascii_secrets,
    st.binary(max_size=5),
    st.binary(max_size=5),
    st.sampled_from(sorted(TEXT_ENCODINGS)),
    st.sampled_from(sorted(ESCAPES)),
    st.sampled_from(["", "Bearer "]),
)
def test_no_encoding_at_any_alignment_gets_out(
    secret: str, before: bytes, after: bytes, encoding: str, escape: str, scheme: str
) -> None:
    """The secret inside a longer string (its alignment shifted by what comes before it), encoded
    as base64, base64url, hex or plain, then escaped, is never readable after redaction."""
    written_ = ESCAPES[escape](TEXT_ENCODINGS[encoding](before + (scheme + secret).encode() + after))
    redactor = Redactor([scheme + secret] if scheme else [secret])
    assert not readable(secret, redactor.text(written_))
    assert not readable(secret, redactor.bytes(written_.encode("latin-1")).decode("latin-1"))
    assert not readable(secret, redactor.text("{" + written_ + "}"))


@settings(max_examples=300, deadline=None)
@given(ascii_secrets, st.text(max_size=12), st.text(max_size=12), st.sampled_from(sorted(ESCAPES)), st.data())
def test_a_secret_split_over_stream_events_never_gets_out(
    secret: str, before: str, after: str, escape: str, data: st.DataObject
) -> None:
    """The content of consecutive events, the secret split at any points, joins up to the same
    text with the secret redacted: nothing of it in any event, nothing lost."""
    content = before + ESCAPES[escape](secret) + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(content)), max_size=6)))
    pieces = [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True)]
    redactor = Redactor([secret])
    carry = StreamCarry(redactor)
    shown: list[str] = []
    for piece in pieces:
        for event in carry.events({"id": "c", "choices": [{"index": 0, "delta": {"content": piece}}]}):
            shown.append(event["choices"][0]["delta"].get("content", ""))
    finish = carry.events({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    shown += [e["choices"][0]["delta"].get("content", "") for e in finish]
    assert carry.end() is None
    joined = "".join(shown)
    assert not readable(secret, joined) and PLACEHOLDER in joined
    # Kept: the text before, but its last few characters (an escape may begin there) and any that with
    # the secret's first ones begin it again, in any case (a secret of zeros after "00": the match may
    # begin there; most of a secret is redacted as the secret is).
    least = max((len(secret) + 1) // 2, PARTIAL_SECRET_CHARS)
    first_match = (before + secret).lower().find(secret[:least].lower())
    assert joined.startswith(before[: max(0, min(len(before) - 6, first_match))])


def test_binary_answers_carrying_a_secret_are_refused() -> None:
    redactor = Redactor([API_KEY])
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    assert redactor.binary(image) == image
    for hidden in (API_KEY.encode(), base64.b64encode(b"x" + API_KEY.encode()), API_KEY.encode().hex().encode()):
        with pytest.raises(ApiError, match="carried a secret") as refused:
            redactor.binary(image + hidden + image)
        assert refused.value.grpc_code == Code.UNAVAILABLE


def test_held_text_goes_out_before_its_choice_finishes_and_at_the_end() -> None:
    carry = StreamCarry(Redactor([API_KEY]))
    first = {"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"content": "so " + API_KEY[:5]}}]}
    assert carry.events(first) == [first] and first["choices"][0]["delta"]["content"] == "so "
    finish = {"id": "c", "choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]}
    flushed, same = carry.events(finish)
    assert same is finish and flushed == {
        "id": "c",
        "model": "m",
        "choices": [{"index": 1, "delta": {"content": "sk-li"}}],
    }
    call = {"index": 0, "function": {"arguments": '{"k": "' + API_KEY[:9]}}
    carry.events({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    assert call["function"]["arguments"] == '{"k": "'
    rest = {"index": 0, "function": {"arguments": API_KEY[9:] + '"}'}}
    carry.events({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [rest]}}]})
    assert rest["function"]["arguments"] == PLACEHOLDER + '"}'
    carry.events({"id": "c", "choices": [{"index": 0, "delta": {"content": "ends with s"}}]})
    end = carry.end()
    assert end == {"id": "c", "choices": [{"index": 0, "delta": {"content": "s"}}]} and carry.end() is None


def escape_each(text: str, escape: Callable[[str], str]) -> str:
    return "".join(map(escape, text))


# A key with the characters HTML names (& / "): a legacy one may hold a quote.
HTML_KEY = 'sk-live/0123&4567"89abcdef'
WRITTEN_KEYS = {
    "upper case": API_KEY.upper(),
    "mixed case": API_KEY[:10].upper() + API_KEY[10:],
    "after a character that lowers to two": "İ" + API_KEY,
    "decimal references": escape_each(API_KEY, lambda c: f"&#{ord(c)};"),
    "decimal references without ;": escape_each(API_KEY, lambda c: f"&#{ord(c):03d}"),
    "hex references": escape_each(API_KEY, lambda c: f"&#x{ord(c):X};"),
    "named references": "sk-live&sol;0123&amp;4567&quot;89abcdef",
    "JSON escape of %, then hex": escape_each(API_KEY, lambda c: f"\\u0025{ord(c):02x}"),
    "percent-encoded references": quote(escape_each(API_KEY, lambda c: f"&#{ord(c)};"), safe=""),
    "references of percent escapes": escape_each(API_KEY, lambda c: f"&#37;{ord(c):02x}"),
}


@pytest.mark.parametrize("name", sorted(WRITTEN_KEYS))
def test_a_key_in_any_case_html_references_or_layered_escapes_is_redacted(name: str) -> None:
    """In text, in a JSON answer, in a provider's JSON error and its HTML error page."""
    key = HTML_KEY if name == "named references" else API_KEY
    written_key = WRITTEN_KEYS[name]
    redactor = Redactor([key])
    assert not readable(key, redactor.text(f"key: {written_key}."))
    answer = {"choices": [{"index": 0, "message": {"content": f"it is {written_key}"}}]}
    assert not readable(key, redactor.dumps(answer).decode())
    route = echoing_route((key,))
    for body in (orjson.dumps({"error": {"message": written_key}}), f"<p>{written_key}</p>".encode()):
        assert not readable(key, provider_error(route, 400, body).message)


def logprob(token: str, alternative: str | None = None, token_bytes: bytes | None = None) -> dict:
    """One token's logprobs, its alternative of rank 1 (when given) and its bytes (its own unless given)."""
    top = [{"token": token, "logprob": -0.1, "bytes": list(token.encode())}]
    if alternative is not None:
        top.append({"token": alternative, "logprob": -3.0, "bytes": list(alternative.encode())})
    return {
        "token": token,
        "logprob": -0.1,
        "bytes": list(token.encode() if token_bytes is None else token_bytes),
        "top_logprobs": top,
    }


def pieces_of(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


HARMLESS = "a harmless answer"
KEY_PIECES = pieces_of(API_KEY)
HIDDEN_IN_LOGPROBS = {
    "tokens": {"content": [logprob(piece) for piece in KEY_PIECES]},
    "bytes": {"content": [logprob("x", token_bytes=piece.encode()) for piece in KEY_PIECES]},
    "bytes split inside a character": {
        "content": [logprob("x", token_bytes=b) for b in (b"\xc3", "\xa9".encode()[1:])]
    },
    "alternatives of rank 1": {"content": [logprob("x", alternative=piece) for piece in KEY_PIECES]},
    "refusal tokens": {"content": [], "refusal": [logprob(piece) for piece in KEY_PIECES]},
    "legacy tokens": {"tokens": KEY_PIECES, "token_logprobs": [-0.1] * len(KEY_PIECES)},
    "legacy alternatives": {"tokens": ["x"] * 10, "top_logprobs": [{"x": -0.1, p: -2.0} for p in KEY_PIECES]},
}


@pytest.mark.parametrize("hidden", sorted(HIDDEN_IN_LOGPROBS))
def test_logprobs_tokens_that_join_up_to_a_key_are_dropped(hidden: str) -> None:
    """Each token is harmless alone; joined up (the usual way to rebuild the text), they are the key:
    that choice's logprobs are null, another choice's are kept."""
    key = "sk-live-é0123456789abcdef" if hidden == "bytes split inside a character" else API_KEY
    logprobs = HIDDEN_IN_LOGPROBS[hidden]
    if hidden == "bytes split inside a character":  # the key's UTF-8 bytes, cut inside its "é"
        cut = key.encode().index(b"\xc3") + 1
        logprobs = {
            "content": [logprob("x", token_bytes=key.encode()[:cut]), logprob("x", token_bytes=key.encode()[cut:])]
        }
    kept = {"content": [logprob(piece) for piece in pieces_of(HARMLESS)]}
    answer = {
        "model": "provider-model",
        "choices": [
            {"index": 0, "message": {"content": key}, "logprobs": logprobs},
            {"index": 1, "message": {"content": HARMLESS}, "logprobs": kept},
        ],
    }
    expected_kept = orjson.loads(orjson.dumps(kept))
    shown = orjson.loads(rewrite(answer, "m", Usage(), Redactor([key])))
    assert shown["choices"][0]["logprobs"] is None
    assert shown["choices"][1]["logprobs"] == expected_kept


def relayed(carry: StreamCarry, events: list[dict]) -> list[dict]:
    """The events a caller gets: the carry's for each event, then its end's."""
    return [e for event in events for e in carry.events(event)] + [carry.end() or {"choices": []}]


def logprobs_of(events: list[dict], index: int = 0) -> list[dict]:
    """The logprobs entries of a choice in the events, in order."""
    choices = [choice for event in events for choice in event["choices"] if choice["index"] == index]
    return [token for choice in choices for token in (choice.get("logprobs") or {}).get("content") or []]


def token_event(*tokens: str, token_bytes: bytes | None = None) -> dict:
    """An event with one token for each choice, in its content and its logprobs."""
    logprobs = [{"content": [logprob(token, token_bytes=token_bytes)]} for token in tokens]
    choices = [{"index": i, "delta": {"content": token}, "logprobs": logprobs[i]} for i, token in enumerate(tokens)]
    return {"id": "c", "choices": choices}


def finish(*indexes: int) -> dict:
    return {"id": "c", "choices": [{"index": index, "delta": {}, "finish_reason": "stop"} for index in indexes]}


@settings(max_examples=200, deadline=None)
@given(ascii_secrets, st.text(max_size=12), st.text(max_size=12), st.booleans(), st.data())
def test_a_key_split_over_stream_events_logprobs_never_gets_out(
    secret: str, before: str, after: str, in_bytes: bool, data: st.DataObject
) -> None:
    """One token per event, the key split at any points, in the tokens or in their bytes only: the
    tokens a caller joins up across events never hold it."""
    content = before + secret + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(content)), max_size=6)))
    tokens = [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True)]
    events = [token_event("x" if in_bytes else t, token_bytes=t.encode()) for t in tokens]
    shown = logprobs_of(relayed(StreamCarry(Redactor([secret])), [*events, finish(0)]))
    assert not readable(secret, "".join(token["token"] for token in shown))
    assert not readable(secret, bytes(b for token in shown for b in token["bytes"]).decode(errors="replace"))


HARMLESS_TOKENS = ["The ", "key ", "is ", "sk-li", "ght", " and ", "x", "x", "x", "x", "sk-li"]


@pytest.mark.parametrize("finished", [True, False])
def test_logprobs_of_a_choice_that_echoed_the_key_stay_null_another_choices_all_go_out(finished: bool) -> None:
    """Choice 0 echoes the key: null from then on (and after the event that finished it). Choice 1's
    tokens are held back while they could begin the key ("sk-li"), then go on in order with a later
    event: the one that finishes the choice, or the stream's end."""
    events = [token_event(*pair) for pair in zip([*KEY_PIECES, "more"], HARMLESS_TOKENS, strict=True)]
    events += [finish(0, 1), token_event("late", "late")] if finished else []
    passed = relayed(StreamCarry(Redactor([API_KEY])), events)
    assert logprobs_of(passed, 0) == []
    assert [token["token"] for token in logprobs_of(passed, 1)] == HARMLESS_TOKENS


def joined_by_index(events: list[dict]) -> dict[tuple, str]:
    """The text of each choice and of each tool call, joined up by the index a caller sees (0.0 is 0)."""
    joined: dict[tuple, str] = {}
    for event in events:
        for choice in event["choices"]:
            delta = choice.get("delta") or {}
            joined[(choice["index"],)] = joined.get((choice["index"],), "") + delta.get("content", "")
            for call in delta.get("tool_calls") or []:
                at = (choice["index"], call["index"])
                joined[at] = joined.get(at, "") + call["function"]["arguments"]
    return joined


def test_the_carry_reads_an_index_that_is_no_integer_as_the_items_place_and_writes_it_back() -> None:
    """Choice 0.0 at place 1 is checked as choice 1 (choice 0 finished), tool call 1.0 at place 0 as
    tool call 0: each goes out with that index, so a caller never joins it to the other's text."""
    carry = StreamCarry(Redactor([API_KEY]))
    events = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": API_KEY[:12]}, "finish_reason": "stop"}]},
        {"id": "c", "choices": [{"index": 1}, {"index": 0.0, "delta": {"content": API_KEY[12:]}}]},
        {
            "id": "c",
            "choices": [{"index": 2, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": API_KEY[:12]}}]}}],
        },
        {
            "id": "c",
            "choices": [
                {"index": 2, "delta": {"tool_calls": [{"index": 1.0, "function": {"arguments": API_KEY[12:]}}]}}
            ],
        },
    ]
    passed = [e for event in events for e in carry.events(event)] + [carry.end() or {"choices": []}]
    assert events[1]["choices"][1]["index"] == 1 and events[3]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert not any(readable(API_KEY, text) for text in joined_by_index(passed).values())


@pytest.mark.parametrize("written", ["000000000000&sol;%00", "000000000000\\u002f%00", "000000000000%2F\\u0041"])
def test_a_secret_that_holds_what_looks_like_one_kind_of_escape_written_with_another_is_found(written: str) -> None:
    """A writer that escapes one of its characters (HTML's &sol;, JSON's \\u002f) leaves its literal "%00" as
    it is: the reading that decodes every kind at once reads "%00" as a NUL and misses it (found by hypothesis)."""
    secret = "000000000000/%00" if written.endswith("%00") else "000000000000/\\u0041"
    redactor = Redactor([secret])
    assert redactor.text(f"a {written} b") == f"a {PLACEHOLDER} b"
    carry = StreamCarry(redactor)
    pieces = [written[:5], written[5:13], written[13:]]
    shown = [carry.events({"choices": [{"index": 0, "delta": {"content": piece}}]}) for piece in pieces]
    shown.append(carry.events({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    joined = "".join(e["choices"][0]["delta"].get("content") or "" for events in shown for e in events)
    assert PLACEHOLDER in joined and written[:13] not in joined


@pytest.mark.parametrize("cut", range(21, 28))
def test_a_streamed_secret_so_written_is_held_back_by_each_kinds_reading_too(cut: int) -> None:
    """The carry holds back an end that begins such a secret in one kind's reading alone: "&lt;" decoded,
    "%00" left as it is (all decoded, "%00" is a NUL and nothing begins there); found by hypothesis."""
    secret, written = "00000000000000000000<%000", "00000000000000000000&lt;%000"
    carry = StreamCarry(Redactor([secret]))
    pieces = [written[:cut], written[cut:]]
    shown = [carry.events({"choices": [{"index": 0, "delta": {"content": piece}}]}) for piece in pieces]
    shown.append(carry.events({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    joined = "".join(e["choices"][0]["delta"].get("content") or "" for events in shown for e in events)
    assert joined == PLACEHOLDER
