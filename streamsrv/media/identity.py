# -*- test-case-name: tests.test_conditional -*-
"""The identity of a file version: the strong entity-tag ``/stream`` answers with.

The catalog, the metadata readers, the second-level metadata cache and
``/stream`` all key what they know of a file by this tag, so it is made in
one place.  A pure function of what ``stat()`` says; it never touches the
file system itself.
"""

from __future__ import annotations


def make_etag(size: int, mtime_ns: int, inode: int) -> str:
    """
    Make the strong entity-tag of a file from what ``stat()`` says of it.

    Size, nanosecond modification time and inode change whenever the bytes
    do, short of deliberate tampering with timestamps, which is what makes the
    tag strong enough for ``If-Range``.

    :param size: ``st_size``.
    :param mtime_ns: ``st_mtime_ns`` (may be negative for pre-1970 files).
    :param inode: ``st_ino``.
    :return: The quoted tag, hex parts joined by ``-``, e.g.
        ``'"3e8-17f0c2a1b-2a"'``.
    :raise ValueError: If ``size`` or ``inode`` is negative.
    """
    if size < 0 or inode < 0:
        raise ValueError(f"negative size or inode: {size}, {inode}")
    return f'"{size:x}-{mtime_ns:x}-{inode:x}"'
