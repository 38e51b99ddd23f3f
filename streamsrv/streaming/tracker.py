# -*- test-case-name: tests.test_shutdown -*-
"""Open streams, and the grace period that lets them finish on shutdown.

:class:`StreamTracker` is a service that knows every body being streamed.
On ``stopService`` (SIGTERM, via twistd) it stops admitting new streams,
waits for the open ones to finish for at most ``grace_s`` seconds on its
injected clock, then cuts whatever is left so the process can exit.  It
never waits forever and never cuts a stream before the grace period ends.
"""

from __future__ import annotations

from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from streamsrv.health.metrics import Metrics

log = Logger()


class Sender(Protocol):
    """What the tracker needs of a stream: a way to cut it."""

    def abort(self) -> None:
        """Stop sending and drop the connection."""


class StreamTracker(Service):
    """Count open streams; drain them within a grace period on stop.

    :param clock: the time source for the grace period.
    :param grace_s: how long open streams may run after stop is asked.
    :param metrics: where ``streamsrv_streams_active`` is kept.
    """

    name = "streams"  # type: ignore[assignment]  # Twisted declares Service.name as None

    def __init__(self, clock: IReactorTime, grace_s: float, metrics: Metrics) -> None:
        self._clock = clock
        self._grace_s = grace_s
        self._metrics = metrics
        self._open: set[Sender] = set()
        self._drained: Deferred[None] | None = None
        self._deadline: IDelayedCall | None = None
        self.accepting = True

    @property
    def open_count(self) -> int:
        """How many streams are being sent right now."""
        return len(self._open)

    def add(self, sender: Sender) -> None:
        """Track *sender* until :meth:`remove`."""
        self._open.add(sender)
        self._metrics.streams_active.set(len(self._open))

    def remove(self, sender: Sender) -> None:
        """Forget *sender*; fire the drain if it was the last one."""
        self._open.discard(sender)
        self._metrics.streams_active.set(len(self._open))
        if not self._open and self._drained is not None:
            self._finish_drain()

    def startService(self) -> None:
        """Admit streams."""
        self.accepting = True
        super().startService()

    def stopService(self) -> Deferred[None]:
        """Refuse new streams; resolve when open ones end or grace expires."""
        super().stopService()
        self.accepting = False
        if not self._open:
            return succeed(None)
        log.info(
            "shutting down: {count} open streams get {grace}s to finish",
            count=len(self._open),
            grace=self._grace_s,
        )
        self._drained = Deferred()
        self._deadline = self._clock.callLater(self._grace_s, self._cut)
        return self._drained

    def _cut(self) -> None:
        self._deadline = None
        left = list(self._open)
        log.info("grace period over: cutting {count} streams", count=len(left))
        for sender in left:
            try:
                sender.abort()
            except Exception:
                log.failure("cutting a stream failed")
            self._open.discard(sender)
        self._metrics.streams_active.set(len(self._open))
        self._finish_drain()

    def _finish_drain(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)
