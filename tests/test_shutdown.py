# -*- test-case-name: tests.test_shutdown -*-
"""StreamTracker: open-stream counting and the graceful drain on stop."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.health.metrics import Metrics
from streamsrv.streaming.tracker import StreamTracker

GRACE_S = 10.0


class FakeSender:
    """A stream that records being cut (and can be told to fail at it)."""

    def __init__(self, fail: bool = False) -> None:
        self.aborted = 0
        self._fail = fail

    def abort(self) -> None:
        self.aborted += 1
        if self._fail:
            raise RuntimeError("socket already gone")


class SelfRemovingSender(FakeSender):
    """A stream whose abort reports its end at once, as a real connection loss does."""

    def __init__(self, tracker: StreamTracker) -> None:
        super().__init__()
        self._tracker = tracker

    def abort(self) -> None:
        super().abort()
        self._tracker.remove(self)


class StreamTrackerTests(unittest.SynchronousTestCase):
    """The tracker counts streams and drains them within the grace period."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics(process=False)
        self.tracker = StreamTracker(self.clock, GRACE_S, self.metrics)
        self.tracker.startService()

    def gauge(self) -> float | None:
        """The current value of ``streamsrv_streams_active``."""
        return self.metrics.registry.get_sample_value("streamsrv_streams_active")

    def test_accepting_while_running(self) -> None:
        """A started tracker admits streams."""
        self.assertTrue(self.tracker.accepting)
        self.assertTrue(self.tracker.running)

    def test_stop_without_streams_fires_at_once(self) -> None:
        """With nothing open, stopService's Deferred has already fired; nothing is scheduled."""
        d = self.tracker.stopService()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.tracker.accepting)
        self.assertFalse(self.tracker.running)

    def test_stop_waits_for_open_streams(self) -> None:
        """With streams open, the stop waits (not cutting) until just before the grace ends."""
        a, b = FakeSender(), FakeSender()
        self.tracker.add(a)
        self.tracker.add(b)
        d = self.tracker.stopService()
        self.assertNoResult(d)
        self.assertFalse(self.tracker.accepting)
        self.clock.advance(GRACE_S - 0.001)
        self.assertNoResult(d)
        self.assertEqual((a.aborted, b.aborted), (0, 0))
        self.assertEqual(self.tracker.open_count, 2)

    def test_last_remove_fires_before_grace(self) -> None:
        """Removing the last open stream fires the drain at once and cancels the deadline."""
        a, b = FakeSender(), FakeSender()
        self.tracker.add(a)
        self.tracker.add(b)
        d = self.tracker.stopService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1)
        self.tracker.remove(a)
        self.assertNoResult(d)
        self.tracker.remove(b)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(GRACE_S)
        self.assertEqual((a.aborted, b.aborted), (0, 0))

    def test_grace_over_cuts_the_rest(self) -> None:
        """When the grace period ends, every remaining sender is aborted and the drain fires."""
        a, b, c = FakeSender(), FakeSender(), FakeSender()
        for sender in (a, b, c):
            self.tracker.add(sender)
        d = self.tracker.stopService()
        self.clock.advance(2)
        self.tracker.remove(a)
        self.clock.advance(GRACE_S - 2)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual((a.aborted, b.aborted, c.aborted), (0, 1, 1))
        self.assertEqual(self.tracker.open_count, 0)
        self.assertEqual(self.gauge(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abort_that_removes_itself(self) -> None:
        """Senders whose abort() calls remove() re-entrantly are all cut; the drain fires once."""
        senders = [SelfRemovingSender(self.tracker) for _ in range(3)]
        for sender in senders:
            self.tracker.add(sender)
        d = self.tracker.stopService()
        self.clock.advance(GRACE_S)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([s.aborted for s in senders], [1, 1, 1])
        self.assertEqual(self.tracker.open_count, 0)
        self.assertEqual(self.gauge(), 0)

    def test_remove_after_cut_is_harmless(self) -> None:
        """A sender that reports its end after being cut changes nothing."""
        a = FakeSender()
        self.tracker.add(a)
        d = self.tracker.stopService()
        self.clock.advance(GRACE_S)
        self.successResultOf(d)
        self.tracker.remove(a)
        self.assertEqual(self.tracker.open_count, 0)
        self.assertEqual(a.aborted, 1)

    def test_failing_abort_does_not_stop_the_others(self) -> None:
        """An abort() that raises is logged; the other senders are still cut and the drain fires."""
        senders = [FakeSender(), FakeSender(fail=True), FakeSender()]
        for sender in senders:
            self.tracker.add(sender)
        d = self.tracker.stopService()
        self.clock.advance(GRACE_S)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual([s.aborted for s in senders], [1, 1, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.tracker.open_count, 0)

    def test_gauge_follows_counts(self) -> None:
        """``streamsrv_streams_active`` tracks adds and removes."""
        self.assertEqual(self.gauge(), 0)
        a, b = FakeSender(), FakeSender()
        self.tracker.add(a)
        self.assertEqual(self.gauge(), 1)
        self.tracker.add(b)
        self.assertEqual(self.gauge(), 2)
        self.assertEqual(self.tracker.open_count, 2)
        self.tracker.remove(a)
        self.assertEqual(self.gauge(), 1)
        self.tracker.remove(a)
        self.assertEqual(self.gauge(), 1)
        self.tracker.remove(b)
        self.assertEqual(self.gauge(), 0)
        self.assertEqual(self.tracker.open_count, 0)

    def test_restart_accepts_again(self) -> None:
        """A stopped tracker that is started again admits streams again."""
        self.successResultOf(self.tracker.stopService())
        self.assertFalse(self.tracker.accepting)
        self.tracker.startService()
        self.assertTrue(self.tracker.accepting)

    def test_stop_through_parent(self) -> None:
        """Stopping the parent MultiService waits for the tracker's drain."""
        from twisted.application.service import MultiService

        parent = MultiService()
        tracker = StreamTracker(self.clock, GRACE_S, self.metrics)
        tracker.setServiceParent(parent)
        parent.startService()
        sender = FakeSender()
        tracker.add(sender)
        d = parent.stopService()
        self.assertNoResult(d)
        tracker.remove(sender)
        self.successResultOf(d)
