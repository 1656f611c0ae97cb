"""Anthropic's token count (`POST /v1/messages/count_tokens`, messages_api.input_tokens) of images:
about width * height / 750 tokens each, at most 1,600 (Anthropic scales a large image down), the
size read from the head of the base64 data; 1,600 when it cannot be read or the image is a URL.
Never by the data's length: a 5 MB image is not 1.7 million tokens."""

from __future__ import annotations

import base64
import io
import math
import random
import struct
import zlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from services.router.messages_api import image_tokens, input_tokens

MODEL = "org/model"
QUESTION = {"type": "text", "text": "What is in this picture?"}


def counted(*blocks: dict) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [*blocks]}]}
    return orjson.loads(input_tokens(body))["input_tokens"]


def encoded(image_format: str, size: tuple[int, int], mode: str = "RGB", **options: object) -> str:
    out = io.BytesIO()
    Image.new(mode, size).save(out, image_format, **options)
    return base64.b64encode(out.getvalue()).decode()


def image(data: str, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def big_png(width: int, height: int, size: int) -> str:
    """A PNG's signature and header, then `size` bytes more (the pixels are not read)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + ihdr + bytes(size)).decode()


def test_a_5_mb_image_is_at_most_1600_tokens_not_its_data_length() -> None:
    text = counted(QUESTION)
    data = big_png(4000, 3000, 5_000_000)
    assert len(data) > 6_000_000
    assert counted(QUESTION, image(data)) == text + 1_600


@pytest.mark.parametrize(
    ("image_format", "size", "mode", "options", "media_type"),
    [
        ("PNG", (300, 200), "RGB", {}, "image/png"),
        ("GIF", (301, 199), "RGB", {}, "image/gif"),
        ("JPEG", (640, 480), "RGB", {}, "image/jpeg"),
        ("JPEG", (333, 222), "RGB", {"progressive": True}, "image/jpeg"),
        ("WEBP", (500, 123), "RGB", {}, "image/webp"),  # lossy: VP8
        ("WEBP", (123, 500), "RGB", {"lossless": True}, "image/webp"),  # VP8L
        ("WEBP", (257, 129), "RGBA", {}, "image/webp"),  # with alpha: VP8X
        ("PNG", (1568, 1568), "RGB", {}, "image/png"),  # over 1,600: scaled down
    ],
)
def test_an_image_counts_its_pixels_over_750(image_format, size, mode, options, media_type) -> None:
    data = encoded(image_format, size, mode, **options)
    expected = min(1_600, math.ceil(size[0] * size[1] / 750))
    assert image_tokens(f"data:{media_type};base64,{data}") == expected
    assert counted(QUESTION, image(data, media_type)) == counted(QUESTION) + expected


def test_url_images_and_a_tool_results_images_are_counted_too() -> None:
    text = counted(QUESTION)
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    assert counted(QUESTION, url) == text + 1_600

    def with_tool_result(picture: dict) -> int:  # the result's image follows in a user message of its own
        result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}, picture]}
        body = {"model": MODEL, "messages": [
            {"role": "user", "content": [QUESTION]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [result]},
        ]}  # fmt: skip
        return orjson.loads(input_tokens(body))["input_tokens"]

    small = with_tool_result(image(encoded("PNG", (75, 10))))  # 1 token
    assert with_tool_result(url) - small == 1_600 - 1
    assert small < 100


@pytest.mark.parametrize(
    "data",
    [
        "!!!! not base64 ####",
        "A",
        "",
        "iVBORw0KGgoAAAANSUhEUg==",  # a PNG header cut short
        "R0lGODlh",  # a GIF's signature, no size
        "/9j/4AAQ",  # a JPEG's start, no frame
        "UklGRgAAAABXRUJQVlA4IA==",  # a WebP's start, no size
        base64.b64encode(b"\xff\xd8" + b"\xff\xe1\xff\xff" + bytes(70_000)).decode(),  # a frame past the head
    ],
)
def test_an_image_whose_size_cannot_be_read_is_1600_tokens(data: str) -> None:
    assert image_tokens(f"data:image/png;base64,{data}") == 1_600
    assert counted(QUESTION, image(data)) == counted(QUESTION) + 1_600


MAGIC = st.sampled_from([b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"GIF89a", b"\xff\xd8", b"\xff\xd8\xff",
                         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L",
                         b"RIFF\x00\x00\x00\x00WEBPVP8X"])  # fmt: skip


@given(magic=MAGIC, rest=st.binary(max_size=64), text=st.text(max_size=24))
def test_any_image_data_is_between_1_and_1600_tokens_never_an_error(magic: bytes, rest: bytes, text: str) -> None:
    for data in (base64.b64encode(magic + rest).decode(), base64.b64encode(magic + rest).decode() + text, text):
        assert 1 <= image_tokens(f"data:image/png;base64,{data}") <= 1_600


def test_a_large_webp_is_read_from_its_head_too() -> None:
    """A WebP's size is in its first chunk: one far larger than the head read still counts exactly."""
    noise = Image.frombytes("RGB", (300, 200), random.Random(7).randbytes(300 * 200 * 3))
    out = io.BytesIO()
    noise.save(out, "WEBP", quality=95)
    assert out.tell() > 20_000
    assert image_tokens(f"data:image/webp;base64,{base64.b64encode(out.getvalue()).decode()}") == 80


def test_nothing_in_the_head_is_decompressed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG may carry compressed text chunks before its pixels (a few KiB inflating to megabytes):
    the count reads IHDR's fixed place and never inflates anything."""
    text = b"comment\x00\x00" + zlib.compress(bytes(1 << 20), 9)
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text + struct.pack(">I", zlib.crc32(b"zTXt" + text))
    png = base64.b64decode(big_png(300, 200, 0)) + chunk * 4
    for name in ("decompress", "decompressobj"):
        monkeypatch.setattr(zlib, name, lambda *_a, **_k: pytest.fail("inflated"))
    assert image_tokens(f"data:image/png;base64,{base64.b64encode(png).decode()}") == 80
