# -*- test-case-name: tests.test_fastchannel -*-
"""The HTTP channel with request heads parsed by ``httptools`` (llhttp), Twisted's for the rest.

:class:`LlhttpChannel` is :class:`~streamsrv.web.site.StreamsrvChannel` with
a faster way in for the usual request: a complete head (request line and
headers, ``CRLF CRLF``-terminated, within the size limits) of a request
with no body is checked by llhttp in C, its headers stored straight into
the request's ``Headers``, and the request handed to Twisted's own
``allHeadersReceived``/``allContentReceived``, exactly as Twisted's line
parser would have.  Everything else goes to Twisted's parser with the
same bytes, untouched: a head split over reads, one with a body
(``Content-Length``, ``Transfer-Encoding``), ``Expect``, ``Upgrade``
(WebSockets), obsolete line folding, a bare CR or LF, NUL, anything llhttp
refuses or any limit reached (so Twisted's 400 and the channel's 414/431
answer it, word for word).  Nothing is changed before the fast path is
sure it applies, so falling back is always safe.

Pipelining, keep-alive, ``Connection: close``, HTTP/1.0 and the idle
timeout are Twisted's: the request goes through the same
``allContentReceived`` and ``requestDone``, and bytes that arrive while a
request is being answered wait in Twisted's ``_dataBuffer``.

:func:`channel_class` is this channel when ``httptools`` imports, else the
plain one.  ``tests/test_fastchannel.py`` runs one table of requests
through both and compares what each answers, byte for byte.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.protocols import basic
from twisted.web import http
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder

from streamsrv.web.site import StreamsrvChannel

httptools: Any
try:
    import httptools
except ImportError:  # pragma: no cover - httptools is a dependency; its absence is tolerated
    httptools = None

__all__ = ["LlhttpChannel", "channel_class"]

#: Request headers that take a request off the fast path (bodies, 100-continue, upgrades).
_SLOW_HEADERS: Final = frozenset({b"Content-Length", b"Transfer-Encoding", b"Expect", b"Upgrade"})

#: The bytes Twisted accepts in a request-target (``_parseRequestLine``: 33 to 176).
_TARGET_BYTES: Final = bytes(range(33, 177))

#: The bytes of an RFC 9110 token (``twisted.web._abnf._istoken``).
_TOKEN_BYTES: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"


class _Refused(Exception):
    """The head is one the fast path leaves to Twisted."""


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """``(method, target, version)`` as Twisted's ``_parseRequestLine`` accepts them.

    :raise _Refused: for anything it would refuse (Twisted then answers it).
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _Refused
    method, target, version = parts
    if (
        not method
        or method.translate(None, _TOKEN_BYTES)
        or not target
        or target.translate(None, _TARGET_BYTES)
        or (version != b"HTTP/1.1" and version != b"HTTP/1.0")
    ):
        raise _Refused
    return method, target, version


class _Head:
    """What llhttp found in one request head: its headers as sent, and whether it ended."""

    __slots__ = ("complete", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete = True


def _canonical(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """*headers* with their names as twisted.web's ``Headers`` spells them.

    :raise _Refused: for a name Twisted refuses, or one that takes the request
        off the fast path (a body, ``Expect``, ``Upgrade``).
    """
    canonical = []
    for name, value in headers:
        try:
            encoded = _nameEncoder.encode(name)
        except InvalidHeaderName:
            raise _Refused from None
        if encoded in _SLOW_HEADERS:
            raise _Refused
        canonical.append((encoded, value))
    return canonical


class LlhttpChannel(StreamsrvChannel):
    """:class:`StreamsrvChannel` parsing plain request heads with llhttp (see the module docstring)."""

    def dataReceived(self, data: bytes) -> None:
        """Answer each complete, body-less request head at once; give anything else to Twisted."""
        self.resetTimeout()
        if self._busyReceiving:
            # Called back from within a request (requestDone replays buffered data).
            self._buffer += data
            return
        self._busyReceiving = True
        pending = self._buffer + data
        self._buffer = b""
        try:
            while pending:
                if not self._ready():
                    break
                rest = self._answer_head(pending)
                if rest is None:
                    break
                pending = rest + self._buffer
                self._buffer = b""
                transport: Any = self.transport
                if transport is None or transport.disconnecting:
                    return
                if self._handlingRequest:
                    # Answered later (a producer, a coroutine): the rest waits as Twisted keeps it.
                    if pending:
                        self.rawDataReceived(pending)
                    return
            else:
                return
        finally:
            self._busyReceiving = False
        if pending:
            basic.LineReceiver.dataReceived(self, pending)

    def _ready(self) -> bool:
        """Whether the channel is between requests, with nothing of the next one read yet."""
        return bool(
            self.line_mode
            and self.persistent
            and not self._handlingRequest
            and not self.paused
            and self._HTTPChannel__first_line == 1  # type: ignore[attr-defined]
            and not self._HTTPChannel__header  # type: ignore[attr-defined]
            and self._receivedHeaderSize == 0
        )

    def _answer_head(self, data: bytes) -> bytes | None:
        """Parse and dispatch the request head at the start of *data*; what follows it, or ``None``.

        ``None`` means "not for the fast path" and leaves the channel as it was.
        """
        end = data.find(b"\r\n\r\n")
        if end <= 0 or end + 4 > self.totalHeadersSize or end + 4 > self.MAX_LENGTH:
            return None
        head = data[: end + 4]
        lines = head.count(b"\r\n")
        if (
            head.count(b"\n") != lines
            or head.count(b"\r") != lines
            or b"\x00" in head
            or b"\r\n " in head
            or b"\r\n\t" in head
            or lines - 2 > self.maxHeaders
        ):
            return None
        try:
            method, target, version = _request_line(head[: head.index(b"\r\n")])
        except _Refused:
            return None
        parsed = _Head()
        parser = httptools.HttpRequestParser(parsed)
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        if not parsed.complete:
            return None
        lane = self.site.stream_lane
        if lane is not None and lane.answer(self, method, target, version, parsed.headers):
            return data[end + 4 :]
        try:
            headers = _canonical(parsed.headers)
        except _Refused:
            return None
        self._dispatch(method, target, version, headers)
        return data[end + 4 :]

    def _dispatch(
        self, method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Hand a parsed head to Twisted as its own line parser would (``lineReceived`` and after)."""
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        raw: dict[bytes, list[bytes]] = request.requestHeaders._rawHeaders
        for name, value in headers:
            value = value.strip(b" \t")
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        self._command = method
        self._path = target
        self._version = version
        self.length = 0
        self.allHeadersReceived()
        self.allContentReceived()


def channel_class() -> type[StreamsrvChannel]:
    """:class:`LlhttpChannel` when ``httptools`` is installed, else the plain channel."""
    return LlhttpChannel if httptools is not None else StreamsrvChannel


# Twisted's own HTTP/1.1 request-line parser, kept in reach for the tests' comparison.
parse_request_line_twisted = http._parseRequestLine
