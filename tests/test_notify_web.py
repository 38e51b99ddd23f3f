"""The notifications routes through a real Site: admission, answers, 501 without the component."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.notifications.caps import Caps
from streamsrv.notifications.outbox import Outbox
from streamsrv.notifications.outboxdb import SqliteOutboxDatabase
from streamsrv.notifications.service import NotificationService
from streamsrv.notifications.templates import TemplateSet, default_templates_dir
from streamsrv.web.notifications import NotificationRoutes
from streamsrv.web.openapi import openapi_document
from tests.sitehelpers import build_site, jwt_guard, stub_for
from tests.test_analytics_api import settle
from tests.test_notify_service import DATA, NOW, TEMPLATES

SECRET = "a-notifications-test-secret-long-enough-0123456789"


class _RoutesBase(unittest.TestCase):
    """A site with the routes' guard, a SQLite outbox and a service (mounted by ``mount``)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.issuer, guard = jwt_guard(SECRET, self.clock)
        self.built = build_site(Path(self.mktemp()), clock=self.clock, guard=guard)
        database = SqliteOutboxDatabase(Path(self.mktemp()) / "notifications.sqlite3")
        self.addCleanup(database.close)
        self.outbox = Outbox(database, ImmediateReactor(), SynchronousThreadPool())
        self.successResultOf(self.outbox.start(NOW))
        self.service = NotificationService(
            self.outbox, TEMPLATES, frozenset({"websocket"}), Caps(4, 12), 100, self.clock
        )
        self.stub = stub_for(self.built)

    def mount(self) -> None:
        """Mount the component, as tap does through make_api(notifications=...)."""
        self.built.api._notifications = NotificationRoutes(self.service)

    def token(self, sub: str, roles: list[str], permissions: tuple[str, ...] = ()) -> str:
        """An access token for *sub*."""
        return self.issuer.issue(sub=sub, roles=roles, permissions=permissions, ttl_s=600)

    async def request(self, method: str, target: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        """Status and decoded JSON body of one request."""
        headers = {"Authorization": [f"Bearer {token}"]} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        d = self.stub.request(method, "http://streamsrv.test" + target, headers=headers, data=data)
        response = await settle(self.stub, d)
        return response.code, json.loads(await settle(self.stub, response.content()))


class NotificationRoutesTests(_RoutesBase):
    """POST/GET notifications and GET/PUT preferences."""

    async def test_not_configured(self) -> None:
        """Without the component every route answers 501 NOT_CONFIGURED."""
        admin = self.token("root", ["admin"])
        for method, target in (
            ("POST", "/api/v1/notifications"),
            ("GET", "/api/v1/notifications/x"),
            ("GET", "/api/v1/users/u1/notification-preferences"),
            ("PUT", "/api/v1/users/u1/notification-preferences"),
        ):
            code, body = await self.request(method, target, admin, {})
            self.assertEqual((code, body["error"]["code"]), (501, "NOT_CONFIGURED"), target)

    async def test_send_and_get(self) -> None:
        """A backend with notifications:send gets 202 with the deliveries, then their state by id."""
        self.mount()
        backend = self.token("backend", [], ("notifications:send",))
        body = {"template": "new-release", "user_ids": ["u1"], "data": DATA}
        code, answer = await self.request("POST", "/api/v1/notifications", backend, body)
        self.assertEqual(code, 202)
        self.assertEqual(answer["deliveries"], [{"user_id": "u1", "channel": "websocket", "state": "queued"}])
        code, got = await self.request("GET", f"/api/v1/notifications/{answer['id']}", backend)
        self.assertEqual((code, got), (200, answer))
        code, got = await self.request("GET", "/api/v1/notifications/unknown", backend)
        self.assertEqual((code, got["error"]["code"]), (404, "NOT_FOUND"))

    async def test_send_refusals(self) -> None:
        """No permission: 403; no token: 401; a bad body: 400 naming it; sms: 400 NOT_CONFIGURED."""
        self.mount()
        body = {"template": "new-release", "user_ids": ["u1"], "data": DATA}
        code, _ = await self.request("POST", "/api/v1/notifications", self.token("u1", ["listener"]), body)
        self.assertEqual(code, 403)
        code, _ = await self.request("POST", "/api/v1/notifications", None, body)
        self.assertEqual(code, 401)
        admin = self.token("root", ["admin"])
        code, err = await self.request("POST", "/api/v1/notifications", admin, {**body, "template": "nope"})
        self.assertEqual(code, 400)
        self.assertIn("unknown template 'nope'", err["error"]["message"])
        code, err = await self.request("POST", "/api/v1/notifications", admin, {**body, "channels": ["sms"]})
        self.assertEqual((code, err["error"]["code"]), (400, "NOT_CONFIGURED"))

    async def test_preferences_self_or_admin(self) -> None:
        """A user reads and replaces their own preferences, an admin anyone's, others get 403."""
        self.mount()
        target = "/api/v1/users/u1/notification-preferences"
        code, got = await self.request("GET", target, self.token("u1", ["listener"]))
        self.assertEqual((code, got["channels"]["websocket"]), (200, {"enabled": True}))
        document = {"channels": {"email": {"enabled": True, "address": "ana@example.com"}}}
        code, got = await self.request("PUT", target, self.token("root", ["admin"]), document)
        self.assertEqual((code, got["channels"]["email"]["address"]), (200, "ana@example.com"))
        code, got = await self.request("GET", target, self.token("u1", ["listener"]))
        self.assertEqual(got["channels"]["email"]["address"], "ana@example.com")
        code, _ = await self.request("GET", target, self.token("u2", ["listener"]))
        self.assertEqual(code, 403)
        bad = {"quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Base"}}
        code, err = await self.request("PUT", target, self.token("u1", ["listener"]), bad)
        self.assertEqual(code, 400)
        self.assertIn("quiet_hours.time_zone", err["error"]["message"])

    def test_openapi(self) -> None:
        """The OpenAPI document lists the three paths."""
        paths = openapi_document()["paths"]
        self.assertIn("post", paths["/api/v1/notifications"])
        self.assertIn("get", paths["/api/v1/notifications/{id}"])
        self.assertEqual(
            {"get", "put", "parameters"}, set(paths["/api/v1/users/{id}/notification-preferences"])
        )


class BadInputTests(_RoutesBase):
    """The issue's bad-input list through the routes: a 400 naming the field, nothing queued or stored."""

    def setUp(self) -> None:
        super().setUp()
        sources = {path.name: path.read_text() for path in default_templates_dir().glob("*.j2")}
        sources["escape.websocket.j2"] = (
            "{% block title %}{{ artist.__class__.__mro__[1].__subclasses__() }}{% endblock %}"
            "{% block text %}x{% endblock %}"
        )
        self.service = NotificationService(
            self.outbox, TemplateSet(sources), frozenset({"websocket"}), Caps(4, 12), 10000, self.clock
        )
        self.mount()
        self.admin = self.token("root", ["admin"])

    async def refused(self, body: Any, method: str = "POST", target: str = "/api/v1/notifications") -> str:
        """The 400 BAD_REQUEST message *body* gets; asserts nothing was queued."""
        code, answer = await self.request(method, target, self.admin, body)
        self.assertEqual((code, answer["error"]["code"]), (400, "BAD_REQUEST"), answer)
        with self.outbox.database.transaction(write=False) as cursor:
            cursor.execute("SELECT COUNT(*) FROM notifications")
            self.assertEqual(cursor.fetchone()[0], 0)
        return str(answer["error"]["message"])

    async def test_unknown_template(self) -> None:
        """An unknown template names the template field."""
        message = await self.refused({"template": "nope", "user_ids": ["u1"], "data": DATA})
        self.assertEqual(message, "template: unknown template 'nope'")

    async def test_missing_variables_all_at_once(self) -> None:
        """Every variable the data lacks, over every channel and locale asked, is named at once with data."""
        body = {
            "template": "new-release",
            "user_ids": ["u1"],
            "data": {"artist": "x"},
            "channels": ["websocket"],
        }
        message = await self.refused(body)
        self.assertEqual(message, "data: template 'new-release' needs data.album, data.track_count")

    async def test_too_many_recipients(self) -> None:
        """10,001 users (STREAMSRV_NOTIFY_MAX_RECIPIENTS is 10,000) name user_ids."""
        users = [f"user-{i}" for i in range(10001)]
        message = await self.refused({"template": "new-release", "user_ids": users, "data": DATA})
        self.assertEqual(message, "user_ids: at most 10000 users, got 10001")

    async def test_sandbox_escape(self) -> None:
        """A template reaching for Python internals is refused by the sandbox, without a trace or path."""
        message = await self.refused({"template": "escape", "user_ids": ["u1"], "data": {"artist": "x"}})
        self.assertTrue(message.startswith("template 'escape.websocket' does something the sandbox forbids"))
        self.assertNotIn("/", message)

    async def test_bad_address_and_time_zone(self) -> None:
        """A bad email address, E.164 number and time zone are each named; nothing is stored."""
        target = "/api/v1/users/u1/notification-preferences"
        document = {
            "channels": {
                "email": {"enabled": True, "address": "not an address"},
                "sms": {"enabled": True, "number": "0612345678"},
            },
            "quiet_hours": {"start": "22:00", "end": "07:00", "time_zone": "Mars/Olympus_Mons"},
        }
        code, answer = await self.request("PUT", target, self.admin, document)
        self.assertEqual((code, answer["error"]["code"]), (400, "BAD_REQUEST"))
        for field in ("channels.email.address", "channels.sms.number", "quiet_hours.time_zone"):
            self.assertIn(field, answer["error"]["message"])
        self.assertIsNone(self.successResultOf(self.outbox.get_preferences("u1")))
