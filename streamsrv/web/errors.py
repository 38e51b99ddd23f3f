# -*- test-case-name: tests.test_web -*-
"""Rendering the JSON error model of the HTTP contract (the codes live in :mod:`streamsrv.errors`).

Every error streamsrv answers is ``{"error": {"code", "message", "request_id"}}``
with the status that fits the code.  Messages are written for clients: they
never carry a stack trace, a file-system path or a secret.
"""

from __future__ import annotations

import json

from twisted.web.iweb import IRequest

from streamsrv.errors import ApiError

#: The ``WWW-Authenticate`` challenges of a 401 (RFC 6750 §3).
_CHALLENGE = b'Bearer realm="streamsrv"'
_CHALLENGE_INVALID = b'Bearer realm="streamsrv", error="invalid_token"'

#: The 401 codes that mean a token was presented and refused.
_TOKEN_CODES = frozenset({"TOKEN_EXPIRED", "TOKEN_INVALID", "TOKEN_REVOKED"})


def error_body(code: str, message: str, request_id: str) -> bytes:
    """The JSON bytes of an error response."""
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id}},
        separators=(",", ":"),
    ).encode("utf-8")


def render_error(request: IRequest, error: ApiError) -> bytes:
    """Set status and headers of *request* for *error*; return the body.

    Headers set earlier for a successful answer (``Content-Range``,
    ``Content-Disposition``, ``ETag``…) are removed, so an error never
    describes a representation it does not carry.
    """
    for name in (
        b"content-range",
        b"content-disposition",
        b"etag",
        b"last-modified",
        b"x-content-duration",
        b"accept-ranges",
    ):
        request.responseHeaders.removeHeader(name)
    request.setResponseCode(error.status)
    if error.status == 401:
        # RFC 6750 §3: how to authenticate; "invalid_token" when one was presented.
        challenge = _CHALLENGE_INVALID if error.code in _TOKEN_CODES else _CHALLENGE
        request.setHeader(b"www-authenticate", challenge)
    for header, value in error.headers.items():
        request.setHeader(header.encode("ascii"), value.encode("ascii"))
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.error_code = error.code  # type: ignore[attr-defined]
    body = error_body(error.code, error.message, getattr(request, "request_id", "-"))
    request.setHeader(b"content-length", b"%d" % len(body))
    return body
