# -*- test-case-name: tests.test_analytics_store -*-
"""Retention: analytics older than ``STREAMSRV_ANALYTICS_RETENTION_DAYS`` are deleted, every hour.

:class:`AnalyticsRetention` is a :class:`~streamsrv.service.PeriodicService`
that asks the store to purge every :data:`RETENTION_INTERVAL_S`.  It must
never raise from a purge (a failure is logged and retried at the next
interval) and never delete anything newer than the retention.
"""

from __future__ import annotations

import math
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamsrv.analytics.store import IAnalyticsStore, describe_failure
from streamsrv.service import PeriodicService

__all__ = ["DEFAULT_RETENTION_DAYS", "RETENTION_INTERVAL_S", "AnalyticsRetention"]

log = Logger()

#: Default of ``STREAMSRV_ANALYTICS_RETENTION_DAYS``.
DEFAULT_RETENTION_DAYS: Final = 365

#: Seconds between two retention purges.
RETENTION_INTERVAL_S: Final = 3600.0


class AnalyticsRetention(PeriodicService):
    """
    Deletes sessions and events older than *retention_days*, every *interval_s*.

    A :class:`~streamsrv.service.PeriodicService`: the first purge runs when
    the service starts.  A failed purge is logged and retried at the next interval.
    """

    def __init__(
        self,
        store: IAnalyticsStore,
        clock: IReactorTime,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        interval_s: float = RETENTION_INTERVAL_S,
    ) -> None:
        if not (math.isfinite(retention_days) and retention_days > 0):
            raise ValueError("retention_days must be a number > 0")
        super().__init__(
            interval_s,
            self.purge,
            clock=clock,
            name="analytics-retention",
            what="analytics: the retention purge",
        )
        self._store = store
        self._clock = clock
        self._retention_s = retention_days * 86400.0
        self.purged = 0

    def purge(self) -> Deferred[int]:
        """
        Delete what is older than the retention now; never fails.

        :return: A Deferred firing with the rows deleted (0 on failure).
        """
        cutoff = self._clock.seconds() - self._retention_s

        def done(removed: int) -> int:
            self.purged += removed
            if removed:
                log.info("analytics: retention purge deleted {removed} rows", removed=removed)
            return removed

        def failed(failure: Failure) -> int:
            log.warn("analytics: retention purge failed ({error})", error=describe_failure(failure))
            return 0

        return self._store.purge_before(cutoff).addCallbacks(done, failed)
