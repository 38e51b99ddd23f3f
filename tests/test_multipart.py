# -*- test-case-name: tests.test_multipart -*-
"""Tests for :mod:`streamsrv.streaming.multipart`."""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.streaming.multipart import MultipartLayout, make_boundary, multipart_layout
from streamsrv.streaming.ranges import ByteRange, RangeNotSatisfiable, resolve_ranges

CRLF = b"\r\n"


def _body(layout: MultipartLayout, data: bytes) -> bytes:
    """
    Write the body the way the file sender does: each prefix, then that
    range's bytes, then the trailer.
    """
    return b"".join(prefix + data[r.start : r.end + 1] for prefix, r in layout.parts) + layout.trailer


def _hand_parse(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """
    Parse a multipart body strictly by the RFC 2046 §5.1.1 grammar, with no
    preamble and an empty epilogue, failing on any deviation.
    """
    dash_boundary = b"--" + boundary.encode("ascii")
    delimiter = CRLF + dash_boundary
    assert body.startswith(dash_boundary + CRLF), body[:80]
    position = len(dash_boundary) + 2
    parts = []
    while True:
        end = body.find(delimiter, position)
        assert end != -1, "missing delimiter"
        head, separator, content = body[position:end].partition(CRLF + CRLF)
        assert separator, "part without a header/body separator"
        headers = {}
        for line in head.split(CRLF):
            name, colon, value = line.decode("ascii").partition(":")
            assert colon, line
            headers[name.lower()] = value.strip()
        parts.append((headers, content))
        position = end + len(delimiter)
        if body[position : position + 2] == b"--":
            assert body[position + 2 :] == CRLF, body[position:]
            return parts
        assert body[position : position + 2] == CRLF
        position += 2


class MakeBoundaryTests(unittest.SynchronousTestCase):
    """
    Tests for L{make_boundary}.
    """

    def test_shape(self) -> None:
        """
        A boundary is 32 lowercase hex digits: 128 random bits, a valid RFC
        2046 boundary and an HTTP token.
        """
        self.assertRegex(make_boundary(), r"\A[0-9a-f]{32}\Z")

    def test_fresh(self) -> None:
        """
        Every call gives a new boundary.
        """
        self.assertEqual(len({make_boundary() for _ in range(100)}), 100)


class MultipartLayoutTests(unittest.SynchronousTestCase):
    """
    Tests for L{multipart_layout}.
    """

    def setUp(self) -> None:
        """
        Write a real file whose bytes include CR, LF and dashes, so that a
        framing mistake cannot hide.
        """
        self.data = bytes(range(256)) * 40 + b"\r\n--\r\n\r\n" + os.urandom(777)
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(self.data)
        self.size = os.path.getsize(self.path)
        self.ranges = [ByteRange(0, 0), ByteRange(100, 611), ByteRange(self.size - 10, self.size - 1)]
        self.boundary = make_boundary()
        self.layout = multipart_layout(self.ranges, self.size, "audio/mpeg", self.boundary)

    def _read_body(self) -> bytes:
        """
        Produce the body by reading the ranges from the file on disk.
        """
        chunks = []
        with open(self.path, "rb") as f:
            for prefix, byte_range in self.layout.parts:
                f.seek(byte_range.start)
                chunks.append(prefix + f.read(byte_range.length))
        chunks.append(self.layout.trailer)
        return b"".join(chunks)

    def test_content_length(self) -> None:
        """
        C{content_length} is exactly the length of the body.
        """
        self.assertEqual(len(self._read_body()), self.layout.content_length)

    def test_content_type(self) -> None:
        """
        The response's media type is multipart/byteranges with the boundary
        as a plain token.
        """
        self.assertEqual(self.layout.content_type, f"multipart/byteranges; boundary={self.boundary}")
        self.assertEqual(self.layout.boundary, self.boundary)

    def test_email_parser(self) -> None:
        """
        The standard library's MIME parser reads the body without a defect,
        and each part carries its Content-Type, Content-Range and exact bytes.
        """
        message = email.message_from_bytes(
            b"Content-Type: " + self.layout.content_type.encode("ascii") + CRLF + CRLF + self._read_body(),
            policy=email.policy.HTTP,
        )
        self.assertTrue(message.is_multipart())
        self.assertEqual(message.defects, [])
        self.assertEqual(message.get_content_type(), "multipart/byteranges")
        self.assertFalse(message.preamble)
        self.assertFalse(message.epilogue)
        parts = message.get_payload()
        assert isinstance(parts, list)
        self.assertEqual(len(parts), len(self.ranges))
        for part, byte_range in zip(parts, self.ranges, strict=True):
            self.assertEqual(part.defects, [])
            self.assertEqual(part["Content-Type"], "audio/mpeg")
            self.assertEqual(part["Content-Range"], byte_range.content_range(self.size))
            self.assertEqual(part.get_payload(decode=True), self.data[byte_range.start : byte_range.end + 1])

    def test_hand_parser(self) -> None:
        """
        A strict parser of the RFC 2046 grammar reads the same parts and bytes.
        """
        parts = _hand_parse(self._read_body(), self.boundary)
        self.assertEqual(
            parts,
            [
                (
                    {"content-type": "audio/mpeg", "content-range": r.content_range(self.size)},
                    self.data[r.start : r.end + 1],
                )
                for r in self.ranges
            ],
        )

    def test_framing(self) -> None:
        """
        The first delimiter starts the body with no CRLF before it; later ones
        start with the CRLF that ends the previous part; the close delimiter
        is followed by one CRLF.
        """
        first, second, third = (prefix for prefix, _ in self.layout.parts)
        b = self.boundary.encode("ascii")
        self.assertEqual(
            first,
            b"--" + b + b"\r\nContent-Type: audio/mpeg\r\nContent-Range: bytes 0-0/%d\r\n\r\n" % self.size,
        )
        self.assertTrue(second.startswith(b"\r\n--" + b + b"\r\n"))
        self.assertTrue(third.startswith(b"\r\n--" + b + b"\r\n"))
        self.assertEqual(self.layout.trailer, b"\r\n--" + b + b"--\r\n")

    def test_order_kept(self) -> None:
        """
        Parts come in the order of the ranges given.
        """
        layout = multipart_layout(
            [ByteRange(50, 59), ByteRange(0, 9)], self.size, "audio/mpeg", self.boundary
        )
        self.assertEqual([r for _, r in layout.parts], [ByteRange(50, 59), ByteRange(0, 9)])

    def test_single_range(self) -> None:
        """
        One range still makes a valid multipart body.
        """
        layout = multipart_layout([ByteRange(3, 5)], self.size, "audio/flac", self.boundary)
        body = _body(layout, self.data)
        self.assertEqual(len(body), layout.content_length)
        self.assertEqual(
            _hand_parse(body, self.boundary),
            [({"content-type": "audio/flac", "content-range": f"bytes 3-5/{self.size}"}, self.data[3:6])],
        )

    def test_no_content_type(self) -> None:
        """
        An empty part media type leaves Content-Type out of the parts.
        """
        layout = multipart_layout([ByteRange(0, 1), ByteRange(5, 6)], 10, "", self.boundary)
        parts = _hand_parse(_body(layout, self.data[:10]), self.boundary)
        self.assertEqual(
            [headers for headers, _ in parts],
            [{"content-range": "bytes 0-1/10"}, {"content-range": "bytes 5-6/10"}],
        )

    def test_quoted_boundary(self) -> None:
        """
        A valid boundary that is not an HTTP token is quoted in the
        Content-Type, and standard parsers still find it.
        """
        boundary = "simple boundary?=1"
        layout = multipart_layout(self.ranges, self.size, "audio/mpeg", boundary)
        self.assertEqual(layout.content_type, 'multipart/byteranges; boundary="simple boundary?=1"')
        message = email.message_from_bytes(
            b"Content-Type: " + layout.content_type.encode("ascii") + CRLF + CRLF + _body(layout, self.data),
            policy=email.policy.HTTP,
        )
        self.assertEqual(message.get_boundary(), boundary)
        self.assertEqual(len(message.get_payload()), 3)

    def test_header_injection(self) -> None:
        """
        A part media type with a line break or any other control or non-ASCII
        character is refused rather than written into the body.
        """
        for value in [
            "audio/mpeg\r\nX-Evil: 1",
            "audio/mpeg\n",
            "audio/\x00mpeg",
            "audio/mp\u00e9g",
            "a\x7fb",
        ]:
            self.assertRaises(ValueError, multipart_layout, self.ranges, self.size, value, self.boundary)

    def test_invalid_boundary(self) -> None:
        """
        Boundaries outside RFC 2046's grammar are refused: empty, over 70
        characters, ending in a space, with a quote, CR/LF, or non-ASCII.
        """
        for boundary in ["", "a" * 71, "abc ", 'a"b', "a\r\nb", "a;b", "\u00e9", "a\\b"]:
            self.assertRaises(ValueError, multipart_layout, self.ranges, self.size, "audio/mpeg", boundary)
        multipart_layout(self.ranges, self.size, "audio/mpeg", "a" * 70)

    def test_no_ranges(self) -> None:
        """
        A body needs at least one part.
        """
        self.assertRaises(ValueError, multipart_layout, [], self.size, "audio/mpeg", self.boundary)

    def test_range_outside(self) -> None:
        """
        A range that does not fit in the representation is refused.
        """
        self.assertRaises(
            ValueError, multipart_layout, [ByteRange(0, self.size)], self.size, "audio/mpeg", self.boundary
        )

    def test_frozen(self) -> None:
        """
        A layout is an immutable value.
        """
        self.assertRaises(AttributeError, setattr, self.layout, "content_length", 0)

    @given(
        st.binary(min_size=1, max_size=300),
        st.lists(
            st.tuples(st.integers(min_value=0, max_value=320), st.integers(min_value=0, max_value=40)),
            min_size=1,
            max_size=8,
        ),
        st.sampled_from(["audio/mpeg", "audio/ogg; codecs=opus", ""]),
    )
    def test_round_trip(self, data: bytes, wanted: list[tuple[int, int]], media_type: str) -> None:
        """
        For any content and any resolved ranges, both parsers give back each
        range's exact bytes and C{content_length} is the body's length.
        """
        try:
            ranges = resolve_ranges([(a, a + n) for a, n in wanted], len(data), 100)
        except RangeNotSatisfiable:
            return
        assert ranges is not None
        boundary = make_boundary()
        layout = multipart_layout(ranges, len(data), media_type, boundary)
        body = _body(layout, data)
        self.assertEqual(len(body), layout.content_length)
        expected = [data[r.start : r.end + 1] for r in ranges]
        self.assertEqual([content for _, content in _hand_parse(body, boundary)], expected)
        message = email.message_from_bytes(
            b"Content-Type: " + layout.content_type.encode("ascii") + CRLF + CRLF + body,
            policy=email.policy.HTTP,
        )
        self.assertEqual(message.defects, [])
        parts = message.get_payload()
        assert isinstance(parts, list)
        self.assertEqual(len(parts), len(ranges))
        for part, r, content in zip(parts, ranges, expected, strict=True):
            assert isinstance(part, email.message.Message)
            self.assertEqual(part.get_payload(decode=True), content)
            self.assertTrue(re.fullmatch(r"bytes \d+-\d+/\d+", part["Content-Range"]))
            self.assertEqual(part["Content-Range"], r.content_range(len(data)))
