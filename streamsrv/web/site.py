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

import re
import secrets
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import datetimeToString
from twisted.web.resource import IResource

from streamsrv.health.metrics import Metrics
from streamsrv.middleware.accesslog import log_access
from streamsrv.middleware.headers import apply_security_headers
from streamsrv.web.errors import ApiError, render_error

log = Logger()

#: What a client-chosen X-Request-ID may look like (DESIGN, HTTP contract).
REQUEST_ID_RE = re.compile(rb"\A[A-Za-z0-9._-]{1,128}\Z")

SERVER_HEADER = b"streamsrv"


def choose_request_id(offered: bytes | None) -> str:
    """The client's request id if well formed, else a fresh random one."""
    if offered is not None and REQUEST_ID_RE.match(offered):
        return offered.decode("ascii")
    return secrets.token_hex(12)


class StreamsrvRequest(server.Request):
    """A request that carries its id, route label, principal and outcome."""

    request_id: str = "-"
    route: str = "other"
    user: str | None = None
    error_code: str | None = None
    #: Body bytes a sender wrote directly to the socket (sendfile), which
    #: Twisted's ``sentLength`` does not see.
    direct_bytes: int = 0
    started_at: float = 0.0
    _ended: bool = False

    @property
    def client_ip(self) -> str:
        """The peer address (trusted-proxy handling replaces this later)."""
        peer = self.getClientAddress()
        return getattr(peer, "host", "-") or "-"

    def process(self) -> None:
        """Route and render, after stamping id, headers and a finish hook."""
        site: StreamsrvSite = self.channel.site
        self.site = site
        self.started_at = site.clock.seconds()
        self.request_id = choose_request_id(self.getHeader(b"x-request-id"))
        self.setHeader(b"server", SERVER_HEADER)
        self.setHeader(b"date", datetimeToString())
        self.setHeader(b"x-request-id", self.request_id.encode("ascii"))
        apply_security_headers(self, hsts=site.hsts and self.isSecure())
        self.notifyFinish().addBoth(self._ended_cb)

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
            # Headers are gone; the only honest thing left is to cut.
            self.channel.transport.abortConnection()
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
        site: StreamsrvSite = self.site
        aborted = isinstance(result, Failure)
        duration = max(0.0, site.clock.seconds() - self.started_at)
        sent = self.sentLength + self.direct_bytes
        method = self.method.decode("latin-1")
        status = self.code
        site.metrics.observe_request(
            route=self.route, method=method, status=status, duration_s=duration, sent=sent
        )
        if self.error_code is not None:
            site.metrics.errors.labels(self.error_code).inc()
        if site.access_log:
            range_header = self.getHeader(b"range")
            user_agent = self.getHeader(b"user-agent")
            log_access(
                method=method,
                uri=self.uri,
                status=status,
                sent=sent,
                duration_s=duration,
                client=self.client_ip,
                request_id=self.request_id,
                range_header=range_header.decode("latin-1")[:200] if range_header else None,
                user=self.user,
                aborted=aborted,
                user_agent=user_agent.decode("latin-1")[:200] if user_agent else None,
            )


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

    def __init__(
        self,
        root: IResource,
        *,
        metrics: Metrics,
        clock: IReactorTime,
        hsts: bool = False,
        access_log: bool = True,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(root, timeout=timeout, reactor=clock)
        self.metrics = metrics
        self.clock = clock
        self.hsts = hsts
        self.access_log = access_log
        self.options_star = _OptionsStar()

    def log(self, request: server.Request) -> None:
        """Twisted's combined-log line is replaced by our structured event."""
