"""A second SIGTERM or SIGINT while the daemon stops (``streamsrv.startup.stop_once_on_signals``).

The end-to-end case (a real daemon draining a download) is in
``tests/test_daemon.py``; here, the wrapping itself against a stand-in
:mod:`signal` module and a reactor that only records its triggers.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from streamsrv.startup import stop_once_on_signals


class _Signals:
    """The part of :mod:`signal` that ``stop_once_on_signals`` uses, with handlers in a dict."""

    SIGTERM = signal.SIGTERM
    SIGINT = signal.SIGINT
    SIGUSR1 = signal.SIGUSR1

    def __init__(self, handlers: dict[int, Any]) -> None:
        self.handlers = handlers

    def getsignal(self, signalnum: int) -> Any:
        return self.handlers.get(signalnum, signal.SIG_DFL)

    def signal(self, signalnum: int, handler: Any) -> Any:
        previous, self.handlers[signalnum] = self.getsignal(signalnum), handler
        return previous


class StopOnceTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.calls: list[tuple[str, int]] = []
        self.signals = _Signals(
            {
                signal.SIGTERM: lambda n, f: self.calls.append(("term", n)),
                signal.SIGINT: lambda n, f: self.calls.append(("int", n)),
            }
        )
        stop_once_on_signals(self.reactor, self.signals)

    def test_first_signal_goes_to_the_reactor(self) -> None:
        """Before the stop begins, each signal reaches the reactor's own handler."""
        self.signals.handlers[signal.SIGTERM](signal.SIGTERM, None)
        self.signals.handlers[signal.SIGINT](signal.SIGINT, None)
        self.assertEqual(self.calls, [("term", signal.SIGTERM), ("int", signal.SIGINT)])

    def test_signal_while_stopping_is_only_logged(self) -> None:
        """Once shutdown has begun (whatever began it), a signal is logged, not passed on."""
        triggers = self.reactor.triggers["before"]["shutdown"]
        for trigger, args, kwargs in triggers:
            trigger(*args, **kwargs)
        self.signals.handlers[signal.SIGTERM](signal.SIGTERM, None)
        self.signals.handlers[signal.SIGINT](signal.SIGINT, None)
        self.assertEqual(self.calls, [])

    def test_default_handlers_are_left(self) -> None:
        """A signal with no Python handler (``SIG_DFL``, ``SIG_IGN``) is not wrapped."""
        signals = _Signals({signal.SIGINT: signal.SIG_IGN})
        stop_once_on_signals(MemoryReactor(), signals)
        self.assertEqual(signals.handlers, {signal.SIGINT: signal.SIG_IGN})
