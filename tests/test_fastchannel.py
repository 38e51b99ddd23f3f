# -*- test-case-name: tests.test_fastchannel -*-
"""The llhttp channel answers every request exactly as Twisted's own channel does.

One table of raw request bytes (pipelined, split, keep-alive, ``Connection:
close``, HTTP/1.0, bodies by length and chunked, ``Expect: 100-continue``,
the size limits, malformed heads) goes through a real site twice: once with
:class:`~streamsrv.web.site.StreamsrvChannel` (Twisted's line parser) and
once with :class:`~streamsrv.web.fastchannel.LlhttpChannel`.  The bytes
answered must be identical but for the date and the random request ids,
and what the resources saw (method, target, version, headers, body) too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.resource import Resource

from streamsrv.web import fastchannel
from streamsrv.web.fastchannel import LlhttpChannel, channel_class
from streamsrv.web.site import StreamsrvChannel
from tests.sitehelpers import build_site

BODY = bytes(range(256)) * 64

HEAD_OK = b"GET /echo/a?x=1&y=%20 HTTP/1.1\r\nHost: x\r\nX-One: 1\r\nx-one: 2\r\nRange: bytes=0-9\r\n\r\n"
TRACK = b"GET /stream/a.mp3 HTTP/1.1\r\nHost: x\r\nRange: bytes=10-29\r\n\r\n"
POST_LEN = b"POST /echo/p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = (
    b"POST /echo/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
)

#: (name, chunks received one after the other).
TABLE: list[tuple[str, list[bytes]]] = [
    ("simple", [HEAD_OK]),
    ("track range", [TRACK]),
    ("track head", [TRACK.replace(b"GET", b"HEAD", 1)]),
    ("track whole", [b"GET /stream/a.mp3 HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("track 304", [b"GET /stream/a.mp3 HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n"]),
    ("missing track", [b"GET /stream/nope.mp3 HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("api 404", [b"GET /api/v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("health", [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("pipelined three", [HEAD_OK + TRACK + HEAD_OK]),
    ("pipelined split", [HEAD_OK + TRACK[:20], TRACK[20:] + HEAD_OK[:5], HEAD_OK[5:]]),
    ("byte by byte", [bytes([b]) for b in HEAD_OK + TRACK]),
    ("close then more", [HEAD_OK.replace(b"Host: x", b"Host: x\r\nConnection: close") + TRACK]),
    ("http/1.0", [b"GET /echo/old HTTP/1.0\r\nHost: x\r\n\r\n" + TRACK]),
    ("http/1.0 track", [b"GET /stream/a.mp3 HTTP/1.0\r\n\r\n"]),
    ("post length", [POST_LEN + HEAD_OK]),
    ("post chunked", [POST_CHUNKED + HEAD_OK]),
    ("post split", [POST_LEN[:40], POST_LEN[40:], HEAD_OK]),
    ("expect continue", [POST_LEN.replace(b"Host: x", b"Host: x\r\nExpect: 100-continue")]),
    (
        "expect continue 1.0",
        [POST_LEN.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Host: x", b"Expect: 100-continue")],
    ),
    ("get with body", [b"GET /echo/g HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + HEAD_OK]),
    ("bad length", [b"POST /echo/p HTTP/1.1\r\nContent-Length: x\r\n\r\n"]),
    ("two lengths", [b"POST /echo/p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"]),
    (
        "length and chunked",
        [b"POST /echo/p HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ),
    ("body too large", [b"POST /echo/p HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"]),
    (
        "upgrade h2c",
        [b"GET /echo/u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + HEAD_OK],
    ),
    ("uri too long", [b"GET /echo/" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n"]),
    ("uri long but fits", [b"GET /echo/" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("header too large", [b"GET /echo/h HTTP/1.1\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n"]),
    (
        "headers too large",
        [
            b"GET /echo/h HTTP/1.1\r\n"
            + b"X-Big: "
            + b"b" * 9000
            + b"\r\nX-Big2: "
            + b"c" * 9000
            + b"\r\n\r\n"
        ],
    ),
    (
        "too many headers",
        [b"GET /echo/h HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(600)) + b"\r\n"],
    ),
    ("head fills the limit", [b"GET /echo/h HTTP/1.1\r\nX-Big: " + b"b" * (16384 - 40) + b"\r\n\r\n"]),
    ("bad request line", [b"GET /echo/x\r\nHost: x\r\n\r\n"]),
    ("double space", [b"GET  /echo/x HTTP/1.1\r\n\r\n"]),
    ("bad version", [b"GET /echo/x HTTP/2.0\r\n\r\n"]),
    ("lower-case method", [b"get /echo/x HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("unknown method", [b"BREW /echo/x HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("odd token method", [b"X!Y /echo/x HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("high byte in target", [b"GET /echo/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("byte 176 in target", [b"GET /echo/\xb0 HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("absolute form", [b"GET http://x/echo/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("asterisk", [b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"]),
    ("header without colon", [b"GET /echo/x HTTP/1.1\r\nNoColon\r\n\r\n"]),
    ("space before colon", [b"GET /echo/x HTTP/1.1\r\nHost : x\r\n\r\n"]),
    ("bad header name", [b"GET /echo/x HTTP/1.1\r\nX(y): 1\r\n\r\n"]),
    ("empty header value", [b"GET /echo/x HTTP/1.1\r\nX-Empty:\r\nX-Spaces:   \t \r\n\r\n"]),
    ("padded value", [b"GET /echo/x HTTP/1.1\r\nX-Pad: \t a  b \t\r\n\r\n"]),
    ("control byte in value", [b"GET /echo/x HTTP/1.1\r\nX-C: a\x01b\r\n\r\n"]),
    ("high byte in value", [b"GET /echo/x HTTP/1.1\r\nX-H: caf\xc3\xa9\r\n\r\n"]),
    ("nul in value", [b"GET /echo/x HTTP/1.1\r\nX-N: a\x00b\r\n\r\n"]),
    ("folded header", [b"GET /echo/x HTTP/1.1\r\nX-F: a\r\n  b\r\n\r\n"]),
    ("bare lf", [b"GET /echo/x HTTP/1.1\nHost: x\n\n" + HEAD_OK]),
    ("bare cr", [b"GET /echo/x HTTP/1.1\r\nX-R: a\rb\r\n\r\n"]),
    ("leading crlf", [b"\r\n" + HEAD_OK]),
    ("two leading crlf", [b"\r\n\r\n" + HEAD_OK]),
    ("cookies", [b"GET /echo/x HTTP/1.1\r\nCookie: a=1; b=2\r\nCookie: c=3\r\n\r\n"]),
    ("request id", [b"GET /echo/x HTTP/1.1\r\nX-Request-ID: mine.1\r\n\r\n"]),
    ("connection tokens", [b"GET /echo/x HTTP/1.1\r\nConnection: keep-alive close\r\n\r\n" + HEAD_OK]),
    ("garbage", [b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"]),
    ("garbage with crlf", [b"\x16\x03\x01\r\n\r\n"]),
]


class Echo(Resource):
    """Answers with what the request looked like to a resource."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        seen = {
            "method": request.method.decode("latin-1"),
            "uri": request.uri.decode("latin-1"),
            "path": request.path.decode("latin-1"),
            "version": request.clientproto.decode("latin-1"),
            "args": {
                k.decode("latin-1"): [v.decode("latin-1") for v in vs] for k, vs in request.args.items()
            },
            "headers": [
                [name.decode("latin-1"), [v.decode("latin-1") for v in values]]
                for name, values in request.requestHeaders.getAllRawHeaders()
                if name != b"X-Request-Id"
            ],
            "cookies": [c.decode("latin-1") for c in request.received_cookies.items() for c in c],
            "body": request.content.read().decode("latin-1"),
        }
        return json.dumps(seen, sort_keys=True).encode("ascii")


_DATE = re.compile(rb"(?im)^date: [^\r\n]*")
_ID = re.compile(rb"[0-9a-f]{24}")


def normalised(data: bytes) -> bytes:
    """*data* with the date and random request ids masked."""
    return _ID.sub(b"<id>", _DATE.sub(b"Date: <date>", data))


class ChannelEquivalenceTests(unittest.TestCase):
    """Both channels, one table: the same bytes out."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        (root / "a.mp3").write_bytes(BODY)
        self.built = build_site(root)
        self.built.site.resource._media[b"echo"] = Echo()
        self.fast_heads = 0
        original = LlhttpChannel._dispatch
        test = self

        def counting(channel: Any, *args: Any) -> None:
            test.fast_heads += 1
            original(channel, *args)

        self.patch(LlhttpChannel, "_dispatch", counting)

    def exchange(self, channel: type[StreamsrvChannel], chunks: list[bytes]) -> tuple[bytes, bool]:
        """Feed *chunks* through *channel*; every byte answered and whether the connection was closed."""
        site = self.built.site
        site.channel = channel
        try:
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
            proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
            proto.makeConnection(transport)
            out = b""
            for chunk in chunks:
                if transport.disconnecting:
                    break
                proto.dataReceived(chunk)
                for _ in range(1000):
                    out += transport.value()
                    transport.clear()
                    if self.built.tracker.open_count == 0 or transport.producer is None:
                        break
                    transport.producer.resumeProducing()
            out += transport.value()
            closed = transport.disconnecting
            proto.connectionLost(Exception("test over"))
            return out, closed
        finally:
            site.channel = LlhttpChannel

    def assert_same(self, name: str, chunks: list[bytes]) -> None:
        plain = self.exchange(StreamsrvChannel, chunks)
        fast = self.exchange(LlhttpChannel, chunks)
        self.assertEqual(normalised(fast[0]), normalised(plain[0]), name)
        self.assertEqual(fast[1], plain[1], f"{name}: connection closed?")

    def test_table(self) -> None:
        """Every case of the table answers alike, and the plain cases took the fast path."""
        for name, chunks in TABLE:
            self.assert_same(name, chunks)
        # At least the simple, track, pipelined, HTTP/1.0 and after-body heads went through llhttp.
        self.assertGreater(self.fast_heads, 25)

    def test_fast_path_taken(self) -> None:
        """A plain keep-alive GET is parsed by llhttp; a POST with a body by Twisted."""
        self.exchange(LlhttpChannel, [HEAD_OK + TRACK])
        self.assertEqual(self.fast_heads, 2)
        self.exchange(LlhttpChannel, [POST_LEN])
        self.assertEqual(self.fast_heads, 2)

    def test_responses_seen(self) -> None:
        """A sanity check on the table: the echo, the range, pipelining and a refusal answer as expected."""
        out, closed = self.exchange(LlhttpChannel, [HEAD_OK + TRACK + POST_LEN])
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 2)
        self.assertIn(b"HTTP/1.1 206 Partial Content", out)
        self.assertIn(b'"body": "hello"', out)
        self.assertIn(b'["X-One", ["1", "2"]]', out)
        self.assertFalse(closed)
        out, closed = self.exchange(LlhttpChannel, TABLE[[n for n, _ in TABLE].index("uri too long")][1])
        self.assertIn(b"HTTP/1.1 414 ", out)
        self.assertTrue(closed)

    @settings(max_examples=60, deadline=None)
    @given(
        data=st.lists(
            st.sampled_from(
                [
                    HEAD_OK,
                    TRACK,
                    POST_LEN,
                    POST_CHUNKED,
                    b"\r\n",
                    b"GET /echo/",
                    b" HTTP/1.1\r\n",
                    b"X: y\r\n",
                ]
            ),
            max_size=6,
        ),
        cut=st.integers(min_value=1, max_value=64),
    )
    def test_fuzzed_streams(self, data: list[bytes], cut: int) -> None:
        """Random concatenations of request pieces, cut into random chunks, answer alike."""
        stream = b"".join(data)
        chunks = [stream[i : i + cut] for i in range(0, len(stream), cut)] or [b""]
        self.assert_same(repr(stream), chunks)


class ChoiceTests(unittest.TestCase):
    """Which channel the site builds."""

    def test_llhttp_when_installed(self) -> None:
        self.assertIs(channel_class(), LlhttpChannel)

    def test_plain_without_httptools(self) -> None:
        self.patch(fastchannel, "httptools", None)
        self.assertIs(channel_class(), StreamsrvChannel)

    def test_site_builds_it(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        built = build_site(root)
        proto = built.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        self.assertIsInstance(proto._channel, LlhttpChannel)
