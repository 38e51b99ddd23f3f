"""Tests for the alerts routes (GET /api/v1/alerts, the Alertmanager receiver) through a real Site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.alerts.factory import make_alerts
from streamsrv.alerts.rules import Rule, RuleSet
from streamsrv.threads import InlineThreads
from streamsrv.web.alerts import AlertRoutes
from streamsrv.web.openapi import openapi_document
from tests.sitehelpers import build_site, jwt_guard, stub_for
from tests.test_alerts_alertmanager import _alert, _webhook
from tests.test_analytics_api import settle

SECRET = "an-alerts-test-secret-long-enough-0123456789abcdef"


class AlertRoutesTests(unittest.TestCase):
    """The two routes: admission, answers, and 501 when alerts are not configured."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_767_225_600)
        self.issuer, guard = jwt_guard(SECRET, self.clock)
        self.built = build_site(Path(self.mktemp()), clock=self.clock, guard=guard)
        self.events: list[Any] = []
        self.alerts = make_alerts(
            registry=self.built.metrics.registry,
            clock=self.clock,
            publish=lambda channel, event: self.events.append(event),
            system_channel="system",
            notify=None,
            threads=InlineThreads(),
            host="h",
            rules=RuleSet((Rule("streams_high", "active_streams", 10, True, 0, 10, "info"),)),
        )
        self.stub = stub_for(self.built)

    def mount(self) -> None:
        self.built.api._alerts = AlertRoutes(self.alerts)

    def token(self, roles: list[str], permissions: tuple[str, ...] = ()) -> str:
        return self.issuer.issue(sub="ops", roles=roles, permissions=permissions, ttl_s=600)

    async def request(
        self, method: str, target: str, token: str | None, body: bytes = b""
    ) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {token}"]} if token else {}
        d = self.stub.request(method, "http://streamsrv.test" + target, headers=headers, data=body or None)
        response = await settle(self.stub, d)
        return response.code, json.loads(await settle(self.stub, response.content()))

    async def test_not_configured(self) -> None:
        """Without the alerts component both routes answer 501 NOT_CONFIGURED."""
        admin = self.token(["admin"])
        for method, target in (("GET", "/api/v1/alerts"), ("POST", "/api/v1/alerts/alertmanager")):
            code, body = await self.request(method, target, admin, b"{}")
            self.assertEqual((code, body["error"]["code"]), (501, "NOT_CONFIGURED"))

    async def test_status_for_admins_only(self) -> None:
        """An admin gets the rules and alerts; a listener 403; no token 401."""
        self.mount()
        self.built.metrics.streams_active.set(20)
        self.alerts.evaluator.startService()
        self.addCleanup(self.alerts.evaluator.stopService)
        self.clock.advance(15)
        code, body = await self.request("GET", "/api/v1/alerts", self.token(["admin"]))
        self.assertEqual(code, 200, body)
        self.assertEqual([r["state"] for r in body["rules"]], ["firing"])
        self.assertEqual([a["alert"] for a in body["firing"]], ["streams_high"])
        code, body = await self.request("GET", "/api/v1/alerts", self.token(["listener"]))
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))
        code, body = await self.request("GET", "/api/v1/alerts", None)
        self.assertEqual(code, 401)

    async def test_alertmanager_webhook(self) -> None:
        """``alerts:ingest`` may post a webhook; a bad body is 400 naming the field; others are 403."""
        self.mount()
        ingest = self.token([], ("alerts:ingest",))
        code, body = await self.request("POST", "/api/v1/alerts/alertmanager", ingest, _webhook(_alert()))
        self.assertEqual((code, body), (200, {"received": 1, "announced": 1, "duplicates": 0}))
        self.assertEqual([e["type"] for e in self.events], ["alert.firing"])
        code, body = await self.request("POST", "/api/v1/alerts/alertmanager", ingest, _webhook(version="3"))
        self.assertEqual((code, body["error"]["code"]), (400, "BAD_REQUEST"))
        self.assertTrue(body["error"]["message"].startswith("version:"))
        code, body = await self.request(
            "POST", "/api/v1/alerts/alertmanager", self.token(["listener"]), b"{}"
        )
        self.assertEqual(code, 403)

    def test_openapi_lists_the_routes(self) -> None:
        """The OpenAPI document describes both routes."""
        paths = openapi_document()["paths"]
        self.assertIn("get", paths["/api/v1/alerts"])
        self.assertIn("post", paths["/api/v1/alerts/alertmanager"])
