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


def _envelope(event: Mapping[str, Any], origin: str = "other") -> str:
    return json.dumps({"v": 1, "o": origin, "e": event})


def _resp_message(channel: str, payload: str) -> bytes:
    words = [b"message", channel.encode(), payload.encode()]
    return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


class Batches:
    """A subscriber with a ``many`` callback: records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def one(self, channel: str, event: Mapping[str, Any]) -> None:
        self.calls.append((channel, [event]))

    def many(self, channel: str, events: list[Mapping[str, Any]]) -> None:
        self.calls.append((channel, list(events)))


class DeliverManyTests(unittest.TestCase):
    """Several consecutive events of a channel at once (``Registry.deliver_many``)."""

    def test_many_callback_once_plain_callbacks_one_by_one(self) -> None:
        """A ``many`` subscriber gets the run in one call; a plain one each event in order."""
        hub = InProcessHub()
        batches, plain = Batches(), Recorder()
        hub.subscribe("c", batches.one, batches.many)
        hub.subscribe("c", plain)
        hub._registry.deliver_many("c", [{"n": 1}, {"n": 2}])
        self.assertEqual(batches.calls, [("c", [{"n": 1}, {"n": 2}])])
        self.assertEqual(plain.got, [("c", {"n": 1}), ("c", {"n": 2})])
        self.assertEqual(hub.stats.delivered, 4)
        hub.publish("c", {"n": 3})  # a single event: the one-event callback
        self.assertEqual(batches.calls[-1], ("c", [{"n": 3}]))

    def test_cancel_and_failure_within_a_run(self) -> None:
        """A subscriber cancelled during a run gets no more of it; one that raises still gets the next."""
        hub = InProcessHub()
        got: list[int] = []
        holder: dict[str, Subscription] = {}

        def cancels(channel: str, event: Mapping[str, Any]) -> None:
            got.append(event["n"])
            holder["s"].cancel()

        def fails(channel: str, event: Mapping[str, Any]) -> None:
            got.append(-event["n"])
            raise RuntimeError("boom")

        holder["s"] = hub.subscribe("c", cancels)
        hub.subscribe("c", fails)
        hub._registry.deliver_many("c", [{"n": 1}, {"n": 2}])
        self.assertEqual(got, [1, -1, -2])
        self.assertEqual(hub.stats.callback_errors, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class RedisReadBatchTests(unittest.TestCase):
    """The messages of one read from Redis are delivered together, in order, at the end of the read."""

    def make(self) -> RedisHub:
        from twisted.internet.testing import MemoryReactorClock

        return RedisHub("redis://127.0.0.1:1/0", MemoryReactorClock(), node_id="me")

    def test_runs_of_a_channel_in_batches(self) -> None:
        """Consecutive events of a channel as one run (at most MAX_BATCH), the order across channels kept."""
        from streamsrv.events.hub import MAX_BATCH

        hub = self.make()
        a, b = Batches(), Batches()
        hub.subscribe("a", a.one, a.many)
        hub.subscribe("b", b.one, b.many)
        order: list[tuple[str, int]] = []
        hub.subscribe("a", lambda c, e: order.append((c, e["n"])))
        hub.subscribe("b", lambda c, e: order.append((c, e["n"])))
        sequence = ["a", "a", "b", "a"] + ["b"] * (MAX_BATCH + 2)
        hub._hold()
        for n, channel in enumerate(sequence):
            hub._message(REDIS_PREFIX + channel, _envelope({"n": n}))
        self.assertEqual(order, [])  # nothing before the end of the read
        hub._release()
        self.assertEqual(order, list(zip(sequence, range(len(sequence)), strict=True)))
        self.assertEqual([len(events) for _, events in a.calls], [2, 1])
        self.assertEqual([len(events) for _, events in b.calls], [1, MAX_BATCH, 2])
        hub._message(REDIS_PREFIX + "a", _envelope({"n": 99}))  # outside a read: at once
        self.assertEqual(order[-1], ("a", 99))

    def test_subscriber_connection_parses_a_whole_read(self) -> None:
        """txredisapi parses one reply per reactor turn; the hub's protocol parses the whole read at
        once, and a message cut by the read's end comes with the next read."""
        from streamsrv.events.hub import _subscriber_protocol_class

        hub = self.make()
        batches = Batches()
        hub.subscribe("system", batches.one, batches.many)
        protocol = _subscriber_protocol_class()(charset="utf-8", replyTimeout=None, convertNumbers=False)
        protocol.hub = hub
        data = b"".join(_resp_message(REDIS_PREFIX + "system", _envelope({"n": n})) for n in range(5))
        protocol.dataReceived(data[:-7])
        self.assertEqual(batches.calls, [("system", [{"n": n} for n in range(4)])])
        protocol.dataReceived(data[-7:])
        self.assertEqual(batches.calls[-1], ("system", [{"n": 4}]))
        self.assertEqual(hub.stats.received, 5)


class StoppingTests(unittest.TestCase):
    """A command that fails because the hub is stopping is not a Redis problem."""

    def test_command_lost_while_stopping_is_quiet(self) -> None:
        """An UNSUBSCRIBE in flight when the hub stops (its connection closed on purpose): no
        warning and no reconnection; while running, the same failure is logged and aborts."""
        from twisted.internet.testing import MemoryReactorClock, StringTransport
        from twisted.logger import globalLogPublisher
        from twisted.python.failure import Failure

        hub = RedisHub("redis://127.0.0.1:1/0", MemoryReactorClock(), node_id="me")
        protocol = type("P", (), {})()
        protocol.transport = StringTransport()
        hub._protocol = protocol
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        failure = Failure(ConnectionError("Lost connection"))
        hub.running = False
        hub._command_failed(failure, protocol, "UNSUBSCRIBE")
        warned = [e for e in seen if "failed" in str(e.get("log_format"))]
        self.assertEqual(warned, [])
        self.assertFalse(protocol.transport.disconnecting)
        hub.running = True
        hub._command_failed(failure, protocol, "UNSUBSCRIBE")
        self.assertEqual(len([e for e in seen if "failed" in str(e.get("log_format"))]), 1)
        self.assertTrue(protocol.transport.disconnecting)
