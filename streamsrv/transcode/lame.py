# -*- test-case-name: tests.test_transcode_lame -*-
"""CBR MP3 frames from the LAME inside the ``lameenc`` wheel, through its exported C API (ctypes).

PyAV's wheel carries a LAME about three times slower than a well-built one;
the ``lameenc`` wheel links a fast LAME statically, and its shared object
exports the whole LAME C API, though its Python API cannot turn the bit
reservoir off.  :func:`encode_frames` drives that LAME directly, the way
FFmpeg's ``libmp3lame`` wrapper does for progressive transcodes: CBR, the
bit reservoir off, no Xing/Info frame, LAME's default quality (3), joint
stereo, flushed; and returns the MPEG-1 Layer III frames one by one.

When ``lameenc`` is not installed or its object lacks a symbol,
:func:`available` is false and :func:`backend` names PyAV's libmp3lame,
which :mod:`streamsrv.transcode.encode` then uses.  The backend's name is
part of every MP3 cache key (:meth:`streamsrv.transcode.layout.Rendition.cache_params`),
so chunks of two LAME builds never mix in one cache.

This module never guesses a frame boundary: a frame header that is not the
asked bit rate, rate and mode, a frame that borrows from the bit reservoir,
or an encoder delay other than the caller's is a :class:`LameError`.  It
never writes to stderr (LAME's messages are dropped) and never logs.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["PYAV_BACKEND", "QUALITY", "LameError", "available", "backend", "encode_frames", "split_frames"]

#: :func:`backend` when the fallback, PyAV's libmp3lame, is in use.
PYAV_BACKEND: Final = "pyav-libmp3lame"

#: LAME's algorithm quality: its own default, which the ``ffmpeg`` command line keeps.
QUALITY: Final = 3

#: LAME's ``MPEG_mode`` and ``vbr_mode`` values used here (``lame.h``).
_JOINT_STEREO: Final = 1
_MONO: Final = 3
_VBR_OFF: Final = 0

#: ``lame.h``: an output buffer of ``1.25 * samples + 7200`` bytes holds the
#: worst case of one encode call; a flush needs at most 7200 more.
_ENCODE_SLACK: Final = 7200
_FLUSH_BYTES: Final = 7200

#: MPEG-1 Layer III header fields (ISO 11172-3): bit-rate and sample-rate indices.
_BITRATE_INDEX: Final = {
    kbps: i + 1 for i, kbps in enumerate((32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320))
}
_RATE_INDEX: Final = {44100: 0, 48000: 1, 32000: 2}
#: The top 16 bits of every frame: sync, MPEG-1, Layer III, no CRC.
_SYNC_MPEG1_LAYER3: Final = 0xFFFB
_HEADER_BYTES: Final = 4

#: ``void (*)(const char *format, va_list ap)``: LAME's report callbacks.
_REPORT = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)


def _drop_message(_format: bytes | None, _args: int | None) -> None:
    """LAME's messages, warnings and errors go nowhere (errors come back as return codes)."""


_SILENT: Final = _REPORT(_drop_message)

_P: Final = ctypes.c_void_p
_I: Final = ctypes.c_int
#: ``int lame_set_<name>(lame_global_flags *, int)``: the settings made (enums are ints).
_SETTERS: Final = (
    "num_channels",
    "in_samplerate",
    "out_samplerate",
    "brate",
    "mode",
    "VBR",
    "quality",
    "disable_reservoir",
    "bWriteVbrTag",
    "write_id3tag_automatic",
)
#: Every function used, name to (return type, argument types), as ``lame.h`` declares them.
_SIGNATURES: Final[dict[str, tuple[Any, list[Any]]]] = {
    "get_lame_version": (ctypes.c_char_p, []),
    "lame_init": (_P, []),
    **{f"lame_set_{name}": (_I, [_P, _I]) for name in _SETTERS},
    **{f"lame_set_{name}": (_I, [_P, _REPORT]) for name in ("errorf", "debugf", "msgf")},
    "lame_init_params": (_I, [_P]),
    "lame_get_encoder_delay": (_I, [_P]),
    # (gfp, const float pcm_l[], const float pcm_r[], int nsamples, unsigned char *mp3buf, int mp3buf_size)
    "lame_encode_buffer_ieee_float": (_I, [_P, _P, _P, _I, _P, _I]),
    # (gfp, unsigned char *mp3buf, int size)
    "lame_encode_flush": (_I, [_P, _P, _I]),
    "lame_close": (_I, [_P]),
}


class LameError(Exception):
    """LAME failed, or wrote something other than what was asked; never served."""


@dataclass(frozen=True)
class _Binding:
    """The loaded library, its functions declared, and the backend's name."""

    lib: ctypes.CDLL
    name: str


@functools.cache
def _load() -> _Binding | None:
    """``lameenc``'s LAME, or ``None`` when the wheel is missing or exports too little.

    The extension's shared object is opened by path (its Python module is
    never imported), once per process.
    """
    spec = importlib.util.find_spec("lameenc")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
    except (OSError, AttributeError):
        return None
    version = lib.get_lame_version()
    return _Binding(lib, f"lameenc-{version.decode('ascii', 'replace') if version else 'unknown'}")


def available() -> bool:
    """Whether :func:`encode_frames` can run (``lameenc`` is there and exports LAME's API)."""
    return _load() is not None


def backend() -> str:
    """Which LAME encodes MP3 in this process: ``lameenc-<LAME version>`` or :data:`PYAV_BACKEND`."""
    binding = _load()
    return PYAV_BACKEND if binding is None else binding.name


def encode_frames(samples: npt.NDArray[np.float32], kbps: int, rate: int, *, delay: int) -> list[bytes]:
    """Every frame a fresh LAME makes of ``samples``, flushed: CBR, no bit reservoir, no Info frame.

    :param samples: planar float audio in [-1, 1], ``(channels, count)``, 1 or 2 channels.
    :param kbps: an MPEG-1 Layer III bit rate.
    :param rate: 32000, 44100 or 48000 (input and output: nothing is resampled).
    :param delay: the encoder delay the caller counts on (576 for LAME).
    :raises LameError: when ``lameenc`` is not available, LAME fails, its
        delay is not ``delay``, or a frame is not what was asked.
    :raises ValueError: for a bit rate, rate or channel count MP3 does not have.
    """
    binding = _load()
    if binding is None:
        raise LameError("lameenc's LAME is not available")
    channels, count = samples.shape
    if channels not in (1, 2) or kbps not in _BITRATE_INDEX or rate not in _RATE_INDEX:
        raise ValueError("not an MPEG-1 Layer III rendition")
    lib = binding.lib
    import numpy as np

    planes = [np.ascontiguousarray(samples[channel], dtype=np.float32) for channel in range(channels)]
    room = (5 * count + 3) // 4 + _ENCODE_SLACK
    buffer = ctypes.create_string_buffer(room + _FLUSH_BYTES)
    address = ctypes.addressof(buffer)
    gfp = lib.lame_init()
    if not gfp:
        raise LameError("lame_init failed")
    try:
        for report in (lib.lame_set_errorf, lib.lame_set_debugf, lib.lame_set_msgf):
            report(gfp, _SILENT)
        settings = (
            (lib.lame_set_num_channels, channels),
            (lib.lame_set_in_samplerate, rate),
            (lib.lame_set_out_samplerate, rate),
            (lib.lame_set_VBR, _VBR_OFF),
            (lib.lame_set_brate, kbps),
            (lib.lame_set_mode, _MONO if channels == 1 else _JOINT_STEREO),
            (lib.lame_set_quality, QUALITY),
            (lib.lame_set_disable_reservoir, 1),
            (lib.lame_set_bWriteVbrTag, 0),
            (lib.lame_set_write_id3tag_automatic, 0),
        )
        for setter, value in settings:
            if setter(gfp, value) < 0:
                raise LameError(f"{setter.__name__}({value}) failed")
        if lib.lame_init_params(gfp) < 0:
            raise LameError("lame_init_params failed")
        if lib.lame_get_encoder_delay(gfp) != delay:
            raise LameError(f"LAME's encoder delay is {lib.lame_get_encoder_delay(gfp)}, not {delay}")
        written = 0
        if count:
            written = lib.lame_encode_buffer_ieee_float(
                gfp, planes[0].ctypes.data, planes[-1].ctypes.data, count, address, room
            )
            if written < 0:
                raise LameError(f"lame_encode_buffer_ieee_float failed ({written})")
        flushed = lib.lame_encode_flush(gfp, address + written, len(buffer) - written)
        if flushed < 0:
            raise LameError(f"lame_encode_flush failed ({flushed})")
    finally:
        lib.lame_close(gfp)
    return split_frames(ctypes.string_at(address, written + flushed), kbps, rate, channels)


def split_frames(data: bytes, kbps: int, rate: int, channels: int) -> list[bytes]:
    """Cut LAME's output into frames by their headers, each checked against the rendition.

    Every frame must be MPEG-1 Layer III without CRC, at ``kbps`` and
    ``rate``, mono or joint stereo as ``channels`` says, and start its own
    main data (``main_data_begin`` 0: no bit reservoir); its size follows
    from its padding bit, and the last one must end exactly where ``data``
    does.

    :raises LameError: for anything else (a tag, a stray byte, a cut frame).
    """
    if kbps not in _BITRATE_INDEX or rate not in _RATE_INDEX or channels not in (1, 2):
        raise ValueError("not an MPEG-1 Layer III rendition")
    mode = _MONO if channels == 1 else _JOINT_STEREO
    base = 144000 * kbps // rate
    frames = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        if offset + _HEADER_BYTES + 2 > len(data):
            raise LameError(f"a cut frame header at byte {offset}")
        header = int.from_bytes(view[offset : offset + _HEADER_BYTES], "big")
        if (
            header >> 16 != _SYNC_MPEG1_LAYER3
            or (header >> 12) & 0xF != _BITRATE_INDEX[kbps]
            or (header >> 10) & 0x3 != _RATE_INDEX[rate]
            or (header >> 6) & 0x3 != mode
        ):
            raise LameError(f"frame header {header:08x} at byte {offset} is not what was asked")
        if data[offset + 4] or data[offset + 5] >> 7:
            raise LameError(f"the frame at byte {offset} uses the bit reservoir")
        size = base + ((header >> 9) & 1)
        if offset + size > len(data):
            raise LameError(f"the frame at byte {offset} is cut")
        frames.append(bytes(view[offset : offset + size]))
        offset += size
    return frames
