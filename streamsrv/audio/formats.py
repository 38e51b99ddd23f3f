# -*- test-case-name: tests.test_formats -*-
"""The audio file types streamsrv serves, by file extension.

This table decides what counts as a track: the catalog lists, and ``/stream``
serves, only files whose name :func:`audio_format_for` recognises; everything
else (cover images, playlists, cue sheets, dotfiles such as macOS ``._Song.mp3``
resource forks) answers 404.  It looks at the name only: it never opens a file
and never trusts a client-supplied type.

Each extension maps to the ``Content-Type`` that browsers accept in
``<audio>`` (``HTMLMediaElement.canPlayType``) and that players and proxies
recognise without sniffing:

``.mp3`` -> ``audio/mpeg``
    RFC 3003.  ``audio/mp3`` is unregistered and only some browsers take it.
``.m4a`` -> ``audio/mp4``
    RFC 4337.  ``audio/x-m4a`` is Apple's legacy alias; every browser that
    plays AAC accepts ``audio/mp4``.  An ``.m4a`` may hold ALAC; the table
    describes the usual AAC (the catalog reports the real codec).
``.aac`` -> ``audio/aac``
    Raw ADTS AAC; the name browsers and IANA's registry use (not ``audio/aacp``
    or ``audio/x-aac``).
``.flac`` -> ``audio/flac``
    IANA-registered since 2017; ``audio/x-flac`` is the legacy alias.
``.ogg``, ``.oga`` -> ``audio/ogg``
    RFC 5334.  Usually Vorbis inside; Ogg FLAC and Ogg Opus share the type.
``.opus`` -> ``audio/ogg``
    RFC 7845 names ``audio/ogg`` for Ogg Opus files.  The precise
    ``audio/ogg; codecs=opus`` is left out: a parameterised ``Content-Type``
    trips naive clients and caches that compare the header verbatim.
``.wav`` -> ``audio/wav``
    What Firefox and Chrome answer ``canPlayType`` for; the registered
    ``audio/vnd.wave`` (RFC 2361) is not recognised by browsers and
    ``audio/x-wav`` is a legacy alias.
``.aif``, ``.aiff`` -> ``audio/aiff``
    Safari's name (the only browser that plays AIFF); ``audio/x-aiff`` is the
    legacy alias.
``.webm`` -> ``audio/webm``
    WebM audio, usually Opus.  The ``audio/`` type keeps it out of a video
    element's way.

Deliberately absent: ``.mp4`` (mostly video), ``.wv``, ``.ape``, ``.wma``,
``.mka`` and other types no browser plays natively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class AudioFormat:
    """How one audio file extension is served.

    :param extension: lowercase extension with its dot, e.g. ``".mp3"``.
    :param mime_type: the ``Content-Type`` to serve it with.
    :param codec: the codec such files usually hold (``"mp3"``, ``"aac"``,
        ``"flac"``, ``"vorbis"``, ``"opus"`` or ``"pcm"``).
    :param lossless: whether that codec is lossless.
    """

    extension: str
    mime_type: str
    codec: str
    lossless: bool


def _table(*formats: AudioFormat) -> Mapping[str, AudioFormat]:
    """Index formats by extension, read-only.

    :param formats: the rows of the table.
    :returns: a read-only mapping from extension to format.
    """
    return MappingProxyType({f.extension: f for f in formats})


#: Every audio type served, keyed by lowercase extension with its dot.
AUDIO_FORMATS: Final[Mapping[str, AudioFormat]] = _table(
    AudioFormat(".mp3", "audio/mpeg", "mp3", lossless=False),
    AudioFormat(".m4a", "audio/mp4", "aac", lossless=False),
    AudioFormat(".aac", "audio/aac", "aac", lossless=False),
    AudioFormat(".flac", "audio/flac", "flac", lossless=True),
    AudioFormat(".ogg", "audio/ogg", "vorbis", lossless=False),
    AudioFormat(".oga", "audio/ogg", "vorbis", lossless=False),
    AudioFormat(".opus", "audio/ogg", "opus", lossless=False),
    AudioFormat(".wav", "audio/wav", "pcm", lossless=True),
    AudioFormat(".aif", "audio/aiff", "pcm", lossless=True),
    AudioFormat(".aiff", "audio/aiff", "pcm", lossless=True),
    AudioFormat(".webm", "audio/webm", "opus", lossless=False),
)


def audio_format_for(path: str | PurePath) -> AudioFormat | None:
    """The audio format a file name stands for, by its extension.

    Only the last path component counts, case-insensitively.  A name starting
    with a dot is never audio: neither ``.mp3`` (a dotfile with no extension)
    nor ``._Song.mp3`` (a macOS resource fork).

    :param path: a file name or path, ``/``-separated when a string.
    :returns: the format, or ``None`` if the name is not an audio file.
    """
    name = PurePath(path).name
    if not name or name.startswith("."):
        return None
    return AUDIO_FORMATS.get(PurePath(name).suffix.lower())
