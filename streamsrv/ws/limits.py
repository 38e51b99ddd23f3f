# -*- test-case-name: tests.test_ws -*-
"""The limits and counters of ``/ws`` sockets, and the token bucket that rate-limits client messages.

Plain values with no reactor: :class:`WsLimits` (what one socket may do,
from ``STREAMSRV_WS_*``), :class:`WsStats` (what a factory's sockets did, for
the metrics) and :class:`TokenBucket` (pure: the time is passed in).  This
module must never read a clock or the environment itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["TokenBucket", "WsLimits", "WsStats"]


@dataclass(frozen=True)
class WsLimits:
    """
    The limits of one socket.

    :ivar auth_timeout_s: Seconds to authenticate before 4401
        (``STREAMSRV_WS_AUTH_TIMEOUT_S``).
    :ivar max_frame: Largest frame and message payload, bytes; more closes
        with 1009 (``STREAMSRV_WS_MAX_FRAME``).
    :ivar max_subscriptions: Channels per socket.
    :ivar messages_per_s: Client messages per second, refilled evenly...
    :ivar message_burst: ...into a bucket of this many.
    :ivar rate_strikes: Refused messages in a row before closing with 1008.
    :ivar queue_max: Event frames queued for a slow reader before the oldest is dropped.
    :ivar max_dropped: Events dropped without the queue draining before closing with 4008.
    :ivar token_warning_s: ``token.expiring`` comes this long before ``exp``.
    :ivar ping_interval_s: Keepalive ping period (0: none).
    :ivar ping_timeout_s: A peer not answering a ping within this is dropped.
    :ivar open_timeout_s: The upgrade handshake must finish within this.
    :ivar close_timeout_s: The peer must answer our close frame within this.
    """

    auth_timeout_s: float = 10.0
    max_frame: int = 65536
    max_subscriptions: int = 32
    messages_per_s: float = 10.0
    message_burst: int = 20
    rate_strikes: int = 10
    queue_max: int = 256
    max_dropped: int = 1024
    token_warning_s: float = 60.0
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 5.0


@dataclass
class WsStats:
    """
    Counters of one factory, for the metrics (``open`` is ``len(factory.sockets)``).

    :ivar closes: Sockets closed, by close code (``1006`` for a dropped TCP
        connection without a close frame).
    """

    connections: int = 0
    authenticated: int = 0
    auth_failures: int = 0
    messages_in: int = 0
    frames_out: int = 0
    events_sent: int = 0
    events_dropped: int = 0
    rate_limited: int = 0
    playback_reports: int = 0
    closes: Counter[int] = field(default_factory=Counter)


class TokenBucket:
    """A token bucket: *burst* tokens, refilled at *rate* per second (pure: times are passed in)."""

    __slots__ = ("_burst", "_rate", "_stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if not (rate > 0 and burst >= 1):
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self.tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one; whether there was."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self.tokens = min(self._burst, self.tokens + elapsed * self._rate)
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False
