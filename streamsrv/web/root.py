# -*- test-case-name: tests.test_web -*-
"""The resource tree: ``/stream`` to the streaming core, the rest to Klein.

Media routes are plain ``twisted.web`` leaves (no routing cost on the hot
path, never compressed); JSON routes go to the Klein app, wrapped in gzip
for clients that accept it; Klein answers unknown paths with the contract's
JSON 404.  With the demo player on, ``/demo`` is one more leaf and a
browser asking for ``/`` (``Accept: text/html``) is sent to it; API clients
still get the JSON index.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import EncodingResourceWrapper, IResource, Resource
from twisted.web.server import GzipEncoderFactory

from streamsrv.web.player.resource import wants_html


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
        self._api = EncodingResourceWrapper(api, [GzipEncoderFactory()])

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:
        media = self._media.get(name)
        if media is not None:
            return media
        if name == b"" and self._home is not None and not request.postpath and wants_html(request):
            return self._home
        # Hand the whole path to Klein: put the segment back so its routes
        # are written from the root ("/health", "/api/v1/…").
        request.postpath.insert(0, request.prepath.pop())
        return self._api
