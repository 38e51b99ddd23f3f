# -*- test-case-name: tests.test_tap -*-
"""The root service that twistd runs.

A :class:`MultiService` that, when twistd attaches it to its application,
also offers streamsrv's log observer as the application's ``ILogObserver``
component: twistd's documented hook for choosing how a daemon logs.  It holds
no logic of its own; ``streamsrv.tap`` fills it.
"""

from __future__ import annotations

from twisted.application.service import IServiceCollection, MultiService
from twisted.logger import ILogObserver


class RootService(MultiService):
    """The streamsrv service tree, carrying the log observer for twistd."""

    def __init__(self, log_observer: ILogObserver | None = None) -> None:
        super().__init__()
        self.log_observer = log_observer

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Attach to *parent*; if it is twistd's application, give it our observer."""
        set_component = getattr(parent, "setComponent", None)
        if self.log_observer is not None and set_component is not None:
            set_component(ILogObserver, self.log_observer)
        super().setServiceParent(parent)
