# -*- test-case-name: tests.test_multiprocess -*-
"""Two real streamsrv processes sharing one real Redis.

They share rate-limit buckets; when Redis dies both keep serving on their
own local buckets; when it comes back they share again.  A private
``redis-server`` is started (and killed) by the test; the machine's shared
Redis is never touched.
"""

from __future__ import annotations

import re
import time

from tests.services import RedisServerProcess
from tests.test_daemon import Daemon, DaemonTestCase, write_wav

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
