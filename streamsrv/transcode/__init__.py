"""Transcodes: renditions, their byte layouts, and the encoder jobs that fill them.

:mod:`~streamsrv.transcode.layout` computes a progressive rendition's exact
bytes-to-audio layout before encoding; :mod:`~streamsrv.transcode.encode`
holds the worker-pool jobs; :mod:`~streamsrv.transcode.ogg` frames Opus in Ogg.
Nothing in this package touches the reactor or an HTTP request.
"""

from streamsrv.transcode.encode import (
    EncodeError,
    SourceInfo,
    encode_chunk,
    encode_full,
    encode_full_bytes,
    encode_range,
    iter_chunks,
    probe_source,
)
from streamsrv.transcode.layout import Layout, NotProgressive, Rendition, layout_for

__all__ = [
    "EncodeError",
    "Layout",
    "NotProgressive",
    "Rendition",
    "SourceInfo",
    "encode_chunk",
    "encode_full",
    "encode_full_bytes",
    "encode_range",
    "iter_chunks",
    "layout_for",
    "probe_source",
]
