# -*- test-case-name: tests.test_alerts_web -*-
"""The alerts routes' request side: ``GET /api/v1/alerts`` and Alertmanager's webhook receiver.

:class:`AlertRoutes` is what :class:`~streamsrv.web.api.ApiApp` mounts: it
takes values (the request's body bytes), calls the alerts component (an
:class:`~streamsrv.alerts.factory.Alerts`) and returns the JSON-able answer;
admission (``admin``, ``alerts:ingest``) is the app's, before it calls here.
This module never evaluates a rule, parses a webhook itself or keeps state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamsrv.alerts.factory import Alerts

__all__ = ["AlertRoutes"]


class AlertRoutes:
    """
    What the two alerts routes answer.

    :param alerts: The alerts component.
    """

    def __init__(self, alerts: Alerts) -> None:
        self._alerts = alerts

    def status(self) -> dict[str, Any]:
        """The rules with their state, the firing alerts and the recently resolved ones."""
        return self._alerts.status()

    def alertmanager(self, body: bytes) -> dict[str, Any]:
        """
        Route an Alertmanager webhook (version 4 JSON).

        :raise ApiError: ``BAD_REQUEST`` naming the bad field.
        """
        return self._alerts.ingest(body)
