"""add_notifications: the component as the daemon builds it, on the real reactor and a SQLite outbox."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from streamsrv.health.metrics import Metrics
from streamsrv.notifications.factory import add_notifications, make_channels
from streamsrv.notifications.options import notify_options
from tests.sitehelpers import site_settings
from tests.test_notify_options import _vapid_key
from tests.test_notify_service import DATA


class FakeHub:
    """Records what is published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    def publish(self, channel: str, event: Any) -> None:
        self.published.append((channel, event))


class AddNotificationsTests(unittest.TestCase):
    """The factory wires outbox, sender and service, and the lifecycle closes them."""

    async def test_send_through_the_daemon_parts(self) -> None:
        """A notification sent through the service reaches the hub's user channel and is marked sent."""
        settings = dataclasses.replace(site_settings(), data_dir=Path(self.mktemp()))
        parent, hub, metrics = MultiService(), FakeHub(), Metrics(process=False)
        service = add_notifications(settings, reactor, parent, hub, metrics)
        parent.startService()
        self.addCleanup(parent.stopService)
        self.assertEqual(service.configured, frozenset({"websocket"}))
        record = await service.notify("new-release", ["u1"], ["websocket"], DATA, "normal")
        for _ in range(400):
            if hub.published:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(hub.published[0][0], "user:u1")
        for _ in range(400):
            got = await service.get(record.notification.id)
            if got["deliveries"][0]["state"] == "sent":
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(got["deliveries"][0]["state"], "sent")
        self.assertIn(
            b'streamsrv_notifications_total{channel="websocket",outcome="sent"} 1.0', metrics.render()
        )
        await parent.stopService()
        self.assertTrue((settings.data_dir / "notifications.sqlite3").exists())

    def test_bad_templates_dir(self) -> None:
        """A templates directory without templates is a ValueError (start-up exits naming the variable)."""
        settings = dataclasses.replace(
            site_settings(), data_dir=Path(self.mktemp()), notify_templates_dir=Path(self.mktemp())
        )
        self.assertRaises(ValueError, add_notifications, settings, reactor, MultiService(), FakeHub())

    def test_channels_built_when_configured(self) -> None:
        """Each channel whose variables are set is built; none otherwise."""
        settings = dataclasses.replace(
            site_settings(),
            smtp_url="smtp://127.0.0.1:2525",
            smtp_from="noreply@example.com",
            sms_url="http://AC1:tok@127.0.0.1:9/Messages.json?From=%2B15550001111",
            vapid_private_key=_vapid_key(),
            vapid_subject="mailto:ops@example.com",
        )
        channels = make_channels(notify_options(settings), reactor)
        self.assertEqual(sorted(channels), ["email", "push", "sms"])
        self.assertEqual(make_channels(notify_options(site_settings()), reactor), {})
        for channel in channels.values():
            self.addCleanup(channel.close)  # type: ignore[attr-defined]
