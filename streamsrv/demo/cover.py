# -*- test-case-name: tests.test_demo -*-
"""The demo library's cover images: small square PNGs made with zlib and struct.

No imaging library is needed: :func:`cover_png` draws a gradient and a disc
into an RGB array and writes the PNG chunks itself.  It only returns bytes:
it must never write a file.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import numpy as np

__all__ = ["COVER_SIZE", "cover_png"]

#: Side of the generated square cover images, in pixels.
COVER_SIZE: Final[int] = 96


def cover_png(rgb: tuple[int, int, int], size: int = COVER_SIZE) -> bytes:
    """A small square PNG: a vertical gradient of ``rgb`` with a pale disc.

    Built with zlib and struct only (no imaging library).

    :param rgb: the base colour.
    :param size: width and height in pixels.
    :returns: the PNG file's bytes.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / max(1, size - 1)
    base = np.asarray(rgb, dtype=np.float64)
    shade = (0.55 + 0.45 * (1.0 - y))[..., np.newaxis]
    image = base * shade
    disc = (x - 0.5) ** 2 + (y - 0.62) ** 2 < 0.22**2
    image[disc] = 0.35 * image[disc] + 0.65 * 255.0
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    rows = np.concatenate(
        [np.zeros((size, 1), dtype=np.uint8), pixels.reshape(size, size * 3)],
        axis=1,
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + chunk(b"IEND", b"")
    )
