# -*- test-case-name: tests.test_png -*-
"""A tiny PNG encoder for 8-bit RGB images, with nothing but :mod:`zlib` and :mod:`struct`.

Spectrogram images (:func:`streamsrv.audio.spectrum.to_png`) are the only
pictures the daemon draws, so a full imaging library would be dead weight:
this module writes the signature, one ``IHDR`` (8 bits per channel, colour
type 2, no interlace), one ``IDAT`` and ``IEND``, each chunk with its CRC-32.
Every scanline is filtered with ``Sub`` (type 1): spectrograms are smooth
colour ramps, which deflate best as differences from the pixel to the left.

It never reads files, never decodes PNGs and keeps images within
:data:`MAX_DIMENSION` pixels a side, so a request cannot make it allocate
without bound.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_DIMENSION", "PNG_SIGNATURE", "encode_rgb"]

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

#: The largest width or height accepted (PNG allows 2**31 - 1; we need far less).
MAX_DIMENSION: Final = 16384

#: ``IHDR`` fields after width and height: bit depth 8, colour type 2 (RGB),
#: compression 0 (deflate), filter method 0, interlace 0 (none).
_IHDR_TAIL: Final = bytes((8, 2, 0, 0, 0))

#: Filter type byte of a scanline filtered with ``Sub`` (each byte minus the
#: byte one pixel to its left).
_FILTER_SUB: Final = 1

#: zlib level: 6 is zlib's default balance of speed and size.
_COMPRESSION_LEVEL: Final = 6


def _chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, and the CRC-32 of type and data.

    :param kind: the four-letter chunk type.
    :param payload: the chunk data.
    """
    crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_rgb(pixels: npt.NDArray[np.uint8]) -> bytes:
    """Encode an RGB image as PNG.

    :param pixels: ``(height, width, 3)`` unsigned bytes, row 0 at the top.
    :returns: the complete PNG file.
    :raises ValueError: for another shape or dtype, or a side of zero or
        more than :data:`MAX_DIMENSION` pixels.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must be (height, width, 3) uint8, got {pixels.shape} {pixels.dtype}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if not (1 <= width <= MAX_DIMENSION and 1 <= height <= MAX_DIMENSION):
        raise ValueError(f"image sides must be within 1..{MAX_DIMENSION}, got {width}x{height}")
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    # Sub filter: each byte minus the byte 3 places (one RGB pixel) before it, mod 256.
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_SUB
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # uint8 arithmetic wraps mod 256
    header = struct.pack(">II", width, height) + _IHDR_TAIL
    body = zlib.compress(filtered.tobytes(), _COMPRESSION_LEVEL)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
