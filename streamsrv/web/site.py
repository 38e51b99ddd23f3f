# -*- test-case-name: tests.test_web -*-
"""The HTTP site: request ids, security headers, JSON errors, access log.

:class:`StreamsrvRequest` gives every request an ``X-Request-ID`` (the
client's own when it is well formed), the baseline security headers, and
JSON bodies for the errors Twisted would otherwise answer in HTML (405,
500).  When a request ends — finished or cut by the client — it is written
to the access log and counted in the metrics, exactly once.  Nothing here
ever writes a traceback, a file-system path or a credential to a client.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Final, cast

from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web.http import datetimeToString
from twisted.web.http_headers import _nameEncoder
from twisted.web.resource import IResource

from streamsrv.errors import DEFAULT_MESSAGES, ApiError
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.accesslog import access_log_observed, log_access
from streamsrv.middleware.clientaddr import client_address, forwarded_proto, parse_networks
from streamsrv.middleware.cors import CorsPolicy
from streamsrv.middleware.headers import apply_security_headers
from streamsrv.web.errors import error_body, render_error

log = Logger()

#: What a client-chosen X-Request-ID may look like (DESIGN, HTTP contract).
REQUEST_ID_RE = re.compile(rb"\A[A-Za-z0-9._-]{1,128}\Z")

SERVER_HEADER = b"streamsrv"


#: ``(second, Date header value)``: formatted once per second, not per response.
_date_cache: tuple[int, bytes] = (-1, b"")


def http_date_now() -> bytes:
    """The ``Date`` header value for now (``datetimeToString()``, cached for the second)."""
    global _date_cache
    now = int(time.time())
    second, value = _date_cache
    if second != now:
        value = datetimeToString(now)
        _date_cache = (now, value)
    return value


class _RandomIds:
    """Fresh random request ids (24 hex digits, as ``secrets.token_hex(12)``), one ``getrandom`` per 256.

    The bytes come from :func:`os.urandom` as ``secrets`` takes them, read
    ahead; a forked child drops what its parent read ahead.
    """

    BATCH: Final = 256

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        """A fresh id, never handed out before."""
        at = self._at
        if at >= len(self._pool):
            self._pool = os.urandom(12 * self.BATCH)
            at = 0
        self._at = at + 12
        return self._pool[at : at + 12].hex()


_random_ids = _RandomIds()


def choose_request_id(offered: bytes | None) -> str:
    """The client's request id if well formed, else a fresh random one."""
    if offered is not None and REQUEST_ID_RE.match(offered):
        return offered.decode("ascii")
    return _random_ids.next()


#: Header names (``bytes``) as code spells them -> as ``Headers`` stores them.  Filled by
#: :meth:`StreamsrvRequest.setHeader` with names the code sets (never a client's), and bounded.
_CANONICAL: dict[Any, bytes] = {
    name: _nameEncoder.encode(name)
    for name in (
        b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since",
        b"if-unmodified-since", b"user-agent", b"x-request-id", b"x-forwarded-for",
        b"x-forwarded-proto", b"authorization", b"origin", b"save-data", b"downlink", b"ect",
    )
}  # fmt: skip
_CANONICAL_MAX: Final = 512

#: Every status's reason phrase (IANA's registry, as Python knows it).
REASON_PHRASES: Final = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class StreamsrvRequest(server.Request):
    """A request that carries its id, route label, principal and outcome."""

    request_id: str = "-"
    route: str = "other"
    #: ``expires`` of the signed URL that admitted this request, if any.
    signed_expires: int | None = None
    #: ``(format, bitrate bits/s)`` of the audio a /stream or /hls answer sends (``stream.started``).
    delivered_as: tuple[str, int | None] | None = None
    user: str | None = None
    #: How the caller authenticated: ``jwt``, ``signed_url`` or ``anonymous``.
    auth_via: str | None = None
    error_code: str | None = None
    #: The Content-Type the answer's representation has, for a 304 that does
    #: not send one (compression decides ``Vary`` and the ETag's form by it).
    variant_type: bytes | None = None
    #: Body bytes a sender wrote directly to the socket (sendfile), which
    #: Twisted's ``sentLength`` does not see.
    direct_bytes: int = 0
    started_at: float = 0.0
    _ended: bool = False

    _client_ip: str | None = None

    #: Always ours: :class:`StreamsrvSite` builds only :class:`StreamsrvChannel`
    #: and this request class.  Like Twisted's own ``channel``, it is dropped
    #: when the connection is lost (``_disconnected``) or the request finished.
    channel: StreamsrvChannel
    #: Set from the channel at the start of :meth:`process`, before anything
    #: that reads it (routes, :meth:`_ended_cb`) can run.
    site: StreamsrvSite

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        """Twisted's ``setHeader``, storing a plain ``bytes`` value under a name seen before directly.

        Same result as ``responseHeaders.setRawHeaders(name, [value])``: the
        name canonicalised (:data:`_CANONICAL` remembers Twisted's spelling of
        each name the code uses) and a value with CR or LF left to Twisted,
        which replaces them.
        """
        canonical = _CANONICAL.get(name)
        if canonical is not None and type(value) is bytes and b"\r" not in value and b"\n" not in value:
            self.responseHeaders._rawHeaders[canonical] = [value]
            return
        super().setHeader(name, value)
        if canonical is None and type(name) is bytes and len(_CANONICAL) < _CANONICAL_MAX:
            _CANONICAL[name] = _nameEncoder.encode(name)

    def getHeader(self, key: Any) -> Any:
        """Twisted's ``getHeader`` (the last value of a request header, or ``None``), looked up directly."""
        canonical = _CANONICAL.get(key)
        if canonical is None:
            if type(key) is bytes and len(_CANONICAL) < _CANONICAL_MAX:
                _CANONICAL[key] = _nameEncoder.encode(key)
            return super().getHeader(key)
        values = self.requestHeaders._rawHeaders.get(canonical)
        return values[-1] if values else None

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        """Set the status, with its reason phrase even where Twisted has none (429, 426, 431...)."""
        if message is None and code not in http.RESPONSES:
            message = REASON_PHRASES.get(code)
        super().setResponseCode(code, message)

    @property
    def peer_ip(self) -> str:
        """The address of whoever opened the connection."""
        peer = self.getClientAddress()
        return getattr(peer, "host", "-") or "-"

    @property
    def client_ip(self) -> str:
        """The client's address: ``X-Forwarded-For`` is believed only from trusted proxies."""
        if self._client_ip is None:
            trusted = self.site.trusted_proxies
            forwarded = self.requestHeaders.getRawHeaders("x-forwarded-for") if trusted else None
            self._client_ip = client_address(self.peer_ip, forwarded, trusted)
        return self._client_ip

    def is_https(self) -> bool:
        """TLS to us, or ``X-Forwarded-Proto: https`` from a trusted proxy."""
        if self.isSecure():
            return True
        trusted = self.site.trusted_proxies
        if not trusted:
            return False
        proto = self.getHeader(b"x-forwarded-proto")
        value = proto.decode("latin-1") if proto is not None else None
        return forwarded_proto(self.peer_ip, value, trusted) == "https"

    def process(self) -> None:
        """Route and render, after stamping id, headers and a finish hook."""
        site: StreamsrvSite = self.channel.site
        self.site = site
        self.started_at = site.clock.seconds()
        self.request_id = choose_request_id(self.getHeader(b"x-request-id"))
        for name, value in site.first_headers:
            self.setHeader(name, value)
        self.setHeader(b"server", SERVER_HEADER)
        self.setHeader(b"date", http_date_now())
        self.setHeader(b"x-request-id", self.request_id.encode("ascii"))
        apply_security_headers(self, hsts=site.hsts and self.is_https())
        self.notifyFinish().addBoth(self._ended_cb)
        if site.cors.apply(self):
            self.route = "preflight"
            self.setResponseCode(204)
            self.setHeader(b"content-length", b"0")
            self.write(b"")
            self.finish()
            return

        self.prepath = []
        self.postpath = list(map(server.unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self.render(site.options_star)
            return
        try:
            resrc = site.getResourceFor(self)
            if resource._IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(Failure())

    def gotLength(self, length: int | None) -> None:
        """Refuse a declared body over the limit before reading any of it."""
        self._body_received = 0
        if length is not None and length > self.channel.site.max_body_bytes:
            self.channel.refuse(413, "PAYLOAD_TOO_LARGE")
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Count body bytes (chunked bodies declare no length) against the limit."""
        self._body_received += len(data)
        if self._body_received > self.channel.site.max_body_bytes:
            self.channel.refuse(413, "PAYLOAD_TOO_LARGE")
            return
        super().handleContentChunk(data)

    def render(self, resrc: IResource) -> None:
        """Render *resrc*, answering an unsupported method with JSON 405."""
        try:
            body = resrc.render(self)
        except resource.UnsupportedMethod as e:
            allowed = b", ".join(e.allowedMethods)
            body = render_error(
                self, ApiError("METHOD_NOT_ALLOWED", headers={"Allow": allowed.decode("ascii")})
            )
        if body is server.NOT_DONE_YET:
            return
        if self.method == b"HEAD":
            if body:
                self.setHeader(b"content-length", b"%d" % len(body))
            self.write(b"")
        else:
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
        self.finish()

    def processingFailed(self, reason: Failure) -> Failure:
        """Log the failure for operators; answer the client with JSON 500."""
        log.failure(
            "unhandled error on {method} request {request_id}",
            failure=reason,
            method=self.method.decode("latin-1"),
            request_id=self.request_id,
        )
        if self.finished or self._disconnected:
            return reason
        if self.startedWriting:
            # Headers are gone; the only honest thing left is to cut, unless the
            # connection was handed over (a WebSocket upgrade detaches it).
            transport = self.channel.transport
            if transport is not None:
                # Declared on ITCPTransport only; every stream transport a
                # channel is given (TCP, UNIX, TLS) has it.
                cast(ITCPTransport, transport).abortConnection()
            return reason
        body = render_error(self, ApiError("INTERNAL"))
        self.write(body)
        self.finish()
        return reason

    def _ended_cb(self, result: Any) -> None:
        """Access-log and count this request once, finished or aborted."""
        if self._ended:
            return
        self._ended = True
        record_request_end(self.site, self, aborted=isinstance(result, Failure))


def record_request_end(site: StreamsrvSite, request: Any, *, aborted: bool) -> None:
    """Count *request* in the metrics and write its access-log event (once, when it ended).

    *request* is a :class:`StreamsrvRequest`, or the fast lane's stand-in
    for one (:mod:`streamsrv.web.streamlane`): the same attributes are read.
    """
    duration = max(0.0, site.clock.seconds() - request.started_at)
    sent = request.sentLength + request.direct_bytes
    method = request.method.decode("latin-1")
    status = request.code
    site.metrics.observe_request(
        route=request.route, method=method, status=status, duration_s=duration, sent=sent
    )
    if request.error_code is not None:
        site.metrics.errors.labels(request.error_code).inc()
    if site.access_log and access_log_observed():
        range_header = request.getHeader(b"range")
        user_agent = request.getHeader(b"user-agent")
        log_access(
            method=method,
            uri=request.uri,
            status=status,
            sent=sent,
            duration_s=duration,
            client=request.client_ip,
            request_id=request.request_id,
            range_header=range_header.decode("latin-1")[:200] if range_header else None,
            user=request.user,
            aborted=aborted,
            user_agent=user_agent.decode("latin-1")[:200] if user_agent else None,
        )


class StreamsrvChannel(http.HTTPChannel):
    """Twisted's HTTP channel, answering oversized requests with 414/431/413 JSON.

    Twisted closes the connection silently on a line longer than
    ``MAX_LENGTH`` and answers a bare 400 to too many or too large headers;
    these are the contract's ``URI_TOO_LONG`` and ``HEADERS_TOO_LARGE``.
    """

    _refused = False
    #: The connection's local address, once asked (see :meth:`getHost`).
    _host: Any = None
    #: The peer's address, once asked (see :meth:`peer_host`).
    _peer_host: str | None = None

    #: Set by ``Site.buildProtocol`` (through ``_GenericHTTPChannelProtocol.site``)
    #: before any data arrives; only :class:`StreamsrvSite` builds this channel.
    site: StreamsrvSite

    def getHost(self) -> Any:
        """The local address of this connection: asked of the socket once, not for every request."""
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def peer_host(self) -> str:
        """The peer's address as :attr:`StreamsrvRequest.peer_ip` gives it, asked of the transport once."""
        peer = self._peer_host
        if peer is None:
            peer = self._peer_host = getattr(self.getPeer(), "host", "-") or "-"
        return peer

    def refuse(self, status: int, code: str) -> None:
        """Answer *code* as JSON, close, and ignore whatever else arrives."""
        transport = self.transport
        if self._refused or transport is None:
            # Answered already, or the connection was handed over: nobody to tell.
            return
        self._refused = True
        request_id = secrets.token_hex(12)
        body = error_body(code, DEFAULT_MESSAGES[code], request_id)
        reason = REASON_PHRASES.get(status, b"Error")
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\nX-Request-ID: %s\r\n\r\n"
            % (status, reason, len(body), request_id.encode("ascii"))
        )
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        transport.write(head + body)
        transport.loseConnection()
        metrics = getattr(self.site, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(code).inc()

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line (414) or header line (431) over the limit."""
        if self._receivedHeaderSize == 0:
            self.refuse(414, "URI_TOO_LONG")
        else:
            self.refuse(431, "HEADERS_TOO_LARGE")

    def lineReceived(self, line: bytes) -> None:
        """Refuse header blocks over ``totalHeadersSize`` with 431."""
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(431, "HEADERS_TOO_LARGE")
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        """Refuse more than ``maxHeaders`` headers with 431."""
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(431, "HEADERS_TOO_LARGE")
            return False
        return bool(super().headerReceived(line))


def _channel_protocol(factory: Any) -> Any:
    """The site's protocol factory: Twisted's wrapper around the site's :attr:`~StreamsrvSite.channel`."""
    return http._GenericHTTPChannelProtocol(factory.channel())


def finish_response(request: Any, body: bytes) -> None:
    """Write *body* (none for HEAD) and finish, unless the client already left.

    For resources that render asynchronously and so return ``NOT_DONE_YET``:
    the same framing as :meth:`StreamsrvRequest.render` for a bytes body.
    """
    if request.finished or request._disconnected:
        return
    if request.method == b"HEAD":
        if body:
            request.setHeader(b"content-length", b"%d" % len(body))
        request.write(b"")
    else:
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
    request.finish()


class _OptionsStar(resource.Resource):
    """``OPTIONS *``: advertise the methods the server knows."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"allow", b"GET, HEAD, POST, PUT, OPTIONS")
        request.setResponseCode(204)
        return b""


class StreamsrvSite(server.Site):
    """The site: our request class, our access log, no HTML tracebacks."""

    requestFactory = StreamsrvRequest
    displayTracebacks = False
    protocol = _channel_protocol
    #: The HTTP channel each connection gets (``web.factory.make_site`` picks llhttp's when installed).
    channel: type[StreamsrvChannel] = StreamsrvChannel

    def __init__(
        self,
        root: IResource,
        *,
        metrics: Metrics,
        clock: IReactorTime,
        hsts: bool = False,
        access_log: bool = True,
        timeout: float = 60.0,
        cors: CorsPolicy | None = None,
        max_body_bytes: int = 1024 * 1024,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        super().__init__(root, timeout=timeout, reactor=clock)
        self.metrics = metrics
        self.clock = clock
        self.hsts = hsts
        self.access_log = access_log
        self.cors = cors if cors is not None else CorsPolicy(())
        self.max_body_bytes = max_body_bytes
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.options_star = _OptionsStar()
        #: ``(name, value)`` headers every response carries before all others
        #: (a worker process names itself here: ``processes.identity``).
        self.first_headers: list[tuple[bytes, bytes]] = []
        #: The ``/stream`` fast lane the llhttp channel tries first (``web.streamlane``), if any.
        self.stream_lane: Any = None

    def log(self, request: http.Request) -> None:
        """Twisted's combined-log line is replaced by our structured event."""
