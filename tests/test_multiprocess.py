# -*- test-case-name: tests.test_multiprocess -*-
"""Two real streamsrv processes sharing one real Redis.

They share rate-limit buckets; when Redis dies both keep serving on their
own local buckets; when it comes back they share again.  They share one
revocation list: a token revoked through one process, or a refresh family
revoked by reuse on one, is refused by the other.  A private
``redis-server`` is started (and killed) by the test; the machine's shared
Redis is never touched.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial import unittest

from streamsrv.auth.jwt import TokenIssuer
from tests.services import RedisServerProcess
from tests.test_daemon import TWO_WORKERS, Daemon, DaemonTestCase, write_wav

#: Stream starts allowed per address across the whole deployment, in these tests.
LIMIT = 4


class SharedRateLimitTests(DaemonTestCase):
    """STREAMSRV_REDIS_URL makes every process draw from the same buckets."""

    def setUp(self) -> None:
        super().setUp()
        self.redis = RedisServerProcess.start_for(self)
        media = self.media_dir()
        write_wav(media / "track.wav", 64 * 1024)
        env = {
            "STREAMSRV_REDIS_URL": self.redis.url,
            "STREAMSRV_RATELIMIT_STREAM_PER_IP": f"{LIMIT}/3600",
        }
        self.a = self.start(["--media-dir", str(media)], env)
        self.b = self.start(["--media-dir", str(media)], env)
        self.a.wait_ready()
        self.b.wait_ready()

    def start_stream(self, daemon: Daemon) -> int:
        response, _ = daemon.request("GET", "/stream/track.wav")
        return int(response.status)

    def backend(self, daemon: Daemon) -> str:
        _, body = daemon.request("GET", "/metrics")
        states = re.findall(rb'streamsrv_ratelimit_backend\{streamsrv_ratelimit_backend="(\w+)"\} 1.0', body)
        return states[0].decode() if states else "?"

    def wait_backend(self, state: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backend(self.a) == state and self.backend(self.b) == state:
                return
            if state == "local":
                # A check is what notices a dead Redis (probes notice its return).
                self.start_stream(self.a)
                self.start_stream(self.b)
            time.sleep(0.2)
        self.fail(f"backends did not become {state!r}:\n{self.a.output()}\n{self.b.output()}")

    def test_shared_then_local_then_shared(self) -> None:
        """One bucket across both processes; local buckets while Redis is dead; shared again after."""
        statuses = [self.start_stream(d) for d in (self.a, self.b, self.a, self.b)]
        self.assertEqual(statuses, [200] * LIMIT)
        self.assertEqual(self.start_stream(self.a), 429)
        self.assertEqual(self.start_stream(self.b), 429)
        self.assertEqual(self.backend(self.a), "redis")

        self.redis.kill()
        self.wait_backend("local")
        # Both still answer (on their own buckets, drained while probing).
        for daemon in (self.a, self.b):
            response, _ = daemon.request("GET", "/health")
            self.assertEqual(response.status, 200)

        self.redis.restart()
        self.wait_backend("redis")
        # A fresh Redis (no persistence): one shared bucket again, drawn by both.
        allowed = 0
        for daemon in (self.a, self.b) * LIMIT:
            allowed += self.start_stream(daemon) == 200
        self.assertEqual(allowed, LIMIT)
        for daemon in (self.a, self.b):
            self.assertNotIn("Traceback", daemon.output())


#: The deployment's shared HS256 secret, in these tests.
SECRET = "multiprocess-test-secret-0123456789abcdef-0123456789"


class SharedRevocationTests(DaemonTestCase):
    """With STREAMSRV_REDIS_URL, a revocation made through one process holds on every process."""

    def setUp(self) -> None:
        super().setUp()
        self.redis = RedisServerProcess.start_for(self)
        media = self.media_dir()
        write_wav(media / "track.wav", 16 * 1024)
        self.a = self.start_with_own_data(media)
        self.b = self.start_with_own_data(media)
        self.a.wait_ready()
        self.b.wait_ready()
        clock = Clock()
        clock.advance(time.time())
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock
        )

    def start_with_own_data(self, media: Path) -> Daemon:
        """A daemon with a data dir of its own: only Redis is shared."""
        data = Path(self.mktemp()).absolute()
        data.mkdir()
        env = {
            "STREAMSRV_REDIS_URL": self.redis.url,
            "STREAMSRV_JWT_SECRET": SECRET,
            "STREAMSRV_DATA_DIR": str(data),
        }
        return self.start(["--media-dir", str(media)], env)

    def stream(self, daemon: Daemon, token: str) -> tuple[int, str]:
        response, body = daemon.request("GET", "/stream/track.wav", {"Authorization": f"Bearer {token}"})
        code = json.loads(body)["error"]["code"] if response.status >= 400 else ""
        return int(response.status), code

    def post(
        self, daemon: Daemon, path: str, fields: dict[str, str], token: str | None = None
    ) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response, body = daemon.request("POST", path, headers, json.dumps(fields).encode())
        return int(response.status), json.loads(body)

    def eventually(
        self, daemon: Daemon, token: str, expected: tuple[int, str], timeout: float = 15.0
    ) -> float:
        """The other process applies a revocation at its next poll of the store (about a
        second: docs/modules/processes.md); how long that took, seconds (printed, not asserted)."""
        started = time.monotonic()
        deadline = started + timeout
        got = self.stream(daemon, token)
        while got != expected and time.monotonic() < deadline:
            time.sleep(0.02)
            got = self.stream(daemon, token)
        self.assertEqual(got, expected, daemon.output())
        elapsed = time.monotonic() - started
        Logger().info("revocation reached the other daemon after {elapsed:.3f}s", elapsed=elapsed)
        return elapsed

    def test_revoke_subject_on_one_holds_on_both(self) -> None:
        """An admin revokes alice on A; B refuses alice's token too, and still serves bob."""
        alice = self.issuer.issue(sub="alice", roles=["listener"], ttl_s=600)
        bob = self.issuer.issue(sub="bob", roles=["listener"], ttl_s=600)
        admin = self.issuer.issue(sub="ops", roles=["admin"], ttl_s=600)
        self.assertEqual(self.stream(self.a, alice), (200, ""))
        self.assertEqual(self.stream(self.b, alice), (200, ""))
        time.sleep(1.1)  # "issued before now" has a resolution of one second (iat)
        status, body = self.post(self.a, "/api/v1/auth/revoke", {"sub": "alice"}, admin)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.stream(self.a, alice), (401, "TOKEN_REVOKED"))
        self.eventually(self.b, alice, (401, "TOKEN_REVOKED"))
        self.assertEqual(self.stream(self.b, bob), (200, ""))

    def test_refresh_reuse_across_processes(self) -> None:
        """A refresh token spent on A and replayed on B revokes the family on both."""
        first = self.issuer.issue(sub="carol", roles=["listener"], typ="refresh", ttl_s=3600)
        status, rotated = self.post(self.a, "/api/v1/auth/refresh", {"refresh_token": first})
        self.assertEqual(status, 200, rotated)
        access = rotated["access_token"]
        self.assertEqual(self.stream(self.b, access), (200, ""))
        status, body = self.post(self.b, "/api/v1/auth/refresh", {"refresh_token": first})
        self.assertEqual((status, body["error"]["code"]), (401, "TOKEN_REVOKED"))
        self.assertEqual(self.stream(self.b, access), (401, "TOKEN_REVOKED"))
        self.eventually(self.a, access, (401, "TOKEN_REVOKED"))
        status, body = self.post(self.a, "/api/v1/auth/refresh", {"refresh_token": rotated["refresh_token"]})
        self.assertEqual((status, body["error"]["code"]), (401, "TOKEN_REVOKED"))
        for daemon in (self.a, self.b):
            self.assertNotIn("Traceback", daemon.output())
            for part in (first.split(".")[2], access.split(".")[2]):
                self.assertNotIn(part, daemon.output())


class TwoWorkerSharedRevocationTests(SharedRevocationTests):
    """The same across two daemons of two workers each."""

    extra_env = TWO_WORKERS


def worker_connections(testcase: DaemonTestCase, daemon: Daemon, workers: int) -> dict[int, Any]:
    """One idle keep-alive connection accepted by each of *daemon*'s *workers* (closed in cleanup).

    Connections are opened in batches so that the workers race to accept them;
    each is asked ``/health`` once to learn which worker holds it.
    """
    found: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + 30.0
    while len(found) < workers and time.monotonic() < deadline:
        batch = [http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10) for _ in range(8)]
        for conn in batch:
            conn.connect()
        for conn in batch:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            worker = int(response.getheader("X-Streamsrv-Worker", "-1"))
            if worker >= 0 and worker not in found:
                found[worker] = conn
                testcase.addCleanup(conn.close)
            else:
                conn.close()
        time.sleep(0.05)
    testcase.assertEqual(sorted(found), list(range(workers)), daemon.output())
    return found


class WorkerRevocationTests(DaemonTestCase):
    """With STREAMSRV_WORKERS=2 and Redis, a revocation holds on every worker once its call returned.

    Each worker first verifies and remembers alice's token; the revocation is
    then made through one worker, and the very next request on each worker
    is refused (no poll interval in between: the host's doorbell,
    docs/modules/processes.md).
    """

    #: Whether the daemon shares its revocations through Redis (else SQLite in the data dir).
    use_redis = True

    def setUp(self) -> None:
        super().setUp()
        media = self.media_dir()
        write_wav(media / "track.wav", 16 * 1024)
        env = {"STREAMSRV_JWT_SECRET": SECRET, **TWO_WORKERS}
        if self.use_redis:
            env["STREAMSRV_REDIS_URL"] = RedisServerProcess.start_for(self).url
        self.daemon = self.start(["--media-dir", str(media)], env)
        self.daemon.wait_ready()
        clock = Clock()
        clock.advance(time.time())
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock
        )

    def exchange(
        self, conn: http.client.HTTPConnection, method: str, path: str, token: str, body: bytes | None = None
    ) -> tuple[int, str, Any]:
        """One request on a kept connection: status, error code (or ""), and the worker that answered."""
        headers = {"Authorization": f"Bearer {token}", "Range": "bytes=0-99"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        code = json.loads(data)["error"]["code"] if response.status >= 400 else ""
        return int(response.status), code, response.getheader("X-Streamsrv-Worker")

    def test_revoke_holds_on_every_worker_at_once(self) -> None:
        """Revoking alice through worker 0 (then through 1 for a jti): each worker's very next
        request with her remembered token is 401 TOKEN_REVOKED; bob still streams on both."""
        conns = worker_connections(self, self.daemon, 2)
        alice = self.issuer.issue(sub="alice", roles=["listener"], ttl_s=600)
        bob = self.issuer.issue(sub="bob", roles=["listener"], ttl_s=600)
        admin = self.issuer.issue(sub="ops", roles=["admin"], ttl_s=600)
        for worker, conn in conns.items():
            self.assertEqual(self.exchange(conn, "GET", "/stream/track.wav", alice), (206, "", str(worker)))
            self.assertEqual(self.exchange(conn, "GET", "/stream/track.wav", bob)[:2], (206, ""))
        time.sleep(1.1)  # "issued before now" has a resolution of one second (iat)
        revoke = json.dumps({"sub": "alice"}).encode()
        status, _, worker = self.exchange(conns[0], "POST", "/api/v1/auth/revoke", admin, revoke)
        self.assertEqual((status, worker), (200, "0"))
        for worker, conn in sorted(conns.items(), reverse=True):
            got = self.exchange(conn, "GET", "/stream/track.wav", alice)
            self.assertEqual(got, (401, "TOKEN_REVOKED", str(worker)), self.daemon.output())
            self.assertEqual(self.exchange(conn, "GET", "/stream/track.wav", bob)[:2], (206, ""))

        carol = self.issuer.issue(sub="carol", roles=["listener"], ttl_s=600, jti="carol-1")
        for conn in conns.values():
            self.assertEqual(self.exchange(conn, "GET", "/stream/track.wav", carol)[:2], (206, ""))
        revoke = json.dumps({"jti": "carol-1"}).encode()
        self.assertEqual(self.exchange(conns[1], "POST", "/api/v1/auth/revoke", admin, revoke)[0], 200)
        for worker, conn in conns.items():
            got = self.exchange(conn, "GET", "/stream/track.wav", carol)
            self.assertEqual(got, (401, "TOKEN_REVOKED", str(worker)), self.daemon.output())
        self.assertNotIn("Traceback", self.daemon.output())


class WorkerRevocationSqliteTests(WorkerRevocationTests):
    """The same without Redis: the workers share revocations in the data dir's SQLite file."""

    use_redis = False


def _ws_session(port: int, token: str, script: Any) -> Any:
    """Run *script(ws)* against ``ws://127.0.0.1:PORT/ws`` after authenticating (websockets, in asyncio)."""
    import asyncio

    import websockets

    async def main() -> Any:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ready["type"] == "ready", ready
            return await script(ws)

    return asyncio.run(main())


class SharedEventsTests(DaemonTestCase):
    """Events raised on one process reach sockets on another through Redis, also after Redis restarts."""

    def setUp(self) -> None:
        super().setUp()
        try:
            import websockets  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("the websockets client library is not installed") from None
        self.redis = RedisServerProcess.start_for(self)
        media = self.media_dir()
        write_wav(media / "track.wav", 64 * 1024)
        env = {"STREAMSRV_REDIS_URL": self.redis.url, "STREAMSRV_JWT_SECRET": SECRET}
        self.a = self.start(["--media-dir", str(media)], {**env, "STREAMSRV_DATA_DIR": self.own_dir()})
        self.b = self.start(["--media-dir", str(media)], {**env, "STREAMSRV_DATA_DIR": self.own_dir()})
        self.a.wait_ready()
        self.b.wait_ready()
        clock = Clock()
        clock.advance(time.time())
        self.issuer = TokenIssuer(
            secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock
        )

    def own_dir(self) -> str:
        path = Path(self.mktemp()).absolute()
        path.mkdir()
        return str(path)

    def event_crosses(self, user: str) -> dict[str, Any]:
        """Subscribe to user:me on B, then stream as *user* on A; the stream.started event B relays."""
        import asyncio

        token = self.issuer.issue(sub=user, roles=["listener"], ttl_s=600)

        async def script(ws: Any) -> dict[str, Any]:
            await ws.send(json.dumps({"type": "subscribe", "data": {"channels": ["user:me"]}}))
            subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert subscribed["type"] == "subscribed", subscribed
            loop = asyncio.get_running_loop()
            status = await loop.run_in_executor(
                None,
                lambda: (
                    self.a.request(
                        "GET",
                        "/stream/track.wav",
                        {"Authorization": f"Bearer {token}", "Range": "bytes=0-999"},
                    )[0].status
                ),
            )
            assert status == 206, status
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["type"] == "event":
                    return dict(frame["data"]["event"])

        return dict(_ws_session(self.b.port, token, script))

    def wait_connected(self, daemon: Daemon, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = daemon.request("GET", "/metrics")
            if b"streamsrv_events_redis_connected 1.0" in body:
                return
            time.sleep(0.2)
        self.fail(f"the event hub did not reconnect:\n{daemon.output()}")

    def test_event_crosses_processes_and_survives_redis_restart(self) -> None:
        """stream.started raised on A reaches a socket on B; after Redis dies and returns, again."""
        event = self.event_crosses("dana")
        self.assertEqual(
            (event["type"], event["path"], event["sub"]), ("stream.started", "track.wav", "dana")
        )
        self.redis.kill()
        for daemon in (self.a, self.b):
            response, _ = daemon.request("GET", "/health")
            self.assertEqual(response.status, 200)
        self.redis.restart()
        self.wait_connected(self.a)
        self.wait_connected(self.b)
        event = self.event_crosses("erin")
        self.assertEqual((event["type"], event["sub"]), ("stream.started", "erin"))
        for daemon in (self.a, self.b):
            self.assertNotIn("Traceback", daemon.output())


class PlaybackDurabilityTests(DaemonTestCase):
    """SIGTERM right after a burst of playback reports: every report is in the analytics store."""

    def test_sigterm_after_burst_loses_nothing(self) -> None:
        import signal
        import sqlite3

        try:
            import websockets  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("the websockets client library is not installed") from None
        media = self.media_dir()
        write_wav(media / "track.wav", 64 * 1024)
        daemon = self.start(["--media-dir", str(media)], {"STREAMSRV_JWT_SECRET": SECRET})
        daemon.wait_ready()
        clock = Clock()
        clock.advance(time.time())
        issuer = TokenIssuer(secret=SECRET, private_key_pem=None, issuer=None, audience=None, clock=clock)
        token = issuer.issue(sub="fay", roles=["listener"], ttl_s=600)
        reports = 18  # within the socket's burst allowance (20 messages)

        async def script(ws: Any) -> None:
            await ws.send(json.dumps({"type": "playback.play", "data": {
                "session_id": "burst", "path": "track.wav", "position_s": 0, "startup_ms": 90}}))  # fmt: skip
            for n in range(1, reports):
                await ws.send(json.dumps({"type": "playback.progress", "data": {
                    "session_id": "burst", "path": "track.wav", "position_s": n * 0.1}}))  # fmt: skip
            await ws.send(json.dumps({"type": "ping", "id": "last"}))
            while True:  # the pong comes after every report before it was handled
                import asyncio

                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "pong":
                    return

        _ws_session(daemon.port, token, script)
        daemon.process.send_signal(signal.SIGTERM)
        self.assert_clean_exit(daemon, daemon.wait(30))
        with sqlite3.connect(self.data / "analytics.sqlite3") as db:
            query = (
                "SELECT COUNT(*) FROM events"
                " WHERE session_id IN (SELECT id FROM sessions WHERE client_session_id = ?)"
            )
            (count,) = db.execute(query, ("burst",)).fetchone()
        self.assertEqual(count, reports)
