# -*- test-case-name: tests.test_faults_redis -*-
"""Two real daemons sharing a private Redis that is killed and restarted.

Two ``twistd -n streamsrv`` processes (two "hosts") use one private
``redis-server`` for rate limits, revocations and the event hub.  A
listener's socket on the second daemon sees the playback reports the same
listener sends to the first (the hub fans them out through Redis).  With
Redis killed, both keep serving as docs/modules/middleware.md and auth.md
say: requests answered from per-process buckets (``RateLimit-*`` headers
still there), the revocation snapshot still in force, ``/auth/revoke``
answering 503, ``/health/detailed`` showing ``ratelimit``, ``revocations``
and ``events`` degraded while ``/health`` stays 200.  Once Redis is back
every check returns to ok and events flow between the daemons again on the
same sockets.  Every wait is on a condition, bounded by :data:`WAIT_S`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.auth.jwt import TokenIssuer
from tests.services import RedisServerProcess
from tests.test_daemon import Daemon, DaemonTestCase
from tests.test_faults_kill import SECRET

#: How long any wait may take before the test fails.
WAIT_S = 60.0

#: The checks Redis feeds.
REDIS_CHECKS = ("ratelimit", "revocations", "events")


def issue(sub: str, roles: list[str]) -> tuple[str, str]:
    """A token of *sub* with *roles*, and its ``jti``."""
    clock = Clock()
    clock.advance(time.time())
    issuer = TokenIssuer(secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock)
    token = issuer.issue(sub=sub, roles=roles, ttl_s=600)
    import jwt

    return token, jwt.decode(token, options={"verify_signature": False})["jti"]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* until true; fail after :data:`WAIT_S`."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_states(daemon: Daemon) -> dict[str, str]:
    """The status of each Redis-fed check in ``/health/detailed``."""
    _, body = daemon.request("GET", "/health/detailed")
    checks = json.loads(body)["checks"]
    return {name: checks[name]["status"] for name in REDIS_CHECKS if name in checks}


class RedisDownTests(DaemonTestCase):
    """Redis killed under two daemons, then restarted."""

    def setUp(self) -> None:
        super().setUp()
        try:
            import websockets  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("the websockets client library is not installed") from None
        self.redis = RedisServerProcess.start_for(self)
        env = {"STREAMSRV_REDIS_URL": self.redis.url, "STREAMSRV_JWT_SECRET": SECRET}
        media = str(self.media_dir())
        self.first = self.start(["--media-dir", media], env)
        self.second = self.start(["--media-dir", media], env)
        self.first.wait_ready()
        self.second.wait_ready()
        self.listener, _ = issue("listener-1", ["listener"])
        self.admin, _ = issue("ops", ["admin"])

    def api(self, daemon: Daemon, token: str) -> tuple[int, Any]:
        """``GET /api/v1/tracks`` with *token*: the status and the response."""
        response, _ = daemon.request("GET", "/api/v1/tracks", {"Authorization": f"Bearer {token}"})
        return response.status, response

    def revoke(self, daemon: Daemon, jti: str) -> int:
        """``POST /api/v1/auth/revoke`` of *jti* as the admin; the status."""
        response, _ = daemon.request(
            "POST",
            "/api/v1/auth/revoke",
            {"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json"},
            json.dumps({"jti": jti}).encode(),
        )
        return int(response.status)

    def test_fallback_and_recovery(self) -> None:
        """Served with the documented fallbacks while Redis is down; events flow again after."""
        doomed, doomed_jti = issue("listener-2", ["listener"])
        self.assertEqual(self.revoke(self.first, doomed_jti), 200)
        wait_for(lambda: self.api(self.second, doomed)[0] == 401, "the revocation on the other daemon")
        for daemon in (self.first, self.second):
            self.assertEqual(check_states(daemon), dict.fromkeys(REDIS_CHECKS, "ok"))
        asyncio.run(self.sockets(doomed))

    async def sockets(self, revoked: str) -> None:
        import websockets

        async def authed(daemon: Daemon) -> Any:
            ws = await websockets.connect(f"ws://127.0.0.1:{daemon.port}/ws", open_timeout=WAIT_S)
            await ws.send(json.dumps({"type": "auth", "data": {"token": self.listener}}))
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))["type"], "ready")
            return ws

        reporter = await authed(self.first)
        subscriber = await authed(self.second)
        await subscriber.send(json.dumps({"type": "subscribe", "data": {"channels": ["user:me"]}}))
        self.assertEqual(json.loads(await asyncio.wait_for(subscriber.recv(), WAIT_S))["type"], "subscribed")
        position = [0]

        async def flows() -> None:
            """A report on the first daemon arrives as an event on the second's socket."""
            position[0] += 1
            report = {"session_id": "redis-fault", "path": "faults/r.mp3", "position_s": position[0]}
            await reporter.send(json.dumps({"type": "playback.progress", "data": report}))
            while True:
                frame = json.loads(await asyncio.wait_for(subscriber.recv(), WAIT_S))
                if frame["type"] == "event" and frame["data"]["event"].get("position_s") == position[0]:
                    return

        await flows()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.while_down, revoked)
        await flows()
        await reporter.close()
        await subscriber.close()

    def while_down(self, revoked: str) -> None:
        """Kill Redis, check both daemons' fallbacks, restart it, wait for every check to be ok."""
        self.redis.kill()
        for daemon in (self.first, self.second):
            status, response = self.api(daemon, self.listener)
            self.assertEqual(status, 200)
            self.assertIsNotNone(response.getheader("RateLimit-Remaining"))
            self.assertEqual(self.api(daemon, revoked)[0], 401)  # the last snapshot stays in force
            response, _ = daemon.request("GET", "/health")
            self.assertEqual(response.status, 200)
        _, revoked_jti = issue("listener-3", ["listener"])
        self.assertEqual(self.revoke(self.first, revoked_jti), 503)
        for daemon in (self.first, self.second):
            wait_for(
                lambda d=daemon: set(check_states(d).values()) == {"degraded"},  # type: ignore[misc]
                "every Redis-fed check to say degraded",
            )
        self.redis.restart()
        for daemon in (self.first, self.second):
            self.api(daemon, self.listener)  # a request lets the limiter notice too
            wait_for(
                lambda d=daemon: set(check_states(d).values()) == {"ok"},  # type: ignore[misc]
                "every Redis-fed check to recover",
            )
