# -*- test-case-name: tests.test_ws -*-
"""Autobahn's timer interface on an injected clock, for the ``/ws`` factory.

Autobahn schedules its handshake, close and keepalive timers through
``factory._batched_timer.call_later``, by default on txaio's global loop;
:class:`ClockTimer` runs them on the clock the factory is given (the reactor,
or a test's ``Clock``).  This module must never import the global reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ClockTimer"]


class _TimerCall:
    """A delayed call whose cancel() is harmless once it has run (autobahn cancels freely)."""

    __slots__ = ("_call",)

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class ClockTimer:
    """Autobahn's timer interface (``call_later``) on an injected clock instead of the global reactor."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> _TimerCall:
        return _TimerCall(self._clock.callLater(delay, func, *args, **kwargs))
