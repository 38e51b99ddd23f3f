# -*- test-case-name: tests.test_ranges -*-
"""Byte-range parsing and resolution for ``/stream`` (RFC 9110 §14).

Two pure steps: :func:`parse_range_header` turns a ``Range`` header value into
raw range specs, and :func:`resolve_ranges` turns those specs into concrete,
sorted, coalesced :class:`ByteRange` values against a representation of known
size. The resource code decides the status (206, 416 or a plain 200) from what
comes back. This module must never touch a request, a file or the reactor, and
must never let a hostile header cost more than linear work in its length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The longest ``Range`` header value we are willing to look at, in characters.
MAX_HEADER_LENGTH = 8 * 1024

#: The most range specs one header may carry before it counts as an attack.
MAX_RANGE_SPECS = 1000

#: The most digits a position may have. 8 KiB of header cannot hold much more,
#: and it keeps ``int()`` well below CPython's conversion limit.
_MAX_DIGITS = 4000

#: Optional whitespace, RFC 9110 §5.6.3: spaces and horizontal tabs only.
_OWS = " \t"

_DIGITS = re.compile(r"[0-9]+", re.ASCII)

RangeSpec = tuple[int | None, int | None]


@dataclass(frozen=True)
class ByteRange:
    """
    A satisfiable byte range of a representation, both ends inclusive.

    :ivar start: The offset of the first byte.
    :ivar end: The offset of the last byte (inclusive), never before ``start``.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"not a byte range: {self.start}-{self.end}")

    @property
    def length(self) -> int:
        """
        The number of bytes the range covers.
        """
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """
        Format the ``Content-Range`` value of this range (RFC 9110 §14.4).

        :param size: The complete length of the representation.
        :return: For example ``"bytes 0-99/1000"``.
        :raise ValueError: If the range does not fit inside ``size`` bytes.
        """
        if self.end >= size:
            raise ValueError(f"range {self.start}-{self.end} is outside {size} bytes")
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiable(Exception):
    """
    No range of the header overlaps the representation: answer 416 with
    ``Content-Range: bytes */size``.
    """


def _parse_position(text: str) -> int:
    """
    Parse one ``first-pos``/``last-pos``/``suffix-length``: ASCII digits only.

    :param text: The bound with surrounding whitespace already removed.
    :return: Its value.
    :raise ValueError: If it is not a run of ASCII digits of sane length.
    """
    if len(text) > _MAX_DIGITS or _DIGITS.fullmatch(text) is None:
        raise ValueError(f"not a byte position: {text[:40]!r}")
    return int(text)


def _parse_spec(element: str) -> RangeSpec:
    """
    Parse one ``range-spec`` of a byte ``range-set``.

    :param element: One comma-separated element, whitespace already stripped.
    :return: ``(first, last)``, ``(first, None)`` or ``(None, suffix_length)``.
    :raise ValueError: If the element is not an ``int-range`` or a
        ``suffix-range``, or its first position is after its last.
    """
    first_text, dash, last_text = element.partition("-")
    if not dash:
        raise ValueError(f"range spec without '-': {element[:40]!r}")
    first_text = first_text.strip(_OWS)
    last_text = last_text.strip(_OWS)
    if not first_text:
        if not last_text:
            raise ValueError("range spec with neither bound")
        return (None, _parse_position(last_text))
    first = _parse_position(first_text)
    if not last_text:
        return (first, None)
    last = _parse_position(last_text)
    if first > last:
        raise ValueError(f"range spec ends before it starts: {first}-{last}")
    return (first, last)


def parse_range_header(value: str) -> list[RangeSpec]:
    """
    Parse a ``Range`` header value (RFC 9110 §14.2).

    ``'bytes=0-99'`` gives ``[(0, 99)]``, ``'bytes=-500'`` gives
    ``[(None, 500)]`` and ``'bytes=9500-'`` gives ``[(9500, None)]``. The unit
    is matched case-insensitively; whitespace around the unit, the commas and
    the bounds is tolerated; empty list elements (``', ,'``) are ignored.
    Positions are ASCII digits only: no signs, no ``+``, no hex, no other
    scripts' digits. Specs are returned in the order they were sent and are not
    checked against any size.

    :param value: The header value as received.
    :return: One ``(first, last)`` pair per range spec, ``None`` standing for
        an absent bound.
    :raise ValueError: If the value is malformed, its unit is not ``bytes``, it
        holds no range spec, more than :data:`MAX_RANGE_SPECS` of them, or is
        longer than :data:`MAX_HEADER_LENGTH`. The caller then ignores the
        header and serves the whole representation with 200.
    """
    global _last_parsed
    last_value, last_specs = _last_parsed
    if value == last_value and last_specs is not None:
        return list(last_specs)
    specs = _parse_range_header(value)
    _last_parsed = (value, tuple(specs))
    return specs


#: The last header :func:`parse_range_header` parsed well and its specs: a
#: request's ``Range`` is parsed by :func:`plays_from_start` and then by ``/stream``.
_last_parsed: tuple[str | None, tuple[RangeSpec, ...] | None] = (None, None)


def _parse_range_header(value: str) -> list[RangeSpec]:
    """:func:`parse_range_header`, always parsing."""
    if len(value) > MAX_HEADER_LENGTH:
        raise ValueError("Range header too long")
    unit, equals, range_set = value.partition("=")
    unit = unit.strip(_OWS)
    if not equals or not unit.isascii() or unit.lower() != "bytes":
        raise ValueError(f"unsupported range unit: {unit[:40]!r}")
    specs: list[RangeSpec] = []
    for element in range_set.split(","):
        element = element.strip(_OWS)
        if not element:
            continue
        if len(specs) == MAX_RANGE_SPECS:
            raise ValueError("too many range specs")
        specs.append(_parse_spec(element))
    if not specs:
        raise ValueError("empty range set")
    return specs


def _check_spec(spec: RangeSpec) -> None:
    """
    Refuse a spec that :func:`parse_range_header` could not have produced.

    :param spec: A ``(first, last)`` pair.
    :raise ValueError: If it has no bound, a negative one, or ends before it
        starts.
    """
    first, last = spec
    if first is None and last is None:
        raise ValueError("range spec with neither bound")
    if (first is not None and first < 0) or (last is not None and last < 0):
        raise ValueError(f"negative range bound: {first}-{last}")
    if first is not None and last is not None and first > last:
        raise ValueError(f"range spec ends before it starts: {first}-{last}")


def _concrete(spec: RangeSpec, size: int) -> ByteRange | None:
    """
    Turn one spec into a concrete range against ``size`` bytes.

    :param spec: A pair as returned by :func:`parse_range_header`.
    :param size: The complete length of the representation, at least 1.
    :return: The range, clamped to the representation, or ``None`` if this
        spec is unsatisfiable.
    :raise ValueError: If the spec is not well formed.
    """
    _check_spec(spec)
    first, last = spec
    if first is None:
        if not last:  # a zero-length suffix selects nothing
            return None
        return ByteRange(max(0, size - last), size - 1)
    if first >= size:
        return None
    end = size - 1 if last is None else min(last, size - 1)
    return ByteRange(first, end)


def resolve_ranges(specs: Sequence[RangeSpec], size: int, max_ranges: int) -> list[ByteRange] | None:
    """
    Resolve parsed specs against a representation of ``size`` bytes.

    - A suffix ``(None, n)`` is the last ``n`` bytes, the whole representation
      when ``n`` exceeds it; ``n == 0`` is unsatisfiable.
    - An open range ``(a, None)`` runs to the last byte; a last position past
      the end is clamped to it.
    - Specs starting at or after ``size`` are dropped.
    - Overlapping and adjacent ranges are coalesced and the result is sorted
      ascending (RFC 9110 §14.3 and §15.3.7.2 permit this; it defeats the
      overlapping-ranges amplification attack).

    A zero-length representation has no byte to send, yet RFC 9110 §14.1.1
    calls a suffix range with a non-zero length satisfiable against it, and
    §14.4 has no ``Content-Range`` for an empty part. In that one case this
    returns ``None`` (ignore ``Range``, §14.2); any other spec set against an
    empty representation is unsatisfiable.

    :param specs: Pairs as returned by :func:`parse_range_header`.
    :param size: The complete length of the representation, in bytes.
    :param max_ranges: The most ranges, after coalescing, worth a 206.
    :return: The ranges to send, or ``None`` meaning "ignore ``Range`` and
        serve the whole representation with 200": more than ``max_ranges``
        remain, or the suffix-on-empty case above.
    :raise RangeNotSatisfiable: If no spec overlaps the representation.
    :raise ValueError: If ``size`` is negative, ``max_ranges`` is below 1, or a
        spec could not have come from :func:`parse_range_header`.
    """
    if size < 0:
        raise ValueError(f"negative size: {size}")
    if max_ranges < 1:
        raise ValueError(f"max_ranges must be at least 1, not {max_ranges}")
    if size == 0:
        for spec in specs:
            _check_spec(spec)
        if any(first is None and last for first, last in specs):
            return None
        raise RangeNotSatisfiable("every range starts at or after the end of 0 bytes")
    concrete = [r for r in (_concrete(spec, size) for spec in specs) if r is not None]
    if not concrete:
        raise RangeNotSatisfiable(f"every range starts at or after the end of {size} bytes")
    concrete.sort(key=lambda r: r.start)
    merged = [concrete[0]]
    for current in concrete[1:]:
        previous = merged[-1]
        if current.start <= previous.end + 1:
            if current.end > previous.end:
                merged[-1] = ByteRange(previous.start, current.end)
        else:
            merged.append(current)
    if len(merged) > max_ranges:
        return None
    return merged


def plays_from_start(range_header: str | None) -> bool:
    """
    Whether a ``/stream`` request with this ``Range`` plays the file from its start.

    Yes without a header, with one ``/stream`` ignores (malformed: the whole
    file is sent), or when the first range sent starts at byte 0; a seek or a
    suffix range is no.  Such a request is a stream start (DESIGN's
    stream-start rate limits); ``/stream`` tells the guard so.

    :param range_header: The ``Range`` value as received, or ``None``.
    """
    if range_header is None:
        return True
    try:
        specs = parse_range_header(range_header)
    except ValueError:
        return True
    return specs[0][0] == 0
