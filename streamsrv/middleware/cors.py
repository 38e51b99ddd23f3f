# -*- test-case-name: tests.test_cors -*-
"""CORS for the exact origins in ``STREAMSRV_CORS_ORIGINS``.

A browser app on another origin can fetch audio with ``Range`` and
``Authorization``, read the headers players need (``Content-Range``,
``Accept-Ranges``, ``Content-Length``…) and send credentials.  Origins are
matched exactly (the configuration normalises them); anything else gets no
CORS headers at all, so the browser blocks it.  ``*`` (development only:
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

    :param origins: allowed origins, normalised (``scheme://host[:port]``), or ``*``.
    """

    def __init__(self, origins: Sequence[str]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(o.encode("ascii") for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed."""
        return self._any or bool(self._origins)

    def allowed(self, origin: bytes | None) -> bool:
        """Whether *origin* may read responses."""
        if origin is None:
            return False
        return self._any or origin.lower() in self._origins

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
