"""Tests for the event hub's semantics: the in-process hub, and the Redis hub's local behaviour.

Nothing here touches the network: the Redis hub is built but not started, and
its envelope handling is fed messages directly.  The real Redis is exercised
by ``tests.test_events_redis``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.events.hub import (
    REDIS_PREFIX,
    IEventHub,
    InProcessHub,
    RedisHub,
    Subscription,
    make_hub,
    track_channel,
    user_channel,
)


class Recorder:
    """A subscriber callback that records what it gets."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Mapping[str, Any]]] = []

    def __call__(self, channel: str, event: Mapping[str, Any]) -> None:
        self.got.append((channel, event))


class HubContractMixin:
    """What every hub does within one process."""

    def make(self) -> Any:
        raise NotImplementedError

    def test_interface(self: Any) -> None:
        """The hub provides IEventHub."""
        self.assertTrue(verifyObject(IEventHub, self.make()))

    def test_publish_reaches_subscribers_of_channel(self: Any) -> None:
        """An event reaches every subscriber of its channel, once, and nobody else."""
        hub = self.make()
        a, b, other = Recorder(), Recorder(), Recorder()
        hub.subscribe("system", a)
        hub.subscribe("system", b)
        hub.subscribe("user:1", other)
        hub.publish("system", {"type": "track.added", "path": "a.mp3"})
        self.assertEqual(a.got, [("system", {"type": "track.added", "path": "a.mp3"})])
        self.assertEqual(b.got, a.got)
        self.assertEqual(other.got, [])
        self.assertEqual(hub.stats.published, 1)
        self.assertEqual(hub.stats.delivered, 2)

    def test_cancel(self: Any) -> None:
        """A cancelled subscription gets nothing more; cancelling twice is harmless."""
        hub = self.make()
        a = Recorder()
        subscription = hub.subscribe("system", a)
        self.assertIsInstance(subscription, Subscription)
        subscription.cancel()
        subscription.cancel()
        hub.publish("system", {"type": "alert"})
        self.assertEqual(a.got, [])
        self.assertEqual(hub.channels, [])

    def test_failing_subscriber_is_isolated(self: Any) -> None:
        """A subscriber that raises is logged; the publisher and other subscribers are unaffected."""
        hub = self.make()

        def broken(channel: str, event: Mapping[str, Any]) -> None:
            raise RuntimeError("boom")

        a = Recorder()
        hub.subscribe("system", broken)
        hub.subscribe("system", a)
        hub.publish("system", {"type": "alert"})
        self.assertEqual(len(a.got), 1)
        self.assertEqual(hub.stats.callback_errors, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_cancel_during_delivery(self: Any) -> None:
        """A subscriber may cancel another (or itself) while an event is delivered."""
        hub = self.make()
        b = Recorder()
        holder: dict[str, Subscription] = {}

        def first(channel: str, event: Mapping[str, Any]) -> None:
            holder["b"].cancel()

        hub.subscribe("c", first)
        holder["b"] = hub.subscribe("c", b)
        hub.publish("c", {"type": "x"})
        self.assertEqual(b.got, [])

    def test_invalid_channel_and_event(self: Any) -> None:
        """Channels must be short non-empty strings; events must be JSON objects."""
        hub = self.make()
        for channel in ("", "x" * 1025, "a\nb", 3):
            self.assertRaises(ValueError, hub.publish, channel, {})
            self.assertRaises(ValueError, hub.subscribe, channel, Recorder())
        self.assertRaises(TypeError, hub.publish, "c", ["not", "an", "object"])
        self.assertRaises(TypeError, hub.publish, "c", {"x": object()})
        self.assertRaises(ValueError, hub.publish, "c", {"x": float("nan")})
        self.assertEqual(hub.stats.published, 0)


class InProcessHubTests(HubContractMixin, unittest.TestCase):
    """The in-process hub."""

    def make(self) -> InProcessHub:
        return InProcessHub()

    def test_always_connected(self) -> None:
        """An in-process hub reaches every subscriber there is: it is always connected."""
        self.assertTrue(InProcessHub().connected)


class RedisHubLocalTests(HubContractMixin, unittest.TestCase):
    """A Redis hub that is not started (Redis unreachable): local delivery works."""

    def make(self) -> RedisHub:
        from twisted.internet.testing import MemoryReactorClock

        return RedisHub("redis://127.0.0.1:1/0", MemoryReactorClock(), node_id="me")

    def test_not_connected_counts_failures_when_running(self) -> None:
        """Running but not connected: local subscribers get the event; a publish failure is counted."""
        hub = self.make()
        hub.running = True
        a = Recorder()
        hub.subscribe("system", a)
        hub.publish("system", {"type": "alert"})
        self.assertEqual(len(a.got), 1)
        self.assertFalse(hub.connected)
        self.assertEqual(hub.stats.publish_failures, 1)

    def test_own_echo_ignored(self) -> None:
        """A message from Redis carrying this hub's node id is not delivered again."""
        hub = self.make()
        a = Recorder()
        hub.subscribe("system", a)
        hub._message(REDIS_PREFIX + "system", json.dumps({"v": 1, "o": "me", "e": {"type": "x"}}))
        self.assertEqual(a.got, [])
        hub._message(REDIS_PREFIX + "system", json.dumps({"v": 1, "o": "other", "e": {"type": "x"}}))
        self.assertEqual(a.got, [("system", {"type": "x"})])
        self.assertEqual(hub.stats.received, 1)

    def test_malformed_messages_counted(self) -> None:
        """Messages that are not envelopes are counted and dropped."""
        hub = self.make()
        a = Recorder()
        hub.subscribe("system", a)
        for message in (
            "nope",
            "[]",
            json.dumps({"v": 2, "o": "x", "e": {}}),
            json.dumps({"v": 1, "o": "x"}),
        ):
            hub._message(REDIS_PREFIX + "system", message)
        self.assertEqual(a.got, [])
        self.assertEqual(hub.stats.malformed, 4)


class ChannelTests(unittest.TestCase):
    """Channel names and the hub factory."""

    def test_names(self) -> None:
        """User and track channels are spelled as the WebSocket contract names them (NFC paths)."""
        self.assertEqual(user_channel("42"), "user:42")
        self.assertEqual(track_channel("jazz/Cafe\u0301.mp3"), "track:jazz/Caf\u00e9.mp3")

    def test_make_hub(self) -> None:
        """Without a Redis URL the hub is in-process; with one it is a Redis hub."""
        from twisted.internet.testing import MemoryReactorClock

        self.assertIsInstance(make_hub(None, MemoryReactorClock()), InProcessHub)
        self.assertIsInstance(make_hub("redis://127.0.0.1:6379/0", MemoryReactorClock()), RedisHub)
