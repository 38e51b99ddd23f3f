# -*- test-case-name: tests.test_paths -*-
"""Request-path safety: from the raw tail of a URL to a file inside the media root.

A track is named in a URL by its ``/``-separated path relative to the media
root, percent-encoded. :func:`safe_media_path` decodes that tail exactly once,
normalises it (Unicode NFC, ``.`` and empty segments dropped), refuses anything
that could name something other than a plain relative path (``..``, an
absolute path, a backslash, a drive letter, NUL and other control characters,
bidirectional overrides, over-long names) and resolves the result inside the
root, following symlinks only while they stay inside it. Every refusal is a
:class:`PathRefused` whose ``reason`` goes to the security log; the caller
answers 404.

This module must never join a request path to the file system as given, never
decode it twice, never open or create a file, and never log.

:class:`ResolvedPathCache` remembers successful resolutions for a few seconds, so
that the range requests a player makes for one track skip the decoding and the
``realpath`` walk; an entry is used only while ``stat`` of its resolved path still
finds the very file (device and inode) that was resolved inside the root.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import unquote_to_bytes

#: Longest accepted segment (a file or directory name), in UTF-8 bytes: NAME_MAX.
MAX_SEGMENT_BYTES = 255

#: Longest accepted path, in UTF-8 bytes: PATH_MAX.
MAX_PATH_BYTES = 4096

#: A DOS drive: ``C:``, ``c:x``... Harmless on POSIX, refused everywhere so the
#: code stays safe wherever it runs and the log shows what was tried.
_DRIVE = re.compile(r"[A-Za-z]:", re.ASCII)

#: How long a resolution is reused (seconds). A file replaced, removed or
#: swapped for a symlink is noticed at once by the identity check; this bounds
#: the one change that check cannot see (a directory on the path moved out of
#: the root, with its files, and a symlink left in its place).
PATH_CACHE_TTL_S = 2.0

#: Resolutions remembered at most (raw request paths: clients choose them).
PATH_CACHE_SIZE = 4096

#: Bidirectional embeddings, overrides and isolates (the "Trojan Source" set):
#: they let a name display as something it is not, in logs and in UIs. The
#: marks (LRM, RLM, ALM) stay allowed: real right-to-left names use them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class PathRefused(Exception):
    """
    A request path that must not reach the file system; answer 404.

    :ivar reason: A short fixed description for the security log, e.g.
        ``"dot-dot segment"``; never contains the path itself.
    """

    def __init__(self, reason: str) -> None:
        """
        :param reason: A short fixed description of what was wrong.
        """
        super().__init__(reason)
        self.reason = reason


def decode_request_path(raw: bytes) -> str:
    """
    Decode the raw, still percent-encoded tail of a request path, once.

    ``%XX`` escapes become bytes (a malformed escape stays as it is), the
    bytes are decoded as strict UTF-8 (which refuses overlong forms such as
    ``%c0%ae`` and encoded surrogates) and the text is NFC-normalised. ``+``
    is a plus sign: it means a space only in form-encoded query strings. The
    result must not be decoded again: ``%252e`` names a file called ``%2e``.

    :param raw: The path tail as received on the request line.
    :return: The decoded path.
    :raise PathRefused: If the bytes are not UTF-8.
    """
    try:
        text = unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise PathRefused("invalid UTF-8") from None
    return unicodedata.normalize("NFC", text)


def _refuse_characters(path: str) -> None:
    """
    Refuse characters that have no place in a track path.

    :param path: The decoded path.
    :raise PathRefused: On a control character (Unicode category Cc: C0, DEL
        and C1, NUL included), a lone surrogate, a bidirectional control or a
        backslash.
    """
    for character in path:
        if character == "\\":
            raise PathRefused("backslash")
        if character in _BIDI_CONTROLS:
            raise PathRefused("bidi control character")
        category = unicodedata.category(character)
        if category == "Cc":
            raise PathRefused("control character")
        if category == "Cs":
            raise PathRefused("surrogate")


def normalise_relative_path(path: str) -> tuple[str, ...]:
    """
    Check a decoded path and split it into segments.

    Empty and ``.`` segments are dropped. Anything else that is not a plain
    name is refused rather than interpreted.

    :param path: The decoded path tail after the route prefix.
    :return: The segments, none empty, ``.``, ``..``, or containing ``/``.
    :raise PathRefused: On an empty result, a path longer than
        :data:`MAX_PATH_BYTES` or a segment longer than
        :data:`MAX_SEGMENT_BYTES` (UTF-8), a control, surrogate or
        bidirectional control character, a backslash, an absolute path (a
        leading ``/``), a ``..`` segment or a segment starting with a drive
        letter such as ``C:``.
    """
    if len(path.encode("utf-8", errors="surrogatepass")) > MAX_PATH_BYTES:
        raise PathRefused("path too long")
    _refuse_characters(path)
    if path.startswith("/"):
        raise PathRefused("absolute path")
    segments = tuple(segment for segment in path.split("/") if segment and segment != ".")
    for segment in segments:
        if segment == "..":
            raise PathRefused("dot-dot segment")
        if _DRIVE.match(segment):
            raise PathRefused("drive letter")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise PathRefused("segment too long")
    if not segments:
        raise PathRefused("empty path")
    return segments


def resolve_inside(root: Path, segments: Sequence[str]) -> Path:
    """
    Resolve segments below the media root, symlinks included, and refuse any
    result outside it.

    The target need not exist (a missing file is the caller's 404). Symlinks
    are followed as far as they exist; a result that is neither ``root`` nor
    below it, compared path component by component (``/media-evil`` is not
    inside ``/media``), is refused. A symlink swapped between this check and
    the caller's ``open()`` is beyond what a check can prevent; the catalog's
    own view of the tree is the second line.

    :param root: The media root, absolute and already resolved with
        :func:`os.path.realpath`.
    :param segments: Plain names, as :func:`normalise_relative_path` returns.
    :return: The resolved path, inside ``root``.
    :raise PathRefused: If a segment is not a plain name, or the result is
        outside ``root``.
    :raise ValueError: If ``root`` is not absolute.
    """
    if not root.is_absolute():
        raise ValueError(f"media root must be absolute: {root}")
    for segment in segments:
        if segment in ("", ".", "..") or "/" in segment or "\x00" in segment:
            raise PathRefused("invalid segment")
        try:
            segment.encode("utf-8")
        except UnicodeEncodeError:
            raise PathRefused("invalid segment") from None
    root_text = os.fspath(root)
    resolved = os.path.realpath(os.path.join(root_text, *segments))
    if os.path.commonpath([root_text, resolved]) != root_text:
        raise PathRefused("outside root via symlink")
    return Path(resolved)


def safe_media_path(root: Path, raw: bytes) -> tuple[str, Path]:
    """
    Turn the raw tail of a request path into a file path inside the root.

    :param root: The media root, absolute and already resolved with
        :func:`os.path.realpath`.
    :param raw: The path tail after the route prefix, still percent-encoded.
    :return: The normalised track path (segments joined with ``/``, the name
        the catalog knows the track by) and the resolved file system path.
    :raise PathRefused: If the path is unsafe in any way listed in
        :func:`decode_request_path`, :func:`normalise_relative_path` and
        :func:`resolve_inside`.
    """
    segments = normalise_relative_path(decode_request_path(raw))
    return "/".join(segments), resolve_inside(root, segments)


_V = TypeVar("_V")


class ResolvedPathCache(Generic[_V]):
    """
    Successful :func:`safe_media_path` results, keyed by the raw path tail.

    Each entry holds the resolved path, the device and inode ``stat`` found
    there when it was resolved, the caller's own value (e.g. the audio format)
    and the time it was made. :meth:`get` gives it back only within
    *ttl_s* and only while ``os.stat`` of the resolved path still finds the same
    file; anything else (a missing file, another inode: a replacement or a
    symlink swapped in anywhere on the path) drops the entry, and the caller
    resolves again from scratch, with every check and refusal of the uncached
    path. Refusals are never cached. The caller still opens the file with
    ``O_NOFOLLOW``, as without the cache.

    :param clock: returns the current time in seconds (e.g. ``reactor.seconds``).
    :param ttl_s: how long an entry is used.
    :param max_entries: the most entries kept; past it the oldest go.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        ttl_s: float = PATH_CACHE_TTL_S,
        max_entries: int = PATH_CACHE_SIZE,
    ) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[float, str, Path, int, int, _V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, raw: bytes) -> tuple[str, Path, _V] | None:
        """
        The remembered ``(track, path, value)`` of *raw*, if still valid.
        """
        entry = self._entries.get(raw)
        if entry is None:
            return None
        made, track, path, device, inode, value = entry
        if self._clock() - made < self._ttl_s:
            try:
                info = os.stat(path)
            except (OSError, ValueError):
                info = None
            if info is not None and info.st_ino == inode and info.st_dev == device:
                return track, path, value
        del self._entries[raw]
        return None

    def recall(self, raw: bytes) -> tuple[str, Path, _V, int, int] | None:
        """
        ``(track, path, value, device, inode)`` of *raw* within *ttl_s*, without looking at the file.

        For a caller that opens the file at once and checks the device and
        inode of what it opened (``fstat``) against these, as :meth:`get`'s
        ``stat`` would have; on any difference it must go through :meth:`get`.
        """
        entry = self._entries.get(raw)
        if entry is None or not self._clock() - entry[0] < self._ttl_s:
            return None
        _, track, path, device, inode, value = entry
        return track, path, value, device, inode

    def put(self, raw: bytes, track: str, path: Path, value: _V) -> None:
        """
        Remember that *raw* resolved to *track* and *path* (if it exists).
        """
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            return
        entries = self._entries
        if len(entries) >= self._max_entries:
            # Oldest first: dicts keep insertion order.
            for stale in list(entries)[: max(1, self._max_entries // 8)]:
                del entries[stale]
        entries[raw] = (self._clock(), track, path, info.st_dev, info.st_ino, value)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
