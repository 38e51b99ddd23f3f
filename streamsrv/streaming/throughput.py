# -*- test-case-name: tests.test_throughput -*-
"""What each client's recent streams say about its connection, for ``format=auto``.

Client Hints (``Downlink``, ``ECT``) are the browser's estimate and are often
missing; the bodies this server has just sent to the same address are a
measurement.  :class:`ThroughputTracker` keeps, per client address, the
throughput of the last few large-enough bodies (a body that left within a
few milliseconds measured the socket buffers, not the network, and is
ignored) and answers the median of those still recent.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict, deque
from typing import Final

__all__ = ["ThroughputTracker"]

#: Bodies smaller than this say little about the connection.
MIN_BYTES: Final = 256 * 1024

#: Bodies sent faster than this fit in socket buffers: not a measurement.
MIN_SECONDS: Final = 0.05

#: Samples kept per client, and how long one counts.
SAMPLES: Final = 5
MAX_AGE_S: Final = 600.0

#: Clients remembered (addresses are chosen by clients: bounded).
MAX_CLIENTS: Final = 10_000


class ThroughputTracker:
    """Recent per-client throughput, in megabits per second."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self._max = max_clients
        self._clients: OrderedDict[str, deque[tuple[float, float]]] = OrderedDict()

    def record(self, client: str, sent: int, seconds: float, now: float) -> None:
        """A body of *sent* bytes took *seconds* to leave for *client* (ignored when too small or fast)."""
        if sent < MIN_BYTES or seconds < MIN_SECONDS:
            return
        samples = self._clients.get(client)
        if samples is None:
            samples = self._clients[client] = deque(maxlen=SAMPLES)
            if len(self._clients) > self._max:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        samples.append((now, sent * 8 / seconds / 1e6))

    def estimate_mbps(self, client: str, now: float) -> float | None:
        """The median of *client*'s recent samples, or ``None`` when there is none."""
        samples = self._clients.get(client)
        if not samples:
            return None
        recent = [mbps for at, mbps in samples if now - at <= MAX_AGE_S]
        return statistics.median(recent) if recent else None
