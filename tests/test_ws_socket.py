"""End-to-end ``/ws`` over a real TCP socket, with an independent client library (``websockets``).

The server is the real :class:`~streamsrv.web.site.StreamsrvSite` listening on
127.0.0.1 on the reactor; the client is the ``websockets`` package's
synchronous client, run in a thread.  Waiting is real I/O bounded by the
trial timeout; nothing asserts on timing.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial import unittest

from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.events.hub import InProcessHub, user_channel
from streamsrv.ws.limits import WsLimits
from streamsrv.ws.protocol import EventSocketFactory
from tests.sitehelpers import serve_websocket

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
except ImportError:  # pragma: no cover - the test extra installs it
    connect = None

TOKEN = "real-socket-token-7c1d"


class RealSocketTests(unittest.TestCase):
    """A ``websockets`` client talks to ``/ws`` over TCP."""

    timeout = 30

    def setUp(self) -> None:
        if connect is None:
            raise unittest.SkipTest("websockets is not installed (pip install -e '.[test]')")
        self.hub = InProcessHub()
        self.reports: list[tuple[str, str]] = []
        self.log_events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

        async def authenticate(token: str) -> Principal:
            if token != TOKEN:
                raise AuthError("TOKEN_INVALID", reason="unknown")
            return Principal(
                sub="u1",
                roles=frozenset({"listener"}),
                permissions=DEFAULT_ROLES["listener"],
                via="jwt",
                expires_at=reactor.seconds() + 3600,
            )

        def on_playback(who: Principal, kind: str, data: Any) -> None:
            self.reports.append((who.sub, kind))
            # What the daemon's session tracker would do: tell the user's other devices.
            self.hub.publish(user_channel(who.sub), {"type": "playback.play", "path": data["path"]})

        limits = WsLimits(auth_timeout_s=0.5, max_frame=4096, ping_interval_s=0)
        self.factory = EventSocketFactory(
            hub=self.hub, authenticate=authenticate, clock=reactor, limits=limits, on_playback=on_playback
        )
        self.url = serve_websocket(self, self.factory)

    async def test_conversation(self) -> None:
        """Auth by query, subscribe, a playback report, its event back, ping, then a 1009 close."""

        def client() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with connect(f"{self.url}?access_token={TOKEN}", open_timeout=10) as ws:
                seen["ready"] = json.loads(ws.recv(timeout=10))
                ws.send(json.dumps({"type": "subscribe", "id": "s", "data": {"channels": ["user:me"]}}))
                seen["subscribed"] = json.loads(ws.recv(timeout=10))
                report = {"session_id": "x", "path": "jazz/a.mp3", "position_s": 0}
                ws.send(json.dumps({"type": "playback.play", "data": report}))
                seen["event"] = json.loads(ws.recv(timeout=10))
                ws.send(json.dumps({"type": "ping", "id": "p"}))
                seen["pong"] = json.loads(ws.recv(timeout=10))
                ws.send(json.dumps({"type": "ping", "data": {"pad": "x" * 5000}}))
                try:
                    ws.recv(timeout=10)
                except ConnectionClosed as e:
                    seen["close"] = e.rcvd.code if e.rcvd is not None else None
            return seen

        seen = await deferToThread(client)
        self.assertEqual(seen["ready"]["type"], "ready")
        self.assertEqual(seen["ready"]["data"]["sub"], "u1")
        self.assertEqual(seen["subscribed"]["data"], {"channels": ["user:me"]})
        self.assertEqual(seen["subscribed"]["id"], "s")
        self.assertEqual(seen["event"]["type"], "event")
        self.assertEqual(
            seen["event"]["data"],
            {"channel": "user:me", "event": {"type": "playback.play", "path": "jazz/a.mp3"}},
        )
        self.assertEqual(seen["pong"]["id"], "p")
        self.assertEqual(seen["close"], 1009)
        self.assertEqual(self.reports, [("u1", "play")])
        logged = "\n".join(f"{formatEvent(e)} {e!r}" for e in self.log_events)
        self.assertNotIn(TOKEN, logged)
        self.assertNotIn("could not register", logged)  # backpressure works on a real TCP transport
        self.assertNotIn("could not unregister", logged)

    async def test_handshake_carries_request_id(self) -> None:
        """The 101 Switching Protocols carries ``X-Request-ID``: the client's own when it sent a
        valid one, else a new one (as every other response)."""

        def client(headers: dict[str, str]) -> str | None:
            with connect(self.url, open_timeout=10, additional_headers=headers) as ws:
                assert ws.response is not None
                return ws.response.headers.get("X-Request-ID")

        self.assertEqual(await deferToThread(client, {"X-Request-ID": "front-42"}), "front-42")
        fresh = await deferToThread(client, {})
        self.assertTrue(fresh and fresh != "front-42", fresh)

    async def test_unauthenticated_closes_4401(self) -> None:
        """A client that never authenticates is closed with 4401."""

        def client() -> int | None:
            with connect(self.url, open_timeout=10) as ws:
                try:
                    while True:
                        ws.recv(timeout=10)
                except ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd is not None else None

        self.assertEqual(await deferToThread(client), 4401)
