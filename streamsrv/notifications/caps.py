# -*- test-case-name: tests.test_notify_caps -*-
"""Frequency caps: may one more notification go to a user on a channel, given the earlier sends?

A pure decision over a sliding hour and a sliding day, from the send times
the outbox keeps (:meth:`.outbox.IOutbox.recent_sends`).  It knows nothing of
priority: an ``urgent`` notification bypasses caps because the sender does
not ask (urgent sends still count towards later decisions, since they were
sent).  This module must never read a clock, a database or the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DAY_S",
    "DEFAULT_CAPS",
    "HOUR_S",
    "CapDecision",
    "Caps",
    "check_caps",
    "parse_caps_setting",
]

#: The sliding windows, in seconds.
HOUR_S: Final = 3600.0
DAY_S: Final = 86400.0

_SETTING = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*")


@dataclass(frozen=True)
class Caps:
    """
    At most this many sends per user and channel in any sliding hour and day.

    ``None`` means no cap on that window; ``0`` lets nothing through (only
    urgent notifications, which are not checked).
    """

    per_hour: int | None
    per_day: int | None

    def to_json(self) -> dict[str, int | None]:
        """The ``caps`` object of the preferences document."""
        return {"per_hour": self.per_hour, "per_day": self.per_day}


#: ``STREAMSRV_NOTIFY_DEFAULT_CAPS``' default, ``4/12``.
DEFAULT_CAPS: Final = Caps(per_hour=4, per_day=12)


def parse_caps_setting(value: str) -> Caps:
    """
    Read ``STREAMSRV_NOTIFY_DEFAULT_CAPS``: ``PER_HOUR/PER_DAY``, e.g. ``4/12``.

    :raise ValueError: Unless two whole numbers >= 0 separated by ``/``.
    """
    match = _SETTING.fullmatch(value)
    if match is None:
        raise ValueError("must be PER_HOUR/PER_DAY, two whole numbers >= 0 (e.g. 4/12)")
    return Caps(per_hour=int(match.group(1)), per_day=int(match.group(2)))


@dataclass(frozen=True)
class CapDecision:
    """
    The answer of :func:`check_caps`.

    :ivar allowed: Whether one more send is within the caps.
    :ivar exceeded: Which cap refused it (the hour's is reported first).
    :ivar sent_last_hour: Sends counted in the sliding hour.
    :ivar sent_last_day: Sends counted in the sliding day.
    """

    allowed: bool
    exceeded: Literal["per_hour", "per_day"] | None
    sent_last_hour: int
    sent_last_day: int


def check_caps(caps: Caps, sent_at: Iterable[float], now: float) -> CapDecision:
    """
    Whether one more send at *now* stays within *caps*.

    A send counts in a window when ``sent_at > now - window``; sends stamped
    later than *now* (another host's clock running ahead) count too.

    :param caps: The user's caps.
    :param sent_at: Unix seconds of the earlier sends to this user on this
        channel (at least the last day's; older ones are ignored).
    :param now: Unix seconds.
    """
    hour = day = 0
    for stamp in sent_at:
        if stamp > now - DAY_S:
            day += 1
            if stamp > now - HOUR_S:
                hour += 1
    exceeded: Literal["per_hour", "per_day"] | None = None
    if caps.per_hour is not None and hour >= caps.per_hour:
        exceeded = "per_hour"
    elif caps.per_day is not None and day >= caps.per_day:
        exceeded = "per_day"
    return CapDecision(exceeded is None, exceeded, hour, day)
