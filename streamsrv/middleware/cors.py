# -*- test-case-name: tests.test_cors -*-
"""CORS for the origins in ``STREAMSRV_CORS_ORIGINS``.

A browser app on another origin can fetch audio with ``Range`` and
``Authorization``, read the headers players need (``Content-Range``,
``Accept-Ranges``, ``Content-Length``…) and send credentials.  Origins are
matched exactly (the configuration normalises them), or, for an entry
``scheme://host:*``, that host on any port (the development default allows
``http://localhost:*``, ``http://127.0.0.1:*`` and ``http://[::1]:*``);
anything else gets no CORS headers at all, so the browser blocks it.  ``*`` (development only:
production refuses it) echoes the caller's origin, because credentials are
never allowed with a literal ``*``.  Preflights are answered here, before
authentication, and cached by the browser for ``MAX_AGE_S``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Headers a cross-origin script may read.
EXPOSED_HEADERS = (
    b"Content-Range, Accept-Ranges, Content-Length, Content-Type, Content-Disposition, ETag, "
    b"Last-Modified, X-Request-ID, X-Content-Duration, RateLimit-Limit, RateLimit-Remaining, "
    b"RateLimit-Reset, Retry-After"
)

#: Request headers a cross-origin script may send.
ALLOWED_HEADERS = (
    b"Authorization, Range, If-Range, If-None-Match, If-Modified-Since, If-Match, "
    b"Content-Type, X-Request-ID, Downlink, ECT, Save-Data"
)

ALLOWED_METHODS = b"GET, HEAD, POST, PUT, OPTIONS"

#: How long a browser may cache a preflight answer, seconds.
MAX_AGE_S = 600


class CorsPolicy:
    """Decide and set the CORS headers of each response.

    :param origins: allowed origins, normalised (``scheme://host[:port]``),
        ``scheme://host:*`` for any port of that host, or ``*``.
    """

    def __init__(self, origins: Sequence[str]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(o.encode("ascii") for o in origins if o != "*" and not o.endswith(":*"))
        self._any_port = frozenset(o[:-2].encode("ascii") for o in origins if o.endswith(":*") and o != "*")

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed."""
        return self._any or bool(self._origins) or bool(self._any_port)

    def allowed(self, origin: bytes | None) -> bool:
        """Whether *origin* may read responses."""
        if origin is None:
            return False
        if self._any:
            return True
        origin = origin.lower()
        if origin in self._origins:
            return True
        if not self._any_port:
            return False
        host, colon, port = origin.rpartition(b":")
        if colon and port.isdigit() and not host.endswith(b"/") and host in self._any_port:
            return True
        return origin in self._any_port

    def apply(self, request: Any) -> bool:
        """Set the CORS headers of *request*'s response.

        :return: ``True`` when the request is a preflight that has been fully
            answered here (the caller responds 204 with no body).
        """
        if not self.enabled:
            return False
        request.setHeader(b"vary", b"Origin")
        origin = request.getHeader(b"origin")
        if not self.allowed(origin):
            return False
        assert origin is not None
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
        preflight = request.method == b"OPTIONS" and request.getHeader(b"access-control-request-method")
        if preflight:
            request.setHeader(b"access-control-allow-methods", ALLOWED_METHODS)
            request.setHeader(b"access-control-allow-headers", ALLOWED_HEADERS)
            request.setHeader(b"access-control-max-age", b"%d" % MAX_AGE_S)
            return True
        request.setHeader(b"access-control-expose-headers", EXPOSED_HEADERS)
        return False
