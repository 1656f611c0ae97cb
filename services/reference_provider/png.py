"""Small PNG images drawn from a prompt, written with zlib and struct only."""

from __future__ import annotations

import hashlib
import struct
import zlib

MAX_SIDE = 512
DEFAULT_SIDE = 64


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def parse_size(size: object) -> tuple[int, int]:
    """ "WxH" (clamped to 1..512); the default square when absent or malformed."""
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit():
            return max(1, min(MAX_SIDE, int(width))), max(1, min(MAX_SIDE, int(height)))
    return DEFAULT_SIDE, DEFAULT_SIDE


def draw(prompt: str, width: int, height: int, variant: int = 0) -> bytes:
    """An RGB PNG: a diagonal gradient between two colours taken from the prompt's hash."""
    digest = hashlib.sha256(f"{variant}:{prompt}".encode()).digest()
    start, end = digest[0:3], digest[3:6]
    rows = []
    span = max(1, width + height - 2)
    for y in range(height):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(width):
            t = (x + y) / span
            row += bytes(int(a + (b - a) * t) for a, b in zip(start, end, strict=True))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + _chunk(b"IEND", b"")
    )
