# -*- test-case-name: tests.test_tap,tests.test_periodic -*-
"""The service bases of the daemon: the root that twistd runs, and periodic work on a timer.

:class:`RootService` is a :class:`MultiService` that, when twistd attaches it
to its application, also offers streamsrv's log observer as the
application's ``ILogObserver`` component: twistd's documented hook for
choosing how a daemon logs.  It holds no logic of its own; ``streamsrv.tap``
fills it.  :class:`PeriodicService` is the one way a part does something
every N seconds: Twisted's :class:`~twisted.application.internet.TimerService`
on an injected clock (tests pass :class:`~twisted.internet.task.Clock`), with
the first call now or after one interval, and a body whose errors are logged
so one failure never stops the loop.  A listening port that cannot be bound
when the root starts ends the process with one line (:func:`cannot_listen`)
and status 1, not a traceback.

This module must never use the global reactor (every timer runs on the clock
it is given) and never let an exception of periodic work escape its timer.
"""

from __future__ import annotations

import errno
import inspect
import math
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

__all__ = ["PeriodicService", "PeriodicWork", "RootService", "cannot_listen"]

log = Logger()

#: What a :class:`PeriodicService` calls: a plain function (its result is
#: ignored), or one returning a Deferred or a coroutine (an ``async def``):
#: the next call waits for that to finish.
PeriodicWork = Callable[[], object]


class RootService(MultiService):
    """The streamsrv service tree, carrying the log observer for twistd."""

    def __init__(self, log_observer: ILogObserver | None = None) -> None:
        super().__init__()
        self.log_observer = log_observer

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Attach to *parent*; if it is twistd's application, give it our observer."""
        set_component = getattr(parent, "setComponent", None)
        if self.log_observer is not None and set_component is not None:
            set_component(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Start the children; a port that cannot be bound exits 1 with one line on stderr."""
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            error = e.socketError if isinstance(e.socketError, OSError) else None
            print(cannot_listen(e.interface, e.port, error), file=sys.stderr)
            raise SystemExit(1) from None


def cannot_listen(interface: str, port: int | str, error: OSError | None) -> str:
    """The one line that says a port cannot be bound: which address and port, and why.

    :param interface: the address bound (``""``: every IPv4 address).
    :param error: what ``bind()`` raised, if known.
    """
    host = interface or "0.0.0.0"  # noqa: S104 (naming what Twisted binds by default)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if error is None:
        reason = "it cannot be bound"
    elif error.errno == errno.EADDRINUSE:
        reason = "address already in use (another process listens there; choose another --listen port)"
    elif error.errno == errno.EACCES:
        reason = "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    elif error.errno == errno.EADDRNOTAVAIL:
        reason = "no such local address on this host"
    else:
        reason = (error.strerror or str(error)).lower()
    return f"streamsrv: cannot listen on {address}: {reason}"


class PeriodicService(TimerService):
    """
    Call *work* every *interval_s* seconds on *clock* while the service runs.

    A :class:`~twisted.application.internet.TimerService` (its ``clock`` set
    from the constructor, never the global reactor) that:

    - makes the first call when it starts (*now* true) or one interval later;
    - waits for a call that returns a Deferred or a coroutine before
      scheduling the next (a late call skips the intervals it missed, as
      :class:`~twisted.internet.task.LoopingCall` does);
    - logs (``log.failure``) an exception of *work*, or a failure of what it
      returned, and goes on calling it at the next interval;
    - on ``stopService`` cancels the next call and returns a Deferred that
      fires once a call in progress has finished.

    Use it as a child of a :class:`MultiService`, as a base class (a part
    that is only a loop), or held by a bigger service that starts and stops
    it itself (when the loop begins after something else, e.g. a database
    opening).
    """

    def __init__(
        self,
        interval_s: float,
        work: PeriodicWork,
        *,
        clock: IReactorTime,
        now: bool = True,
        name: str | None = None,
        what: str | None = None,
    ) -> None:
        """
        :param interval_s: Seconds between the starts of two calls (> 0).
        :param work: What to call.
        :param clock: Times the calls (the reactor; tests: ``task.Clock``).
        :param now: Make the first call at start (else one interval later).
        :param name: The service's name in its parent, if any.
        :param what: Names the work in the log (default: *name*).
        :raise ValueError: If *interval_s* is not a finite number > 0.
        """
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError("interval_s must be a number > 0")
        super().__init__(interval_s, self._run_once)
        self.clock = clock
        self.now = now
        self._work = work
        if name is not None:
            self.setName(name)
        self._what = what if what is not None else (name or "periodic work")
        self._loop: LoopingCall | None = None
        self._loopFinished: Deferred[Any] = succeed(None)

    @property
    def interval_s(self) -> float:
        """Seconds between two calls."""
        return float(self.step)

    def startService(self) -> None:
        """Start calling: now, or after one interval (TimerService always calls now)."""
        if self.running:
            return
        Service.startService(self)
        self._loop = LoopingCall(self._run_once)
        self._loop.clock = self.clock
        self._loopFinished = self._loop.start(self.step, now=self.now)
        self._loopFinished.addErrback(self._failed)

    def stopService(self) -> Deferred[None]:
        """Stop calling; the Deferred fires once a call in progress has finished."""
        if not self.running:
            return succeed(None)
        Service.stopService(self)
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        finished: Deferred[None] = Deferred()
        self._loopFinished.addBoth(lambda _: finished.callback(None))
        return finished

    def _run_once(self) -> Deferred[None] | None:
        try:
            result = self._work()
        except Exception:
            self._log_failure(Failure())
            return None
        if isinstance(result, Deferred):
            return result.addCallbacks(lambda _: None, self._log_failure)
        if inspect.iscoroutine(result):
            return Deferred.fromCoroutine(result).addCallbacks(lambda _: None, self._log_failure)
        return None

    def _log_failure(self, failure: Failure) -> None:
        log.failure(
            "{what} failed; it runs again in {interval_s} s", failure, what=self._what, interval_s=self.step
        )

    def _failed(self, failure: Failure) -> None:
        # Unreachable through _run_once (it never fails); kept so the timer logs like the rest.
        log.failure("{what}: the timer stopped", failure, what=self._what)
