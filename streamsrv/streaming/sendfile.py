# -*- test-case-name: tests.test_sendfile_hook -*-
"""The one place that reaches into Twisted's TCP transport, so a body can leave with ``os.sendfile``.

Twisted has no public way to move bytes from a file descriptor to a socket
without reading them into Python first.  :class:`TransportHook` takes over a
plain TCP transport's writes for the length of one body and gives them back
after; :class:`~streamsrv.streaming.producers.SendfileSender` drives it.
What it relies on (Twisted 26.x; ``tests/test_sendfile_hook.py`` fails if any
of it changes):

- ``twisted.internet.tcp.Server`` is the exact class of an accepted plain-TCP
  connection's transport; TLS, HTTP/2 and test transports are something else
  (and must never be hooked: TLS needs the bytes in user space).
- ``abstract.FileDescriptor.dataBuffer`` and ``offset`` (the bytes being sent
  and how far they went) and ``_tempDataLen`` (bytes written since, held in
  ``_tempDataBuffer``) are the user-space bytes not yet in the socket: the
  response headers, queued by ``request.write(b"")``.  Private attributes:
  they are how ``FileDescriptor.write`` buffers.
- ``FileDescriptor.doWrite`` is what the posix reactors (epoll, poll, select)
  call when the socket is writable, looked up on the instance at every event
  (``selectable.doWrite()``): an instance attribute stands in for it, and
  deleting the attribute restores the class's.  A ``doWrite`` returns
  ``None``, or an exception meaning the connection is lost (the reactor then
  calls ``connectionLost``).  The class's own ``doWrite`` sends what is
  buffered and calls ``stopWriting()`` once nothing is left.
- ``fileno()`` is the non-blocking socket; ``startWriting``/``stopWriting``
  ask for (or stop) "writable" events.

This module never writes anything but the file range it is given, never
blocks (the socket is non-blocking: a full socket is ``BlockingIOError``),
and never leaves the transport hooked after :meth:`TransportHook.release`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

from twisted.internet import tcp

__all__ = ["TransportHook", "qualifies"]


def qualifies(transport: object) -> bool:
    """Whether *transport* is a plain TCP socket this platform can ``sendfile`` to."""
    return type(transport) is tcp.Server and hasattr(os, "sendfile")


class TransportHook:
    """One body's take-over of a plain TCP transport's writes (see the module docstring).

    :param transport: a transport for which :func:`qualifies` is true.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._hooked = False

    def take(self, do_write: Callable[[], object]) -> None:
        """Have the reactor call *do_write* instead of the transport's own, from the next writable event."""
        transport = self._transport
        transport.doWrite = do_write
        self._hooked = True
        transport.startWriting()

    def pending(self) -> bool:
        """Whether the transport still holds bytes of its own (the headers) in user space."""
        transport = self._transport
        return len(transport.dataBuffer) > transport.offset or bool(transport._tempDataLen)

    def flush(self) -> object:
        """Send what the transport holds its own way: ``None``, or the error that lost the connection."""
        transport = self._transport
        return type(transport).doWrite(transport)

    def send(self, fileobj: IO[bytes], offset: int, count: int) -> int:
        """``os.sendfile`` up to *count* bytes of *fileobj* from *offset*; the bytes the kernel took.

        :raise BlockingIOError: the socket is full (wait with :meth:`wait_writable`).
        :raise OSError: the connection is gone.
        """
        return os.sendfile(self._transport.fileno(), fileobj.fileno(), offset, count)

    def wait_writable(self) -> None:
        """Be called (the hooked ``doWrite``) when the socket can take more."""
        self._transport.startWriting()

    def release(self) -> None:
        """Give the transport its own ``doWrite`` back (idempotent); it writes on if it holds bytes."""
        if not self._hooked:
            return
        self._hooked = False
        transport = self._transport
        del transport.doWrite
        if self.pending():
            transport.startWriting()
        else:
            transport.stopWriting()
