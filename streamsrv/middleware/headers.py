# -*- test-case-name: tests.test_web -*-
"""Security headers set on every response.

The defaults suit a JSON API and media server that browsers reach from
another origin: no MIME sniffing, no referrer leakage, resources readable
same-site unless a media route widens ``Cross-Origin-Resource-Policy``.
HSTS is only sent in production over HTTPS, where it cannot lock a
developer's ``localhost`` out of plain HTTP.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

#: Content-Security-Policy for the few HTML responses streamsrv makes.
HTML_CSP = b"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-ancestors 'none'"

#: Content-Security-Policy of the demo player (``/demo/``): its own scripts,
#: styles and media only, no inline code, no eval, no other origin; images
#: and media may be ``blob:`` (the spectrogram fetched with a token, hls.js's
#: MediaSource); ``connect-src 'self'`` covers the API and ``/ws``.
PLAYER_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    b"media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'"
)

#: One year, as HSTS preload lists ask.
HSTS_VALUE = b"max-age=31536000; includeSubDomains"


def apply_security_headers(request: IRequest, *, hsts: bool) -> None:
    """Set the baseline security headers on *request*'s response.

    :param hsts: whether to send ``Strict-Transport-Security`` (production
        over HTTPS only).
    """
    set_header = request.setHeader
    set_header(b"x-content-type-options", b"nosniff")
    set_header(b"referrer-policy", b"no-referrer")
    set_header(b"cross-origin-resource-policy", b"same-site")
    set_header(b"x-frame-options", b"DENY")
    if hsts:
        set_header(b"strict-transport-security", HSTS_VALUE)


def mark_media(request: IRequest) -> None:
    """Let other origins embed this response (``<audio>``, ``<img>``, peaks.js)."""
    request.setHeader(b"cross-origin-resource-policy", b"cross-origin")


def mark_player(request: IRequest) -> None:
    """The demo player's strict CSP on *request*'s response (HTML, scripts, styles)."""
    request.setHeader(b"content-security-policy", PLAYER_CSP)
