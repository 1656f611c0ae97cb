"""A run of a provider's key anywhere in a text (a model that echoes most of the key, from its
beginning or not, with other text after it) is redacted like the whole key: any stretch of a form
of a secret of at least half the secret's characters (rounded up) and LEAST_RUN_CHARS (12) at least,
two hex digits a character, four base64 characters for three. Shorter runs (an abbreviated key, a
public prefix) stay as they are, and so does ordinary text: a `Scheme X` text has no runs (X has),
nor a legacy secret shorter than 16 characters (found whole only)."""

from __future__ import annotations

import base64
import copy
import html
import string
from urllib.parse import quote

import orjson
import pytest
from helpers.secrets import json_escaped
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.secrets import LEAST_RUN_CHARS, PLACEHOLDER, Redactor, StreamCarry

KEY = "sk-live-0123456789abcdef0123456789abcdef"  # 40 characters: 20 of it are a run
HALF = (len(KEY) + 1) // 2
REDACTOR = Redactor([KEY, "Bearer bill-9876543210fedcba"])
LEAD, TAIL = "my key is ", " and that is all"


def least(length: int) -> int:
    """The fewest characters of a secret of this many (of its bytes, for hex and base64) in a run."""
    return max((length + 1) // 2, LEAST_RUN_CHARS)


def least_hex(length: int) -> int:
    return 2 * least(length)


def least_base64(length: int) -> int:
    return -(-4 * least(length) // 3)


def chat(content: str) -> dict:
    return {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def content_of(data: bytes) -> str:
    return orjson.loads(data)["choices"][0]["message"]["content"]


def assert_redacted(redactor: Redactor, text: str, expected: str) -> None:
    """As text, in a chat answer, as bytes."""
    assert redactor.text(text) == expected
    assert content_of(redactor.dumps(chat(text))) == expected
    assert redactor.bytes(text.encode()) == expected.encode()


@pytest.mark.parametrize(
    "written", [KEY[:HALF], KEY[:-1], KEY[:HALF].upper(), KEY[:30].title(), KEY.encode().hex()[:len(KEY)],
                KEY.encode().hex().upper()[:-3]],
)  # fmt: skip
def test_most_of_a_key_as_text_in_any_case_or_hex_is_redacted_in_the_middle_of_a_text(written: str) -> None:
    assert_redacted(REDACTOR, LEAD + written + TAIL, LEAD + PLACEHOLDER + TAIL)


@pytest.mark.parametrize(
    "written", [KEY[1:], KEY[7 : 7 + HALF], KEY[HALF:], KEY[3:-3].upper(), KEY.encode().hex()[5:-7],
                KEY.encode().hex().upper()[13 : 13 + 2 * HALF]],
)  # fmt: skip
def test_a_run_that_does_not_begin_the_key_is_redacted_too(written: str) -> None:
    """The key less its first character (39 of 40), its middle, its end, in any case, as hex."""
    assert_redacted(REDACTOR, LEAD + written + TAIL, LEAD + PLACEHOLDER + TAIL)


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


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_the_base64_of_the_key_less_its_first_characters_is_redacted_with_its_padding(offset: int) -> None:
    """base64(key[1:]) and base64(key[5:]) after `offset` other bytes: the run reaches the key's end, so
    the character partly made of its last bits and the padding go with it; the one partly made of the
    other bytes' stays (its bits of the key are not the form's there)."""
    for start in (1, 5):
        encoded = base64.b64encode(bytes(offset) + KEY[start:].encode()).decode()  # NUL bits are not the key's
        own = -(-8 * offset // 6)
        assert REDACTOR.text(f"data {encoded} end") == f"data {encoded[:own]}{PLACEHOLDER} end"


def test_review_cases_of_most_of_a_key_not_at_its_start() -> None:
    key = "sk-live-0123456789abcdefghijklmnopqrstuv"
    redactor = Redactor([key])
    for written in (key[1:], key[4:], base64.b64encode(key[1:].encode()).decode()):
        assert redactor.text(f"my key is {written} and that is all") == f"my key is {PLACEHOLDER} and that is all"


@pytest.mark.parametrize(
    "write", [json_escaped, lambda s: quote(s, safe=""), lambda s: "".join(f"&#{ord(c)};" for c in s),
              lambda s: quote(quote(s, safe=""), safe=""), html.escape],
)  # fmt: skip
def test_most_of_a_key_written_with_escapes_is_redacted(write) -> None:
    """Counted as read: a JSON-escaped half of the key is 20 characters, written in 120."""
    for run in (KEY[:HALF], KEY[5 : 5 + HALF], KEY[HALF:]):
        text = LEAD + write(run) + TAIL
        assert REDACTOR.text(text) == LEAD + PLACEHOLDER + TAIL
        assert content_of(REDACTOR.dumps(chat(text))) == LEAD + PLACEHOLDER + TAIL


def base64_runs(secret: str, start: int, length: int) -> list[str]:
    """`length` base64 characters made wholly of the secret's bits, from the one that holds its
    `start`-th byte's bits on, at each of the three alignments (after 0-2 other bytes)."""
    runs = []
    for offset in range(3):
        encoded = base64.b64encode(b"xy"[:offset] + secret.encode()).decode()
        first = -(-8 * (offset + start) // 6)  # the first character wholly after that byte begins
        runs.append(encoded[first : first + length])
    return runs


@pytest.mark.parametrize("start", [0, 1, 7, 13])
def test_a_run_anywhere_counts_from_least_on_and_one_character_less_does_not(start: int) -> None:
    """As text, hex (two characters a byte), base64 at each alignment (four for three), escaped: a run
    of exactly the least the form takes, beginning the key or not, is redacted; one shorter is not."""
    odd = KEY[:-3]  # 37 characters: 19 of it are a run
    for secret in (KEY, odd):
        redactor, hexed = Redactor([secret]), secret.encode().hex()
        cases = [(secret[start:], least(len(secret))), (hexed[2 * start :], least_hex(len(secret)))]
        cases += [(run, least_base64(len(secret))) for run in base64_runs(secret, start, len(secret))]
        for form, at_least in cases:
            assert len(form) >= at_least, form
            assert redactor.text(LEAD + form[:at_least] + TAIL) == LEAD + PLACEHOLDER + TAIL, form
            assert redactor.text(LEAD + form[: at_least - 1] + TAIL) == LEAD + form[: at_least - 1] + TAIL, form
        run = secret[start : start + least(len(secret))]
        for escaped in (json_escaped(run), quote(run, safe=""), "".join(f"&#{ord(c)};" for c in run)):
            assert redactor.text(LEAD + escaped + TAIL) == LEAD + PLACEHOLDER + TAIL
        for escaped in (json_escaped(run[:-1]), quote(run[:-1], safe=""), "".join(f"&#{ord(c)};" for c in run[1:])):
            assert redactor.text(LEAD + escaped + TAIL) == LEAD + escaped + TAIL


@pytest.mark.parametrize("start", [0, 2, 4])
def test_a_run_of_a_16_character_key_is_twelve_characters_at_least(start: int) -> None:
    """Half of 16 would be 8: a public prefix (sk-or-v1-, 9) would be one. 12 of its characters are."""
    secret = "sk-or-v1-0123456"
    redactor = Redactor([secret])
    run = secret[start : start + 12]
    assert redactor.text(f"x {run} y") == f"x {PLACEHOLDER} y"
    assert redactor.text(f"x {run[:-1]} y") == f"x {run[:-1]} y"
    assert redactor.text(f"x {secret.encode().hex()[2 * start :][:24]} y") == f"x {PLACEHOLDER} y"


@pytest.mark.parametrize(
    ("secret", "text"),
    [("internal-key1", "This is an internal-only API; see internal-docs."),
     ("Password2019!", "Enter your password20 characters long"),
     ("internal-docs-1", "see internal-docs-v2 and internal-docs-v3"),
     ("Bearer tok12345", "Use Bearer tokens: Authorization: Bearer token123"),
     ("Bearer ab12cd34ef", "the header is Bearer abcdef"),
     ("Bearer sk-or-v1-0123456", "curl -H 'Authorization: Bearer sk-or-v1-YOURKEY'"),
     ("Bearer sk-or-v1-0123456", "prefix sk-or-v1- then other"),
     ("Bearer sk-or-v1-0123456", "send Bearer sk-or-v1-01 as is"),
     ("sk-or-v1-0123456789abcdef0123456789ab", "OpenRouter keys start with sk-or-v1- and are long")],
)  # fmt: skip
def test_ordinary_text_stays(secret: str, text: str) -> None:
    """The review's cases: a legacy secret of 8-15 characters has no runs (its whole is found); a
    `Scheme X` text has none (the public scheme would make most of one; X's own runs count, from 12
    of its characters); a key's public prefix is no run of it."""
    redactor = Redactor([secret])
    assert redactor.text(text) == text
    assert redactor.dumps(chat(text)) == orjson.dumps(chat(text))
    assert redactor.text(f"it is {secret}.") == f"it is {PLACEHOLDER}."


def test_the_credential_of_a_scheme_text_has_runs_of_its_own() -> None:
    redactor = Redactor(["Bearer sk-or-v1-0123456"])
    assert redactor.text("key sk-or-v1-012 here") == f"key {PLACEHOLDER} here"
    assert redactor.text("Bearer r-v1-0123456 here") == f"Bearer {PLACEHOLDER} here"


@pytest.mark.parametrize(
    "text", ["abbreviated: sk-live-01...ef", "keys look like sk-live-0123456789, or so", "hex 736b2d6c6976652d303132.",
             "Bearer bill-9 is the scheme", "nothing secret, 100% sure & no key", "the middle 0123456789abcdef01 no",
             "ends with 456789abcdef and more"],
)  # fmt: skip
def test_shorter_runs_stay(text: str) -> None:
    assert REDACTOR.text(text) == text
    answer = chat(text)
    assert REDACTOR.dumps(copy.deepcopy(answer)) == orjson.dumps(answer)


def test_a_common_prefix_of_a_long_key_stays() -> None:
    key = "sk-ant-api03-" + "Qz8_vR2-kL5mN7pW" * 6
    text = "Anthropic keys start with sk-ant-api03- and are long."
    assert Redactor([key]).text(text) == text


def test_a_run_in_a_number_or_a_key_is_redacted() -> None:
    """A long key's run of digits written as a JSON number becomes the placeholder, as a whole one would."""
    redactor = Redactor(["sk-12345678901234567890abcdef"])  # 29 characters: 15 of it are a run
    answer = {"n": 123456789012345678901, "m": 4567890123456, "345678901234567890": 1}
    assert redactor.json(answer) == {"n": PLACEHOLDER, "m": 4567890123456, PLACEHOLDER: 1}


def test_a_whole_form_next_to_or_inside_a_run_is_still_found_whole() -> None:
    """A run right before the whole key, a whole key before a run, a run of one form running into
    another form, runs that overlap: each is redacted, and the whole key never shows."""
    b64 = base64.b64encode(KEY.encode()).decode()
    for text, expected in [
        (f"x {KEY[:25]}{KEY} y", f"x {PLACEHOLDER} y"),
        (f"x {KEY} {KEY[:25]} y", f"x {PLACEHOLDER} {PLACEHOLDER} y"),
        (f"x {KEY[:30]}-{b64} y", f"x {PLACEHOLDER}-{PLACEHOLDER} y"),
        (f"x {KEY[:10]}{KEY}{KEY[:21]}.", f"x {KEY[:10]}{PLACEHOLDER}."),
        (f"x {KEY[10:35]}{KEY}{KEY[5:30]} y", f"x {PLACEHOLDER} y"),
        (f"x {KEY[12:]}{KEY[:30]} y", f"x {PLACEHOLDER} y"),
        (f"x {b64[3:40]}{b64} y", f"x {PLACEHOLDER} y"),
    ]:
        assert REDACTOR.text(text) == expected, text
    repeating = "abcdefghij" * 2 + "klmnopqrstuvwx"  # its beginning again in its run: runs overlap the key
    assert Redactor([repeating]).text(f"x {repeating[:20]}{repeating}y") == f"x {PLACEHOLDER}y"
    assert Redactor([repeating]).text(f"x {repeating[5:]}{repeating[3:25]}y") == f"x {PLACEHOLDER}y"


def test_the_end_rule_stays_as_it_is() -> None:
    """A text's end of 8 characters of a key is cut short only where the text ends for good (ended),
    and only a beginning of the key."""
    assert REDACTOR.text(LEAD + KEY[:10]) == LEAD + KEY[:10]
    assert REDACTOR.ended(LEAD + KEY[:10]) == LEAD + PLACEHOLDER
    assert REDACTOR.ended(LEAD + KEY[5:15]) == LEAD + KEY[5:15]
    assert REDACTOR.text(LEAD + KEY[:HALF]) == LEAD + PLACEHOLDER


def streamed(pieces: list[str], redactor: Redactor = REDACTOR) -> str:
    """The content a caller joins from a stream of these deltas through the carry."""
    carry, out = StreamCarry(redactor), []
    events = [{"id": "c", "choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
    events.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    for event in events:
        out += carry.events(event)
    assert carry.end() is None
    return "".join(e["choices"][0]["delta"].get("content", "") for e in out if e.get("choices"))


@pytest.mark.parametrize(
    "written", [KEY[:HALF], KEY[:-1], json_escaped(KEY[:HALF]), quote(KEY[:30], safe=""), KEY[7 : 7 + HALF],
                json_escaped(KEY[7 : 7 + HALF]), quote(KEY[3 : 3 + HALF], safe=""), KEY.encode().hex()[9:49],
                base64_runs(KEY, 5, least_base64(len(KEY)))[1]],
)  # fmt: skip
def test_a_run_split_over_stream_events_is_joined_before_it_is_read(written: str) -> None:
    """Split at every position (the two halves of a run of exactly `least` each shorter than it), in
    three pieces too: the carry holds back an end that may be part of a run, so it is read joined."""
    text = LEAD + written + TAIL
    for cut in range(len(text) + 1):
        assert streamed([text[:cut], text[cut:]]) == LEAD + PLACEHOLDER + TAIL, cut
    for first in range(len(LEAD), len(LEAD) + len(written), 3):
        for second in range(first, len(LEAD) + len(written) + 2, 5):
            assert streamed([text[:first], text[first:second], text[second:]]) == LEAD + PLACEHOLDER + TAIL


def test_the_carry_holds_back_an_end_that_may_be_part_of_a_run() -> None:
    """Released, the end of a run (10 of 20) and the next event's rest of it (10) would each be too
    short to be read as one."""
    assert REDACTOR.held_from(LEAD + KEY[5:15]) == len(LEAD)
    assert REDACTOR.held_from("so it ends. ") == len("so it ends. ")


def test_a_stream_without_runs_is_unchanged() -> None:
    text = "keys look like sk-live-01...ef, " + KEY[: HALF - 1] + " is most of nothing, " + KEY[9 : 8 + HALF] + "."
    for cut in range(len(text) + 1):
        assert streamed([text[:cut], text[cut:]]) == text


SECRETS = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"\\'), min_size=16,
                  max_size=80)  # fmt: skip
AROUND_CHARACTERS = string.printable + "äöéñ日本"


@settings(max_examples=300, deadline=None)
@given(SECRETS, st.data())
def test_a_run_of_any_key_never_gets_out(secret: str, data: st.DataObject) -> None:
    """Any run of `least` characters or more of a key, anywhere in it, between text of characters the
    key does not have: redacted as text, in a chat answer, and split over stream events at random."""
    start = data.draw(st.integers(0, len(secret) - least(len(secret))), label="start")
    end = data.draw(st.integers(start + least(len(secret)), len(secret)), label="end")
    run = secret[start:end]
    around = st.text(st.sampled_from(sorted(set(AROUND_CHARACTERS) - set(secret))), max_size=8)
    text = data.draw(around, label="before") + run + data.draw(around, label="after")
    redactor = Redactor([secret])
    assert run not in redactor.text(text)
    assert run not in content_of(redactor.dumps(chat(text)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=3), label="cuts"))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert run not in streamed(pieces, redactor)


def test_a_run_of_a_key_beyond_ascii_counts_its_characters() -> None:
    """Its text's characters (not their UTF-8 bytes, counted for its byte forms): 12 of 24."""
    secret = "日本語のキーです0123456789日本語のキー"
    redactor, run = Redactor([secret]), secret[3:15]
    assert redactor.text(f"x {run} y") == f"x {PLACEHOLDER} y"
    assert redactor.text(f"x {run[1:]} y") == f"x {run[1:]} y"
