"""Tests for :mod:`streamsrv.audio.png`: the images decode back with zlib alone."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.audio.png import MAX_DIMENSION, PNG_SIGNATURE, encode_rgb


@dataclass(frozen=True)
class DecodedPng:
    """What :func:`decode_png` found in a file.

    :param chunk_types: every chunk's type, in order.
    :param ihdr: width, height, bit depth, colour type, compression, filter, interlace.
    :param pixels: ``(height, width, 3)`` uint8.
    """

    chunk_types: tuple[bytes, ...]
    ihdr: tuple[int, int, int, int, int, int, int]
    pixels: npt.NDArray[np.uint8]


def decode_png(data: bytes) -> DecodedPng:
    """Parse an 8-bit RGB, non-interlaced PNG, checking every CRC, with zlib and struct only.

    Handles the filter types the encoder may write (0 None, 1 Sub) and fails
    on anything else.

    :raises AssertionError: for a bad signature, a bad CRC, or trailing bytes.
    """
    assert data.startswith(PNG_SIGNATURE), "bad signature"
    offset = len(PNG_SIGNATURE)
    types: list[bytes] = []
    idat = b""
    ihdr: tuple[int, ...] = ()
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack_from(">I", data, offset + 8 + length)
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        types.append(kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        offset += 12 + length
    assert offset == len(data), "trailing bytes"
    width, height = ihdr[0], ihdr[1]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    rows = raw[:, 1:].astype(np.int64)
    for y in range(height):
        assert raw[y, 0] in (0, 1), f"unexpected filter type {raw[y, 0]}"
        if raw[y, 0] == 1:
            pixels_in_row = rows[y].reshape(width, 3)
            rows[y] = (np.cumsum(pixels_in_row, axis=0) % 256).reshape(-1)
    pixels = rows.astype(np.uint8).reshape(height, width, 3)
    return DecodedPng(tuple(types), tuple(ihdr), pixels)  # type: ignore[arg-type]


class EncodeRgbTests(unittest.SynchronousTestCase):
    """:func:`encode_rgb` writes valid PNG files that hold exactly the given pixels."""

    def test_structure(self) -> None:
        """A file is the signature, IHDR (8-bit RGB, no interlace), IDAT and IEND, every CRC valid."""
        pixels = np.zeros((3, 5, 3), dtype=np.uint8)
        decoded = decode_png(encode_rgb(pixels))
        self.assertEqual(decoded.chunk_types, (b"IHDR", b"IDAT", b"IEND"))
        self.assertEqual(decoded.ihdr, (5, 3, 8, 2, 0, 0, 0))

    @given(
        st.integers(min_value=1, max_value=40),
        st.integers(min_value=1, max_value=40),
        st.integers(min_value=0, max_value=2**32 - 1),
    )
    def test_round_trip(self, width: int, height: int, seed: int) -> None:
        """Any image decodes back to the same pixels."""
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        decoded = decode_png(encode_rgb(pixels))
        self.assertEqual(decoded.ihdr[:2], (width, height))
        np.testing.assert_array_equal(decoded.pixels, pixels)

    def test_non_contiguous_input(self) -> None:
        """A strided view (a flipped image) is encoded as it looks, not as it is stored."""
        pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)[::-1]
        np.testing.assert_array_equal(decode_png(encode_rgb(pixels)).pixels, pixels)

    def test_smooth_image_compresses(self) -> None:
        """A smooth gradient, the shape of a spectrogram, shrinks well below its raw size."""
        ramp = np.linspace(0, 255, 512).astype(np.uint8)
        pixels = np.stack([np.tile(ramp, (256, 1))] * 3, axis=-1)
        self.assertLess(len(encode_rgb(pixels)), pixels.nbytes // 20)

    def test_rejects_bad_arrays(self) -> None:
        """Other dtypes, shapes, empty sides and oversized sides raise ValueError."""
        bad: list[npt.NDArray[Any]] = [
            np.zeros((2, 2, 3), dtype=np.uint16),
            np.zeros((2, 2), dtype=np.uint8),
            np.zeros((2, 2, 4), dtype=np.uint8),
            np.zeros((0, 2, 3), dtype=np.uint8),
            np.zeros((2, 0, 3), dtype=np.uint8),
            np.zeros((1, MAX_DIMENSION + 1, 3), dtype=np.uint8),
        ]
        for pixels in bad:
            with self.assertRaises(ValueError, msg=str(pixels.shape)):
                encode_rgb(pixels)
