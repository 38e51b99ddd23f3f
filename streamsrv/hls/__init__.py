"""HLS for audio: multivariant and VOD media playlists, fMP4 segments encoded on demand.

:mod:`~streamsrv.hls.segments` holds the variants, the segment grid and the
worker jobs that write init and media segments; :mod:`~streamsrv.hls.playlists`
writes the playlists (pure functions); :mod:`~streamsrv.hls.resource` serves
them under ``/hls/``.  See ``docs/modules/hls.md``.
"""

from streamsrv.hls.resource import HlsResource

__all__ = ["HlsResource"]
