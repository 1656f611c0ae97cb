"""Most of a provider's key in the middle of a text, with other text after it (a model that echoes
most of the key), is redacted like the whole key: a run that reads as the beginning of a form of a
secret, of half that form's characters (rounded up) and PARTIAL_SECRET_CHARS at least, anywhere in
a text. Shorter runs (an abbreviated key, a common prefix) stay as they are."""

from __future__ import annotations

import base64
import copy
import html
from urllib.parse import quote

import orjson
import pytest
from helpers.secrets import json_escaped
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.secrets import PARTIAL_SECRET_CHARS, PLACEHOLDER, Redactor, StreamCarry

KEY = "sk-live-0123456789abcdef0123456789abcdef"  # 40 characters: 20 of it are a partial
HALF = (len(KEY) + 1) // 2
REDACTOR = Redactor([KEY, "Bearer bill-9876543210fedcba"])
LEAD, TAIL = "my key is ", " and that is all"


def least(length: int) -> int:
    """The fewest characters of a form of this many that are redacted as a partial."""
    return max((length + 1) // 2, PARTIAL_SECRET_CHARS)


def chat(content: str) -> dict:
    return {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def content_of(data: bytes) -> str:
    return orjson.loads(data)["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "written", [KEY[:HALF], KEY[:-1], KEY[:HALF].upper(), KEY[:30].title(), KEY.encode().hex()[:len(KEY)],
                KEY.encode().hex().upper()[:-3]],
)  # fmt: skip
def test_most_of_a_key_as_text_in_any_case_or_hex_is_redacted_in_the_middle_of_a_text(written: str) -> None:
    assert REDACTOR.text(LEAD + written + TAIL) == LEAD + PLACEHOLDER + TAIL
    assert content_of(REDACTOR.dumps(chat(LEAD + written + TAIL))) == LEAD + PLACEHOLDER + TAIL
    assert REDACTOR.bytes((LEAD + written + TAIL).encode()) == (LEAD + PLACEHOLDER + TAIL).encode()


@pytest.mark.parametrize("urlsafe", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 2])
def test_most_of_a_keys_base64_at_each_alignment_is_redacted(offset: int, urlsafe: bool) -> None:
    """The key after `offset` other bytes in the encoded string: what those bytes alone make stays,
    the character partly made of the key's bits goes with the key's."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(b"xy"[:offset] + KEY.encode()).decode()
    own = 8 * offset // 6  # characters made wholly of the bytes before the key
    for cut in (len(encoded) * 2 // 3, len(encoded) - 4):
        assert REDACTOR.text(f"data {encoded[:cut]} end") == f"data {encoded[:own]}{PLACEHOLDER} end"
    if not offset:  # the base64 of most of the key: its last character, partly made of it, and padding stay
        cut_short = encode(KEY[:25].encode()).decode()
        assert REDACTOR.text(f"data {cut_short} end") == f"data {PLACEHOLDER}{cut_short[33:]} end"


@pytest.mark.parametrize(
    "write", [json_escaped, lambda s: quote(s, safe=""), lambda s: "".join(f"&#{ord(c)};" for c in s),
              lambda s: quote(quote(s, safe=""), safe=""), html.escape],
)  # fmt: skip
def test_most_of_a_key_written_with_escapes_is_redacted(write) -> None:
    """Counted as read: a JSON-escaped half of the key is 20 characters, written in 120."""
    text = LEAD + write(KEY[:HALF]) + TAIL
    assert REDACTOR.text(text) == LEAD + PLACEHOLDER + TAIL
    assert content_of(REDACTOR.dumps(chat(text))) == LEAD + PLACEHOLDER + TAIL


def test_half_the_form_passes_and_one_character_less_does_not() -> None:
    odd = KEY[:-3]  # 37 characters: 19 of it are a partial
    hex_ = KEY.encode().hex()  # 80 characters: 40
    b64 = base64.b64encode(KEY.encode()).decode()  # 53 characters made wholly of the key's bits: 27
    cases = [(KEY, KEY), (odd, odd), (KEY, hex_), (KEY, b64[:53])]
    for secret, form in cases:
        redactor, at_least = Redactor([secret]), least(len(form))
        assert redactor.text(LEAD + form[:at_least] + TAIL) == LEAD + PLACEHOLDER + TAIL, form
        assert redactor.text(LEAD + form[: at_least - 1] + TAIL) == LEAD + form[: at_least - 1] + TAIL, form


def test_a_partial_is_eight_characters_at_least() -> None:
    """A 16-character key's half is 8 (a legacy key of 8-15 characters has none: found whole only)."""
    secret = "0123456789abcdef"
    redactor, partial = Redactor([secret]), secret[:PARTIAL_SECRET_CHARS]
    assert redactor.text(f"x {partial} y") == f"x {PLACEHOLDER} y"
    assert redactor.text(f"x {partial[:-1]} y") == f"x {partial[:-1]} y"


@pytest.mark.parametrize(
    "text", ["abbreviated: sk-live-01...ef", "keys look like sk-live-0123456789, or so", "hex 736b2d6c6976652d303132.",
             "Bearer bill-9 is the scheme", "nothing secret, 100% sure & no key"],
)  # fmt: skip
def test_shorter_runs_stay(text: str) -> None:
    assert REDACTOR.text(text) == text
    answer = chat(text)
    assert REDACTOR.dumps(copy.deepcopy(answer)) == orjson.dumps(answer)


def test_a_common_prefix_of_a_long_key_stays() -> None:
    key = "sk-ant-api03-" + "Qz8_vR2-kL5mN7pW" * 6
    text = "Anthropic keys start with sk-ant-api03- and are long."
    assert Redactor([key]).text(text) == text


def test_a_whole_form_next_to_or_inside_a_partial_is_still_found_whole() -> None:
    """A partial right before the whole key, a whole key before a partial, a partial of one form
    running into another form: each is redacted, and the whole key never shows."""
    b64 = base64.b64encode(KEY.encode()).decode()
    for text, expected in [
        (f"x {KEY[:25]}{KEY} y", f"x {PLACEHOLDER} y"),
        (f"x {KEY} {KEY[:25]} y", f"x {PLACEHOLDER} {PLACEHOLDER} y"),
        (f"x {KEY[:30]}-{b64} y", f"x {PLACEHOLDER}-{PLACEHOLDER} y"),
        (f"x {KEY[:10]}{KEY}{KEY[:21]}.", f"x {KEY[:10]}{PLACEHOLDER}."),
    ]:
        assert REDACTOR.text(text) == expected
    repeating = "abcdefghij" * 2 + "klmnopqrstuvwx"  # its beginning again in its run: partials overlap the key
    assert Redactor([repeating]).text(f"x {repeating[:20]}{repeating}y") == f"x {PLACEHOLDER}y"


def test_the_end_rule_stays_as_it_is() -> None:
    """A text's end of 8 characters of a key is a partial only where the text ends for good (ended)."""
    assert REDACTOR.text(LEAD + KEY[:10]) == LEAD + KEY[:10]
    assert REDACTOR.ended(LEAD + KEY[:10]) == LEAD + PLACEHOLDER
    assert REDACTOR.text(LEAD + KEY[:HALF]) == LEAD + PLACEHOLDER


def streamed(pieces: list[str]) -> str:
    """The content a caller joins from a stream of these deltas through the carry."""
    carry, out = StreamCarry(REDACTOR), []
    events = [{"id": "c", "choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
    events.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    for event in events:
        out += carry.events(event)
    assert carry.end() is None
    return "".join(e["choices"][0]["delta"].get("content", "") for e in out if e.get("choices"))


@pytest.mark.parametrize("written", [KEY[:HALF], KEY[:-1], json_escaped(KEY[:HALF]), quote(KEY[:30], safe="")])
def test_a_partial_split_over_stream_events_is_joined_before_it_is_read(written: str) -> None:
    text = LEAD + written + TAIL
    for cut in range(len(text) + 1):
        assert streamed([text[:cut], text[cut:]]) == LEAD + PLACEHOLDER + TAIL, cut
    for first in range(len(LEAD), len(LEAD) + len(written), 3):
        for second in range(first, len(LEAD) + len(written) + 2, 5):
            assert streamed([text[:first], text[first:second], text[second:]]) == LEAD + PLACEHOLDER + TAIL


def test_a_stream_without_partials_is_unchanged() -> None:
    text = "keys look like sk-live-01...ef, " + KEY[: HALF - 1] + " is most of nothing."
    for cut in range(len(text) + 1):
        assert streamed([text[:cut], text[cut:]]) == text


SECRETS = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\ '), min_size=16,
                  max_size=80)  # fmt: skip
# Around the key: characters no key holds, that begin no escape and end none.
AROUND = st.text(st.sampled_from("äöéñ日本\n"), max_size=6)


@settings(max_examples=300, deadline=None)
@given(SECRETS, st.data(), AROUND, AROUND)
def test_a_partial_of_any_key_never_gets_out(secret: str, data: st.DataObject, before: str, after: str) -> None:
    cut = data.draw(st.integers(least(len(secret)), len(secret)))
    partial = secret[:cut]
    redactor = Redactor([secret])
    text = before + partial + after
    assert partial not in redactor.text(text)
    assert partial not in redactor.bytes(text.encode()).decode()
    assert partial not in content_of(redactor.dumps(chat(text)))


def test_ordinary_words_are_no_partial_of_a_scheme_text_or_a_legacy_secret() -> None:
    """A `Scheme credential` text as a whole and a secret under 16 characters are found whole only:
    the public `Bearer ` would make most of a partial, and a short secret's beginning is a word."""
    text = "Use Bearer tokens: see the internal-only docs."
    assert Redactor(["Bearer tok1234567890abcdefgh", "internal-key1"]).text(text) == text
    credential = "tok1234567890abcdefghij"
    assert "tok1234567890ab" not in Redactor([f"Bearer {credential}"]).text(f"x {credential[:15]} y")
