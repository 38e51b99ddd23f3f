# -*- test-case-name: tests.test_artwork -*-
"""Cover art of a track: embedded in its tags, or an image beside it.

:func:`find_artwork` answers ``/api/v1/artwork/{path}``.  It looks first in
the track's own tags (ID3 ``APIC``, FLAC picture blocks, MP4 ``covr`` atoms,
Vorbis ``METADATA_BLOCK_PICTURE``), preferring a front cover, then for a
``cover``, ``folder`` or ``front`` image (``.jpg``, ``.jpeg``, ``.png``,
``.webp``, any case) in the track's directory.  The type of an image is
sniffed from its first bytes, never taken from the tag or the file name: a
tag that says ``image/jpeg`` over PNG bytes is served as ``image/png``, and
bytes that are no known image are not served at all.  Images larger than
:data:`MAX_ARTWORK_BYTES` are ignored.

This module must never follow a symlink out of the media root (a folder
image, or the track itself, that resolves outside it is ignored), never
raise for a bad file (no artwork is the answer), and never decode an image.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import mutagen
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3
from mutagen.mp4 import MP4Tags

#: Largest image served, in bytes; bigger ones are treated as absent.
MAX_ARTWORK_BYTES: Final[int] = 20 * 1024 * 1024

#: Folder image names (lowercase, without extension), best first.
FOLDER_IMAGE_STEMS: Final[tuple[str, ...]] = ("cover", "folder", "front")

#: Folder image extensions (lowercase, with the dot), best first.
FOLDER_IMAGE_EXTENSIONS: Final[tuple[str, ...]] = (".jpg", ".jpeg", ".png", ".webp")

#: The ID3/FLAC/Vorbis picture type of a front cover.
_FRONT_COVER: Final[int] = 3

#: Bytes read from a folder image to sniff its type.
_SNIFF_BYTES: Final[int] = 16

#: Where artwork came from.
Source = Literal["embedded", "folder"]


@dataclass(frozen=True)
class Artwork:
    """One cover image.

    :param data: the image file's bytes.
    :param mime: its type, sniffed from ``data`` (``"image/jpeg"``,
        ``"image/png"``, ``"image/webp"``, ``"image/gif"``, ``"image/bmp"``).
    :param source: ``"embedded"`` (from the track's tags) or ``"folder"``
        (an image file beside the track).
    """

    data: bytes
    mime: str
    source: Source


def sniff_image_type(head: bytes) -> str | None:
    """The type of an image, from its first bytes.

    :param head: at least the first 12 bytes of the image (fewer only for a
        file that short).
    :returns: a MIME type, or ``None`` when the bytes are no image type
        browsers display.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"BM") and len(head) >= 14:
        return "image/bmp"
    return None


def find_artwork(root: Path, track: str) -> Artwork | None:
    """The cover of a track: embedded first, then a folder image.

    :param root: the media root.
    :param track: the track's ``/``-separated path below ``root``.
    :returns: the artwork, or ``None`` when there is none (or the track is
        missing, unreadable, or outside the root).
    """
    real_root = os.path.realpath(root)
    path = Path(real_root, *track.split("/"))
    if not _inside(real_root, os.path.realpath(path)):
        return None
    embedded = _embedded_from_file(path)
    if embedded is not None:
        return embedded
    image = folder_image(path.parent, Path(real_root))
    if image is None:
        return None
    try:
        with open(image, "rb") as f:
            data = f.read(MAX_ARTWORK_BYTES + 1)
    except OSError:
        return None
    mime = sniff_image_type(data[:_SNIFF_BYTES])
    if mime is None or len(data) > MAX_ARTWORK_BYTES:
        return None
    return Artwork(data, mime, "folder")


def embedded_artwork(parsed: Any) -> Artwork | None:
    """The best embedded picture of a file mutagen has already parsed.

    A front cover beats any other picture type; among equals, the first wins.

    :param parsed: what :func:`mutagen.File` returned (any file type).
    :returns: the artwork, or ``None`` when no picture is a usable image.
    """
    best: Artwork | None = None
    for data, kind in _pictures(parsed):
        if not data or len(data) > MAX_ARTWORK_BYTES:
            continue
        mime = sniff_image_type(data[:_SNIFF_BYTES])
        if mime is None:
            continue
        if kind == _FRONT_COVER:
            return Artwork(data, mime, "embedded")
        if best is None:
            best = Artwork(data, mime, "embedded")
    return best


def folder_image(directory: Path, root: Path) -> Path | None:
    """The cover image file in a directory, if it has one.

    Names are matched case-insensitively: ``cover`` before ``folder`` before
    ``front``, and for each ``.jpg``, ``.jpeg``, ``.png``, ``.webp`` in that
    order.  A candidate is taken only if it is a regular file no larger than
    :data:`MAX_ARTWORK_BYTES` whose first bytes are an image and, when it is a
    symlink, whose target stays inside ``root``.

    :param directory: the track's directory.
    :param root: the media root, already resolved with :func:`os.path.realpath`.
    :returns: the image's path, or ``None``.
    """
    candidates: dict[tuple[int, int], os.DirEntry[str]] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                rank = _folder_rank(entry.name)
                if rank is not None:
                    candidates.setdefault(rank, entry)
    except OSError:
        return None
    real_root = os.fspath(root)
    for rank in sorted(candidates):
        entry = candidates[rank]
        try:
            if entry.is_symlink() and not _inside(real_root, os.path.realpath(entry.path)):
                continue
            info = os.stat(entry.path)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ARTWORK_BYTES:
                continue
            with open(entry.path, "rb") as f:
                head = f.read(_SNIFF_BYTES)
        except OSError:
            continue
        if sniff_image_type(head) is not None:
            return Path(entry.path)
    return None


def is_folder_image_name(name: str) -> bool:
    """Whether a file name could be a folder cover image (``Cover.JPG``...).

    :param name: a file name without directory.
    :returns: ``True`` for the names :func:`folder_image` considers.
    """
    return _folder_rank(name) is not None


def _folder_rank(name: str) -> tuple[int, int] | None:
    """Preference of a folder image name (lower is better), or ``None``."""
    stem, dot, extension = name.lower().rpartition(".")
    if not dot:
        return None
    try:
        return FOLDER_IMAGE_STEMS.index(stem), FOLDER_IMAGE_EXTENSIONS.index("." + extension)
    except ValueError:
        return None


def _inside(real_root: str, real_path: str) -> bool:
    """Whether a resolved path is the root or below it."""
    return os.path.commonpath([real_root, real_path]) == real_root


def _embedded_from_file(path: Path) -> Artwork | None:
    """Parse a file's tags and return its best embedded picture."""
    try:
        parsed = mutagen.File(path)
    except Exception:
        # Corrupt input surfaces as many exception types; no artwork then.
        return None
    if parsed is None:
        return None
    try:
        return embedded_artwork(parsed)
    except Exception:
        return None


def _pictures(parsed: Any) -> Iterator[tuple[bytes, int]]:
    """Every picture in a parsed file's tags, as ``(data, picture type)``.

    MP4 ``covr`` atoms have no type; they count as front covers.
    """
    tags = getattr(parsed, "tags", None)
    if isinstance(tags, ID3):
        for frame in tags.getall("APIC"):
            yield bytes(frame.data), int(frame.type)
    if isinstance(parsed, FLAC):
        for picture in parsed.pictures:
            yield bytes(picture.data), int(picture.type)
    if isinstance(tags, MP4Tags):
        for cover in tags.get("covr", ()):
            yield bytes(cover), _FRONT_COVER
    if tags is not None and not isinstance(tags, ID3 | MP4Tags) and hasattr(tags, "get"):
        yield from _vorbis_pictures(tags)


def _vorbis_pictures(tags: Any) -> Iterator[tuple[bytes, int]]:
    """Pictures in Vorbis comments: ``METADATA_BLOCK_PICTURE`` (a base64 FLAC
    picture block), then the legacy ``COVERART`` (base64 image bytes)."""
    for value in _values(tags, "metadata_block_picture"):
        try:
            picture = Picture(base64.b64decode(value))
        except Exception:  # noqa: S112 - a malformed block raises anything; it is skipped
            continue
        yield bytes(picture.data), int(picture.type)
    for value in _values(tags, "coverart"):
        try:
            yield base64.b64decode(value), _FRONT_COVER
        except (binascii.Error, ValueError):
            continue


def _values(tags: Any, key: str) -> list[str]:
    """The values of a Vorbis comment key, or ``[]``."""
    try:
        values = tags.get(key) or []
    except (KeyError, ValueError):
        return []
    return [v for v in values if isinstance(v, str)]
