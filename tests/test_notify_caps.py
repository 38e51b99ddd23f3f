"""Tests for :mod:`streamsrv.notifications.caps`: sliding-hour and sliding-day frequency caps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.notifications.caps import DAY_S, DEFAULT_CAPS, HOUR_S, Caps, check_caps, parse_caps_setting

NOW = 1_767_225_600.0


class CheckCapsTests(unittest.TestCase):
    """One more send allowed or not."""

    def test_nothing_sent_is_allowed(self) -> None:
        """With no earlier sends, one is allowed."""
        decision = check_caps(Caps(4, 12), [], NOW)
        self.assertTrue(decision.allowed)
        self.assertIsNone(decision.exceeded)
        self.assertEqual((decision.sent_last_hour, decision.sent_last_day), (0, 0))

    def test_hour_cap(self) -> None:
        """Four sends in the last hour refuse a fifth under 4/12, naming the hourly cap."""
        decision = check_caps(Caps(4, 12), [NOW - 10 * i for i in range(4)], NOW)
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.exceeded, "per_hour")

    def test_hour_slides(self) -> None:
        """A send exactly an hour old no longer counts in the hour (but does in the day)."""
        sends = [NOW - HOUR_S, NOW - 10, NOW - 20, NOW - 30]
        decision = check_caps(Caps(4, 12), sends, NOW)
        self.assertTrue(decision.allowed)
        self.assertEqual((decision.sent_last_hour, decision.sent_last_day), (3, 4))

    def test_day_cap(self) -> None:
        """Twelve sends spread over the day refuse a thirteenth, naming the daily cap."""
        sends = [NOW - 2 * HOUR_S * (i + 1) for i in range(11)] + [NOW - 5]
        decision = check_caps(Caps(4, 12), sends, NOW)
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.exceeded, "per_day")

    def test_old_sends_ignored(self) -> None:
        """Sends a day old or more are ignored."""
        self.assertTrue(check_caps(Caps(1, 1), [NOW - DAY_S, NOW - 2 * DAY_S], NOW).allowed)

    def test_future_stamps_count(self) -> None:
        """A send stamped after now (a clock ahead) counts."""
        self.assertFalse(check_caps(Caps(1, 5), [NOW + 30], NOW).allowed)

    def test_zero_refuses_all(self) -> None:
        """A cap of 0 lets nothing through."""
        self.assertFalse(check_caps(Caps(0, None), [], NOW).allowed)

    def test_none_is_unlimited(self) -> None:
        """None caps nothing."""
        self.assertTrue(check_caps(Caps(None, None), [NOW] * 1000, NOW).allowed)

    @settings(derandomize=True, deadline=None)
    @given(
        st.integers(0, 10),
        st.integers(0, 30),
        st.lists(st.floats(-2 * DAY_S, 10, allow_nan=False), max_size=40),
    )
    def test_allowed_matches_counts(self, per_hour: int, per_day: int, offsets: list[float]) -> None:
        """Allowed exactly when both windows' counts (stamp > now - window) are under their caps."""
        sends = [NOW + o for o in offsets]
        decision = check_caps(Caps(per_hour, per_day), sends, NOW)
        hour = sum(1 for s in sends if s > NOW - HOUR_S)
        day = sum(1 for s in sends if s > NOW - DAY_S)
        self.assertEqual((decision.sent_last_hour, decision.sent_last_day), (hour, day))
        self.assertEqual(decision.allowed, hour < per_hour and day < per_day)

    @settings(derandomize=True, deadline=None)
    @given(st.integers(1, 6), st.lists(st.floats(0, 3 * DAY_S, allow_nan=False), max_size=60))
    def test_greedy_sender_never_exceeds(self, per_hour: int, attempts: list[float]) -> None:
        """A sender that sends whenever allowed never has more than the cap in any sliding hour."""
        sent: list[float] = []
        for t in sorted(attempts):
            if check_caps(Caps(per_hour, None), sent, NOW + t).allowed:
                sent.append(NOW + t)
        for s in sent:
            self.assertLessEqual(sum(1 for o in sent if s - HOUR_S < o <= s), per_hour)


class ParseCapsSettingTests(unittest.TestCase):
    """``STREAMSRV_NOTIFY_DEFAULT_CAPS``."""

    def test_default(self) -> None:
        """``4/12`` is the documented default."""
        self.assertEqual(parse_caps_setting("4/12"), DEFAULT_CAPS)
        self.assertEqual(parse_caps_setting(" 0 / 3 "), Caps(0, 3))

    def test_refused(self) -> None:
        """Anything but two whole numbers >= 0 is refused."""
        for value in ("", "4", "4/", "-1/3", "4/12/1", "a/b", "1.5/3"):
            with self.assertRaises(ValueError, msg=value):
                parse_caps_setting(value)

    def test_to_json(self) -> None:
        """Caps render as the document's ``caps`` object."""
        self.assertEqual(Caps(4, None).to_json(), {"per_hour": 4, "per_day": None})
