"""Transcodes: renditions, their byte layouts, and the encoder jobs that fill them.

:mod:`~streamsrv.transcode.layout` computes a progressive rendition's exact
bytes-to-audio layout before encoding; :mod:`~streamsrv.transcode.encode`
holds the worker-pool jobs; :mod:`~streamsrv.transcode.ogg` frames Opus in Ogg.
Nothing in this package touches the reactor or an HTTP request.
"""

from typing import TYPE_CHECKING, Any

from streamsrv.transcode.layout import Layout, NotProgressive, Rendition, layout_for

if TYPE_CHECKING:
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

#: The names of :mod:`~streamsrv.transcode.encode`, which imports PyAV and numpy: it is
#: imported when one of them is first asked for (the worker jobs), not with this package.
_FROM_ENCODE = frozenset(
    {
        "EncodeError",
        "SourceInfo",
        "encode_chunk",
        "encode_full",
        "encode_full_bytes",
        "encode_range",
        "iter_chunks",
        "probe_source",
    }
)


def __getattr__(name: str) -> Any:
    if name in _FROM_ENCODE:
        from streamsrv.transcode import encode

        return getattr(encode, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
