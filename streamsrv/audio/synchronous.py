"""Synchronous stand-ins for a thread pool and the reactor's ``callFromThread``.

With :class:`SynchronousThreadPool` and :class:`ImmediateReactor` a component
that does its blocking work in an injected pool (the catalog) runs every call
at once, in the caller's thread, and every Deferred it returns has fired when
the call returns.  For tests, benchmarks and ``streamsrv scan``, which runs
without a reactor.  The daemon must never use them: they would put disk and
SQLite work on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

__all__ = ["ImmediateReactor", "SynchronousThreadPool"]


class SynchronousThreadPool:
    """A stand-in thread pool that runs each call at once, in the caller's thread.

    For tests and for ``streamsrv scan``, which must not run a reactor.
    """

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], None],  # noqa: N803 - ThreadPool's name
        func: Callable[..., object],
        *args: Any,
        **kw: Any,
    ) -> None:
        """Run ``func`` now and report like :class:`~twisted.python.threadpool.ThreadPool`."""
        try:
            result: object = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class ImmediateReactor:
    """A stand-in for the reactor's ``callFromThread`` that calls at once.

    With :class:`SynchronousThreadPool` every Deferred of the catalog has
    fired when the method returns.
    """

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        """Call ``f`` now."""
        f(*args, **kw)
