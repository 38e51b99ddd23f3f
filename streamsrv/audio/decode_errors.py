"""The error of :mod:`streamsrv.audio.decode`, in a module of its own.

What handles decode failures (:mod:`streamsrv.audio.jobs`, the HTTP routes)
needs the class, not PyAV and numpy, which :mod:`streamsrv.audio.decode`
imports: those stay in the decode workers.  ``streamsrv.audio.decode``
re-exports it.
"""

from __future__ import annotations

__all__ = ["DecodeError"]


class DecodeError(Exception):
    """A file could not be decoded.

    :param reason: what went wrong, in words safe to show a client
        (:data:`UNSUPPORTED_FORMAT`, :data:`NO_AUDIO_STREAM`,
        :data:`CORRUPT_FILE`, :data:`EMPTY_FILE`, :data:`UNREADABLE_FILE`);
        ``str()`` of the error is the reason alone.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str]]:
        """Pickle as the reason only, so the error crosses process boundaries."""
        return (type(self), (self.reason,))
