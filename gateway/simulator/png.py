"""A small, valid PNG standing in for a mini-program code: its pattern is derived from the page path."""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["PNG_SIGNATURE", "code_image"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MODULES = 21  # the side of a version-1 QR code, so it looks the part
_SCALE = 8


def code_image(path: str) -> bytes:
    """A grayscale PNG whose module pattern comes from a hash of ``path``; the path rides in a tEXt chunk."""
    bits = int.from_bytes(hashlib.sha512(path.encode()).digest(), "big")  # 512 bits cover the 441 modules
    side = _MODULES * _SCALE
    rows = []
    for y in range(_MODULES):
        pixels = b"".join(
            (b"\x00" if (bits >> (y * _MODULES + x)) & 1 else b"\xff") * _SCALE for x in range(_MODULES)
        )
        rows.extend([b"\x00" + pixels] * _SCALE)  # filter byte 0 (None) before each scanline
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"tEXt", b"path\x00" + path.encode("latin-1", "replace"))
        + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
