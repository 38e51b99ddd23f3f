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
- ``fileno()`` is the non-blocking socket (``socket`` the socket object);
  ``startWriting``/``stopWriting`` ask for (or stop) "writable" events.
- ``write``/``writeSequence`` are looked up on the instance too, so
  :meth:`TransportHook.send_head` can take the response headers that
  Twisted's ``HTTPChannel.writeHeaders`` writes (one ``writeSequence``) and
  send them itself, flagged ``MSG_MORE`` so they leave in one segment with
  the first body bytes (nginx's ``tcp_nopush`` without its two
  ``setsockopt`` calls); what the socket does not take goes to the
  transport's own buffer, as if written normally.

This module never writes anything but the file range it is given, never
blocks (the socket is non-blocking: a full socket is ``BlockingIOError``),
and never leaves the transport hooked after :meth:`TransportHook.release`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import IO, Any, Final

from twisted.internet import tcp

__all__ = ["TransportHook", "holds_bytes", "qualifies"]


#: "More is coming": the kernel holds a short send back for what follows (Linux; 0 elsewhere).
MSG_MORE: Final = getattr(socket, "MSG_MORE", 0)


def qualifies(transport: object) -> bool:
    """Whether *transport* is a plain TCP socket this platform can ``sendfile`` to."""
    return type(transport) is tcp.Server and hasattr(os, "sendfile")


def holds_bytes(transport: Any) -> bool:
    """Whether a transport for which :func:`qualifies` is true holds bytes not yet in its socket."""
    return len(transport.dataBuffer) > transport.offset or bool(transport._tempDataLen)


class TransportHook:
    """One body's take-over of a plain TCP transport's writes (see the module docstring).

    :param transport: a transport for which :func:`qualifies` is true.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._hooked = False

    def take(self, do_write: Callable[[], object]) -> None:
        """Have the reactor call *do_write* instead of the transport's own, from the next writable event."""
        self.install(do_write)
        self._transport.startWriting()

    def install(self, do_write: Callable[[], object]) -> None:
        """Have the reactor call *do_write* instead of the transport's own, when it next calls one.

        Unlike :meth:`take`, this asks for no writable event: the caller
        writes at once and asks with :meth:`wait_writable` if it must wait.
        """
        self._transport.doWrite = do_write
        self._hooked = True

    def send_head(self, write: Callable[[], None], more: bool = True) -> None:
        """Call *write* (which writes the response headers to the transport) and send them at once.

        The bytes go straight to the socket, with ``MSG_MORE`` if *more* (a
        body follows at once: they leave together), and whatever the socket
        does not take into the transport's buffer as an ordinary write would
        put it.  If the transport holds bytes already, or is closing, *write*
        just writes.
        """
        transport = self._transport
        if self.pending() or not transport.connected or transport.disconnecting:
            write()
            return
        captured: list[bytes] = []
        transport.writeSequence = captured.extend
        transport.write = captured.append
        try:
            write()
        finally:
            del transport.writeSequence
            del transport.write
        data = b"".join(captured)
        if not data:
            return
        try:
            sent = transport.socket.send(data, MSG_MORE if more else 0)
        except OSError:
            sent = 0  # full, or gone: the transport's own write finds out which
        if sent < len(data):
            type(transport).write(transport, data[sent:])

    def pending(self) -> bool:
        """Whether the transport still holds bytes of its own (the headers) in user space."""
        return holds_bytes(self._transport)

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
