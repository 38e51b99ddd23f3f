# -*- test-case-name: tests.test_multipart -*-
"""The framing of a ``multipart/byteranges`` body (RFC 9110 §14.6, RFC 2046 §5.1).

:func:`multipart_layout` computes, before a single byte of the file is read,
every delimiter and part header of a multi-range 206 response and the exact
``Content-Length`` of its body; the file sender then writes ``prefix``,
the range's bytes, the next ``prefix``... and finally ``trailer``. The body is::

    --BOUNDARY CRLF
    Content-Type: audio/mpeg CRLF
    Content-Range: bytes 0-99/1000 CRLF
    CRLF
    <bytes 0-99>
    CRLF --BOUNDARY CRLF
    ...
    <bytes of the last range>
    CRLF --BOUNDARY-- CRLF

This module must never read a file or write to a request, and must never let
a caller-supplied string put a line break into the part headers.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from streamsrv.streaming.ranges import ByteRange

#: Random bytes in a boundary made by :func:`make_boundary` (32 hex digits).
BOUNDARY_BYTES = 16

#: ``boundary`` of RFC 2046 §5.1.1: 1 to 70 ``bchars``, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]", re.ASCII)

#: A ``token`` of RFC 9110 §5.6.2; a boundary that is not one gets quoted.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)

#: What may appear in a header field value we write: visible ASCII, SP, HTAB.
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*", re.ASCII)

_CRLF = b"\r\n"


@dataclass(frozen=True)
class MultipartLayout:
    """
    Everything needed to write a ``multipart/byteranges`` body.

    :ivar boundary: The boundary, without the leading ``--``.
    :ivar parts: One ``(prefix, range)`` per part, in body order: ``prefix``
        is written just before the range's bytes and holds the delimiter and
        the part's headers (and, from the second part on, the CRLF that ends
        the previous part's body).
    :ivar trailer: The close delimiter, written after the last part's bytes.
    :ivar content_length: The exact length of the whole body.
    :ivar content_type: The response's ``Content-Type`` value.
    """

    boundary: str
    parts: tuple[tuple[bytes, ByteRange], ...]
    trailer: bytes
    content_length: int
    content_type: str


def make_boundary() -> str:
    """
    Make a fresh random boundary.

    RFC 2046 requires that the boundary never occur in the enclosed bytes.
    The file is not read to check that; instead the boundary has 128 random
    bits, so that no file, however crafted before the request, can contain it
    but by a 2**-128 chance.

    :return: 32 lowercase hex digits from :func:`secrets.token_hex`.
    """
    return secrets.token_hex(BOUNDARY_BYTES)


def multipart_layout(
    ranges: Sequence[ByteRange], size: int, part_content_type: str, boundary: str
) -> MultipartLayout:
    """
    Lay out a ``multipart/byteranges`` body.

    :param ranges: The ranges to send, in the order to send them (as
        :func:`streamsrv.streaming.ranges.resolve_ranges` returns them).
    :param size: The complete length of the representation.
    :param part_content_type: The representation's media type, repeated in
        every part; an empty string leaves ``Content-Type`` out of the parts.
    :param boundary: The boundary, normally from :func:`make_boundary`.
    :return: The layout.
    :raise ValueError: If there is no range, a range does not fit in ``size``
        bytes, ``boundary`` is not a valid RFC 2046 boundary, or
        ``part_content_type`` has a character a header field value cannot
        hold (a control character such as CR or LF, or non-ASCII).
    """
    if not ranges:
        raise ValueError("a multipart/byteranges body needs at least one range")
    if _BOUNDARY.fullmatch(boundary) is None:
        raise ValueError(f"not a valid multipart boundary: {boundary!r}")
    if _FIELD_VALUE.fullmatch(part_content_type) is None:
        raise ValueError(f"not a valid header field value: {part_content_type!r}")
    type_line = b"Content-Type: " + part_content_type.encode("ascii") + _CRLF if part_content_type else b""
    delimiter = b"--" + boundary.encode("ascii") + _CRLF
    parts: list[tuple[bytes, ByteRange]] = []
    content_length = 0
    for index, byte_range in enumerate(ranges):
        prefix = (
            (_CRLF if index else b"")
            + delimiter
            + type_line
            + b"Content-Range: "
            + byte_range.content_range(size).encode("ascii")
            + _CRLF
            + _CRLF
        )
        parts.append((prefix, byte_range))
        content_length += len(prefix) + byte_range.length
    trailer = _CRLF + b"--" + boundary.encode("ascii") + b"--" + _CRLF
    content_length += len(trailer)
    parameter = boundary if _TOKEN.fullmatch(boundary) else f'"{boundary}"'
    return MultipartLayout(
        boundary=boundary,
        parts=tuple(parts),
        trailer=trailer,
        content_length=content_length,
        content_type=f"multipart/byteranges; boundary={parameter}",
    )
