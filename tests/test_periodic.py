# -*- test-case-name: tests.test_periodic -*-
"""PeriodicService: the one timer base of the daemon's periodic work, driven by task.Clock."""

from __future__ import annotations

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.service import PeriodicService


class PeriodicServiceTests(unittest.SynchronousTestCase):
    """Calls on the injected clock, first call now or later, errors logged, clean stop."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[float] = []

    def work(self) -> None:
        self.calls.append(self.clock.seconds())

    def test_is_a_timer_service(self) -> None:
        """It is Twisted's TimerService, its clock the one given (never the global reactor)."""
        service = PeriodicService(5.0, self.work, clock=self.clock, name="tick")
        self.assertIsInstance(service, TimerService)
        self.assertIs(service.clock, self.clock)
        self.assertEqual(service.name, "tick")
        self.assertEqual(service.interval_s, 5.0)

    def test_first_call_now(self) -> None:
        """With now=True the first call happens at start, then every interval."""
        service = PeriodicService(5.0, self.work, clock=self.clock)
        service.startService()
        self.clock.pump([5.0, 5.0])
        self.assertEqual(self.calls, [0.0, 5.0, 10.0])

    def test_first_call_after_one_interval(self) -> None:
        """With now=False nothing happens at start; the first call comes one interval later."""
        service = PeriodicService(5.0, self.work, clock=self.clock, now=False)
        service.startService()
        self.assertEqual(self.calls, [])
        self.clock.pump([5.0, 5.0])
        self.assertEqual(self.calls, [5.0, 10.0])

    def test_exception_is_logged_and_the_loop_goes_on(self) -> None:
        """An exception of the work is logged with log.failure and the next interval calls again."""
        seen: list[float] = []

        def flaky() -> None:
            seen.append(self.clock.seconds())
            raise RuntimeError("boom")

        service = PeriodicService(1.0, flaky, clock=self.clock, what="flaky work")
        service.startService()
        self.clock.pump([1.0, 1.0])
        self.assertEqual(seen, [0.0, 1.0, 2.0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_failed_deferred_is_logged_and_the_loop_goes_on(self) -> None:
        """A Deferred that fails is logged; the loop keeps calling."""
        seen: list[float] = []

        def flaky() -> Deferred[None]:
            seen.append(self.clock.seconds())
            return fail(ValueError("bad"))

        service = PeriodicService(1.0, flaky, clock=self.clock)
        service.startService()
        self.clock.pump([1.0])
        self.assertEqual(seen, [0.0, 1.0])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_coroutine_work(self) -> None:
        """An async def is run as a coroutine; its exception is logged, not raised."""
        seen: list[float] = []

        async def work() -> None:
            seen.append(self.clock.seconds())
            if len(seen) == 1:
                raise KeyError("first")

        service = PeriodicService(2.0, work, clock=self.clock)
        service.startService()
        self.clock.advance(2.0)
        self.assertEqual(seen, [0.0, 2.0])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_waits_for_a_call_in_progress(self) -> None:
        """A call returning an unfired Deferred delays the next until it fires."""
        pending: list[Deferred[None]] = []

        def slow() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

        service = PeriodicService(1.0, slow, clock=self.clock)
        service.startService()
        self.clock.pump([1.0, 1.0])
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        self.clock.advance(1.0)
        self.assertEqual(len(pending), 2)

    def test_stop_cancels_the_next_call(self) -> None:
        """After stopService nothing is scheduled on the clock and the Deferred has fired."""
        service = PeriodicService(1.0, self.work, clock=self.clock)
        service.startService()
        done = service.stopService()
        self.assertEqual(self.successResultOf(done), None)
        self.assertFalse(service.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10.0)
        self.assertEqual(self.calls, [0.0])

    def test_stop_waits_for_the_call_in_progress(self) -> None:
        """stopService's Deferred fires only once the call in progress has finished."""
        pending: Deferred[None] = Deferred()
        service = PeriodicService(1.0, lambda: pending, clock=self.clock)
        service.startService()
        done = service.stopService()
        self.assertNoResult(done)
        pending.callback(None)
        self.successResultOf(done)

    def test_stop_when_not_running(self) -> None:
        """Stopping a service that never started is harmless."""
        service = PeriodicService(1.0, self.work, clock=self.clock)
        self.successResultOf(service.stopService())

    def test_restart(self) -> None:
        """A stopped service started again calls again, on the same grid rules."""
        service = PeriodicService(1.0, lambda: succeed(self.work()), clock=self.clock)
        service.startService()
        service.stopService()
        self.clock.advance(0.5)
        service.startService()
        self.clock.advance(1.0)
        self.assertEqual(self.calls, [0.0, 0.5, 1.5])

    def test_start_twice_is_one_loop(self) -> None:
        """A second startService while running does not start a second loop."""
        service = PeriodicService(1.0, self.work, clock=self.clock, now=False)
        service.startService()
        service.startService()
        self.clock.advance(1.0)
        self.assertEqual(self.calls, [1.0])

    def test_child_of_a_multiservice(self) -> None:
        """As a child it starts and stops with its parent."""
        parent = MultiService()
        PeriodicService(1.0, self.work, clock=self.clock, name="child").setServiceParent(parent)
        parent.startService()
        self.clock.advance(1.0)
        self.successResultOf(parent.stopService())
        self.clock.advance(5.0)
        self.assertEqual(self.calls, [0.0, 1.0])

    def test_bad_interval(self) -> None:
        """A zero, negative or infinite interval is refused at construction."""
        for interval in (0.0, -1.0, float("inf"), float("nan")):
            self.assertRaises(ValueError, PeriodicService, interval, self.work, clock=self.clock)
