# -*- test-case-name: tests.test_hostile_paths -*-
"""How the JSON API's router treats paths: match or refuse, never rewrite.

Werkzeug's router (under Klein) would answer a doubled slash, an encoded
slash (``%2f``, which ``twisted.web`` decodes into a segment) or a missing
trailing slash with a 308 redirect and an HTML page, and Klein answers a
path whose bytes are not UTF-8 with a ``text/html`` 400.  The contract wants
neither: every answer is the JSON error model, and a refused path is 404
``NOT_FOUND`` (a security event when it looks like an attack).  So:

- :func:`configure_router` turns off slash merging and adds the ``tail``
  converter, which takes the whole rest of the path (a
  leading slash included) so that the route's handler, not the router,
  judges the track path with :func:`~streamsrv.media.paths.safe_media_path`;
- :func:`routable_segments` gives Klein segments it can decode, while the
  handlers keep reading the raw ``request.path``;
- :func:`error_for_http_exception` maps whatever werkzeug still raises to
  the contract's codes, and :func:`hostile_reason` says why an unrouted
  path is worth a security event.

It never joins a path to the file system and never logs.
"""

from __future__ import annotations

from typing import Final

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, PathConverter, RequestRedirect

from streamsrv.errors import ApiError
from streamsrv.media.paths import PathRefused, decode_request_path, normalise_relative_path

__all__ = [
    "TailConverter",
    "configure_router",
    "error_for_http_exception",
    "hostile_reason",
    "routable_segments",
]

#: werkzeug statuses with a contract code of their own; other 4xx are BAD_REQUEST.
_CODE_FOR_STATUS: Final = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA",
    416: "RANGE_NOT_SATISFIABLE",
    429: "RATE_LIMITED",
    431: "HEADERS_TOO_LARGE",
    503: "UNAVAILABLE",
}


class TailConverter(PathConverter):
    """The rest of the path, whatever it holds: ``//etc/passwd`` included.

    werkzeug's ``path`` converter refuses a leading slash, so a doubled or
    encoded slash after a route prefix would fall to a 404 without anyone
    looking at it, or (with slash merging) to a redirect.  With this
    converter the route's handler sees it and refuses it as the path rules
    say: 404 and a security event.
    """

    regex = ".+?"
    #: Spelt out: werkzeug would derive it from the regex (no ``/`` in it: isolating).
    part_isolating = False


def configure_router(url_map: Map) -> None:
    """Make *url_map* match paths as they are: no merged slashes, and the ``tail`` converter.

    Call it before any route is added: a rule takes the map's slash settings
    when it is bound.  Strict slashes stay: no route ends with a slash, so
    ``/api/v1/tracks/`` is simply not a route (404), and a redirect werkzeug
    might still want becomes a 404 in :func:`error_for_http_exception`.
    """
    url_map.merge_slashes = False
    url_map.converters["tail"] = TailConverter


def routable_segments(segments: list[bytes]) -> list[bytes]:
    """*segments* (decoded path segments) as the router may see them.

    Klein joins the segments with ``/`` and refuses to route a path it
    cannot decode as UTF-8 (answering in HTML).  Here an invalid byte
    becomes U+FFFD and a slash that was encoded (``%2f``) inside a segment
    becomes ``%2F`` again, so ``/api/v1%2ftracks`` is no route, and a track
    route still matches.  Only routing sees these: the handlers read the raw
    ``request.path`` and refuse the real bytes themselves (404, a security
    event).
    """
    routable = []
    for segment in segments:
        try:
            segment.decode("utf-8")
        except UnicodeDecodeError:
            segment = segment.decode("utf-8", errors="replace").encode("utf-8")
        routable.append(segment.replace(b"/", b"%2F"))
    return routable


def hostile_reason(raw_path: bytes) -> str | None:
    """Why the raw request path *raw_path* (still percent-encoded) looks like an attack, or ``None``.

    The same rules as a track path (``..``, NUL and control characters,
    backslashes, invalid UTF-8, overlong paths), plus doubled and encoded
    slashes, which no link of this server ever contains.
    """
    if b"//" in raw_path:
        return "doubled slash"
    if b"%2f" in raw_path.lower():
        return "encoded slash"
    try:
        normalise_relative_path(decode_request_path(raw_path.lstrip(b"/")))
    except PathRefused as e:
        return None if e.reason == "empty path" else e.reason
    return None


def error_for_http_exception(error: HTTPException) -> ApiError:
    """The contract's error for an exception werkzeug's router raised.

    A redirect (werkzeug would send one to a path it normalised) is a
    404: the contract never redirects.
    """
    if isinstance(error, RequestRedirect):
        return ApiError("NOT_FOUND")
    status = error.code or 500
    code = _CODE_FOR_STATUS.get(status)
    if code is None:
        code = "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL"
    return ApiError(code)
