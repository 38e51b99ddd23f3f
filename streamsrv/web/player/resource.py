# -*- test-case-name: tests.test_player -*-
"""``/demo/…``: the player's static files from memory, and the ``/`` redirect for browsers.

The files are read once, when the site is built (before the reactor runs),
into an allow-list keyed by their path under ``static/``: a request path is
looked up in it and never joined to the file system, so nothing but those
files can be reached.  Every answer carries the player's CSP, an ``ETag``
and ``Cache-Control: no-cache`` (revalidated, 304 on a match); anything
else is the contract's JSON 404.  This module must never read a file while
serving a request.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from twisted.web.resource import EncodingResourceWrapper, IResource, Resource
from twisted.web.server import GzipEncoderFactory

from streamsrv.errors import ApiError
from streamsrv.middleware.headers import mark_player
from streamsrv.web.errors import render_error

#: Where the player's files are (package data).
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

#: Where ``/demo`` (no slash) and a browser's ``/`` are sent.
PLAYER_PATH: Final = b"/demo/"

#: Content types by file suffix; a file of another suffix is not served.
CONTENT_TYPES: Final = MappingProxyType(
    {
        ".html": b"text/html; charset=utf-8",
        ".js": b"text/javascript; charset=utf-8",
        ".mjs": b"text/javascript; charset=utf-8",
        ".css": b"text/css; charset=utf-8",
        ".svg": b"image/svg+xml",
        ".png": b"image/png",
        ".txt": b"text/plain; charset=utf-8",
        ".md": b"text/plain; charset=utf-8",
    }
)


@dataclass(frozen=True)
class StaticFile:
    """One file of the player, as served."""

    body: bytes
    content_type: bytes
    etag: bytes


@functools.cache
def load_static(directory: Path = STATIC_DIR) -> MappingProxyType[str, StaticFile]:
    """Every servable file under *directory*, keyed by its ``/``-separated relative path.

    Dotfiles and files of unknown suffixes (``LICENSE`` files are renamed
    ``.txt`` when vendored) are left out.  Read once per process.
    """
    files: dict[str, StaticFile] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        content_type = CONTENT_TYPES.get(path.suffix)
        if not path.is_file() or content_type is None or any(p.startswith(".") for p in relative.parts):
            continue
        body = path.read_bytes()
        etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:32].encode("ascii")
        files[relative.as_posix()] = StaticFile(body, content_type, etag)
    return MappingProxyType(files)


def _redirect(request: Any) -> bytes:
    """A 302 to the player (an empty body: the ``Location`` is the answer)."""
    request.setResponseCode(302)
    request.setHeader(b"location", PLAYER_PATH)
    request.setHeader(b"cache-control", b"no-store")
    return b""


class PlayerFiles(Resource):
    """``/demo/{file}``: one of the player's files, or JSON 404."""

    isLeaf = True

    def __init__(self, files: MappingProxyType[str, StaticFile]) -> None:
        super().__init__()
        self._files = files

    def render_GET(self, request: Any) -> bytes:
        """The file named by the rest of the path (``index.html`` for ``/demo/``)."""
        request.route = "demo"
        mark_player(request)
        if not request.postpath:
            return _redirect(request)
        try:
            name = "/".join(segment.decode("utf-8") for segment in request.postpath) or "index.html"
        except UnicodeDecodeError:
            name = "?"
        found = self._files.get(name)
        if found is None:
            return render_error(request, ApiError("NOT_FOUND"))
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", found.etag)
        if request.getHeader(b"if-none-match") == found.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", found.content_type)
        return found.body

    render_HEAD = render_GET


class BrowserHome(Resource):
    """``/`` for a browser (``Accept: text/html``): a redirect to the player."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        """302 to ``/demo/``."""
        request.route = "demo"
        request.setHeader(b"vary", b"Accept")
        return _redirect(request)

    render_HEAD = render_GET


def wants_html(request: Any) -> bool:
    """Whether the client asks for a page (a browser navigating), not JSON."""
    accept = request.getHeader(b"accept") or b""
    return b"text/html" in accept.lower()


def make_player(directory: Path = STATIC_DIR) -> IResource:
    """The ``/demo`` resource: the files of *directory*, gzip-encoded for clients that accept it."""
    return EncodingResourceWrapper(PlayerFiles(load_static(directory)), [GzipEncoderFactory()])
