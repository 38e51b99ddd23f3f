# -*- test-case-name: tests.test_web -*-
"""The error codes of the HTTP contract and :class:`ApiError`: the bottom floor.

Every part may raise :class:`ApiError` with a contract code; an adapter
(``streamsrv.web.errors``) renders it as ``{"error": {"code", "message",
"request_id"}}`` with the status that fits the code.  This module imports
nothing of streamsrv and knows no request.  Messages are written for
clients: they never carry a stack trace, a file-system path or a secret.
"""

from __future__ import annotations

from typing import Final

#: Each contract error code and the HTTP status it is answered with.
STATUS_FOR_CODE: Final[dict[str, int]] = {
    "BAD_REQUEST": 400,
    "UNAUTHENTICATED": 401,
    "TOKEN_EXPIRED": 401,
    "TOKEN_INVALID": 401,
    "TOKEN_REVOKED": 401,
    "SIGNATURE_INVALID": 403,
    "URL_EXPIRED": 403,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PRECONDITION_FAILED": 412,
    "PAYLOAD_TOO_LARGE": 413,
    "URI_TOO_LONG": 414,
    "UNSUPPORTED_MEDIA": 415,
    "RANGE_NOT_SATISFIABLE": 416,
    "RATE_LIMITED": 429,
    "HEADERS_TOO_LARGE": 431,
    "INTERNAL": 500,
    "NOT_CONFIGURED": 501,
    "UNAVAILABLE": 503,
}

#: A default client-facing message for each code.
DEFAULT_MESSAGES: Final[dict[str, str]] = {
    "BAD_REQUEST": "The request is malformed.",
    "UNAUTHENTICATED": "Credentials are required.",
    "TOKEN_EXPIRED": "The token has expired.",
    "TOKEN_INVALID": "The token is not valid.",
    "TOKEN_REVOKED": "The token has been revoked.",
    "SIGNATURE_INVALID": "The URL signature is not valid.",
    "URL_EXPIRED": "The signed URL has expired.",
    "FORBIDDEN": "You are not allowed to do this.",
    "NOT_FOUND": "Nothing is here.",
    "METHOD_NOT_ALLOWED": "This method is not allowed here.",
    "PRECONDITION_FAILED": "A precondition of the request failed.",
    "PAYLOAD_TOO_LARGE": "The request body is too large.",
    "URI_TOO_LONG": "The request URI is too long.",
    "UNSUPPORTED_MEDIA": "This media type is not supported.",
    "RANGE_NOT_SATISFIABLE": "The requested range is not satisfiable.",
    "RATE_LIMITED": "Too many requests; slow down.",
    "HEADERS_TOO_LARGE": "The request headers are too large.",
    "INTERNAL": "Something went wrong on our side.",
    "NOT_CONFIGURED": "This feature is not configured on this server.",
    "UNAVAILABLE": "The service is temporarily unavailable.",
}


class ApiError(Exception):
    """An error to answer with the contract's JSON body.

    :param code: a key of :data:`STATUS_FOR_CODE`.
    :param message: the client-facing message (defaults per code).
    :param headers: extra response headers (``Allow``, ``Retry-After``…).
    :param status: the status when the contract gives this code another one
        than its usual (``NOT_CONFIGURED`` is 501, but 400 when the client asked
        for a notification channel this server has not configured).
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        if code not in STATUS_FOR_CODE:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.status = status if status is not None else STATUS_FOR_CODE[code]
        self.message = message or DEFAULT_MESSAGES[code]
        self.headers = headers or {}
        super().__init__(code, self.message)
