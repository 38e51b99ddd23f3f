# -*- test-case-name: tests.test_notify_quiet -*-
"""Quiet hours: whether an instant falls in a user's daily window, and when that window ends.

Pure wall-clock maths over :mod:`zoneinfo`, with no clock and no I/O: the
sender asks :func:`quiet_until` whether an email, SMS or push must wait, and
defers the delivery to the instant it answers.  This module must never read
the current time, the environment or the disk (beyond ``zoneinfo``'s
database), and never answer an end that is before the instant asked about or
inside the window.

The rules, in local wall time of the window's zone:

- The window is half-open, ``[start, end)``: ``start`` is quiet, ``end`` is
  not.  ``start > end`` spans midnight (``22:00``–``07:30``).
  ``start == end`` means *no* quiet hours (not "quiet all day").
- Whether an instant is quiet depends only on its local wall time.  So when
  clocks go back, wall times in the window that occur twice are quiet both
  times; a window may thus start again after it ended.
- The window ends at the first instant, after the instant asked about, whose
  local wall time is no longer in the window: normally the instant that
  reads ``end``.  If ``end`` does not exist that day (clocks jump over it),
  the window ends at the jump (the first instant reading later than
  ``end``).  If ``end`` exists twice (clocks go back over it), the window ends
  at its first occurrence after the instant.
- The answer is never inside a window, even when that costs a day: if clocks
  jump over the *whole* non-quiet part of a day (a window such as
  ``02:15``–``02:00`` on a day Paris skips 02:00–03:00), the jump lands
  inside the next window and the delivery waits for that one's end.  So
  the wait is at most 24 hours plus the DST shift whenever the non-quiet
  part of the day is longer than the shift (an hour at most in practice).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["QuietHours", "is_quiet", "local_wall_time", "quiet_until"]

#: A window is re-examined at most this many times when its end lands in
#: another window (possible only when a zone skips a whole day, e.g.
#: Pacific/Apia in December 2011).
_MAX_HOPS: Final = 4


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True)
class QuietHours:
    """
    A daily quiet window in a time zone.

    :ivar start: Local wall time the window starts (whole minutes).
    :ivar end: Local wall time it ends (exclusive).
    :ivar time_zone: An IANA zone name, e.g. ``Europe/Paris`` (already
        validated: :mod:`.preferences` refuses unknown ones).
    """

    start: time
    end: time
    time_zone: str

    @property
    def zone(self) -> ZoneInfo:
        """The :class:`~zoneinfo.ZoneInfo` of :attr:`time_zone`."""
        return _zone(self.time_zone)

    @property
    def empty(self) -> bool:
        """``start == end``: no quiet hours at all."""
        return self.start == self.end

    def contains(self, wall: time) -> bool:
        """Whether local wall time *wall* is in the window."""
        if self.empty:
            return False
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end


def local_wall_time(instant: float, zone: ZoneInfo) -> datetime:
    """The naive local date and time *zone* reads at *instant* (Unix seconds)."""
    return datetime.fromtimestamp(instant, zone).replace(tzinfo=None)


def is_quiet(window: QuietHours, instant: float) -> bool:
    """Whether *instant* (Unix seconds) is inside *window*."""
    if window.empty:
        return False
    return window.contains(local_wall_time(instant, window.zone).time())


def quiet_until(window: QuietHours, instant: float) -> float | None:
    """
    When the quiet window around *instant* ends: the ``not_before`` to defer to.

    :param window: The user's quiet hours.
    :param instant: Unix seconds (UTC).
    :return: ``None`` when *instant* is not quiet (send now); else the first
        instant after it that is not quiet (see the module's rules), always
        later than *instant* and at most about a day (plus a DST shift) later.
    """
    if not is_quiet(window, instant):
        return None
    zone = window.zone
    current = instant
    for _ in range(_MAX_HOPS):
        wall = local_wall_time(current, zone)
        end_date: date = wall.date()
        if window.start > window.end and wall.time() >= window.start:
            end_date += timedelta(days=1)
        current = _first_instant_reading(datetime.combine(end_date, window.end), zone, after=current)
        if not is_quiet(window, current):
            return current
    return current


def _first_instant_reading(wall: datetime, zone: ZoneInfo, after: float) -> float:
    """
    The first instant later than *after* at which *zone*'s clock reads *wall* or later.

    *wall* may exist once, twice (clocks went back: the first occurrence
    after *after* wins) or not at all (clocks jumped over it: the jump).
    """
    candidates: list[float] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).timestamp()
        if local_wall_time(instant, zone) == wall:
            candidates.append(instant)
    later = sorted(c for c in set(candidates) if c > after)
    if later:
        return later[0]
    if candidates:  # exists, but only before *after*: cannot happen for a quiet instant
        return max(candidates)
    # A gap.  fold=1 reads the wall time with the offset after the jump (an
    # instant before the jump), fold=0 with the one before (after the jump):
    # the jump is the first whole second between them reading *wall* or later.
    a = wall.replace(tzinfo=zone, fold=0).timestamp()
    b = wall.replace(tzinfo=zone, fold=1).timestamp()
    low, high = math.floor(min(a, b)), math.ceil(max(a, b))
    while high - low > 1:
        middle = (low + high) // 2
        if local_wall_time(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return float(high)
