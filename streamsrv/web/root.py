# -*- test-case-name: tests.test_web -*-
"""The resource tree: ``/stream`` to the streaming core, the rest to Klein.

Media routes are plain ``twisted.web`` leaves (no routing cost on the hot
path, never compressed); JSON routes go to the Klein app, wrapped in gzip
for clients that accept it; Klein answers unknown paths with the contract's
JSON 404.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import EncodingResourceWrapper, IResource, Resource
from twisted.web.server import GzipEncoderFactory


class RootResource(Resource):
    """Dispatch the first path segment to media leaves or the Klein app."""

    def __init__(self, api: IResource, media: dict[bytes, IResource]) -> None:
        super().__init__()
        self._media = media
        self._api = EncodingResourceWrapper(api, [GzipEncoderFactory()])

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:
        media = self._media.get(name)
        if media is not None:
            return media
        # Hand the whole path to Klein: put the segment back so its routes
        # are written from the root ("/health", "/api/v1/…").
        request.postpath.insert(0, request.prepath.pop())
        return self._api
