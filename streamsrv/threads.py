# -*- test-case-name: tests.test_reactor_free -*-
"""Blocking calls off the reactor thread: the small threadpool seam parts are given.

A part that must write, fsync, rename or read whole files (the artifact
cache, artwork extraction) takes an :class:`IThreads` and calls
``threads.defer(f, *args)``, which runs ``f`` elsewhere and fires the
returned Deferred on the reactor thread with its result.
:class:`ReactorThreads` runs calls in a reactor's thread pool (the reactor is
passed in); :class:`InlineThreads` runs them at once on the calling thread,
for tests and command-line tools that have no reactor running.

This module must never use the global reactor, and never run a call given to
:class:`ReactorThreads` on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, execute
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

__all__ = ["IThreads", "InlineThreads", "ReactorThreads", "threads_for"]

T = TypeVar("T")


class IThreads(Interface):
    """Somewhere to run blocking calls, with results back as Deferreds."""

    def defer(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:  # noqa: N805
        """
        Run ``f(*args, **kwargs)``; the Deferred fires (on the reactor thread,
        when there is one) with its result, or fails with its exception.
        """


@implementer(IThreads)
class ReactorThreads:
    """Blocking calls in a thread pool of *reactor* (its own by default), results back on the reactor."""

    def __init__(self, reactor: Any, pool: ThreadPool | None = None) -> None:
        """
        :param reactor: Provides ``IReactorFromThreads`` (and, without
            *pool*, ``IReactorThreads.getThreadPool``).
        :param pool: The pool to run in (default: the reactor's, created and
            stopped by the reactor).
        """
        if not IReactorFromThreads.providedBy(reactor):
            raise TypeError("ReactorThreads needs a reactor that runs threads, not a test clock")
        self._reactor: Any = reactor
        self._pool = pool

    def defer(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        pool = self._pool if self._pool is not None else self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, f, *args, **kwargs)


@implementer(IThreads)
class InlineThreads:
    """Runs each call at once on the calling thread: for tests and tools without a running reactor."""

    def defer(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return execute(f, *args, **kwargs)


def threads_for(reactor: Any) -> IThreads:
    """:class:`ReactorThreads` on *reactor* if it runs threads; else (a test's memory reactor) inline."""
    return ReactorThreads(reactor) if IReactorFromThreads.providedBy(reactor) else InlineThreads()
