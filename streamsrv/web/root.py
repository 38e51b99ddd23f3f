# -*- test-case-name: tests.test_web -*-
"""The resource tree: ``/stream`` to the streaming core, the rest to Klein.

Media routes are plain ``twisted.web`` leaves (no routing cost on the hot
path, never compressed); JSON routes go to the Klein app, wrapped in the
:class:`~streamsrv.middleware.compression.CompressionPolicy` (gzip for what
compresses, ``Vary``, distinct entity-tags); Klein answers unknown paths
with the contract's JSON 404.  A path that starts with a doubled slash is
refused here (Klein would see it without the empty segment).  With the demo
player on, ``/demo`` is one more leaf and a browser asking for ``/``
(``Accept: text/html``) is sent to it; API clients still get the JSON index.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import EncodingResourceWrapper, IResource, Resource

from streamsrv.errors import ApiError
from streamsrv.middleware.audit import security_event
from streamsrv.middleware.compression import CompressionPolicy
from streamsrv.web.errors import render_error
from streamsrv.web.player.resource import wants_html
from streamsrv.web.routing import routable_segments


class _RefusedPath(Resource):
    """A path no route may see: 404 ``NOT_FOUND`` and a security event."""

    isLeaf = True

    def __init__(self, reason: str) -> None:
        super().__init__()
        self._reason = reason

    def render(self, request: Any) -> bytes:
        security_event(request, "path_refused", reason=self._reason)
        return render_error(request, ApiError("NOT_FOUND"))


class RootResource(Resource):
    """Dispatch the first path segment to media leaves or the Klein app."""

    def __init__(self, api: IResource, media: dict[bytes, IResource], home: IResource | None = None) -> None:
        """
        :param home: what a browser asking for ``/`` gets (the player's
            redirect), or ``None`` for the JSON index whatever it accepts.
        """
        super().__init__()
        self._media = media
        self._home = home
        self._api = EncodingResourceWrapper(api, [CompressionPolicy()])
        self._doubled_slash = _RefusedPath("doubled slash")

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:
        media = self._media.get(name)
        if media is not None:
            return media
        if not name and request.path.startswith(b"//"):
            return self._doubled_slash
        if name == b"" and self._home is not None and not request.postpath and wants_html(request):
            return self._home
        # Hand the whole path to Klein: put the segment back so its routes
        # are written from the root ("/health", "/api/v1/…").
        request.postpath.insert(0, request.prepath.pop())
        # Klein cannot route a segment that is not UTF-8 (it answers in HTML);
        # the handlers judge the raw request.path, these are only for routing.
        request.postpath = routable_segments(request.postpath)
        return self._api
