# -*- test-case-name: tests.test_ws -*-
"""The ``/ws`` sockets' part of the application's lifetime: periodic revalidation, 1001 on stop.

:class:`EventSocketService` re-checks every open socket against the
revocations every :data:`REVALIDATE_INTERVAL_S` (a
:class:`~streamsrv.service.PeriodicService` on the factory's clock) and
closes every socket with 1001 when the daemon stops.  It must never keep a
socket open whose token has been revoked past one interval.
"""

from __future__ import annotations

from typing import Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from streamsrv.service import PeriodicService
from streamsrv.ws.protocol import EventSocketFactory

__all__ = ["REVALIDATE_INTERVAL_S", "EventSocketService"]

#: How often :class:`EventSocketService` re-checks revocations.
REVALIDATE_INTERVAL_S: Final = 30.0


class EventSocketService(Service):
    """
    The sockets' part of the application's lifetime: re-checks revocations
    every *interval_s* while running, and closes every socket with 1001 on stop.
    """

    def __init__(self, factory: EventSocketFactory, interval_s: float = REVALIDATE_INTERVAL_S) -> None:
        self.setName("ws")
        self.factory = factory
        self._revalidation = PeriodicService(
            interval_s, factory.revalidate, clock=factory.clock, now=False, what="ws: revalidating sockets"
        )

    def startService(self) -> None:
        super().startService()
        if self.factory.is_revoked is not None:
            self._revalidation.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped = self._revalidation.stopService()
        self.factory.close_all()
        return stopped
