# -*- test-case-name: tests.test_ws -*-
"""Tests for the ``/ws`` event sockets, through iosim on a real ``twisted.web`` Site.

Each test builds a :class:`~streamsrv.web.site.StreamsrvSite` with the
:class:`~streamsrv.ws.resource.EventSocketResource` at ``/ws``, connects an
Autobahn client to it through :mod:`twisted.test.iosim`, and drives every
timer (auth timeout, token expiry, keepalive, handshakes) with a
:class:`~twisted.internet.testing.MemoryReactorClock`.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial import unittest
from twisted.web.resource import Resource

from streamsrv.auth.principal import AuthError, Principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.events.hub import InProcessHub, track_channel, user_channel
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.accesslog import redact_uri
from streamsrv.web.site import StreamsrvSite
from streamsrv.ws.limits import TokenBucket, WsLimits
from streamsrv.ws.playback import check_playback
from streamsrv.ws.protocol import EventSocketFactory, EventSocketProtocol, _ClockTimer, rfc3339
from streamsrv.ws.resource import EventSocketResource, take_query_token
from streamsrv.ws.service import EventSocketService

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Client(WebSocketClientProtocol):
    """A test client: records every message and how the socket closed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.opened = False
        self.close_code: int | None = None
        self.closed = False

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn
        self.messages.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        self.closed = True
        self.close_code = code

    def send_json(self, kind: str, data: dict[str, Any] | None = None, msg_id: str | None = None) -> None:
        message: dict[str, Any] = {"type": kind}
        if data is not None:
            message["data"] = data
        if msg_id is not None:
            message["id"] = msg_id
        self.sendMessage(json.dumps(message).encode("utf-8"))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


def principal(
    sub: str = "u1",
    roles: tuple[str, ...] = ("listener",),
    expires_at: float | None = START + 3600,
) -> Principal:
    permissions: frozenset[str] = frozenset()
    for role in roles:
        permissions |= DEFAULT_ROLES.get(role, frozenset())
    return Principal(
        sub=sub, roles=frozenset(roles), permissions=permissions, via="jwt", expires_at=expires_at
    )


class Harness:
    """A site with ``/ws``, a hub, fake tokens, and a way to connect clients."""

    def __init__(self, testcase: unittest.TestCase, limits: WsLimits | None = None, **options: Any) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(START)
        self.hub = InProcessHub()
        self.tokens: dict[str, Principal] = {}
        self.reports: list[tuple[str, str, dict[str, Any]]] = []
        self.metrics = Metrics(process=False)

        async def authenticate(token: str) -> Principal:
            found = self.tokens.get(token)
            if found is None:
                raise AuthError("TOKEN_INVALID", reason="unknown")
            return found

        def on_playback(who: Principal, kind: str, data: Any) -> str | None:
            if data.get("position_s", 0) > 10_000:
                return "position_s is past the end of the track."
            self.reports.append((who.sub, kind, dict(data)))
            return None

        options.setdefault("on_playback", on_playback)
        self.factory = EventSocketFactory(
            hub=self.hub,
            authenticate=authenticate,
            clock=self.clock,
            limits=limits or WsLimits(),
            metrics=self.metrics,
            **options,
        )
        root = Resource()
        root.putChild(b"ws", EventSocketResource(self.factory))
        self.site = StreamsrvSite(root, metrics=self.metrics, clock=self.clock)
        self.pumps: list[iosim.IOPump] = []
        self.log_events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.log_events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

    def connect(self, query: str = "") -> tuple[Client, iosim.IOPump]:
        """Open a socket to ``/ws`` (with *query*), through the real site."""
        url = "ws://localhost/ws" + (f"?{query}" if query else "")
        client_factory = WebSocketClientFactory(url, reactor=self.clock)
        client_factory.protocol = Client
        client_factory._batched_timer = _ClockTimer(self.clock)
        client_factory.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0
        )
        peer = IPv4Address("TCP", "192.0.2.7", 50000 + len(self.pumps))
        server = self.site.buildProtocol(peer)
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
        server_transport = iosim.FakeTransport(server, isServer=True, peerAddress=peer)
        client_transport = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(server, server_transport, client, client_transport, clock=self.clock)
        self.pumps.append(pump)
        return client, pump

    def server_of(self, pump: iosim.IOPump) -> EventSocketProtocol:
        protocol = pump.serverIO.protocol
        assert isinstance(protocol, EventSocketProtocol)
        return protocol

    def authed(self, who: Principal | None = None, token: str = "tok-u1") -> tuple[Client, iosim.IOPump]:
        """A socket authenticated by an ``auth`` message."""
        self.tokens[token] = who if who is not None else principal()
        client, pump = self.connect()
        client.send_json("auth", {"token": token}, "a1")
        pump.flush()
        return client, pump

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for pump in self.pumps:
            pump.flush()

    def logged_text(self) -> str:
        return "\n".join(f"{formatEvent(e)} {e!r}" for e in self.log_events)


class AuthenticationTests(unittest.TestCase):
    """Authenticating a socket: by message, by query, timeouts and permissions."""

    def test_auth_message(self) -> None:
        """A valid ``auth`` message is answered ``ready`` with sub and expiry, echoing its id."""
        h = Harness(self)
        client, _ = h.authed()
        self.assertTrue(client.opened)
        [ready] = client.of_type("ready")
        self.assertEqual(ready["id"], "a1")
        self.assertEqual(ready["data"], {"sub": "u1", "expires_at": "2026-01-01T01:00:00.000Z"})
        self.assertEqual(ready["ts"], "2026-01-01T00:00:00.000Z")
        self.assertEqual(h.factory.stats.authenticated, 1)

    def test_auth_by_query_parameter(self) -> None:
        """An ``access_token`` query parameter authenticates at once, and is seen by nothing else."""
        h = Harness(self)
        h.tokens["secret-token-value"] = principal()
        client, pump = h.connect("access_token=secret-token-value&client=web")
        self.assertEqual(client.of_type("ready")[0]["data"]["sub"], "u1")
        server = h.server_of(pump)
        self.assertNotIn("secret-token-value", server.http_request_uri)
        self.assertNotIn("access_token", server.http_request_params)
        self.assertEqual(server.http_request_params, {"client": ["web"]})
        self.assertNotIn("secret-token-value", h.logged_text())

    def test_access_log_redacts_the_query_token(self) -> None:
        """The access log's redaction covers ``access_token`` (should a /ws request ever be logged)."""
        self.assertEqual(redact_uri(b"/ws?access_token=abc&x=1"), "/ws?access_token=REDACTED&x=1")

    def test_take_query_token(self) -> None:
        """The token is split out of the URI; repeated or empty tokens count as none."""
        self.assertEqual(take_query_token(b"/ws"), (b"/ws", None))
        self.assertEqual(take_query_token(b"/ws?access_token=t"), (b"/ws", "t"))
        self.assertEqual(take_query_token(b"/ws?a=1&access_token=t&b=2"), (b"/ws?a=1&b=2", "t"))
        self.assertEqual(take_query_token(b"/ws?access_token=t&access_token=u"), (b"/ws", None))
        self.assertEqual(take_query_token(b"/ws?access_token="), (b"/ws", None))

    def test_timeout_closes_4401(self) -> None:
        """A socket that does not authenticate within the auth timeout is closed with 4401."""
        h = Harness(self, WsLimits(auth_timeout_s=10))
        client, _pump = h.connect()
        h.advance(9.9)
        self.assertFalse(client.closed)
        h.advance(0.1)
        self.assertTrue(client.closed)
        self.assertEqual(client.close_code, 4401)
        self.assertEqual(client.of_type("error")[0]["data"]["code"], "UNAUTHENTICATED")
        self.assertEqual(h.factory.sockets, set())
        self.assertEqual(h.factory.stats.closes[4401], 1)

    def test_refused_token_closes_4401(self) -> None:
        """A refused token is answered with its error code, then the socket closes with 4401."""
        h = Harness(self)
        client, pump = h.connect()
        client.send_json("auth", {"token": "nope"})
        pump.flush()
        self.assertEqual(client.of_type("error")[0]["data"]["code"], "TOKEN_INVALID")
        self.assertEqual(client.close_code, 4401)
        self.assertEqual(h.metrics.security_events.labels("ws_token_invalid")._value.get(), 1)

    def test_without_ws_connect_closes_4403(self) -> None:
        """A principal without ``ws:connect`` is answered FORBIDDEN and closed with 4403."""
        h = Harness(self)
        client, _ = h.authed(principal(roles=("nobody",)))
        self.assertEqual(client.of_type("error")[0]["data"]["code"], "FORBIDDEN")
        self.assertEqual(client.close_code, 4403)
        self.assertEqual(client.of_type("ready"), [])

    def test_messages_before_auth_are_refused(self) -> None:
        """Before ``ready`` only ``auth`` and ``ping`` work; others get UNAUTHENTICATED."""
        h = Harness(self)
        client, pump = h.connect()
        client.send_json("subscribe", {"channels": ["user:me"]}, "s1")
        client.send_json("ping", None, "p1")
        pump.flush()
        self.assertEqual([m["type"] for m in client.messages], ["error", "pong"])
        self.assertEqual(client.messages[0]["data"]["code"], "UNAUTHENTICATED")
        self.assertEqual(client.messages[0]["id"], "s1")
        self.assertEqual(client.messages[1]["id"], "p1")
        self.assertFalse(client.closed)

    def test_anonymous_in_development(self) -> None:
        """With an anonymous principal configured, ``auth`` without a token authenticates as it."""
        anon = Principal(
            sub="anonymous",
            roles=frozenset({"listener"}),
            permissions=DEFAULT_ROLES["listener"],
            via="anonymous",
        )
        h = Harness(self, anonymous=anon)
        client, pump = h.connect()
        client.send_json("auth", {})
        pump.flush()
        self.assertEqual(client.of_type("ready")[0]["data"], {"sub": "anonymous", "expires_at": None})

    def test_plain_get_is_refused(self) -> None:
        """A GET of /ws without an upgrade gets the contract's JSON error with 426."""
        from tests.sitehelpers import parse_head, raw_exchange

        h = Harness(self)

        class Built:
            site = h.site

            class tracker:
                open_count = 0

        raw = raw_exchange(Built, b"GET /ws?access_token=zzz HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[arg-type]
        status, _headers, body = parse_head(raw)
        self.assertEqual(status, 426)
        self.assertEqual(json.loads(body)["error"]["code"], "BAD_REQUEST")
        self.assertNotIn("zzz", h.logged_text())


class TokenExpiryTests(unittest.TestCase):
    """``token.expiring``, re-authentication on the same socket, and closing at ``exp``."""

    def test_expiring_then_closed_at_exp(self) -> None:
        """``token.expiring`` comes 60 s before exp; without re-auth the socket closes with 4401 at exp."""
        h = Harness(self)
        client, _ = h.authed(principal(expires_at=START + 120))
        h.advance(59)
        self.assertEqual(client.of_type("token.expiring"), [])
        h.advance(1)
        [warning] = client.of_type("token.expiring")
        self.assertEqual(warning["data"], {"expires_at": "2026-01-01T00:02:00.000Z", "expires_in_s": 60})
        h.advance(59.9)
        self.assertFalse(client.closed)
        h.advance(0.1)
        self.assertEqual(client.of_type("error")[-1]["data"]["code"], "TOKEN_EXPIRED")
        self.assertEqual(client.close_code, 4401)

    def test_reauth_rearms(self) -> None:
        """Re-auth for the same sub answers ``ready`` again and moves the expiry; subscriptions stay."""
        h = Harness(self)
        client, pump = h.authed(principal(expires_at=START + 120))
        client.send_json("subscribe", {"channels": ["user:me"]})
        h.advance(60)
        h.tokens["tok-2"] = principal(expires_at=START + 3600)
        client.send_json("auth", {"token": "tok-2"}, "a2")
        pump.flush()
        self.assertEqual(client.of_type("ready")[-1]["id"], "a2")
        h.advance(120)
        self.assertFalse(client.closed)
        h.hub.publish(user_channel("u1"), {"type": "stream.started", "path": "a.mp3"})
        pump.flush()
        self.assertEqual(client.of_type("event")[-1]["data"]["channel"], "user:me")
        h.advance(3600 - 180 - 60)
        self.assertEqual(len(client.of_type("token.expiring")), 2)

    def test_reauth_as_someone_else_closes_4403(self) -> None:
        """Re-authenticating with another subject's token closes the socket with 4403."""
        h = Harness(self)
        client, pump = h.authed()
        h.tokens["tok-u2"] = principal(sub="u2")
        client.send_json("auth", {"token": "tok-u2"})
        pump.flush()
        self.assertEqual(client.close_code, 4403)

    def test_failed_reauth_keeps_socket(self) -> None:
        """A refused re-authentication is answered with an error; the socket lives on until exp."""
        h = Harness(self)
        client, pump = h.authed()
        client.send_json("auth", {"token": "bad"})
        pump.flush()
        self.assertEqual(client.of_type("error")[-1]["data"]["code"], "TOKEN_INVALID")
        self.assertFalse(client.closed)

    def test_revoked_socket_is_closed(self) -> None:
        """The service's periodic revalidation closes sockets whose token was revoked (4401)."""
        revoked: set[str] = set()
        h = Harness(self, is_revoked=lambda p: p.sub in revoked)
        service = EventSocketService(h.factory, interval_s=30)
        service.startService()
        self.addCleanup(service.stopService)
        client, _ = h.authed()
        h.advance(30)
        self.assertFalse(client.closed)
        revoked.add("u1")
        h.advance(30)
        self.assertEqual(client.of_type("error")[-1]["data"]["code"], "TOKEN_REVOKED")
        self.assertEqual(client.close_code, 4401)

    def test_service_stop_closes_1001(self) -> None:
        """Stopping the service closes every socket with 1001."""
        h = Harness(self)
        service = EventSocketService(h.factory)
        service.startService()
        client, _ = h.authed()
        service.stopService()
        h.advance(0)
        self.assertEqual(client.close_code, 1001)


class SubscriptionTests(unittest.TestCase):
    """Subscribing to channels, permission checks, and event delivery from the hub."""

    def test_listener_channels(self) -> None:
        """A listener gets ``user:me``; ``system`` and tracks are FORBIDDEN; unknown names BAD_REQUEST."""
        h = Harness(self)
        client, pump = h.authed()
        client.send_json("subscribe", {"channels": ["user:me", "system", "track:jazz/a.mp3", "weird"]}, "s1")
        pump.flush()
        errors = {e["data"]["code"]: e["data"]["channels"] for e in client.of_type("error")}
        self.assertEqual(errors, {"FORBIDDEN": ["system", "track:jazz/a.mp3"], "BAD_REQUEST": ["weird"]})
        [subscribed] = client.of_type("subscribed")
        self.assertEqual(subscribed, {**subscribed, "id": "s1", "data": {"channels": ["user:me"]}})

    def test_one_server_id_per_message_without_id(self) -> None:
        """A message without an id: its error and its subscribed share one server id; the next, another."""
        h = Harness(self)
        client, pump = h.authed()
        client.send_json("subscribe", {"channels": ["user:me", "system"]})
        pump.flush()
        client.send_json("subscribe", {"channels": ["weird"]})
        pump.flush()
        first = [m["id"] for m in client.messages[1:3]]
        second = [m["id"] for m in client.messages[3:5]]
        self.assertEqual([m["type"] for m in client.messages[1:]], ["error", "subscribed"] * 2)
        self.assertEqual(len(set(first)), 1)
        self.assertEqual(len(set(second)), 1)
        self.assertNotEqual(first[0], second[0])
        self.assertNotIn(first[0], [client.messages[0]["id"]])
        client.sendMessage(json.dumps({"type": "ping", "id": 7}).encode("utf-8"))
        pump.flush()
        self.assertTrue(client.messages[-1]["id"].startswith("s"), client.messages[-1])

    def test_admin_channels_and_events(self) -> None:
        """An admin subscribes to ``system`` and a track; hub events arrive as ``event`` frames."""
        h = Harness(self)
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system", "track:jazz/./a.mp3"]})
        pump.flush()
        self.assertEqual(
            client.of_type("subscribed")[0]["data"]["channels"], ["system", "track:jazz/./a.mp3"]
        )
        h.hub.publish("system", {"type": "track.added", "path": "jazz/b.mp3"})
        h.hub.publish(track_channel("jazz/a.mp3"), {"type": "stream.started", "sub": "u9"})
        h.hub.publish(track_channel("jazz/other.mp3"), {"type": "stream.started", "sub": "u9"})
        pump.flush()
        events = [m["data"] for m in client.of_type("event")]
        self.assertEqual(
            events,
            [
                {"channel": "system", "event": {"type": "track.added", "path": "jazz/b.mp3"}},
                {"channel": "track:jazz/./a.mp3", "event": {"type": "stream.started", "sub": "u9"}},
            ],
        )
        self.assertTrue(all(m["ts"] == rfc3339(START) for m in client.of_type("event")))

    def test_artist_may_watch_tracks(self) -> None:
        """An artist (analytics:read:own) may subscribe to a track's channel; a bad path is BAD_REQUEST."""
        h = Harness(self)
        client, pump = h.authed(principal(sub="art", roles=("artist",)))
        client.send_json("subscribe", {"channels": ["track:mine/song.flac", "track:../etc/passwd"]})
        pump.flush()
        self.assertEqual(client.of_type("error")[0]["data"]["channels"], ["track:../etc/passwd"])
        self.assertEqual(client.of_type("subscribed")[0]["data"]["channels"], ["track:mine/song.flac"])

    def test_other_users_channel_forbidden(self) -> None:
        """``user:{other}`` is FORBIDDEN to a listener; ``user:{own sub}`` is allowed."""
        h = Harness(self)
        client, pump = h.authed()
        client.send_json("subscribe", {"channels": ["user:u2", "user:u1"]})
        pump.flush()
        self.assertEqual(
            client.of_type("error")[0]["data"],
            {"code": "FORBIDDEN", "message": "Not allowed on these channels.", "channels": ["user:u2"]},
        )
        h.hub.publish(user_channel("u2"), {"type": "stream.started"})
        h.hub.publish(user_channel("u1"), {"type": "stream.ended"})
        pump.flush()
        self.assertEqual([m["data"]["channel"] for m in client.of_type("event")], ["user:u1"])

    def test_notifications_need_no_subscription(self) -> None:
        """``notification`` events on the user's channel arrive as ``notification`` frames, unasked."""
        h = Harness(self)
        client, pump = h.authed()
        h.hub.publish(user_channel("u1"), {"type": "notification", "title": "hi"})
        h.hub.publish(user_channel("u1"), {"type": "stream.started"})
        pump.flush()
        self.assertEqual([m["type"] for m in client.messages], ["ready", "notification"])
        self.assertEqual(client.messages[1]["data"], {"type": "notification", "title": "hi"})

    def test_unsubscribe(self) -> None:
        """``unsubscribe`` stops delivery and answers the remaining list; the hub subscription is released."""
        h = Harness(self)
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system", "user:me"]})
        client.send_json("unsubscribe", {"channels": ["system"]}, "u1")
        pump.flush()
        self.assertEqual(
            client.of_type("subscribed")[-1],
            {**client.of_type("subscribed")[-1], "id": "u1", "data": {"channels": ["user:me"]}},
        )
        self.assertNotIn("system", h.hub.channels)
        h.hub.publish("system", {"type": "alert"})
        pump.flush()
        self.assertEqual(client.of_type("event"), [])

    def test_subscription_cap(self) -> None:
        """A socket holds at most ``max_subscriptions`` channels; the rest are refused."""
        h = Harness(self, WsLimits(max_subscriptions=2))
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system", "user:me"]})
        client.send_json("subscribe", {"channels": ["track:a.mp3"]})
        pump.flush()
        self.assertEqual(client.of_type("error")[0]["data"]["channels"], ["track:a.mp3"])
        self.assertEqual(client.of_type("subscribed")[-1]["data"]["channels"], ["system", "user:me"])
        client.send_json("subscribe", {"channels": ["a", "b", "c"]})
        pump.flush()
        self.assertEqual(client.of_type("error")[-1]["data"]["code"], "BAD_REQUEST")

    def test_close_releases_hub_subscriptions(self) -> None:
        """A closed socket leaves no subscription behind in the hub."""
        h = Harness(self)
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system"]})
        pump.flush()
        self.assertEqual(sorted(h.hub.channels), ["system", "user:root"])
        client.sendClose(1000)
        pump.flush()
        self.assertEqual(h.hub.channels, [])
        self.assertEqual(h.factory.sockets, set())


class MessageTests(unittest.TestCase):
    """Pings, playback reports and malformed messages."""

    def test_ping(self) -> None:
        """``ping`` is answered by ``pong`` with the same id."""
        h = Harness(self)
        client, pump = h.authed()
        client.send_json("ping", None, "x")
        pump.flush()
        self.assertEqual(client.messages[-1]["type"], "pong")
        self.assertEqual(client.messages[-1]["id"], "x")

    def test_playback_reports(self) -> None:
        """Playback reports reach ``on_playback``; refused ones are answered BAD_REQUEST with its message."""
        h = Harness(self)
        client, pump = h.authed()
        report = {"session_id": "s-1", "path": "jazz/a.mp3", "position_s": 12.5, "startup_ms": 180}
        client.send_json("playback.play", report)
        client.send_json("playback.seek", {**report, "position_s": 20_000}, "bad")
        client.send_json("playback.progress", {"session_id": "s-1", "path": "../x", "position_s": 1})
        pump.flush()
        self.assertEqual(h.reports, [("u1", "play", report)])
        errors = client.of_type("error")
        self.assertEqual(errors[0]["id"], "bad")
        self.assertEqual(errors[0]["data"]["message"], "position_s is past the end of the track.")
        self.assertEqual(errors[1]["data"]["code"], "BAD_REQUEST")

    def test_check_playback(self) -> None:
        """The shape check names what is wrong."""
        self.assertIsNone(check_playback({"session_id": "s", "path": "a.mp3", "position_s": 0}))
        self.assertIn("session_id", check_playback({"path": "a.mp3", "position_s": 0}) or "")
        self.assertIn(
            "position_s", check_playback({"session_id": "s", "path": "a", "position_s": True}) or ""
        )
        self.assertIn("position_s", check_playback({"session_id": "s", "path": "a", "position_s": -1}) or "")

    def test_malformed(self) -> None:
        """Non-JSON, non-objects, binary frames and unknown types get BAD_REQUEST; the socket stays open."""
        h = Harness(self)
        client, pump = h.authed()
        client.sendMessage(b"{not json")
        client.sendMessage(b"[1, 2]")
        client.sendMessage(b"\x00\x01", isBinary=True)
        client.send_json("dance")
        client.sendMessage(b'{"type": "subscribe", "data": [1]}')
        pump.flush()
        self.assertEqual([e["data"]["code"] for e in client.of_type("error")], ["BAD_REQUEST"] * 5)
        self.assertFalse(client.closed)


class LimitTests(unittest.TestCase):
    """Frame size, message rate, keepalive and slow consumers."""

    def test_oversized_frame_closes_1009(self) -> None:
        """A message over ``max_frame`` closes the socket with 1009."""
        h = Harness(self, WsLimits(max_frame=1024))
        client, pump = h.authed()
        client.send_json("ping", {"pad": "x" * 2000})
        pump.flush()
        self.assertEqual(client.close_code, 1009)
        self.assertEqual(h.factory.sockets, set())

    def test_frame_at_limit_is_fine(self) -> None:
        """A message just under ``max_frame`` is processed."""
        h = Harness(self, WsLimits(max_frame=1024))
        client, pump = h.authed()
        message = json.dumps({"type": "ping", "data": {"pad": ""}})
        client.send_json("ping", {"pad": "x" * (1024 - len(message))})
        pump.flush()
        self.assertEqual(client.messages[-1]["type"], "pong")

    def test_rate_limit(self) -> None:
        """Over the message rate: one RATE_LIMITED error, then close 1008 if it persists."""
        h = Harness(self, WsLimits(messages_per_s=1, message_burst=3, rate_strikes=4))
        client, pump = h.authed()  # the auth message took one token
        for _ in range(4):
            client.send_json("ping")
        pump.flush()
        self.assertEqual([m["type"] for m in client.messages], ["ready", "pong", "pong", "error"])
        self.assertEqual(client.messages[-1]["data"]["code"], "RATE_LIMITED")
        h.advance(1)
        client.send_json("ping")
        pump.flush()
        self.assertEqual(client.messages[-1]["type"], "pong")
        for _ in range(5):
            client.send_json("ping")
        pump.flush()
        self.assertEqual(client.close_code, 1008)

    def test_keepalive_drops_dead_peer(self) -> None:
        """A peer that does not answer the keepalive ping within the timeout is dropped."""
        h = Harness(self, WsLimits(ping_interval_s=30, ping_timeout_s=10, auth_timeout_s=1000))
        _client, pump = h.authed()
        server = h.server_of(pump)
        self.clock_advance_without_pumping(h, 30)
        self.assertEqual(len(pump.serverIO.stream), 1)  # the ping, not delivered: the peer is dead
        self.clock_advance_without_pumping(h, 10)
        self.assertTrue(pump.serverIO.disconnecting)
        pump.flush()
        self.assertEqual(h.factory.sockets, set())
        self.assertNotIn(server, h.factory.sockets)

    def test_keepalive_keeps_live_peer(self) -> None:
        """A peer that answers pings stays connected."""
        h = Harness(self, WsLimits(ping_interval_s=30, ping_timeout_s=10, auth_timeout_s=1000))
        client, _ = h.authed(principal(expires_at=None))
        for _ in range(10):
            h.advance(15)
        self.assertFalse(client.closed)

    @staticmethod
    def clock_advance_without_pumping(h: Harness, seconds: float) -> None:
        h.clock.advance(seconds)

    def test_registered_as_producer(self) -> None:
        """The socket registers itself as its transport's streaming producer (backpressure)."""
        h = Harness(self)
        _, pump = h.authed()
        self.assertIs(pump.serverIO.producer, h.server_of(pump))
        self.assertTrue(pump.serverIO.streamingProducer)

    def test_slow_consumer_drops_oldest(self) -> None:
        """While the transport pushes back, events queue up to ``queue_max``; older ones are dropped."""
        h = Harness(self, WsLimits(queue_max=5, max_dropped=100))
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system"]})
        pump.flush()
        server = h.server_of(pump)
        server.pauseProducing()  # as the transport does when its buffer is full
        for n in range(8):
            h.hub.publish("system", {"type": "alert", "n": n})
        client.send_json("ping", None, "p")  # answers are not queued behind events
        pump.flush()
        self.assertEqual(client.messages[-1]["type"], "pong")
        self.assertEqual(client.of_type("event"), [])
        self.assertEqual(server.dropped, 3)
        self.assertEqual(h.factory.stats.events_dropped, 3)
        server.resumeProducing()
        pump.flush()
        self.assertEqual([m["data"]["event"]["n"] for m in client.of_type("event")], [3, 4, 5, 6, 7])
        self.assertFalse(client.closed)

    def test_slow_consumer_closed_4008(self) -> None:
        """A socket that stays behind (``max_dropped`` drops without draining) is closed with 4008."""
        h = Harness(self, WsLimits(queue_max=5, max_dropped=10))
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system"]})
        pump.flush()
        server = h.server_of(pump)
        server.pauseProducing()
        for n in range(14):
            h.hub.publish("system", {"type": "alert", "n": n})
        pump.flush()
        self.assertFalse(client.closed)
        h.hub.publish("system", {"type": "alert", "n": 14})
        pump.flush()
        self.assertEqual(client.close_code, 4008)
        self.assertEqual(h.factory.stats.closes[4008], 1)
        self.assertEqual(h.hub.channels, [])

    def test_drain_resets_drop_streak(self) -> None:
        """Drops count toward 4008 only until the queue drains once."""
        h = Harness(self, WsLimits(queue_max=2, max_dropped=3))
        client, pump = h.authed(principal(sub="root", roles=("admin",)))
        client.send_json("subscribe", {"channels": ["system"]})
        pump.flush()
        server = h.server_of(pump)
        for _ in range(3):
            server.pauseProducing()
            for n in range(4):  # two dropped each round
                h.hub.publish("system", {"type": "alert", "n": n})
            server.resumeProducing()
            pump.flush()
        self.assertFalse(client.closed)
        self.assertEqual(server.dropped, 6)


class PureTests(unittest.TestCase):
    """Pure helpers of the socket."""

    def test_token_bucket(self) -> None:
        """The bucket holds *burst* tokens and refills at *rate* per second."""
        bucket = TokenBucket(2.0, 2, now=0.0)
        self.assertEqual([bucket.take(0.0) for _ in range(3)], [True, True, False])
        self.assertTrue(bucket.take(0.5))
        self.assertFalse(bucket.take(0.5))
        self.assertEqual([bucket.take(10.0) for _ in range(3)], [True, True, False])

    def test_rfc3339(self) -> None:
        """Timestamps are UTC with milliseconds and a Z."""
        self.assertEqual(rfc3339(START + 0.25), "2026-01-01T00:00:00.250Z")
