# -*- test-case-name: tests.test_streamlane -*-
"""The ``/stream`` fast lane: the player's everyday range request, answered straight from its head.

Most of what a player sends is one kind of request: ``GET /stream/<track>``
with one ``Range`` (or none), a bearer token it sent before, and a handful of
headers that change nothing.  The full path answers it through twisted.web's
``Request``, the resource tree and ``Headers`` (about twenty ``setHeader``
calls), with a few hundred Python calls of bookkeeping.  :class:`StreamLane`
answers exactly such a request from the head the llhttp channel
(:mod:`streamsrv.web.fastchannel`) has just parsed: the same admission
(:meth:`~streamsrv.middleware.guard.Guard.recall_plain`,
:meth:`~streamsrv.middleware.guard.Guard.limit_plain`), the same file checks
(:meth:`~streamsrv.streaming.resource.StreamResource.open_plain`), the same
response head byte for byte (a per-file block of header lines made once per
file version), the body with ``os.sendfile``, and the same bookkeeping after
(:meth:`~streamsrv.streaming.resource.StreamResource.body_ended`,
:func:`~streamsrv.web.site.record_request_end`).

It answers only when it is sure nothing else could happen on the full path:
``GET`` over HTTP/1.1 on plain TCP, no query, only the headers of
:data:`LANE_HEADERS` and each once, a ``Range`` of the form ``bytes=A-`` or
``bytes=A-B`` that the file satisfies (or none), a cached token (or anonymous
access), a path resolved before, a known duration, tokens in the rate-limit
buckets.  For anything else it returns ``False`` having done nothing
observable, and the request takes the full path, which answers it (and
refuses it: 401, 404, 416, 429... are all the full path's).  A body that the
socket does not take at once goes on with the full path's own
:class:`~streamsrv.streaming.producers.SendfileSender`, the channel holding
later pipelined requests back as twisted.web does.

``tests/test_streamlane.py`` sends the same requests through a site with the
lane and one without and compares the answers byte for byte (all but
``Date`` and ``X-Request-ID``), the metrics, the audit and the listening
sessions.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import _nameEncoder

from streamsrv.auth.principal import Principal
from streamsrv.auth.signing import max_age_for
from streamsrv.middleware.clientaddr import client_address, forwarded_proto
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.headers import apply_security_headers, mark_media
from streamsrv.middleware.ratelimit import Decision
from streamsrv.streaming.producers import SENDFILE_CHUNK, SendfileSender
from streamsrv.streaming.ranges import MAX_HEADER_LENGTH
from streamsrv.streaming.resource import (
    CACHE_CONTROL,
    CACHE_MAX_AGE_S,
    FileHeaders,
    PlainFile,
    StreamResource,
)
from streamsrv.streaming.sendfile import MSG_MORE, holds_bytes, qualifies
from streamsrv.web.site import (
    SERVER_HEADER,
    StreamsrvSite,
    choose_request_id,
    http_date_now,
    record_request_end,
)

__all__ = ["LANE_HEADERS", "StreamLane"]

#: The route prefix the lane answers below.
PREFIX: Final = b"/stream/"

#: Request headers (lower case) that leave a ``/stream`` answer as it is without
#: them, or that the lane reads as the full path does (``Origin``: the same CORS
#: step): a request with any other header (``If-Range``, ``If-None-Match``...) takes the full path.
LANE_HEADERS: Final = frozenset(
    {
        b"host", b"range", b"authorization", b"user-agent", b"x-request-id", b"connection",
        b"accept", b"accept-encoding", b"accept-language", b"referer", b"cache-control", b"pragma",
        b"dnt", b"priority", b"cookie", b"icy-metadata", b"x-forwarded-for", b"x-forwarded-proto", b"origin",
        b"sec-fetch-dest", b"sec-fetch-mode", b"sec-fetch-site", b"sec-fetch-user", b"sec-ch-ua",
        b"sec-ch-ua-mobile", b"sec-ch-ua-platform", b"sec-gpc", b"x-playback-session-id",
    }
)  # fmt: skip

#: The parameters of a signed URL that leave the answer as it is (``uid``, ``ip``: bound, checked
#: when it was verified); a query with any other takes the full path.
_SIGNED_NAMES: Final = frozenset({b"expires", b"sig", b"kid", b"uid", b"ip"})

#: The one ``Range`` form the lane takes: a single first-last or open range, no spaces.
_RANGE: Final = re.compile(rb"bytes=([0-9]{1,18})-([0-9]{0,18})")

_STATUS: Final = {200: b"HTTP/1.1 200 OK\r\n", 206: b"HTTP/1.1 206 Partial Content\r\n"}


def _line(name: bytes, value: bytes) -> bytes:
    """One header line, the name spelt as twisted.web's ``Headers`` writes it."""
    return _nameEncoder.encode(name) + b": " + value + b"\r\n"


class _Recorder:
    """Collects ``setHeader`` calls in order, a later value of a name taking the first one's place."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def block(self) -> bytes:
        return b"".join(_line(name, value) for name, value in self.headers.items())


def _security_block(hsts: bool) -> bytes:
    """The security headers of a media response, as ``process`` and ``mark_media`` leave them."""
    recorder = _Recorder()
    apply_security_headers(recorder, hsts=hsts)  # type: ignore[arg-type]
    mark_media(recorder)  # type: ignore[arg-type]
    return recorder.block()


@functools.lru_cache(maxsize=4096)
def _file_block(headers: FileHeaders, duration: float | None, mime: str, cache_control: bytes) -> bytes:
    """``ETag`` to ``Content-Type`` of one file version, in the order the full path sets them."""
    lines = [
        _line(b"etag", headers.etag_value),
        _line(b"last-modified", headers.last_modified_value),
        _line(b"accept-ranges", b"bytes"),
        _line(b"cache-control", cache_control),
    ]
    if duration is not None:
        lines.append(_line(b"x-content-duration", b"%.3f" % duration))
    lines.append(_line(b"content-disposition", headers.inline))
    lines.append(_line(b"content-type", mime.encode("ascii")))
    return b"".join(lines)


def _span(value: bytes | None) -> tuple[int, int | None] | bool | None:
    """``(first, last or None)`` of a lane-shaped ``Range``; ``None`` without one; ``False`` for any other."""
    if value is None:
        return None
    if len(value) > MAX_HEADER_LENGTH:
        return False
    match = _RANGE.fullmatch(value)
    if match is None:
        return False
    first = int(match[1])
    last = int(match[2]) if match[2] else None
    if last is not None and last < first:
        return False
    return first, last


class _LaneRequest:
    """What the observers of a request read of one the lane answered, in place of a ``StreamsrvRequest``.

    Also the request a :class:`SendfileSender` drives when the body goes on
    after the lane returned: it stands in the channel's queue as twisted.web's
    request would, so later pipelined requests wait for it.
    """

    route = "stream"
    method = b"GET"
    sentLength = 0
    error_code = None

    def __init__(self, site: StreamsrvSite, uri: bytes, headers: dict[bytes, bytes], client_ip: str) -> None:
        self.site = site
        self.uri = uri
        self._headers = headers
        self.client_ip = client_ip
        self.request_id = "-"
        self.started_at = 0.0
        self.code = 200
        self.direct_bytes = 0
        self.user: str | None = None
        self.auth_via: str | None = None
        self.delivered_as: tuple[str, int | None] | None = None
        self.signed_expires: int | None = None
        #: What ``CorsPolicy.apply`` set, in order.
        self.cors_headers: dict[bytes, bytes] = {}
        self.channel: Any = None
        self.finished = False
        self._disconnected = False
        self._waiter: Deferred[None] | None = None

    def getHeader(self, name: bytes) -> bytes | None:
        """The request header *name* (lower case), or ``None``."""
        return self._headers.get(name)

    def setHeader(self, name: bytes, value: bytes) -> None:
        """A response header of the CORS step (the lane writes the rest of the head itself)."""
        self.cors_headers[name] = value

    def hold(self, channel: Any) -> None:
        """Stand in *channel*'s queue as its request being answered (``allContentReceived`` does so)."""
        self.channel = channel
        if channel.timeOut:
            channel._savedTimeOut = channel.setTimeout(None)
        channel._handlingRequest = True
        channel.setRawMode()
        channel.requests.append(self)

    def notifyFinish(self) -> Deferred[None]:
        """Fires when the response is finished; fails if the client left first."""
        self._waiter = Deferred()
        return self._waiter

    def write(self, data: bytes) -> None:
        """The head went out already: the sender's ``write(b"")`` has nothing to add."""
        assert not data

    def finish(self) -> None:
        """The body is out: let the channel go on, account for the request."""
        if self._disconnected:
            raise RuntimeError("the connection was lost before the response was finished")
        self.finished = True
        channel, self.channel = self.channel, None
        channel.requestDone(self)
        record_request_end(self.site, self, aborted=False)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        """The client left mid-body."""
        if self.finished or self._disconnected:
            return
        self._disconnected = True
        self.channel = None
        record_request_end(self.site, self, aborted=True)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.errback(reason)


class StreamLane:
    """Answers plain ``/stream`` range requests without twisted.web's ``Request`` (see the module docstring).

    :param site: the site whose channels ask (its clock, metrics, CORS, proxies, first headers).
    :param resource: the ``/stream`` resource whose files, checks and bookkeeping are used.
    :param guard: the admission of the full path.
    """

    def __init__(self, site: StreamsrvSite, resource: StreamResource, guard: Guard) -> None:
        self._site = site
        self._resource = resource
        self._guard = guard
        self._security = {hsts: _security_block(hsts) for hsts in (False, True)}
        self._sendfile = resource.use_sendfile
        self._limited = guard.limited
        #: Requests answered here (the rest took the full path).
        self.answered = 0

    def answer(
        self, channel: Any, method: bytes, target: bytes, version: bytes, raw: list[tuple[bytes, bytes]]
    ) -> bool:
        """Answer the request if it is one for the lane; ``False`` (nothing done) if it is not."""
        path, _, query = target.partition(b"?")
        if method != b"GET" or version != b"HTTP/1.1" or not path.startswith(PREFIX) or b"#" in target:
            return False
        headers = {name.lower(): value.strip(b" \t") for name, value in raw}
        if len(headers) != len(raw) or not headers.keys() <= LANE_HEADERS:
            return False
        connection = headers.get(b"connection")
        transport = channel.transport
        span = _span(headers.get(b"range"))
        if (
            span is False
            or (connection is not None and connection.lower() != b"keep-alive")
            or not self._sendfile
            or not qualifies(transport)
            or transport.disconnecting
            or holds_bytes(transport)
        ):
            return False
        client_ip = self._client_ip(channel, headers)
        admitted = self._credentials(target, query, headers, client_ip) if client_ip is not None else None
        if admitted is None:
            return False
        plain = self._resource.open_plain(path[len(PREFIX) :], admitted[0].roles)
        if plain is None:
            return False
        if not self._admit(channel, target, headers, span, (client_ip, *admitted), plain):  # type: ignore[arg-type]
            plain.file.close()
            return False
        self.answered += 1
        return True

    def _client_ip(self, channel: Any, headers: dict[bytes, bytes]) -> str | None:
        """The client's address as the full path finds it (``None``: leave it to the full path)."""
        trusted = self._site.trusted_proxies
        forwarded = headers.get(b"x-forwarded-for") if trusted else None
        try:
            # Decoded as twisted.web's Headers.getRawHeaders decodes it for the full path.
            relayed = [forwarded.decode("utf8")] if forwarded is not None else None
        except UnicodeDecodeError:
            return None
        return client_address(channel.peer_host(), relayed, trusted)

    def _credentials(
        self, target: bytes, query: bytes, headers: dict[bytes, bytes], client_ip: str
    ) -> tuple[Principal, int | None] | None:
        """Who asks, and until when a signed URL lets them: a cached token, anonymous, or a verified URL."""
        if not query:
            principal = self._guard.recall_plain(headers.get(b"authorization"), "stream:read")
            return (principal, None) if principal is not None else None
        if b";" in query or any(pair.partition(b"=")[0] not in _SIGNED_NAMES for pair in query.split(b"&")):
            return None  # other parameters (download, format...): the full path's
        admission = self._guard.recall_signed(target, client_ip, "stream:read")
        if admission is None:
            return None
        return admission.principal, admission.signed_expires

    def _admit(
        self,
        channel: Any,
        target: bytes,
        headers: dict[bytes, bytes],
        span: tuple[int, int | None] | None,
        who: tuple[str, Principal, int | None],
        plain: PlainFile,
    ) -> bool:
        """Take the rate-limit tokens and answer; ``False`` (nothing taken) if the full path must."""
        if span is not None and span[0] >= plain.info.st_size:
            return False  # 416: the full path's
        client_ip, principal, expires = who
        decision = None
        if self._limited:
            decision = self._guard.limit_plain(client_ip, principal, span is None or span[0] == 0)
            if decision is None:
                return False
        site = self._site
        request = _LaneRequest(site, target, headers, client_ip)
        request.user = principal.sub
        request.auth_via = principal.via
        request.signed_expires = expires
        hsts = site.hsts and self._https(channel.peer_host(), headers)
        self._respond(channel, request, span, plain, decision, hsts)
        return True

    def _https(self, peer_ip: str, headers: dict[bytes, bytes]) -> bool:
        """``X-Forwarded-Proto: https`` from a trusted proxy (the lane serves plain TCP only)."""
        trusted = self._site.trusted_proxies
        proto = headers.get(b"x-forwarded-proto")
        if not trusted or proto is None:
            return False
        return forwarded_proto(peer_ip, proto.decode("latin-1"), trusted) == "https"

    def _head(
        self, request: _LaneRequest, status: int, plain: PlainFile, decision: Decision | None, hsts: bool
    ) -> list[bytes]:
        """The response head up to ``Content-Type``, as the full path writes it."""
        site = self._site
        parts = [_STATUS[status]]
        parts.extend(_line(name, value) for name, value in site.first_headers)
        parts += [
            b"Server: ", SERVER_HEADER, b"\r\nDate: ", http_date_now(),
            b"\r\nX-Request-Id: ", request.request_id.encode("ascii"), b"\r\n", self._security[hsts],
        ]  # fmt: skip
        if site.cors.enabled:
            # What the full path's CORS step sets: Vary, and for an allowed Origin its grant.
            site.cors.apply(request)
            parts.extend(_line(name, value) for name, value in request.cors_headers.items())
        if decision is not None:
            parts.append(
                b"Ratelimit-Limit: %d\r\nRatelimit-Remaining: %d\r\nRatelimit-Reset: %d\r\n"
                % (decision.limit, decision.remaining, decision.reset_s)
            )
        expires = request.signed_expires
        cache_control = CACHE_CONTROL
        if expires is not None:
            # As StreamResource._cache_control: never past the signed URL's expiry.
            cache_control = b"private, max-age=%d" % min(
                CACHE_MAX_AGE_S, max_age_for(expires, request.started_at)
            )
        parts.append(_file_block(plain.headers, plain.duration, plain.fmt.mime_type, cache_control))
        return parts

    def _respond(
        self,
        channel: Any,
        request: _LaneRequest,
        span: tuple[int, int | None] | None,
        plain: PlainFile,
        decision: Decision | None,
        hsts: bool,
    ) -> None:
        """Send the head and what the socket takes of the body now; the rest goes on in a sender."""
        site = self._site
        request.started_at = now = site.clock.seconds()
        request.request_id = choose_request_id(request.getHeader(b"x-request-id"))
        request.delivered_as = (plain.fmt.codec, None)
        size = plain.info.st_size
        if span is None:
            start, length, status = 0, size, 200
            tail = b"Content-Length: %d\r\n\r\n" % size
        else:
            start, status = span[0], 206
            end = size - 1 if span[1] is None else min(span[1], size - 1)
            length = end - start + 1
            tail = b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n" % (start, end, size, length)
            site.metrics.count(site.metrics.range_requests, "single")
        request.code = status
        parts = self._head(request, status, plain, decision, hsts)
        parts.append(tail)
        sent = _send_now(channel.transport, b"".join(parts), plain.file, start, length)
        request.direct_bytes = sent
        source = ([(start, length)], size, plain.duration)
        if sent == length:
            plain.file.close()
            record_request_end(site, request, aborted=False)
            self._resource.body_ended(request, plain.track, source, now, "sendfile", sent, True)
            return
        self._go_on(channel, request, plain, (start + sent, length - sent), source, now)

    def _go_on(
        self,
        channel: Any,
        request: _LaneRequest,
        plain: PlainFile,
        rest: tuple[int, int],
        source: tuple[list[tuple[int, int]], int, float | None],
        began: float,
    ) -> None:
        """Send the rest of the body with the full path's sender, the request holding the channel."""
        resource = self._resource
        tracker = resource.tracker
        already = request.direct_bytes

        def on_end(completed: bool) -> None:
            tracker.remove(sender)
            sent = already + sender.bytes_written
            resource.body_ended(request, plain.track, source, began, "sendfile", sent, completed)

        request.hold(channel)
        sender = SendfileSender(request, plain.file, rest[0], rest[1], on_end)
        tracker.add(sender)
        sender.start()


def _send_now(transport: Any, head: bytes, fileobj: Any, start: int, length: int) -> int:
    """Send *head* and what the socket takes now of *length* bytes from *start*; the body bytes sent.

    What the socket does not take of the head goes to the transport's buffer
    (the sender flushes it first); an error is left for the sender to meet
    again, as the full path meets it.
    """
    try:
        taken = transport.socket.send(head, MSG_MORE)
    except OSError:
        taken = 0
    if taken < len(head):
        type(transport).write(transport, head[taken:])
        return 0
    try:
        return os.sendfile(transport.fileno(), fileobj.fileno(), start, min(length, SENDFILE_CHUNK))
    except OSError:
        return 0


class LaneMetrics:
    """``streamsrv_stream_lane_requests_total``: what *lane* answered, read at each scrape (costs no request).

    Against ``streamsrv_http_requests_total{route="stream"}`` it shows the
    share of ``/stream`` traffic that took the lane.
    """

    def __init__(self, lane: StreamLane) -> None:
        self._lane = lane

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family()]

    def collect(self) -> list[CounterMetricFamily]:
        family = self._family()
        family.add_metric([], self._lane.answered)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "streamsrv_stream_lane_requests",
            "/stream requests the fast lane answered (the rest: full path)",
        )
