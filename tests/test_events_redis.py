"""Tests for :class:`~streamsrv.events.hub.RedisHub` on a real Redis.

Two hubs in this process, each with connections of its own (as two daemon
processes would have), share events through Redis.  The shared Redis is used
under a random channel prefix per test; the test that kills Redis starts a
private ``redis-server``.  Waiting is real network I/O, so it polls on the
real reactor, bounded by the trial timeout; nothing asserts on timing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from streamsrv.events.hub import RedisHub
from tests.services import RedisServerProcess, redis_url_or_skip

#: Reconnect quickly: a restarted server is found within a fraction of a second.
FAST: dict[str, Any] = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "connect_timeout_s": 1.0}

#: How often conditions are polled.
POLL_S = 0.02


async def until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Wait (polling on the reactor) until *condition* holds; fail after *limit_s* seconds."""
    waited = 0.0
    while not condition():
        if waited > limit_s:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, POLL_S, lambda: None)
        waited += POLL_S


class Recorder:
    def __init__(self) -> None:
        self.got: list[Mapping[str, Any]] = []

    def __call__(self, channel: str, event: Mapping[str, Any]) -> None:
        self.got.append(event)


class RedisHubTests(unittest.TestCase):
    """Events between hubs through a real Redis."""

    timeout = 60

    def hub(self, url: str, prefix: str, **options: Any) -> RedisHub:
        hub = RedisHub(url, reactor, prefix=prefix, **FAST, **options)
        self.addCleanup(self._stop, hub)
        return hub

    async def _stop(self, hub: RedisHub) -> None:
        if hub.running:
            await hub.stopService()
        # txredisapi hands connections over on the next reactor turn.
        await deferLater(reactor, 0.01, lambda: None)

    async def test_event_crosses_processes(self) -> None:
        """An event published on one hub reaches the other hub's subscriber, and its own subscriber once."""
        url = redis_url_or_skip(self)
        prefix = f"streamsrv:test:{uuid.uuid4().hex}:"
        a, b = self.hub(url, prefix), self.hub(url, prefix)
        here, there = Recorder(), Recorder()
        a.subscribe("system", here)
        b.subscribe("system", there)
        a.startService()
        b.startService()
        await until(lambda: a.connected and b.connected, "both hubs to connect")
        a.publish("system", {"type": "track.added", "path": "jazz/a.mp3"})
        await until(lambda: len(there.got) == 1, "the event on the other hub")
        self.assertEqual(there.got, [{"type": "track.added", "path": "jazz/a.mp3"}])
        # Let the echo of a's own event come back through Redis: it must be ignored.
        b.publish("system", {"type": "marker"})
        await until(lambda: len(here.got) == 2, "b's marker on a")
        self.assertEqual(here.got, [{"type": "track.added", "path": "jazz/a.mp3"}, {"type": "marker"}])
        self.assertEqual(a.stats.received, 1)
        self.assertEqual(b.stats.received, 1)

    async def test_subscribe_while_connected(self) -> None:
        """A channel subscribed after the hub connected is subscribed in Redis too."""
        url = redis_url_or_skip(self)
        prefix = f"streamsrv:test:{uuid.uuid4().hex}:"
        a, b = self.hub(url, prefix), self.hub(url, prefix)
        a.startService()
        b.startService()
        await until(lambda: a.connected and b.connected, "both hubs to connect")
        there = Recorder()
        b.subscribe("user:42", there)
        # The SUBSCRIBE is asynchronous: publish until one arrives.
        while not there.got:
            a.publish("user:42", {"type": "notification"})
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(there.got[0], {"type": "notification"})

    async def test_redis_killed_and_restarted(self) -> None:
        """With Redis dead local delivery goes on; once it is back, hubs resubscribe and delivery resumes."""
        server = RedisServerProcess.start_for(self)
        prefix = "streamsrv:test:"
        states: list[bool] = []
        a = self.hub(server.url, prefix, on_state_change=states.append)
        b = self.hub(server.url, prefix)
        here, there = Recorder(), Recorder()
        a.subscribe("system", here)
        b.subscribe("system", there)
        a.startService()
        b.startService()
        await until(lambda: a.connected and b.connected, "both hubs to connect")
        a.publish("system", {"n": 1})
        await until(lambda: len(there.got) == 1, "the first event")

        server.kill()
        await until(lambda: not a.connected and not b.connected, "both hubs to notice")
        a.publish("system", {"n": 2})
        self.assertEqual(here.got, [{"n": 1}, {"n": 2}])
        self.assertGreaterEqual(a.stats.publish_failures, 1)

        server.restart()
        await until(lambda: a.connected and b.connected, "both hubs to reconnect")
        a.publish("system", {"n": 3})
        await until(lambda: len(there.got) == 2, "an event after the restart")
        self.assertEqual(there.got, [{"n": 1}, {"n": 3}])
        self.assertEqual(a.stats.reconnects, 1)
        self.assertEqual(states, [True, False, True])

    async def test_keepalive_answered_late_behind_a_backlog_keeps_the_connection(self) -> None:
        """A hub that is behind on its messages (busy subscribers) gets its PING answer only after
        them, past the timeout: the connection is kept, and no event is lost to a reconnection."""
        url = redis_url_or_skip(self)
        prefix = f"streamsrv:test:{uuid.uuid4().hex}:"
        a = self.hub(url, prefix)
        b = self.hub(url, prefix, keepalive_s=0.05, timeout_s=0.2)
        got: list[int] = []

        def busy(channel: str, event: Mapping[str, Any]) -> None:
            time.sleep(0.002)  # a fan-out to many sockets, say: the reactor is busy meanwhile
            got.append(event["n"])

        b.subscribe("system", busy)
        a.startService()
        b.startService()
        await until(lambda: a.connected and b.connected, "both hubs to connect")
        for n in range(1500):
            a.publish("system", {"n": n})
        await until(lambda: len(got) == 1500 or b.stats.reconnects > 0, "every event on b", limit_s=40)
        self.assertEqual(b.stats.reconnects, 0)
        self.assertEqual(got, list(range(1500)))
        self.assertTrue(b.connected)
