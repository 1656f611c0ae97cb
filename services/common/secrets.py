"""Provider secrets: redacted from whatever a provider sends back, encrypted at rest.

A provider knows every secret it was given (its API key, its billing
authorization) and may echo any of them anywhere: in an error's message,
param or code, in a nested object, in a header, in a stream split over
events, inside an image. A Redactor is built once per provider from its
secrets and scrubs text, bytes and parsed JSON before anything reaches a
caller, a log or a database; docs/secrets.md says what it finds.

The forms are derived from each secret, not listed: the secret (and the
credential after an auth scheme, "Bearer X" -> X) as text, as hex (any case)
and as base64 (standard or URL-safe, padded or not) at each of the three
alignments it can have inside a longer encoded string, the partially known
characters at either edge as character classes; the text in any case. Every
character of every form may in turn be written percent-encoded, as a JSON
escape (\\u00XX, \\/, \\", \\\\), as an HTML character reference (&#115;,
&#x73;, &amp;) or, for a space, as "+"; and escapes may be written with
escapes (\\u0025 + "73" reads %73, then s): text is decoded up to three times.
Most of a form (a beginning of half its characters or more) is redacted as the whole
is, wherever it is. A choice's logprobs tokens joined up (their text, their bytes) are looked in
too: a caller rebuilds the answer's text from them.

At rest, secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under
a key from SWITCHBOARD_SECRETS_KEY or <data-dir>/secrets.key (created, mode
0600, on first start), and the data directory is kept private (0700, its
files 0600).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from html.entities import html5
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from services.common.errors import unavailable

PLACEHOLDER = "[redacted]"
SECRETS_KEY_ENV = "SWITCHBOARD_SECRETS_KEY"
SECRETS_KEY_FILE = "secrets.key"
SERVICE_CREDENTIAL_FILE = "service-credential"
SCALAR_CHARACTERS = frozenset("0123456789.-+eEInfinityNaNtruefalsenull")
ENCRYPTED_PREFIX = "enc:v1:"  # marks a value encrypted at rest (a plaintext one has no such prefix)
# A new secret (and the credential after its scheme) must be this long: shorter ones cannot be
# told from ordinary text, and redacting them would cut words and numbers out of answers.
MIN_SECRET_LENGTH = 16
# A secret stored before that rule and shorter than this is not redacted at all; one from this
# length up is redacted in strings and keys but never turns a number into a string.
MIN_REDACTED_LENGTH = 8
# An answer's text that ends with this much of a secret's beginning (or more) ends with the
# placeholder instead: as much of a key is no longer ordinary text (Redactor.ended).
PARTIAL_SECRET_CHARS = 8
ENDED_MESSAGE_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")  # a unary answer's texts
BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
URL_SAFE = {"+": "-", "/": "_"}  # base64url's two other characters


@dataclass(frozen=True)
class Form:
    """One way a secret can be written: the characters each position may hold. The first and last
    positions may be optional (base64 characters only partly made of the secret's bits)."""

    units: tuple[frozenset[str], ...]
    literals: frozenset[str]  # what the form's core is, lowercased, written plainly (the prefilter's)
    optional_first: bool = False
    optional_last: bool = False
    padded: bool = False  # base64: its padding ("=", at most two) goes with it
    # The fewest of its core's characters a beginning of it must have to be redacted as it is
    # (most of a key with other text after it: _with_partials); None: only the whole form is.
    least: int | None = None

    @property
    def core(self) -> int:
        """How many characters of it are made wholly of the secret's (its edges are not)."""
        return len(self.units) - self.optional_first - self.optional_last

    def begins(self, text: str, start: int) -> bool:
        """Whether text[start:] is the beginning of this form (or all of it)."""
        rest, units = len(text) - start, self.units
        for skip in (0, 1) if self.optional_first else (0,):
            if rest > len(units) - skip:
                continue
            matched = 0  # a plain loop: most candidates fail at their second character
            while matched < rest and text[start + matched] in units[skip + matched]:
                matched += 1
            if matched == rest:
                return True
        return False

    def at(self, text: str, start: int) -> tuple[int, int] | None:
        """The span of this form in text when its core starts at `start`: the whole form (edges and
        padding included when there), else a beginning of its core of `least` characters or more,
        as far as the text goes on matching it (the edge before it included when there; the one
        after it, partly made of a cut-short secret's last bits in base64, is not part of it)."""
        first, units, core = int(self.optional_first), self.units, self.core
        matched, limit = 0, min(core, len(text) - start)
        while matched < limit and text[start + matched] in units[first + matched]:
            matched += 1
        if matched < core and (self.least is None or matched < self.least):
            return None
        end = start + matched
        if self.optional_first and start > 0 and text[start - 1] in units[0]:
            start -= 1
        if matched < core:
            return start, end
        if self.optional_last and end < len(text) and text[end] in units[-1]:
            end += 1
        while self.padded and text[end : end + 1] == "=" and end - start < len(units) + 2:
            end += 1
        return start, end

    def starts(self) -> list[tuple[frozenset[str], frozenset[str]]]:
        """The classes of the first two characters a written form can have."""
        pairs = [(self.units[0], self.units[1])]
        return [*pairs, (self.units[1], self.units[2])] if self.optional_first else pairs

    @property
    def firsts(self) -> frozenset[str]:
        """The characters a written form can start with."""
        return self.units[0] | self.units[1] if self.optional_first else self.units[0]


@lru_cache(maxsize=4_096)
def _unit(characters: frozenset[str]) -> frozenset[str]:
    """One shared copy of each class of characters: the forms of every provider's secrets are made of a
    few hundred distinct classes, and a copy of each per position made a redactor of a key and a
    billing token 280-420 KiB (a Router keeps up to 1,024 redactors, Billing one per set of secrets)."""
    return characters


def _exact(text: str) -> Form:
    """The text in any case (secrets are long enough that a case change is never ordinary text)."""
    units = tuple(_unit(frozenset({c, "+"} if c == " " else _cases(c))) for c in text)
    return Form(units, frozenset({_lowered(text), _lowered(text.replace(" ", "+"))}))


def _cases(char: str) -> set[str]:
    return {char} | {cased for cased in (char.lower(), char.upper()) if len(cased) == 1}


def _lowered(text: str) -> str:
    """The text in lower case character for character, so that positions in it are the text's ("İ"
    lowers to two characters: kept as it is)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(char.lower() if len(char.lower()) == 1 else char for char in text)


def _hex(data: bytes) -> Form:
    return Form(tuple(_unit(frozenset({c, c.upper()})) for c in data.hex()), frozenset({data.hex()}))


def _b64_chars(bits: str, known_low: bool) -> frozenset[str]:
    """The base64 characters (either alphabet) whose low (else high) bits are `bits`."""
    free = 6 - len(bits)
    values = [int(bits + f"{n:0{free}b}" if not known_low else f"{n:0{free}b}" + bits, 2) for n in range(2**free)]
    return _unit(frozenset(c for v in values for c in (BASE64[v], URL_SAFE.get(BASE64[v], BASE64[v]))))


def _base64(data: bytes, offset: int) -> Form:
    """The base64 of `data` when `offset` (0-2) other bytes come before it in the encoded string
    (any longer string puts it at one of these three alignments): the characters made wholly of
    its bits, and at either edge the class of characters made partly of them."""
    bits = "".join(f"{byte:08b}" for byte in data)
    lead = -8 * offset % 6  # bits of data in the character that begins before it
    end = lead + (len(bits) - lead) // 6 * 6  # where the characters made wholly of data end
    core = "".join(BASE64[int(bits[i : i + 6], 2)] for i in range(lead, end, 6))
    units = [_b64_chars(bits[:lead], known_low=True)] if lead else []
    units += [_unit(frozenset({c, URL_SAFE.get(c, c)})) for c in core]
    if end < len(bits):
        units.append(_b64_chars(bits[end:], known_low=False))
    literals = frozenset({core.lower(), core.translate(str.maketrans(URL_SAFE)).lower()})
    return Form(tuple(units), literals, optional_first=bool(lead), optional_last=end < len(bits), padded=True)


def _texts(secret: str) -> set[str]:
    """The secret, and the credential after its auth scheme ("Bearer X" -> X), when long enough."""
    scheme, _, credential = secret.partition(" ")
    texts = {secret, credential.strip()} if scheme and credential.strip() else {secret}
    return {text for text in texts if len(text) >= MIN_REDACTED_LENGTH}


def forms(secrets: Iterable[str]) -> list[Form]:
    """Every form of every secret: as text, as hex, as base64 at each alignment; each found from
    half of it on too (_with_partials), but a `Scheme credential` text as a whole (the public
    `Bearer ` would make most of a partial: "Use Bearer tokens"; its credential's are found) and a
    legacy secret shorter than MIN_SECRET_LENGTH (its first 8 characters are ordinary words)."""
    partials: dict[str, bool] = {}
    for secret in secrets:
        for text in _texts(secret) if secret else ():
            not_scheme_text = text != secret.strip() or " " not in secret
            partials[text] = partials.get(text, False) or (len(text) >= MIN_SECRET_LENGTH and not_scheme_text)
    result = []
    for text in sorted(partials, key=lambda t: (-len(t), t)):
        data = text.encode()
        text_forms = [_exact(text), _hex(data), *(_base64(data, offset) for offset in range(3))]
        if not text.isascii():  # its UTF-8 bytes one by one, as bytes and percent-encodings read
            text_forms.append(_exact(data.decode("latin-1")))
        result += [_with_partials(form) if partials[text] else form for form in text_forms]
    return result


def _with_partials(form: Form) -> Form:
    """The form, found from a beginning of half its core's characters (rounded up) on, and
    PARTIAL_SECRET_CHARS at least: most of a key is no longer ordinary text, wherever it is."""
    least = max(-(-form.core // 2), PARTIAL_SECRET_CHARS)
    return replace(form, least=least) if least < form.core else form


# HTML's named references to printable ASCII characters (&amp; &sol; &quot;; &amp without its ";").
_NAMED_REFERENCES = {name: char for name, char in html5.items() if len(char) == 1 and " " <= char <= "~"}
_NAMES = "|".join(map(re.escape, sorted(_NAMED_REFERENCES, key=len, reverse=True)))  # "amp;" before "amp"
_LONGEST_NAME = max(map(len, _NAMED_REFERENCES))  # DiacriticalGrave;
# One character escaped: percent-encoded, a JSON escape, an HTML character reference (a numeric one
# may lack its ";", as browsers read it). An escaped backslash before what reads as a \\u escape is
# taken as a backslash and that escape (either reading could be the one a reader makes: the one that
# shows a secret counts). Each alternative has one group: match.lastindex tells which it is.
_ESCAPED = re.compile(
    r"%([0-9A-Fa-f]{2})|\\u([0-9A-Fa-f]{4})|\\([\"/bfnrt]|\\(?!u[0-9A-Fa-f]{4}))"
    rf"|&#([0-9]{{1,7}});?|&#[xX]([0-9A-Fa-f]{{1,6}});?|&({_NAMES})"
)
# The widest a form's character may be written (in one round of escapes): the longest named reference.
MAX_ESCAPED_CHARACTER = max(len("&#1114111;"), 1 + _LONGEST_NAME)
# How many times text is decoded: an escape may itself be written with escapes (\\u0025 + 73 -> %73 -> s).
DECODING_ROUNDS = 3
# JSON's two-character escapes of control characters (a serializer, orjson among them, writes these).
_CONTROL_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _decoded(match: re.Match[str]) -> str:
    kind = match.lastindex
    value = match[kind]
    if kind == 3:
        return _CONTROL_ESCAPES.get(value, value)
    if kind == 6:
        return _NAMED_REFERENCES[value]
    code = int(value, 10 if kind == 4 else 16)
    return chr(code) if code <= sys.maxunicode else "\ufffd"  # as a browser reads a reference past Unicode


_REFERENCE = re.compile(r"&[#A-Za-z]")  # where an HTML character reference may begin


def _may_escape(piece: str) -> bool:
    """Whether an escape may begin in a piece of text (one cut off at its end included)."""
    return "%" in piece or "\\" in piece or "&" in piece


class _Positions:
    """Where each character of a decoded text starts in the text it was decoded from (worked out
    only when asked: only when a secret was found)."""

    def __init__(self, matches: list[re.Match[str]]) -> None:
        self._matches = matches
        self._decoded: list[int] | None = None  # where each escape's character is in the decoded text
        self._starts: list[int] | None = None
        self._shrunk: list[int] | None = None

    @property
    def matches(self) -> list[re.Match[str]]:
        return self._matches

    def inside(self, position: int) -> bool:
        """Whether the position is within an escape, after its first character."""
        i = bisect.bisect_right(self._escape_starts(), position) - 1
        return i >= 0 and self._matches[i].start() < position < self._matches[i].end()

    def decoded_at(self, position: int) -> int:
        """The decoded text's index of the character at `position` (not inside an escape)."""
        i = bisect.bisect_left(self._escape_starts(), position) - 1  # the escapes that end before it
        if i < 0:
            return position
        return position - self._shrunk_through()[i]

    def _escape_starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [match.start() for match in self._matches]
        return self._starts

    def _shrunk_through(self) -> list[int]:
        """How much shorter the decoded text is through each escape."""
        if self._shrunk is None:
            self._shrunk = list(itertools.accumulate(len(m[0]) - 1 for m in self._matches))
        return self._shrunk

    def __getitem__(self, position: int) -> int:
        if self._decoded is None:  # an escape's start less the shrinking of the escapes before it
            through = zip(self._matches, self._shrunk_through(), strict=True)
            self._decoded = [m.start() - shrunk + len(m[0]) - 1 for m, shrunk in through]
        i = bisect.bisect_right(self._decoded, position) - 1
        if i < 0:
            return position
        match = self._matches[i]
        return match.start() + (0 if self._decoded[i] == position else len(match[0]) + position - self._decoded[i] - 1)


# The kinds of escape (_ESCAPED's groups): percent-encoding, JSON's, HTML's character references.
ESCAPE_FAMILIES = (frozenset({1}), frozenset({2, 3}), frozenset({4, 5, 6}))


def _family_readings(text: str, starts: _Positions) -> list[tuple[str, _Positions]]:
    """Where escapes of several kinds are mixed (`starts`: the text's escapes), the text read with
    each kind's escapes decoded alone; none where there is one kind."""
    kinds = {match.lastindex for match in starts.matches}
    if sum(1 for family in ESCAPE_FAMILIES if kinds & family) < 2:
        return []
    return [
        _decode(text, [m for m in starts.matches if m.lastindex in family])
        for family in ESCAPE_FAMILIES
        if kinds & family
    ]


def _unescaped(text: str) -> tuple[str, _Positions]:
    """The text with its escapes decoded once (a percent-encoded byte as the character of that
    code), and where each character of it starts in text."""
    if "%" not in text and "\\" not in text and ("&" not in text or not _REFERENCE.search(text)):  # the usual text
        return text, _Positions([])
    return _decode(text, list(_ESCAPED.finditer(text)))


def _decoded_fully(text: str, rounds: int = DECODING_ROUNDS) -> str:
    """The text as read once its escapes are decoded, `rounds` times at most (escapes of escapes)."""
    for _ in range(rounds):
        plain, _ = _unescaped(text)
        if plain is text:
            break
        text = plain
    return text


def _decode(text: str, matches: list[re.Match[str]]) -> tuple[str, _Positions]:
    """The text with these escapes of it decoded, and where each character of it starts in text."""
    if not matches:
        return text, _Positions(matches)
    pieces, position = [], 0
    for match in matches:  # the text between escapes and each escape decoded: one scan, not a second by sub()
        pieces += (text[position : match.start()], _decoded(match))
        position = match.end()
    pieces.append(text[position:])
    return "".join(pieces), _Positions(matches)


@dataclass(frozen=True)
class _Head:
    """The start of a reading from inside an escape: its characters, where each is in the text,
    and where the reading meets the whole text's reading."""

    text: str
    at: Sequence[int]
    end: int


class _Finder:
    """Finds every form of the secrets in a text, and every beginning of half a form or more: each
    form's core (its first half) is looked for as a substring (lowercased, escapes decoded), then
    checked character by character as far as the form goes and given its edges."""

    def __init__(self, forms: list[Form]) -> None:
        # Each form's core, or the beginning of it a partial must have, is looked for; a match is then
        # read on as far as the form goes (Form.at): one search finds whole forms and partials alike.
        self._cores = [
            (prefix, form) for form in forms for prefix in sorted({literal[: form.least] for literal in form.literals})
        ]
        # The most characters a form takes, its optional edges and padding included.
        self._reach = max((len(form.units) for form in forms), default=0) + 2
        # The forms a text's first two characters can begin: most readings after an escape end there.
        self.by_pair: dict[str, list[Form]] = {}
        for form in forms:
            for pair in {a + b for first, second in form.starts() for a in first for b in second}:
                self.by_pair.setdefault(pair, []).append(form)

    def spans(self, text: str, serialized: bool = False) -> list[tuple[int, int]]:
        """Where forms are in the text, escapes decoded or not (a secret may itself look like
        one), merged where they touch or overlap. A `serialized` JSON document's backslash escapes
        are its serializer's, never text: none is read from inside."""
        found = self._read_found(text, serialized, DECODING_ROUNDS)
        if not found:  # the usual case: no secret
            return []
        merged: list[list[int]] = []
        for start, end in sorted(found):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(start, end) for start, end in merged]

    def _read_found(self, text: str, serialized: bool, rounds: int) -> list[tuple[int, int]]:
        """The forms in the text as written, and in it read with its escapes decoded: that reading
        read so again, `rounds` times at most (an escape written with escapes: \\u0025 + 73 -> %73 -> s)."""
        found = self._found(text)
        if not rounds:
            return found
        plain, starts = _unescaped(text)
        if plain is text:
            return found
        found += self._inside_escapes(text, plain, starts, serialized)
        found += [(starts[s], starts[e]) for s, e in self._read_found(plain, False, rounds - 1)]
        return found + self._one_family_found(text, starts)

    def _one_family_found(self, text: str, starts: _Positions) -> list[tuple[int, int]]:
        """Where escapes of several kinds are mixed, the forms in each kind's reading alone: a writer
        that escapes one character of a secret with one kind (HTML's &sol;) leaves another that looks
        like an escape of another kind (a literal %00 in the secret) as it is."""
        return [
            (positions[s], positions[e])
            for plain, positions in _family_readings(text, starts)
            for s, e in self._found(plain)
        ]

    def _inside_escapes(
        self, text: str, plain: str, starts: _Positions, serialized: bool = False
    ) -> list[tuple[int, int]]:
        """An escape's first characters may be text, not an escape, standing before a secret that
        the escape would eat: "%" before "00...", "%4" before "1...", a backslash before "n..." or
        "u0041...". So the text is read again from each character inside an escape: as it reads
        until it meets the whole text's reading (most readings do within a character or two),
        then as the whole text reads; only as far as a form can begin there (a table of the first
        two characters of every form), so a body made of escapes costs a few steps per escape.
        More readings that hold a form than the text has room for (a provider's key made to
        repeat itself) make the whole text one span: never worse than linear."""
        found: list[tuple[int, int]] = []
        budget = len(text) // 64 + 64
        shrunk = 0  # how much shorter the decoded text is through this escape
        for match in starts.matches:
            shrunk += len(match[0]) - 1
            if serialized and match[0][0] == "\\":
                continue
            # Read from inside this escape, its rest holds no escape's first character ("%XY", "\\uXXXX",
            # "\\n"): that rest as it is, then the whole text's reading from its end on.
            plain_rest = not _may_escape(match[0][1:])
            for begin in range(match.start() + 1, match.end()):
                pair = text[begin : begin + 2]  # two plain characters read as they are in any reading
                if pair not in self.by_pair and not _may_escape(pair):
                    continue
                if plain_rest:
                    head = _Head(text[begin : match.end()], range(begin, match.end()), match.end())
                    spans = self._reading(text, plain, starts, head, match.end() - shrunk)
                else:
                    head = self._head(text, starts, begin)
                    if head is None:
                        continue
                    synced = starts.decoded_at(head.end) if len(head.text) < self._reach else len(plain)
                    spans = self._reading(text, plain, starts, head, synced)
                budget -= len(spans)
                if budget < 0:
                    return [(0, len(text))]
                found += spans
        return found

    def _head(self, text: str, starts: _Positions, begin: int) -> _Head | None:
        """What a reading from `begin` decodes before it meets the whole text's reading (at most
        as much as a form takes: a run of backslashes read one off never meets it); None once its
        first two characters begin no form."""
        head: list[str] = []
        head_at: list[int] = []
        position = begin
        while position < len(text) and starts.inside(position) and len(head) < self._reach:
            match = _ESCAPED.match(text, position)
            head.append(_decoded(match) if match else text[position])
            head_at.append(position)
            position = match.end() if match else position + 1
            if len(head) == 2 and head[0] + head[1] not in self.by_pair:
                return None  # no form begins so
        return _Head("".join(head), head_at, position)

    def _reading(self, text: str, plain: str, starts: _Positions, head: _Head, synced: int) -> list[tuple[int, int]]:
        """The forms that begin a reading (its head, then the decoded text from `synced` on), as spans of the text."""
        reading = head.text + plain[synced : synced + self._reach]

        def raw(index: int) -> int:
            if index < len(head.text):
                return head.at[index]
            if index == len(head.text):
                return head.end
            index += synced - len(head.text)
            return starts[index] if index < len(plain) else len(text)

        return [(raw(start), raw(end)) for start, end in self._beginning(reading)]

    def _beginning(self, reading: str) -> list[tuple[int, int]]:
        """The forms that begin the reading (a form that begins later in it is another reading's)."""
        found = []
        for form in self.by_pair.get(reading[:2], ()):
            for core in (0, 1) if form.optional_first else (0,):  # its optional first character there or not
                span = form.at(reading, core)
                if span is not None and span[0] == 0:
                    found.append(span)
        return found

    def _found(self, text: str) -> list[tuple[int, int]]:
        lowered = _lowered(text)
        found = []
        for literal, form in self._cores:
            at = lowered.find(literal)
            while at >= 0:
                span = form.at(text, at)
                if span is not None:
                    found.append(span)
                at = lowered.find(literal, at + 1)
        return found

    def replaced(self, text: str, placeholder: str) -> str:
        """The text with every form replaced; when a replacement and its neighbours form a secret
        again, nothing of the text is kept."""
        spans = self.spans(text)
        if not spans:
            return text
        pieces, position = [], 0
        for start, end in spans:
            pieces += [text[position:start], placeholder]
            position = end
        scrubbed = "".join(pieces) + text[position:]
        return placeholder if self.spans(scrubbed) else scrubbed


class Redactor:
    """Scrubs a provider's secrets from text, bytes and JSON values."""

    def __init__(self, secrets: Iterable[str]) -> None:
        secrets = [secret for secret in secrets if secret]
        self.forms = forms(secrets)
        self._finder = _Finder(self.forms)
        self._longest = max((len(form.units) for form in self.forms), default=0)
        self._starting: dict[str, list[Form]] = {}  # the forms a character can begin
        for form in self.forms:
            for char in form.firsts:
                self._starting.setdefault(char, []).append(form)
        # Where a form's first two characters are: one small pattern of character classes.
        pairs = {_class(first) + _class(second) for form in self.forms for first, second in form.starts()}
        self._pair_starts = re.compile("|".join(sorted(pairs)) if pairs else "(?!)")
        # A placeholder that itself holds a secret cannot stand in for it.
        self._placeholder = "" if self._finder.spans(PLACEHOLDER) else PLACEHOLDER
        # A secret with a character JSON escapes (a quote, a backslash, a control character: refused
        # since, but one stored before may have them) is not seen as it is in a serialized document.
        self._escaped_in_json = any(orjson.dumps(secret)[1:-1] != secret.encode() for secret in secrets)
        # Keys and scalars (numbers, true, false, null) are redacted of long secrets only: a short
        # legacy one could be part of a field's name or of a number, and redacting a scalar makes
        # it a string. Only a form that can be written with a scalar's characters is looked for in one.
        # When every secret is long enough, those forms are the text's: its finder serves (no second copy).
        strong_secrets = [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]
        all_strong = len(strong_secrets) == len(secrets)
        strong = self.forms if all_strong else forms(strong_secrets)
        self._keys = self._finder if all_strong else _Finder(strong)
        scalar_like = [form for form in strong if _scalar_like(form)]
        self._scalars = _Finder(scalar_like) if scalar_like else None

    def __bool__(self) -> bool:
        return bool(self.forms)

    def text(self, value: str) -> str:
        return self._finder.replaced(value, self._placeholder) if self.forms else value

    def ended(self, text: str) -> str:
        """A text that ends here for good (a field of an answer, or the end of it a stream held
        back): redacted, and an end of it that is the beginning of a secret, PARTIAL_SECRET_CHARS or
        more (most of a key, cut short by max_tokens or a stream that broke off), replaced as a
        whole secret is: the characters it lacks are easier to guess than the key."""
        cut = self._cut_short_at(text)
        return self.text(text) if cut == len(text) else self.text(text[:cut]) + self._placeholder

    def _cut_short_at(self, text: str) -> int:
        """Where an end of text that is PARTIAL_SECRET_CHARS or more of a secret's beginning starts
        (not inside a whole secret: that one is redacted as it is); len(text) when there is none."""
        if len(text) < PARTIAL_SECRET_CHARS or not self.forms:
            return len(text)
        # The whole text: written with escapes (nested ones too), a beginning takes many more characters
        # than the form. An escape the end cut off is not a beginning here: the text ends, and "&category"
        # is ordinary text. The 8 are counted as read, escapes decoded ("\\u0073\\u006b" is 2).
        hold = self.held_from(text, hold_open_escape=False)
        if len(_decoded_fully(text[hold:])) < PARTIAL_SECRET_CHARS:
            return len(text)
        if any(start < hold < end for start, end in self.spans(text)):  # inside a whole one: redacted as it is
            return len(text)
        return hold

    def held_from(self, text: str, rounds: int = DECODING_ROUNDS, hold_open_escape: bool = True) -> int:
        """Where the longest end of text that could be the beginning of a secret starts: read as it is
        (a secret may itself hold what looks like an escape) or with its escapes decoded (that reading
        again, `rounds` times at most); an escape the text's end cut off is held back whole (unless
        not `hold_open_escape`: the text ends there)."""
        held = self._beginning(text)
        open_escape = _OPEN_ESCAPE.search(text) if hold_open_escape else None
        if open_escape:
            text = text[: open_escape.start()]
            held = min(held, len(text), self._beginning(text))
        plain, starts = _unescaped(text)
        if rounds and plain is not text:
            held = min(held, starts[self.held_from(plain, rounds - 1, hold_open_escape)])
            for family_plain, positions in _family_readings(text, starts):  # as _Finder._one_family_found
                held = min(held, positions[self.held_from(family_plain, rounds - 1, hold_open_escape)])
        return held

    def _beginning(self, text: str) -> int:
        """Where the longest end of text that is the beginning of a form starts (len(text): none)."""
        last = len(text) - 1
        # Only where a form's first two characters are (found in C, leftmost first), then the last
        # character alone: most texts have no such place.
        position, search = max(0, len(text) - self._longest), self._pair_starts.search
        while (found := search(text, position)) is not None:
            j = found.start()
            if any(form.begins(text, j) for form in self._finder.by_pair.get(text[j : j + 2], ())):
                return j
            position = j + 1
        if last >= 0 and any(form.begins(text, last) for form in self._starting.get(text[last], ())):
            return last
        return len(text)

    def spans(self, value: str) -> list[tuple[int, int]]:
        """Where the secrets are in the text."""
        return self._finder.spans(value) if self.forms else []

    def bytes(self, value: bytes) -> bytes:
        """Like text(), on bytes (an SSE line, a body that is not JSON): read as UTF-8, any byte
        that is not kept as it is."""
        if not self.forms:
            return value
        return self._finder.replaced(_read(value), self._placeholder).encode("utf-8", "surrogateescape")

    def binary(self, value: bytes) -> bytes:
        """A binary answer for the caller (an image, audio): passed on unchanged, or a 502 when any
        form of a secret is in it. Redacting would corrupt the media and a caller must not get
        the secret: the answer is refused."""
        if self.forms and self._finder.spans(_read(value)):
            raise unavailable("UPSTREAM_ERROR", "the provider's answer carried a secret; it was not passed on")
        return value

    def json(self, value: Any) -> Any:
        """A parsed JSON value with every secret redacted from its strings, keys and scalars as written.
        One look at the whole document first: walking it is needed only when a secret may be there."""
        try:
            if not self._may_hold(orjson.dumps(value)):
                return value
        except TypeError:  # an integer beyond 64 bits: no quick look
            pass
        return self._walk(value)

    def dumps(self, value: Any, whole: bool = True) -> bytes:
        """A parsed JSON value serialized, every secret redacted: one serialization, unless a
        secret may be in it (then its strings, keys and scalars are walked). A `whole` chat answer
        is read as a caller joins it up too (_join_up; a stream's events were, by its carry)."""
        if whole:
            self._join_up(value)
        data = orjson.dumps(value)
        return orjson.dumps(self._walk(value)) if self._may_hold(data) else data

    def tokens_leak(self, readings: Iterable[TokenReading], ended: bool = False) -> bool:
        """Whether a choice's tokens, joined up as a caller may read them, hold a secret; `ended`
        (no more tokens follow), or end with one cut short as `ended` reads texts."""
        return any(
            self.spans(reading.text) or (ended and self._cut_short_at(reading.text) < len(reading.text))
            for reading in readings
        )

    def _join_up(self, answer: Any) -> None:
        """What a caller joins up of each choice (in `answer` itself), each piece harmless alone:
        logprobs tokens (the normal way to rebuild the text) become null when they hold a secret;
        message content given as parts becomes their text joined, to be redacted, when that does."""
        if not self.forms or not isinstance(answer, dict):
            return
        for choice in _list(answer.get("choices")):
            if not isinstance(choice, dict):
                continue
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and self.tokens_leak(token_readings([logprobs]), ended=True):
                choice["logprobs"] = None
            message = choice.get("message")
            parts = message.get("content") if isinstance(message, dict) else None
            if isinstance(parts, list) and self.spans(joined := _parts_text(parts)):
                message["content"] = joined
            self._end_fields(choice, message if isinstance(message, dict) else {})

    def _end_fields(self, choice: dict, message: dict) -> None:
        """A choice's texts end here (ended): the answer's text (or its last part), refusal, reasoning,
        audio transcript, a completion's text and each tool or function call's arguments, where a key
        cut short by max_tokens would be."""
        texts = [(message, key) for key in ENDED_MESSAGE_FIELDS if isinstance(message.get(key), str)]
        texts += [(choice, "text")] if isinstance(choice.get("text"), str) else []
        parts = [p for p in _list(message.get("content")) if isinstance(p, dict) and isinstance(p.get("text"), str)]
        texts += [(parts[-1], "text")] if parts else []  # the parts' joined text ends with the last one's
        holders = [*_list(message.get("tool_calls")), {"function": message.get("function_call")}]
        for function in (call.get("function") for call in holders if isinstance(call, dict)):
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                texts.append((function, "arguments"))
        audio = message.get("audio")
        texts += [(audio, "transcript")] if isinstance(audio, dict) and isinstance(audio.get("transcript"), str) else []
        for holder, key in texts:  # the rest is redacted with the whole answer
            if (cut := self._cut_short_at(text := holder[key])) < len(text):
                holder[key] = text[:cut] + self._placeholder

    def _may_hold(self, document: bytes) -> bool:
        """Whether a serialized document may hold a secret: one is seen in it, or a string in it
        has a backslash (a JSON escape written as text, seen only once the string is read), or a
        secret would itself be written with escapes."""
        if not self.forms:
            return False
        if self._escaped_in_json or b"\\\\" in document:
            return True
        return bool(self._finder.spans(_read(document), serialized=True))

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._keys.replaced(str(k), self._placeholder): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if self._scalars is None or not self._scalars.spans(written(value)):
            return value
        return self._placeholder


def _class(unit: frozenset[str]) -> str:
    """A regular expression's class of these characters."""
    return "[" + "".join(re.escape(char) for char in sorted(unit)) + "]"


def _read(data: bytes) -> str:
    """Bytes as text: UTF-8, a byte that is not kept as a stand-in (encoding it back gives it back)."""
    return data.decode("utf-8", "surrogateescape")


def _scalar_like(form: Form) -> bool:
    return all(unit & SCALAR_CHARACTERS for unit in form.units)


def written(scalar: Any) -> str:
    """A JSON scalar as Switchboard writes it (orjson; the standard library beyond 64-bit integers)."""
    try:
        return orjson.dumps(scalar).decode()
    except TypeError:
        return json.dumps(scalar)


NO_SECRETS = Redactor(())


def _parts_text(parts: list) -> str:
    """The text of a message's content parts, joined as a caller may join them (nothing between)."""
    return "".join(part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str))


@dataclass(frozen=True)
class TokenReading:
    """A choice's tokens joined up one way a caller may read them (their text, their bytes, the
    alternatives of one rank) over logprobs objects in order (one per stream event): the text, and
    for each token's piece of it the object it came from and where it ends, in UTF-8 bytes."""

    text: str
    owners: list[int]
    ends: list[int]

    def owner_at(self, position: int) -> int:
        """The logprobs object the text's character at `position` came from."""
        offset = len(self.text[:position].encode("utf-8", "surrogateescape"))
        return self.owners[bisect.bisect_right(self.ends, offset)]


def token_readings(logprobs: list[dict], alternatives: bool = True) -> list[TokenReading]:
    """The readings of logprobs objects' tokens: chat's (content[] and refusal[] of {token, bytes,
    top_logprobs}) and legacy completions' (tokens[], top_logprobs[] of {token: logprob}); without
    `alternatives`, of the tokens chosen only (a stream's carry: each event would read up to 20
    ranks again, ~40x the work; each alternative is still redacted on its own)."""
    pieces: dict[tuple, list[tuple[int, bytes]]] = {}
    for owner, logprob in enumerate(logprobs):
        for name, tokens in logprob.items():
            if alternatives or name != ALTERNATIVES:
                for token in _list(tokens):
                    _token_pieces(token, (name,), owner, pieces, alternatives)
    return [_token_reading(column) for column in pieces.values()]


ALTERNATIVES = "top_logprobs"  # the tokens a model did not choose, by rank


def _token_pieces(
    value: Any, path: tuple, owner: int, pieces: dict[tuple, list[tuple[int, bytes]]], alternatives: bool = True
) -> None:
    """A token's texts by where they are in it: its token, its bytes, each rank of its alternatives."""
    if isinstance(value, str):
        pieces.setdefault(path, []).append((owner, value.encode("utf-8", "surrogatepass")))
    elif _is_bytes(value):
        pieces.setdefault(path, []).append((owner, bytes(value)))
    elif isinstance(value, list):
        for rank, item in enumerate(value):
            _token_pieces(item, (*path, rank), owner, pieces, alternatives)
    elif isinstance(value, dict) and all(isinstance(item, (int, float)) for item in value.values()):
        for rank, token in enumerate(value):  # legacy alternatives: {token: logprob}
            _token_pieces(token, (*path, rank), owner, pieces, alternatives)
    elif isinstance(value, dict):
        for key, item in value.items():
            if alternatives or key != ALTERNATIVES:
                _token_pieces(item, (*path, key), owner, pieces, alternatives)


def _is_bytes(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(b) is int and 0 <= b <= 255 for b in value)


def _token_reading(column: list[tuple[int, bytes]]) -> TokenReading:
    text = _read(b"".join(piece for _, piece in column))
    return TokenReading(text, [owner for owner, _ in column], list(itertools.accumulate(len(p) for _, p in column)))


def item_index(item: Any, position: int) -> int:
    """The index a list item (a choice, a tool call) is told apart by: its "index" when that is an
    integer, else its place in the list. The stream's carry (which writes it back into each item)
    and every translation read it so: what a caller joins up is what was checked for secrets."""
    index = item.get("index") if isinstance(item, dict) else None
    return index if type(index) is int else position


# The text fields of a stream's events that a caller joins up across events (chat completions:
# the content, reasoning, refusal and tool-call names and arguments of each choice; "*" stands for
# a list item, told apart by its "index"). A route with other streamed text adds its fields here.
JOINED_FIELDS: tuple[tuple[str, ...], ...] = (
    ("choices", "*", "delta", "content"),
    ("choices", "*", "delta", "reasoning_content"),
    ("choices", "*", "delta", "reasoning"),
    ("choices", "*", "delta", "refusal"),
    ("choices", "*", "delta", "tool_calls", "*", "function", "name"),
    ("choices", "*", "delta", "tool_calls", "*", "function", "arguments"),
    ("choices", "*", "text"),
)
Path_ = tuple[str | int, ...]
# An escape the event's end may have cut off: "%7", "\\u00", "&#11" (";" or a digit may follow), "&am".
_OPEN_ESCAPE = re.compile(
    rf"(?:%[0-9A-Fa-f]?|\\(?:u[0-9A-Fa-f]{{0,3}})?|&(?:#[xX]?[0-9A-Fa-f]{{0,7}}|[A-Za-z]{{0,{_LONGEST_NAME}}})?)\Z"
)


class BinaryCarry:
    """A binary answer relayed as it arrives (audio): each piece goes on once no secret could
    still begin in it, the end of it held back for the next piece; an answer that carries a
    secret, in one piece or across two, is refused (Redactor.binary: a 502)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        longest = max((len(form.units) for form in redactor.forms), default=0)
        self._hold = max(0, MAX_ESCAPED_CHARACTER * longest - 1)
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        """What of the answer so far may go on."""
        data = self._redactor.binary(self._held + piece)
        cut = max(0, len(data) - self._hold)
        self._held = data[cut:]
        return data[:cut]

    def end(self) -> bytes:
        """The rest, once the answer ended."""
        held, self._held = self._held, b""
        return held


class StreamCarry:
    """Keeps a secret split over consecutive stream events from getting out. For each joined text
    field, the end of its text that could be the beginning of a secret (at most the longest form
    less one character) is held back and put in front of the field's text in the next event; a
    choice's held text goes out, redacted, before the event that finishes it, all of it at the end;
    text of a choice after the event that finished it never goes out (a caller would join it to
    what went out whole). Each choice's logprobs are carried alike (_TokenCarry)."""

    def __init__(self, redactor: Redactor, fields: tuple[tuple[str, ...], ...] = JOINED_FIELDS) -> None:
        self._redactor = redactor
        self._fields = _trie(fields)
        self._held: dict[Path_, str] = {}
        self._tokens = _TokenCarry(redactor, redactor.held_from)
        self._last: dict = {}  # the last event with a joined field: its id, model... for a flush
        self._finished: set[int] = set()  # the choices an event finished
        self._closed: set[Path_] = set()  # fields whose held end went out when the choice moved past them

    def events(self, event: dict) -> list[dict]:
        """The events to pass on for this one: its joined fields less what is held back, and before
        it one with the held text of the choices it finishes (and that it has no text for)."""
        if not self._redactor:
            return [event]
        choices = _list(event.get("choices"))
        finished = {item_index(choice, i) for i, choice in enumerate(choices) if _finishes(choice)}
        for i, choice in enumerate(choices):
            if isinstance(choice, dict):
                self._tokens.pass_on(item_index(choice, i), choice, _finishes(choice))
        fields = []
        for path, holder, key in _strings_at(event, self._fields, ()):
            if _choice(path) in self._finished or path in self._closed:
                holder[key] = ""  # text of a finished choice, or of a field it moved past, never goes out
            else:
                fields.append((path, holder, key))
        later = _latest_fields(path for path, _, _ in fields)
        for path, holder, key in fields:
            text = self._held.pop(path, "") + holder[key]
            holder[key], held = self._split(text)
            if held and (_choice(path) in finished or _field_order(path) < later[_choice(path)]):
                holder[key] = self._redactor.ended(text)  # done: nothing held back (a caller reads it whole now)
                self._closed.add(path)  # and nothing more of it (it could complete what went out)
            elif held:
                self._held[path] = held
            self._last = event
        for path in self._moved_past(later):  # its held end goes with this event; later text of it, never
            _put(event, path, self._redactor.ended(self._held.pop(path)))
            self._closed.add(path)
        flushed = {p: self._held.pop(p) for p in list(self._held) if _choice(p) in finished}
        self._finished |= finished
        self._tokens.close(finished)
        return [self._flush_event(flushed), event] if flushed else [event]

    def _moved_past(self, later: dict[Any, tuple]) -> list[Path_]:
        """The held fields this event's fields come after in their choice (_field_order: its text
        before its tool calls, a tool call's name before its arguments): done, as a caller reads the
        answer (a tool's name shown before its arguments must be whole, the text before a tool call)."""
        return [p for p in self._held if _choice(p) in later and _field_order(p) < later[_choice(p)]]

    def end(self) -> dict | None:
        """At the end of the stream: an event with all that is still held back, redacted."""
        held, self._held = self._held, {}
        logprobs = self._tokens.end()
        if not held and not logprobs:
            return None
        event = self._flush_event(held)
        for index, merged in logprobs.items():
            _put(event, ("choices", index, "logprobs"), merged)
        return event

    def _split(self, text: str) -> tuple[str, str]:
        """(what can go out now, redacted; what is held back)."""
        hold = self._redactor.held_from(text)
        spans = self._redactor.spans(text)
        for start, end in spans:
            if start < hold < end:  # a whole secret across the cut goes out now, redacted
                hold = end
        return self._redactor.text(text[:hold]) if spans else text[:hold], text[hold:]

    def _flush_event(self, held: dict[Path_, str]) -> dict:
        """An event carrying the held texts: the last event's id, object, created and model, and
        at each path just the "index" of each list item on the way."""
        event: dict = {k: v for k, v in self._last.items() if not isinstance(v, (dict, list)) and k != "usage"}
        for path, text in held.items():
            _put(event, path, self._redactor.ended(text))
        return event


class _TokenCarry:
    """A stream's logprobs, which a caller joins up across events as it joins the text. A choice's
    logprobs go on once no secret could begin in their tokens; those of the events from the first
    whose tokens could are held back and go on merged into a later event's (all of them in the event
    that finishes the choice, or at the end). When the joined tokens hold a secret, that event's
    logprobs and those of every later event of the choice are null: a token list with a secret cut
    out of it means nothing, and a model that echoed a secret may echo it again."""

    def __init__(self, redactor: Redactor, held_from: Callable[[str], int]) -> None:
        self._redactor = redactor
        self._held_from = held_from
        self._held: dict[int, list[dict]] = {}  # choice index -> the logprobs objects held back
        self._closed: set[int] = set()  # the choices whose logprobs never go out again

    def pass_on(self, index: int, choice: dict, finishes: bool) -> None:
        """Sets the choice's logprobs to what of them may go out now."""
        if index in self._closed:
            if "logprobs" in choice:
                choice["logprobs"] = None
            return
        given = choice.get("logprobs")
        pending = self._held.pop(index, []) + ([given] if isinstance(given, dict) else [])
        if not pending:
            return
        readings = token_readings(pending, alternatives=False)
        if self._redactor.tokens_leak(readings, ended=finishes):
            self._closed.add(index)
            choice["logprobs"] = None
            return
        cut = len(pending) if finishes else self._cut(readings, len(pending))
        if cut < len(pending):
            self._held[index] = pending[cut:]
        choice["logprobs"] = _merged(pending[:cut]) if cut else None

    def close(self, indexes: set[int]) -> None:
        """No more logprobs of these choices go out (they are finished)."""
        self._closed |= indexes

    def end(self) -> dict[int, dict | None]:
        """The logprobs still held back, by choice (None: they end with a secret cut short)."""
        held, self._held = self._held, {}
        return {
            index: None
            if self._redactor.tokens_leak(token_readings(logprobs, alternatives=False), ended=True)
            else _merged(logprobs)
            for index, logprobs in held.items()
        }

    def _cut(self, readings: list[TokenReading], count: int) -> int:
        """How many logprobs objects may go out: those before the first whose tokens could begin a secret."""
        cut = count
        for reading in readings:
            held_from = self._held_from(reading.text)
            if held_from < len(reading.text):
                cut = min(cut, reading.owner_at(held_from))
        return cut


def _merged(logprobs: list[dict]) -> dict:
    """Consecutive events' logprobs objects as one: their lists joined, any other field the last one's."""
    merged: dict = {}
    for logprob in logprobs:
        for name, value in logprob.items():
            before = merged.get(name)
            if isinstance(before, list) and isinstance(value, list):
                merged[name] = [*before, *value]
            elif value is not None or name not in merged:
                merged[name] = value
    return merged


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _choice(path: Path_) -> str | int | None:
    """The index of the choice a joined field belongs to (None outside "choices")."""
    return path[1] if path[0] == "choices" else None


def _latest_fields(paths: Iterable[Path_]) -> dict[Any, tuple]:
    """Each choice's latest field (_field_order) among these."""
    latest: dict[Any, tuple] = {}
    for path in paths:
        order = _field_order(path)
        latest[_choice(path)] = max(latest.get(_choice(path), order), order)
    return latest


def _field_order(path: Path_) -> tuple:
    """Where a joined field comes in its choice's answer: reasoning, the text, then each tool call's
    name and its arguments."""
    steps = path[2:]  # after ("choices", index)
    if "tool_calls" in steps:
        call = steps[steps.index("tool_calls") + 1]
        return (2, call if isinstance(call, int) else 0, 0 if steps[-1] == "name" else 1)
    return (0,) if steps[-1] in ("reasoning_content", "reasoning") else (1,)


def _finishes(choice: Any) -> bool:
    return isinstance(choice, dict) and bool(choice.get("finish_reason"))


Trie = dict[str, "Trie"]  # the joined fields as a tree of their steps; a leaf is {}


def _trie(fields: Iterable[tuple[str, ...]]) -> Trie:
    root: Trie = {}
    for field in fields:
        node = root
        for step in field:
            node = node.setdefault(step, {})
    return root


def _strings_at(node: Any, trie: Trie, path: Path_) -> Iterator[tuple[Path_, dict, str]]:
    """The string values at the trie's leaves, one walk ("*": every item of a list, by its index,
    written back into the item: a caller joins up by the index that was checked)."""
    if "*" in trie:
        for position, item in enumerate(_list(node)):
            index = item_index(item, position)
            if isinstance(item, dict):
                item["index"] = index
            yield from _strings_at(item, trie["*"], (*path, index))
    if not isinstance(node, dict):
        return
    for step, below in trie.items():
        value = node.get(step)
        if value is None or step == "*":
            continue
        if below:
            yield from _strings_at(value, below, (*path, step))
        elif isinstance(value, str):
            yield (*path, step), node, step


def _put(event: dict, path: Path_, value: Any) -> None:
    """Sets the value at the path, making the dicts and the list items (with their "index") on the way."""
    node: Any = event
    for step, following in itertools.pairwise(path):
        if isinstance(step, int):
            node = next((item for item in node if item.get("index") == step), None) or _append(node, step)
        else:
            node = node.setdefault(step, [] if isinstance(following, int) else {})
    node[path[-1]] = value


def _append(items: list, index: int) -> dict:
    items.append({"index": index})
    return items[-1]


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
    """Sets the key the sealed columns (services/registry/storage/tables.py) encrypt and decrypt with."""
    global _box
    _box = SecretBox(key)


def secret_box() -> SecretBox:
    if _box is None:
        raise RuntimeError("no secrets key loaded: call use_secrets_key() first")
    return _box


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


def shared_service_credential(data_dir: Path) -> str:
    """The data directory's service credential, created (0600) by the first process that needs it."""
    return read_or_create_secret(data_dir / SERVICE_CREDENTIAL_FILE, lambda: "sb-service-" + token_urlsafe(32))


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
