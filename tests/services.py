"""Real services for tests: the shared Redis and PostgreSQL, and private Redis servers.

Tests that need Redis or PostgreSQL use the ones running on this machine (and
in CI): :func:`redis_url_or_skip` and :func:`postgres_dsn_or_skip` give their
address, or skip the test with the reason when the service cannot be reached.
With ``STREAMSRV_TEST_REQUIRE_SERVICES=1`` (CI) the same situation fails the
test instead, so a missing service cannot turn the suite silently green.
A test that must kill Redis starts its own with :class:`RedisServerProcess`.
Nothing here may flush or otherwise touch data it did not create on a shared
service, or leave a process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, NoReturn
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from streamsrv.notifications.channels.base import ChannelError
from streamsrv.redisconn import RedisTarget, parse_redis_url

#: Set to ``1`` where the services must be there (CI): tests fail instead of skipping.
REQUIRE_ENV = "STREAMSRV_TEST_REQUIRE_SERVICES"

#: Overrides the shared Redis (default: ``redis://127.0.0.1:6379/0``).
REDIS_URL_ENV = "STREAMSRV_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: Overrides the shared PostgreSQL (default: the ``postgres`` database over TCP, trust auth).
POSTGRES_DSN_ENV = "STREAMSRV_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: How long a reachability probe may take.
PROBE_TIMEOUT_S = 2.0

#: How long a private redis-server may take to answer PING after starting.
START_TIMEOUT_S = 10.0


def services_required() -> bool:
    """
    Whether an unreachable service fails tests rather than skipping them.
    """
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _unavailable(testcase: unittest.TestCase, reason: str) -> NoReturn:
    if services_required():
        raise testcase.failureException(f"{reason} (and {REQUIRE_ENV} is set, so this fails)")
    raise unittest.SkipTest(reason)


def _encode_command(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def redis_ping(target: RedisTarget, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """
    PING a Redis server synchronously, logging in first if needed.

    :return: ``None`` when it answers ``PONG``, else why not.
    """
    try:
        if target.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(target.path)
        else:
            assert target.host is not None
            sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as e:
        return f"cannot connect: {e}"
    try:
        commands = b""
        expected = 0
        if target.password is not None:
            words = (
                ("AUTH", target.username, target.password) if target.username else ("AUTH", target.password)
            )
            commands += _encode_command(*words)
            expected += 1
        if target.db is not None:
            commands += _encode_command("SELECT", str(target.db))
            expected += 1
        commands += _encode_command("PING")
        expected += 1
        sock.sendall(commands)
        reply = b""
        deadline = time.monotonic() + timeout
        while reply.count(b"\r\n") < expected and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError as e:
        return f"no answer: {e}"
    finally:
        sock.close()
    lines = reply.split(b"\r\n")[:expected]
    if len(lines) == expected and all(line.startswith(b"+") for line in lines) and lines[-1] == b"+PONG":
        return None
    return f"unexpected answer: {reply[:200]!r}"


def redis_url_or_skip(testcase: unittest.TestCase) -> str:
    """
    The URL of the shared Redis, or skip (fail under
    ``STREAMSRV_TEST_REQUIRE_SERVICES=1``) if it does not answer PING.

    Tests using it must confine themselves to keys under a prefix of their
    own, random per test, and never flush the database.
    """
    url = os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    try:
        target = parse_redis_url(url)
    except ValueError as e:
        _unavailable(testcase, f"{REDIS_URL_ENV} is not a Redis URL: {e}")
    problem = redis_ping(target)
    if problem is not None:
        _unavailable(testcase, f"Redis at {target.describe()} is not reachable: {problem}")
    return url


def postgres_dsn_or_skip(testcase: unittest.TestCase) -> str:
    """
    The DSN of the shared PostgreSQL, or skip (fail under
    ``STREAMSRV_TEST_REQUIRE_SERVICES=1``) if it cannot be connected to.

    Tests using it create their own schema or database and drop it after.
    """
    dsn = os.environ.get(POSTGRES_DSN_ENV) or DEFAULT_POSTGRES_DSN
    try:
        import psycopg2
    except ImportError:
        _unavailable(testcase, "psycopg2 is not installed (pip install -e '.[test]')")
    try:
        connection = psycopg2.connect(dsn, connect_timeout=int(PROBE_TIMEOUT_S))
    except psycopg2.Error as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _unavailable(
            testcase, f"PostgreSQL is not reachable ({first_line}); {POSTGRES_DSN_ENV} sets where it is"
        )
    connection.close()
    return dsn


def postgres_admin(dsn: str, sql: str) -> None:
    """Run one statement on *dsn* outside a transaction (``CREATE DATABASE``, ``DROP SCHEMA``...)."""
    import psycopg2

    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


async def send_failure(d: Deferred[Any]) -> ChannelError:
    """The :class:`ChannelError` a notification channel's send failed with (fails if it succeeded)."""
    try:
        await d
    except ChannelError as e:
        return e
    raise AssertionError("the send succeeded")


def ffmpeg_or_skip(testcase: unittest.TestCase) -> tuple[str, str]:
    """
    The paths of Debian's ``ffmpeg`` and ``ffprobe``, the independent decoders
    renditions are checked with; skips the test without them (fails it under
    ``STREAMSRV_TEST_REQUIRE_SERVICES=1``: ``.ci/run`` installs them).
    """
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        _unavailable(testcase, "ffmpeg/ffprobe are not on PATH (Debian: apt-get install ffmpeg)")
    return ffmpeg, ffprobe


def chromium_node_or_skip(testcase: unittest.TestCase) -> tuple[str, str, str]:
    """
    The paths of Debian's ``chromium``, ``node`` and ``npm``, which the browser
    tests drive; skips the test without them (fails it under
    ``STREAMSRV_TEST_REQUIRE_SERVICES=1``: ``.ci/run`` installs them).
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    node, npm = shutil.which("node"), shutil.which("npm")
    if chromium is None:
        _unavailable(testcase, "chromium is not on PATH (Debian: apt-get install chromium)")
    if node is None or npm is None:
        _unavailable(testcase, "node/npm are not on PATH (Debian: apt-get install nodejs npm)")
    return chromium, node, npm


def unavailable(testcase: unittest.TestCase, reason: str) -> NoReturn:
    """
    Skip *testcase* for *reason*, or fail it under ``STREAMSRV_TEST_REQUIRE_SERVICES=1``.
    """
    _unavailable(testcase, reason)


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServerProcess:
    """
    A private ``redis-server`` on a free port of 127.0.0.1, without persistence.

    Use it for tests that kill Redis; the shared one must stay up::

        server = RedisServerProcess.start_for(self)   # stopped at cleanup
        server.kill()                                  # SIGKILL, like a crash
        server.restart()                               # same port, empty data

    :meth:`start` returns once the server answers PING.
    """

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        """
        :param password: Require this password (``requirepass``).
        """
        self.port = port if port is not None else free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: str | None = None

    @classmethod
    def start_for(cls, testcase: unittest.TestCase, password: str | None = None) -> RedisServerProcess:
        """
        Start a server for *testcase*, stopped by its cleanup; skip (or fail
        under ``STREAMSRV_TEST_REQUIRE_SERVICES=1``) without ``redis-server``.
        """
        if shutil.which("redis-server") is None:
            _unavailable(testcase, "redis-server is not installed")
        server = cls(password=password)
        testcase.addCleanup(server.stop)
        server.start()
        return server

    @property
    def url(self) -> str:
        """
        ``redis://127.0.0.1:PORT/0``, with the password if there is one.
        """
        login = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"redis://{login}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """
        Whether the process is alive.
        """
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """
        Start the server and wait until it answers PING.

        :raise RuntimeError: If it exits or does not answer in time.
        """
        if self.running:
            raise RuntimeError("this redis-server is already running")
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="streamsrv-redis-")
        extra = [] if self.password is None else ["--requirepass", self.password]
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._directory,
                "--loglevel",
                "warning",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = parse_redis_url(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            problem = redis_ping(target, timeout=0.5)
            if problem is None:
                return
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"redis-server on port {self.port} exited at start: {problem}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING: {problem}")
            time.sleep(0.02)

    def kill(self) -> None:
        """
        Kill the server at once (SIGKILL), as a crash would, and reap it.
        """
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """
        Freeze the server (SIGSTOP): connections stay open, nothing answers.
        """
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """
        Let a paused server run again (SIGCONT).
        """
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """
        Start it again on the same port (with no data: nothing is persisted).
        """
        if self.running:
            self.kill()
        self.start()

    def stop(self) -> None:
        """
        Stop the server if it runs (SIGTERM, then SIGKILL) and remove its directory.
        """
        self._end(signal.SIGTERM)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def _end(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
            process.send_signal(signal.SIGCONT)  # a paused server must see the signal
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
