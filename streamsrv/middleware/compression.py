# -*- test-case-name: tests.test_compression -*-
"""gzip for the JSON API's answers: only what compresses, with the headers caches need.

Twisted's ``GzipEncoderFactory`` compresses every answer of a client that
accepts gzip — JPEG artwork too, which only grows — and tells caches
nothing: no ``Vary: Accept-Encoding``, and the identity representation's
``ETag`` on the gzip one.  :class:`CompressionPolicy` decides when the
answer's headers are known (its first write):

- only compressible types (:func:`compressible`: JSON, text, m3u8, SVG,
  XML) are compressed — those without an ETag (errors, health) only from
  :data:`MIN_COMPRESS_BYTES` up — and only for a client whose
  ``Accept-Encoding`` takes gzip (:func:`accepts_gzip`, ``q=0`` honoured);
- every answer of a compressible type, compressed or not, 304 included,
  carries ``Vary: Accept-Encoding``;
- a compressed answer's entity-tag is the identity one with ``-gzip`` inside
  the quotes (:func:`gzip_etag`), so the two representations never share a
  validator; routes compare ``If-None-Match`` after
  :func:`identity_if_none_match` folds both forms back to theirs.

A 304, 204 or HEAD answer is never given a body (Twisted's encoder writes
the gzip trailer after a HEAD answer's headers).  Audio never passes here:
``/stream`` and ``/hls`` are not wrapped.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Final

from twisted.web.iweb import _IRequestEncoder, _IRequestEncoderFactory
from zope.interface import implementer

__all__ = [
    "CompressionPolicy",
    "accepts_gzip",
    "compressible",
    "gzip_etag",
    "identity_if_none_match",
]

#: zlib level: 6 is zlib's default, nearly level 9's ratio on JSON at a fraction of its CPU.
COMPRESS_LEVEL: Final = 6

#: Bodies smaller than this are sent as they are: gzip's 18-byte frame would make them larger.
MIN_COMPRESS_BYTES: Final = 256

#: Media types worth compressing (besides ``text/*`` and ``+json``/``+xml`` suffixes).
COMPRESSIBLE_TYPES: Final = frozenset(
    {
        b"application/json",
        b"application/vnd.apple.mpegurl",
        b"application/x-mpegurl",
        b"application/xml",
        b"application/javascript",
        b"image/svg+xml",
    }
)

#: The suffix that marks the gzip representation's entity-tag.
GZIP_SUFFIX: Final = "-gzip"

_QVALUE = re.compile(r"\A(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z", re.ASCII)


def compressible(content_type: bytes | None) -> bool:
    """Whether a body of *content_type* (a ``Content-Type`` value) is worth gzip."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media in COMPRESSIBLE_TYPES or media.startswith(b"text/") or media.endswith((b"+json", b"+xml"))


def accepts_gzip(header: bytes | None) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip (RFC 9110 §12.5.3).

    ``gzip`` (or ``x-gzip``) with a non-zero weight, or ``*`` with a
    non-zero weight when gzip is not named.  A malformed weight counts as
    a refusal.
    """
    if not header:
        return False
    named: float | None = None
    star: float | None = None
    for item in header.decode("latin-1").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        coding = coding.lower()
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                weight = _weight(value.strip())
        if coding in ("gzip", "x-gzip"):
            named = max(named or 0.0, weight)
        elif coding == "*":
            star = weight
    if named is not None:
        return named > 0
    return star is not None and star > 0


def _weight(text: str) -> float:
    """A ``q`` value (RFC 9110 §12.4.2: 0 to 1, three decimals at most); malformed is 0."""
    if not _QVALUE.match(text):
        return 0.0
    return float(text)


def gzip_etag(etag: bytes) -> bytes:
    """The entity-tag of the gzip representation: ``"x"`` → ``"x-gzip"`` (weak ones stay weak)."""
    if not etag.endswith(b'"') or len(etag) < 2:
        return etag
    return etag[:-1] + GZIP_SUFFIX.encode("ascii") + b'"'


def identity_if_none_match(header: str | None) -> str | None:
    """An ``If-None-Match`` value with each gzip entity-tag folded back to its identity form.

    Both representations come from the same content, so a client holding
    either has what it would get: the route compares the result with the
    identity tag, and the 304 it answers carries the tag of the
    representation this client would be sent.
    """
    if header is None:
        return None
    return header.replace(GZIP_SUFFIX + '"', '"')


@implementer(_IRequestEncoderFactory)
class CompressionPolicy:
    """The encoder factory of the JSON API (see the module's docstring)."""

    def encoderForRequest(self, request: Any) -> _LazyGzipEncoder:
        """Every request gets an encoder: it adds ``Vary`` even when it does not compress."""
        accepted = accepts_gzip(b",".join(request.requestHeaders.getRawHeaders(b"accept-encoding", [])))
        return _LazyGzipEncoder(request, accepted)


def _add_vary(request: Any, token: bytes) -> None:
    headers = request.responseHeaders
    present = b",".join(headers.getRawHeaders(b"vary", []))
    names = [name.strip().lower() for name in present.split(b",") if name.strip()]
    if token.lower() in names or b"*" in names:
        return
    headers.setRawHeaders(
        b"vary", [b", ".join([*(n.strip() for n in present.split(b",") if n.strip()), token])]
    )


def _set_gzip_etag(headers: Any) -> None:
    etag = (headers.getRawHeaders(b"etag") or [None])[0]
    if etag is not None:
        headers.setRawHeaders(b"etag", [gzip_etag(etag)])


@implementer(_IRequestEncoder)
class _LazyGzipEncoder:
    """Decides at the first write, when status and headers are known; compresses or passes through."""

    def __init__(self, request: Any, accepted: bool) -> None:
        self._request = request
        self._accepted = accepted
        self._decided = False
        self._compressor: Any = None

    def _decide(self, first: bytes) -> None:
        """Choose, from the status, the headers and the first write (*first*)."""
        self._decided = True
        request = self._request
        headers = request.responseHeaders
        content_type = (headers.getRawHeaders(b"content-type") or [None])[0]
        if content_type is None:
            # A 304 carries no Content-Type; the route says what the representation is.
            content_type = getattr(request, "variant_type", None)
        if not compressible(content_type) or headers.hasHeader(b"content-range"):
            return
        _add_vary(request, b"Accept-Encoding")
        if not self._accepted or headers.hasHeader(b"content-encoding"):
            return
        if request.code in (204, 304):
            _set_gzip_etag(headers)
            return
        declared = headers.getRawHeaders(b"content-length")
        size = int(declared[0]) if declared and declared[0].isdigit() else len(first)
        if size < MIN_COMPRESS_BYTES and not headers.hasHeader(b"etag"):
            # Only without a validator: a 304 (which has no body to measure)
            # must name the same representation the 200 would send.
            return
        _set_gzip_etag(headers)
        headers.setRawHeaders(b"content-encoding", [b"gzip"])
        headers.removeHeader(b"content-length")
        if request.method != b"HEAD":
            self._compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def encode(self, data: bytes) -> bytes:
        """Compress *data* (the first call decides)."""
        if not self._decided:
            self._decide(data)
        if self._compressor is None:
            return data
        return bytes(self._compressor.compress(data))

    def finish(self) -> bytes:
        """The rest of the gzip stream, if compressing."""
        if not self._decided:
            self._decide(b"")
        compressor, self._compressor = self._compressor, None
        return bytes(compressor.flush()) if compressor is not None else b""
