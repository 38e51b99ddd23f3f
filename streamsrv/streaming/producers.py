# -*- test-case-name: tests.test_producers -*-
"""Senders that stream file bytes to a request with backpressure.

Two senders share one contract (``start()``, ``abort()``, and a callback
``on_end(completed: bool)`` called exactly once):

* :class:`FileBodyProducer` is a push producer (``IPushProducer``) that
  writes 64 KiB chunks until the transport pauses it and resumes when the
  transport drains, so a slow reader never makes the server buffer more than
  about two chunks.  It serves any mix of literal bytes and file ranges,
  which covers a whole file, one range and ``multipart/byteranges``.  It
  works on any transport: TLS, HTTP/2, in-memory test transports.
* :class:`SendfileSender` hands a single byte range to the kernel with
  ``os.sendfile`` on a plain TCP socket: no copy into Python, no user-space
  buffer at all.  It takes over the transport's writes (through
  :mod:`streamsrv.streaming.sendfile`) only while its own body is being sent
  and gives them back before the request finishes.

Neither ever calls ``request.write`` with a whole body, both close the file
when the client leaves, and both are idempotent to stop.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import IO, Any

from twisted.internet import error
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from streamsrv.streaming.sendfile import TransportHook, qualifies

log = Logger()

#: Bytes per write of the portable producer (Twisted's own buffer size).
CHUNK_SIZE = 64 * 1024

#: Most bytes one ``sendfile`` call may move, so one fast client cannot
#: hold the reactor for long; the kernel sends less when the socket is full.
SENDFILE_CHUNK = 1024 * 1024

#: A segment of a response body: literal bytes, then ``length`` bytes of the
#: file from ``offset``.
Segment = tuple[bytes, int, int]

EndCallback = Callable[[bool], None]


class _Sender:
    """What both senders share: the file they close and the outcome they report, each once."""

    _file: IO[bytes] | None
    _on_end: EndCallback | None

    def _close_and_report(self, completed: bool) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(completed)


class PushProducer:
    """The ``IPushProducer`` half every body writer of ours shares.

    A subclass writes in :meth:`_produce` while ``_paused`` is false and ends
    (idempotently, closing what it holds) in :meth:`_stop`.
    """

    _paused: bool = False

    def _produce(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def pauseProducing(self) -> None:
        """The transport is full: stop writing until resumed."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport drained: write more."""
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        """The consumer is going away: drop everything (idempotent)."""
        self._stop()


@implementer(IPushProducer)
class FileBodyProducer(_Sender, PushProducer):
    """Write a body made of literal bytes and file ranges, respecting pauses.

    :param request: the request to write to.
    :param fileobj: an open binary file; closed by this producer.
    :param segments: ``(prefix, offset, length)`` triples, in order.
    :param trailer: bytes written after the last segment.
    :param on_end: called once with ``True`` after the last byte, ``False``
        if the client left or the sender was aborted.
    :param shaping: ``(rate, after, clock)``: after *after* bytes, send at
        most *rate* bytes per second (timed by *clock*); ``None``: full speed.
    """

    def __init__(
        self,
        request: Any,
        fileobj: IO[bytes],
        segments: Sequence[Segment],
        trailer: bytes = b"",
        on_end: EndCallback | None = None,
        chunk_size: int = CHUNK_SIZE,
        shaping: tuple[int, int, Any] | None = None,
    ) -> None:
        self._request: Any = request
        self._file: IO[bytes] | None = fileobj
        self._segments = list(segments)
        self._trailer = trailer
        self._on_end = on_end
        self._chunk_size = chunk_size
        self._index = 0
        self._prefix_sent = False
        self._left = 0
        self._paused = False
        self._producing = False
        self.bytes_written = 0
        self._shaping = shaping
        self._shaped_since: float | None = None  # when the capped part began
        self._wakeup: Any = None
        if shaping is not None:
            rate = shaping[0]
            # A tenth of a second of the capped rate per write keeps the pace smooth.
            self._chunk_size = max(1024, min(chunk_size, rate // 10))

    def start(self) -> None:
        """Register with the request and write until paused or done."""
        request = self._request
        if request is None:
            return
        request.notifyFinish().addErrback(self._client_gone)
        try:
            request.registerProducer(self, True)
        except AttributeError:
            # The connection is already gone (Synapse's _ByteProducer).
            self._end(False)
            return
        self._produce()

    def _stop(self) -> None:
        self._end(False)

    def abort(self) -> None:
        """Cut this stream (shutdown grace expired)."""
        request = self._request
        if request is not None:
            transport = getattr(request.channel, "transport", None)
            self._end(False)
            if transport is not None:
                transport.abortConnection()

    def _client_gone(self, reason: Failure) -> None:
        self._end(False)

    def _next_chunk(self) -> bytes | None:
        """The next bytes to write, or ``None`` when the body is complete."""
        while self._index < len(self._segments):
            prefix, offset, length = self._segments[self._index]
            if not self._prefix_sent:
                self._prefix_sent = True
                assert self._file is not None
                self._file.seek(offset)
                self._left = length
                if prefix:
                    if length:
                        # Pack the part header with the first file bytes.
                        take = min(self._left, self._chunk_size - len(prefix))
                        data = self._read(take)
                        return prefix + data
                    return prefix
            if self._left > 0:
                return self._read(min(self._left, self._chunk_size))
            self._index += 1
            self._prefix_sent = False
        if self._trailer:
            trailer, self._trailer = self._trailer, b""
            return trailer
        return None

    def _read(self, n: int) -> bytes:
        assert self._file is not None
        data = self._file.read(n) if n > 0 else b""
        if len(data) < n:
            # The file shrank under us: the promised length cannot be met.
            raise EOFError("file shorter than its advertised length")
        self._left -= len(data)
        return data

    def _produce(self) -> None:
        if self._producing:
            return  # re-entered from request.write(): the outer loop goes on
        self._producing = True
        try:
            while not self._paused and self._request is not None:
                if self._shaping is not None and self._hold():
                    return
                try:
                    chunk = self._next_chunk()
                except (OSError, EOFError):
                    log.failure("reading a media file failed mid-stream")
                    self.abort()
                    return
                if chunk is None:
                    self._complete()
                    return
                self.bytes_written += len(chunk)
                self._request.write(chunk)
        finally:
            self._producing = False

    def _hold(self) -> bool:
        """Whether the rate cap says wait now; if so the next write is scheduled."""
        assert self._shaping is not None
        rate, after, clock = self._shaping
        if self.bytes_written < after:
            return False
        now = clock.seconds()
        if self._shaped_since is None:
            self._shaped_since = now
        allowed = rate * (now - self._shaped_since)
        sent = self.bytes_written - after
        if sent < allowed or sent == 0:
            return False
        if self._wakeup is None or not self._wakeup.active():
            # At least 10 ms: at the cap exactly, waking "now" would spin.
            self._wakeup = clock.callLater(max((sent - allowed) / rate, 0.01), self._wake)
        return True

    def _wake(self) -> None:
        self._wakeup = None
        if not self._paused:
            self._produce()

    def _complete(self) -> None:
        request = self._request
        if request is None:
            return
        request.unregisterProducer()
        self._request = None
        # Finishing a dropped connection raises (Synapse's finish_request).
        with contextlib.suppress(RuntimeError):
            request.finish()
        self._end(True)

    def _end(self, completed: bool) -> None:
        """Release the request and the file; report the outcome once."""
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None
        request, self._request = self._request, None
        if request is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                request.unregisterProducer()
        self._close_and_report(completed)


def can_sendfile(request: Any) -> bool:
    """Whether *request* may be answered with :class:`SendfileSender`.

    Only plain TCP sockets under HTTP/1.x qualify: TLS needs the bytes in
    user space to encrypt them, HTTP/2 frames them, and test transports have
    no socket.
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    return qualifies(transport) and request.clientproto in (b"HTTP/1.1", b"HTTP/1.0")


class SendfileSender(_Sender):
    """Send one file range with ``os.sendfile`` on a plain TCP transport.

    The headers (``request.write(b"")``) go straight to the socket flagged
    ``MSG_MORE``, so they share a segment with the first body bytes; this
    sender then takes over the transport's writes
    (:class:`~streamsrv.streaming.sendfile.TransportHook`, the only code that
    touches Twisted's transport internals): each turn flushes what the
    transport still holds (headers the socket did not take) its own way,
    then moves file bytes socket-ward, first at once (the socket is usually
    writable, so a short body is sent without a trip through the reactor or
    a single ``epoll_ctl``) and then whenever the reactor reports the socket
    writable.  The kernel's socket buffer is the only buffer, so a slow
    reader costs no memory at all.

    (Corking with ``TCP_CORK`` around the body was measured and left out: on
    loopback the two extra ``setsockopt`` calls cost more than the packet
    they save.  ``MSG_MORE`` on the headers' own ``send`` costs nothing.)
    """

    def __init__(
        self,
        request: Any,
        fileobj: IO[bytes],
        offset: int,
        length: int,
        on_end: EndCallback | None = None,
        chunk_size: int = SENDFILE_CHUNK,
    ) -> None:
        self._request: Any = request
        self._transport: Any = request.channel.transport
        self._hook = TransportHook(self._transport)
        self._file: IO[bytes] | None = fileobj
        self._offset = offset
        self._left = length
        self._on_end = on_end
        self._chunk_size = chunk_size
        self.bytes_written = 0

    def start(self) -> None:
        """Queue the headers, take over the transport's writes and send what the socket takes now."""
        request = self._request
        request.notifyFinish().addErrback(lambda _: self._end(False))
        self._hook.send_head(functools.partial(request.write, b""), more=self._left > 0)
        if self._request is None:
            return
        if self._left == 0:
            self._complete()
            return
        self._hook.install(self._do_write)
        result = self._do_write()
        if result is not None:
            # What the reactor does when doWrite fails: drop the connection.
            self._transport.abortConnection()

    def abort(self) -> None:
        """Cut this stream (shutdown grace expired)."""
        transport = self._transport
        self._end(False)
        transport.abortConnection()

    def _do_write(self) -> object:
        """The transport's ``doWrite`` while hooked: ``None``, or the error that lost the connection."""
        hook = self._hook
        if hook.pending():
            # The headers first; the transport stops writing once its buffer is empty.
            result = hook.flush()
            if result is not None or hook.pending():
                return result
        if self._file is None:
            return None
        try:
            sent = hook.send(self._file, self._offset, min(self._left, self._chunk_size))
        except BlockingIOError:
            hook.wait_writable()
            return None
        except OSError:
            self._end(False)
            return error.ConnectionLost()
        if sent == 0:
            log.warn("media file shrank while being sent; cutting the response")
            self._end(False)
            return error.ConnectionLost()
        self._offset += sent
        self._left -= sent
        self.bytes_written += sent
        self._request.direct_bytes += sent
        if self._left == 0:
            self._complete()
        else:
            hook.wait_writable()
        return None

    def _complete(self) -> None:
        request = self._request
        self._hook.release()
        self._request = None
        with contextlib.suppress(RuntimeError):
            request.finish()
        self._end(True)

    def _end(self, completed: bool) -> None:
        self._hook.release()
        self._request = None
        self._close_and_report(completed)
