"""Tests for :mod:`streamsrv.notifications.quiet`: quiet-hour windows across midnight and DST."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.notifications.quiet import QuietHours, is_quiet, local_wall_time, quiet_until

ZONES = ("Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "UTC")


def at(zone: str, *fields: int, fold: int = 0) -> float:
    """Unix seconds of local wall time *fields* (year, month, day, hour, minute) in *zone*."""
    return datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


def window(start: str, end: str, zone: str) -> QuietHours:
    """A window from ``HH:MM`` strings."""
    return QuietHours(time.fromisoformat(start), time.fromisoformat(end), zone)


def transitions(zone: str, first_year: int = 2024, last_year: int = 2027) -> list[float]:
    """The instants *zone*'s UTC offset changes between the years, found by bisection over hours."""
    tz = ZoneInfo(zone)
    found: list[float] = []
    t = datetime(first_year, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    stop = datetime(last_year + 1, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()

    def offset(s: float) -> timedelta | None:
        return datetime.fromtimestamp(s, tz).utcoffset()

    while t < stop:
        if offset(t) != offset(t + 3600):
            low, high = int(t), int(t + 3600)
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(float(high))
        t += 3600
    return found


TRANSITIONS = {zone: transitions(zone) for zone in ZONES}
#: Quiet windows bounds near the hours when clocks change (00:00–04:00), and anywhere.
minutes = st.one_of(
    st.integers(0, 24 * 60 - 1), st.integers(0, 4 * 60), st.sampled_from([0, 90, 120, 150, 165, 180, 225])
)


def hhmm(minute: int) -> time:
    """A :class:`time` from minutes after midnight."""
    return time(minute // 60, minute % 60)


@st.composite
def cases(draw: st.DrawFn) -> tuple[QuietHours, float]:
    """A window in one of :data:`ZONES` and an instant within two days of one of its DST changes."""
    zone = draw(st.sampled_from(ZONES))
    quiet = QuietHours(hhmm(draw(minutes)), hhmm(draw(minutes)), zone)
    around = draw(st.sampled_from(TRANSITIONS[zone] or [1_767_225_600.0]))
    offset = draw(st.one_of(st.integers(-2 * 86400, 2 * 86400), st.integers(-7200, 7200)))
    return quiet, around + offset + draw(st.sampled_from([0.0, 0.5]))


class QuietWindowTests(unittest.TestCase):
    """Which instants are quiet."""

    def test_same_day_window(self) -> None:
        """A window within one day is quiet from start (included) to end (excluded)."""
        w = window("13:00", "14:30", "Europe/Paris")
        self.assertFalse(is_quiet(w, at("Europe/Paris", 2026, 6, 1, 12, 59)))
        self.assertTrue(is_quiet(w, at("Europe/Paris", 2026, 6, 1, 13, 0)))
        self.assertTrue(is_quiet(w, at("Europe/Paris", 2026, 6, 1, 14, 29)))
        self.assertFalse(is_quiet(w, at("Europe/Paris", 2026, 6, 1, 14, 30)))

    def test_across_midnight(self) -> None:
        """22:00–07:30 is quiet late in the evening and early in the morning, not at noon."""
        w = window("22:00", "07:30", "Europe/Paris")
        self.assertTrue(is_quiet(w, at("Europe/Paris", 2026, 6, 1, 23, 15)))
        self.assertTrue(is_quiet(w, at("Europe/Paris", 2026, 6, 2, 3, 0)))
        self.assertFalse(is_quiet(w, at("Europe/Paris", 2026, 6, 2, 7, 30)))
        self.assertFalse(is_quiet(w, at("Europe/Paris", 2026, 6, 2, 12, 0)))

    def test_start_equal_end_is_no_window(self) -> None:
        """start == end means no quiet hours at all, at any time."""
        w = window("08:00", "08:00", "UTC")
        self.assertTrue(w.empty)
        for hour in range(24):
            instant = at("UTC", 2026, 6, 1, hour, 0)
            self.assertFalse(is_quiet(w, instant))
            self.assertIsNone(quiet_until(w, instant))

    def test_uses_the_zone(self) -> None:
        """The same instant is quiet in one zone and not in another."""
        instant = at("UTC", 2026, 6, 1, 23, 0)  # 01:00 in Paris, 19:00 in New York
        self.assertTrue(is_quiet(window("00:00", "06:00", "Europe/Paris"), instant))
        self.assertFalse(is_quiet(window("00:00", "06:00", "America/New_York"), instant))

    def test_local_wall_time(self) -> None:
        """local_wall_time gives the naive local reading."""
        self.assertEqual(
            local_wall_time(at("UTC", 2026, 1, 1, 0, 0), ZoneInfo("Pacific/Chatham")),
            datetime(2026, 1, 1, 13, 45),
        )


class QuietUntilTests(unittest.TestCase):
    """When the window ends, including on DST days."""

    def test_not_quiet_is_none(self) -> None:
        """Outside the window nothing waits."""
        self.assertIsNone(quiet_until(window("22:00", "07:30", "UTC"), at("UTC", 2026, 6, 1, 12, 0)))

    def test_evening_defers_to_next_morning(self) -> None:
        """At 23:00 the 22:00–07:30 window ends at 07:30 the next day."""
        w = window("22:00", "07:30", "Europe/Paris")
        self.assertEqual(
            quiet_until(w, at("Europe/Paris", 2026, 6, 1, 23, 0)), at("Europe/Paris", 2026, 6, 2, 7, 30)
        )

    def test_early_morning_defers_to_same_morning(self) -> None:
        """At 03:00 the 22:00–07:30 window ends at 07:30 the same day."""
        w = window("22:00", "07:30", "Europe/Paris")
        self.assertEqual(
            quiet_until(w, at("Europe/Paris", 2026, 6, 2, 3, 0)), at("Europe/Paris", 2026, 6, 2, 7, 30)
        )

    def test_end_in_spring_gap(self) -> None:
        """Paris skips 02:00–03:00 on 2026-03-29: a window ending at 02:30 ends at the jump (03:00 CEST)."""
        w = window("01:00", "02:30", "Europe/Paris")
        end = quiet_until(w, at("Europe/Paris", 2026, 3, 29, 1, 15))
        self.assertEqual(end, at("UTC", 2026, 3, 29, 1, 0))
        assert end is not None
        self.assertEqual(local_wall_time(end, ZoneInfo("Europe/Paris")), datetime(2026, 3, 29, 3, 0))

    def test_end_in_autumn_fold(self) -> None:
        """Paris reads 02:00–03:00 twice on 2026-10-25: a window ending at 02:30 ends at the first 02:30."""
        w = window("01:00", "02:30", "Europe/Paris")
        self.assertEqual(
            quiet_until(w, at("Europe/Paris", 2026, 10, 25, 1, 30)), at("UTC", 2026, 10, 25, 0, 30)
        )

    def test_second_pass_of_fold_is_quiet_again(self) -> None:
        """The repeated 02:10 is quiet again and waits for the second 02:30 (wall-clock rule)."""
        w = window("01:00", "02:30", "Europe/Paris")
        second = at("Europe/Paris", 2026, 10, 25, 2, 10, fold=1)
        self.assertTrue(is_quiet(w, second))
        self.assertEqual(quiet_until(w, second), at("UTC", 2026, 10, 25, 1, 30))

    def test_lord_howe_half_hour_shift(self) -> None:
        """Lord Howe jumps 02:00 -> 02:30 on 2026-10-04: a window ending at 02:15 ends at the jump."""
        w = window("22:00", "02:15", "Australia/Lord_Howe")
        end = quiet_until(w, at("Australia/Lord_Howe", 2026, 10, 3, 23, 0))
        assert end is not None
        self.assertEqual(local_wall_time(end, ZoneInfo("Australia/Lord_Howe")), datetime(2026, 10, 4, 2, 30))

    def test_chatham_spring_gap(self) -> None:
        """Chatham jumps 02:45 -> 03:45 on 2026-09-27: an end at 03:00 lands on the jump."""
        w = window("23:00", "03:00", "Pacific/Chatham")
        end = quiet_until(w, at("Pacific/Chatham", 2026, 9, 27, 1, 0))
        assert end is not None
        self.assertEqual(local_wall_time(end, ZoneInfo("Pacific/Chatham")), datetime(2026, 9, 27, 3, 45))

    def test_new_york_long_night(self) -> None:
        """New York falls back on 2026-11-01: 22:00–07:30 lasts 10.5 hours that night."""
        w = window("22:00", "07:30", "America/New_York")
        start = at("America/New_York", 2026, 10, 31, 22, 0)
        self.assertEqual(quiet_until(w, start), start + 10.5 * 3600)

    @settings(derandomize=True, deadline=None, max_examples=600)
    @given(cases())
    def test_deferred_instant_properties(self, case: tuple[QuietHours, float]) -> None:
        """
        The end is after the instant, never quiet, and the second before it is quiet; it is at
        most 25 h later unless the clocks jumped over the whole non-quiet part of a day.
        """
        w, instant = case
        end = quiet_until(w, instant)
        if end is None:
            self.assertFalse(is_quiet(w, instant))
            return
        self.assertTrue(is_quiet(w, instant))
        self.assertGreater(end, instant)
        self.assertFalse(is_quiet(w, end))
        awake_minutes = (w.start.hour * 60 + w.start.minute - w.end.hour * 60 - w.end.minute) % 1440
        self.assertLessEqual(end - instant, (25 if awake_minutes > 60 else 49) * 3600)
        self.assertTrue(is_quiet(w, max(instant, end - 1)))

    def test_gap_swallowing_the_awake_part_waits_for_the_next_end(self) -> None:
        """02:15–02:00 in Paris on 2024-03-31 (02:00–03:00 skipped) is never left that day."""
        w = window("02:15", "02:00", "Europe/Paris")
        end = quiet_until(w, at("Europe/Paris", 2024, 3, 30, 2, 15))
        self.assertEqual(end, at("Europe/Paris", 2024, 4, 1, 2, 0))

    @settings(derandomize=True, deadline=None, max_examples=200)
    @given(cases())
    def test_quiet_until_is_idempotent_over_the_window(self, case: tuple[QuietHours, float]) -> None:
        """Asking again from any quiet instant before the end gives the same end."""
        w, instant = case
        end = quiet_until(w, instant)
        if end is None:
            return
        middle = instant + (end - instant) / 2
        if is_quiet(w, middle):
            self.assertEqual(quiet_until(w, middle), end)
