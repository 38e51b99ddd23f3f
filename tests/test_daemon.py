# -*- test-case-name: tests.test_daemon -*-
"""The real daemon: ``twistd -n streamsrv`` in a subprocess, over real sockets.

These few tests are the end-to-end truth the in-memory ones cannot give: the
plugin is found from the checkout, configuration errors stop start-up before
any port is bound, a Range request comes back byte-exact, and SIGTERM drains
in-flight streams for the grace period and then exits cleanly.  Every wait is
bounded, and every process is killed in cleanup whatever happened.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from twisted.trial import unittest

from streamsrv.audio.formats import audio_format_for

try:
    from tests.audiogen import write_tone
except ImportError:  # pragma: no cover - the fixture writer is optional
    write_tone = None  # type: ignore[assignment]

#: The checkout: twistd must run from here to find ``twisted/plugins``.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: How long the daemon may take to become ready (the demo library: longer).
READY_TIMEOUT_S = 30.0
DEMO_READY_TIMEOUT_S = 120.0

#: How long a SIGTERM'd daemon may take to exit, beyond its grace period.
EXIT_TIMEOUT_S = 30.0

#: What DESIGN allows as a clean exit after SIGTERM: 0, or twistd re-raising
#: SIGTERM (-15 as a subprocess return code, 143 as a shell reports it).
CLEAN_EXITS = (0, -signal.SIGTERM, 128 + signal.SIGTERM)

#: twistd's own entry point; ``python -m twisted.scripts.twistd`` runs nothing
#: (that module has no ``__main__`` block), so call ``run()`` like the script.
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_wav(path: Path, size: int) -> bytes:
    """Write a 16-bit stereo WAV of about *size* bytes with a non-repeating-at-1-KiB pattern."""
    frames = size // 4
    pattern = bytes((i * 7 + i // 251) % 256 for i in range(4 * 1021))
    data = (pattern * (frames * 4 // len(pattern) + 1))[: frames * 4]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(data)
    return path.read_bytes()


def server_send_buffer_max() -> int:
    """The most a TCP socket may hold unsent here (what a stalled client leaves buffered)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 8 * 1024 * 1024


class Daemon:
    """One ``twistd -n streamsrv`` subprocess and its captured output."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        env: dict[str, str],
        port: int,
        *,
        argv: list[str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        """Start ``twistd -n streamsrv *args`` (or exactly *argv*) in *cwd*, with only *env*'s
        ``STREAMSRV_*`` and ``LISTEN_*`` variables; output goes to files in *workdir*."""
        self.port = port
        self._out_path = workdir / "stdout.txt"
        self._err_path = workdir / "stderr.txt"
        self._out: IO[bytes] = self._out_path.open("wb")
        self._err: IO[bytes] = self._err_path.open("wb")
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMSRV_", "LISTEN_"))}
        clean.update(env)
        self.process = subprocess.Popen(
            argv or [sys.executable, *TWISTD, "-n", "--pidfile=", "streamsrv", *args],
            cwd=cwd,
            env=clean,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )

    def output(self) -> str:
        """Everything the process wrote so far, stdout then stderr."""
        self._out.flush()
        self._err.flush()
        return (
            "--- stdout ---\n"
            + self._out_path.read_text(errors="replace")
            + "\n--- stderr ---\n"
            + self._err_path.read_text(errors="replace")
        )

    def stdout(self) -> str:
        """What the process wrote to stdout."""
        return self._out_path.read_text(errors="replace")

    def stderr(self) -> str:
        """What the process wrote to stderr."""
        return self._err_path.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the process if it still runs; close the output files."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(EXIT_TIMEOUT_S)
        self._out.close()
        self._err.close()

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its return code."""
        return self.process.wait(timeout)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[Any, bytes]:
        """One HTTP request on a fresh connection; the response and its body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll /health/ready until 200; fail with the output if it never comes."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}\n{self.output()}")
            try:
                response, _ = self.request("GET", "/health/ready")
                if response.status == 200:
                    return
                last = response.status
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout}s (last: {last!r})\n{self.output()}")

    def refuses_connections(self) -> bool:
        """Whether a new connection to the port is refused."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return False
        except ConnectionRefusedError:
            return True


#: The environment that runs a daemon as a supervisor and two worker processes.
TWO_WORKERS = {"STREAMSRV_WORKERS": "2"}


class DaemonTestCase(unittest.SynchronousTestCase):
    """Start daemons in a temporary data dir; always kill them afterwards.

    A subclass setting :attr:`extra_env` (e.g. :data:`TWO_WORKERS`) runs every
    daemon of its tests with it: the same end-to-end tests, once more with
    several worker processes.
    """

    #: Added to every daemon's environment (the test's own *env* wins).
    extra_env: dict[str, str] = {}

    def setUp(self) -> None:
        # Absolute: the daemon runs in the checkout, not in trial's directory.
        self.data = Path(self.mktemp()).absolute()
        self.data.mkdir(parents=True)

    def start(self, args: list[str], env: dict[str, str] | None = None, port: int | None = None) -> Daemon:
        """Run the daemon listening on *port* (a free one by default) with *args* and *env*."""
        port = port if port is not None else free_port()
        workdir = Path(self.mktemp())
        workdir.mkdir()
        full_env = {"STREAMSRV_DATA_DIR": str(self.data), **self.extra_env, **(env or {})}
        daemon = Daemon(workdir, [*args, "--listen", f"tcp:{port}:interface=127.0.0.1"], full_env, port)
        self.addCleanup(daemon.stop)
        return daemon

    def media_dir(self) -> Path:
        """An empty media directory."""
        media = Path(self.mktemp()).absolute()
        media.mkdir()
        return media

    def start_long_download(self, daemon: Daemon) -> tuple[socket.socket, bytes]:
        """GET ``/stream/long.wav`` with a small receive buffer; return the socket once 64 KiB
        arrived, and the body bytes read so far (the rest is left in flight)."""
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(10)
        client.connect(("127.0.0.1", daemon.port))
        client.sendall(b"GET /stream/long.wav HTTP/1.1\r\nHost: streamsrv.test\r\n\r\n")
        received = bytearray()
        while b"\r\n\r\n" not in received or len(received) < 64 * 1024:
            chunk = client.recv(16 * 1024)
            self.assertTrue(chunk, "connection closed early")
            received += chunk
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        return client, body

    def terminate_while_reading(
        self, daemon: Daemon, client: socket.socket, body: bytes, grace_s: float, keep_reading: int
    ) -> tuple[float, bytes]:
        """SIGTERM *daemon*: its listeners go at once (well within *grace_s*) while the open
        stream on *client* keeps being sent (*keep_reading* bytes more, past any buffer).

        :return: when the signal was sent (``time.monotonic()``), and the body bytes read.
        """
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while not daemon.refuses_connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(daemon.refuses_connections())
        got = bytearray(body)
        while len(got) < len(body) + keep_reading:
            chunk = client.recv(256 * 1024)
            self.assertTrue(chunk, f"stream cut after {len(got)} bytes, {time.monotonic() - started:.2f}s")
            got += chunk
        return started, bytes(got)

    def assert_clean_exit(self, daemon: Daemon, code: int) -> None:
        """*code* is one of the exits DESIGN allows after SIGTERM."""
        self.assertIn(code, CLEAN_EXITS, daemon.output())
        self.assertNotIn("Traceback", daemon.output())


class DaemonTests(DaemonTestCase):
    """The daemon serves, and stops cleanly on SIGTERM."""

    def test_range_then_sigterm(self) -> None:
        """A byte range comes back exact (206), logged as JSON lines; SIGTERM then exits cleanly."""
        media = self.media_dir()
        track = media / "tone.wav"
        if write_tone is not None:
            write_tone(track, "wav", 1.0)
            data = track.read_bytes()
        else:  # pragma: no cover
            data = write_wav(track, 100_000)
        daemon = self.start(["--media-dir", str(media)], {"STREAMSRV_LOG_FORMAT": "json"})
        daemon.wait_ready()

        response, body = daemon.request(
            "GET", "/stream/tone.wav", {"Range": "bytes=1000-1999", "X-Request-ID": "daemon-range-1"}
        )
        self.assertEqual(response.status, 206)
        self.assertEqual(body, data[1000:2000])
        self.assertEqual(response.getheader("Content-Range"), f"bytes 1000-1999/{len(data)}")
        self.assertEqual(response.getheader("Content-Length"), "1000")
        self.assertEqual(response.getheader("Accept-Ranges"), "bytes")
        self.assertEqual(response.getheader("X-Request-ID"), "daemon-range-1")

        daemon.process.send_signal(signal.SIGTERM)
        # With nothing in flight it does not sit out the grace period; the
        # exit is bounded by EXIT_TIMEOUT_S, not timed (a loaded CI machine
        # takes seconds to unwind the services).
        code = daemon.wait(EXIT_TIMEOUT_S)
        self.assert_clean_exit(daemon, code)
        self.assertTrue(daemon.refuses_connections())
        # twistd used streamsrv's observer: every line of stdout is one JSON event.
        records = [json.loads(line) for line in daemon.stdout().splitlines()]
        access = [
            r for r in records if r["ns"] == "streamsrv.access" and r.get("request_id") == "daemon-range-1"
        ]
        self.assertEqual(len(access), 1, records)
        self.assertEqual(access[0]["status"], 206)

    def test_sigterm_drains_in_flight_stream(self) -> None:
        """After SIGTERM the listener closes at once, a stalled download keeps flowing (a second
        SIGTERM changes nothing), and the process exits once STREAMSRV_SHUTDOWN_GRACE_S has passed,
        cutting it."""
        grace_s = 1.0
        keep_reading = server_send_buffer_max() + 4 * 1024 * 1024
        media = self.media_dir()
        data = write_wav(media / "long.wav", 3 * keep_reading)
        daemon = self.start(["--media-dir", str(media)], {"STREAMSRV_SHUTDOWN_GRACE_S": str(grace_s)})
        daemon.wait_ready()

        client, body = self.start_long_download(daemon)

        started, got = self.terminate_while_reading(daemon, client, body, grace_s, keep_reading)
        self.assertEqual(got, data[: len(got)])
        self.assertIsNone(daemon.process.poll(), "exited before the grace period ended")
        # A second SIGTERM while it drains (systemd and a script both sending one) is only noted.
        daemon.process.send_signal(signal.SIGTERM)

        # Now stall: the grace period ends, the stream is cut and the process exits.
        code = daemon.wait(grace_s + EXIT_TIMEOUT_S)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, grace_s)
        self.assert_clean_exit(daemon, code)
        self.assertIn("grace period over: cutting 1 streams", daemon.output())
        self.assertIn("SIGTERM while stopping: already stopping", daemon.output())
        try:
            while chunk := client.recv(1024 * 1024):
                got += chunk
        except OSError as e:
            self.assertIn(e.errno, (errno.ECONNRESET, errno.EPIPE))
        self.assertLess(len(got), len(data))

    def test_stream_finishing_ends_grace_early(self) -> None:
        """A download that completes during the grace period lets the process exit right away."""
        media = self.media_dir()
        data = write_wav(media / "mid.wav", 8 * 1024 * 1024)
        daemon = self.start(["--media-dir", str(media)], {"STREAMSRV_SHUTDOWN_GRACE_S": "30"})
        daemon.wait_ready()
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(10)
        client.connect(("127.0.0.1", daemon.port))
        client.sendall(b"GET /stream/mid.wav HTTP/1.1\r\nHost: streamsrv.test\r\nConnection: close\r\n\r\n")
        received = bytearray(client.recv(64 * 1024))
        daemon.process.send_signal(signal.SIGTERM)
        while chunk := client.recv(256 * 1024):
            received += chunk
        _, _, body = bytes(received).partition(b"\r\n\r\n")
        self.assertEqual(body, data)
        code = daemon.wait(EXIT_TIMEOUT_S)
        self.assert_clean_exit(daemon, code)


class ColdStartTests(DaemonTestCase):
    """A restart never answers 404 for a track that exists."""

    def test_track_added_while_stopped_served_right_after_ready(self) -> None:
        """A file added while the daemon was down is served by the first request after
        /health/ready, whether the start's scan has reached it yet or it is read on demand;
        an unreadable one added alike is 404."""
        media = self.media_dir()
        write_wav(media / "first.wav", 20_000)
        daemon = self.start(["--media-dir", str(media)])
        daemon.wait_ready()
        daemon.process.send_signal(signal.SIGTERM)
        self.assert_clean_exit(daemon, daemon.wait(EXIT_TIMEOUT_S))
        data = write_wav(media / "zz later.wav", 30_000)
        (media / "zz broken.wav").write_bytes(b"RIFF" + b"\0" * 200)
        daemon = self.start(["--media-dir", str(media)])
        daemon.wait_ready()
        response, body = daemon.request("GET", "/stream/zz%20later.wav", {"Range": "bytes=0-99"})
        self.assertEqual((response.status, body), (206, data[:100]), daemon.output())
        response, body = daemon.request("GET", "/stream/zz%20broken.wav")
        self.assertEqual((response.status, json.loads(body)["error"]["code"]), (404, "NOT_FOUND"))
        self.assertNotIn("Traceback", daemon.output())


class TwoWorkerDaemonTests(DaemonTests):
    """The same, with STREAMSRV_WORKERS=2: a supervisor and two workers serve, drain and stop."""

    extra_env = TWO_WORKERS


class DaemonLogFileTests(DaemonTestCase):
    """``twistd -n --logfile FILE``: the file holds STREAMSRV_LOG_FORMAT lines at STREAMSRV_LOG_LEVEL."""

    def run_with_logfile(self, level: str) -> list[dict[str, Any]]:
        """Start with ``--logfile``, GET /health once, SIGTERM; the file's lines, each parsed as JSON."""
        log_path = Path(self.mktemp()).absolute()
        workdir = Path(self.mktemp())
        workdir.mkdir()
        port = free_port()
        argv = [sys.executable, *TWISTD, "-n", "--pidfile=", "--logfile", str(log_path), "streamsrv"]
        argv += ["--media-dir", str(self.media_dir()), "--listen", f"tcp:{port}:interface=127.0.0.1"]
        env = {"STREAMSRV_DATA_DIR": str(self.data), "STREAMSRV_LOG_FORMAT": "json", **self.extra_env}
        env["STREAMSRV_LOG_LEVEL"] = level
        daemon = Daemon(workdir, [], env, port, argv=argv)
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        response, _ = daemon.request("GET", "/health", {"X-Request-ID": "logfile-health"})
        self.assertEqual(response.status, 200)
        daemon.process.send_signal(signal.SIGTERM)
        self.assert_clean_exit(daemon, daemon.wait(EXIT_TIMEOUT_S))
        self.assertEqual(daemon.stdout(), "")
        return [json.loads(line) for line in log_path.read_text().splitlines()]

    def test_error_level_drops_access_lines(self) -> None:
        """At STREAMSRV_LOG_LEVEL=error no info event (no access line) is in the file."""
        records = self.run_with_logfile("error")
        self.assertEqual([r for r in records if r["level"] == "info"], [])
        self.assertEqual([r for r in records if r["ns"] == "streamsrv.access"], [])

    def test_info_level_keeps_access_lines(self) -> None:
        """At STREAMSRV_LOG_LEVEL=info the request's access line is in the file, as JSON."""
        records = self.run_with_logfile("info")
        access = [r for r in records if r.get("request_id") == "logfile-health"]
        self.assertEqual([(r["ns"], r["status"]) for r in access], [("streamsrv.access", 200)], records)


class TwoWorkerDaemonLogFileTests(DaemonLogFileTests):
    """The same with STREAMSRV_WORKERS=2: the workers' lines reach the supervisor's file."""

    extra_env = TWO_WORKERS


class DaemonConfigTests(DaemonTestCase):
    """Start-up refuses bad configuration, and needs none at all in development."""

    def test_invalid_configuration(self) -> None:
        """STREAMSRV_WORKERS=abc exits 1 naming the variable, without ever trying to bind the port."""
        media = self.media_dir()
        # Hold the port: had the daemon tried to listen, it would say so.
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        daemon = self.start(["--media-dir", str(media)], {"STREAMSRV_WORKERS": "abc"}, port=port)
        code = daemon.wait(READY_TIMEOUT_S)
        output = daemon.output()
        self.assertEqual(code, 1, output)
        self.assertIn("STREAMSRV_WORKERS", daemon.stderr())
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Couldn't listen", output)
        self.assertNotIn("starting on", output)

    def hold_port(self) -> int:
        """A port on 127.0.0.1 that another socket listens on for the rest of the test."""
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        return int(holder.getsockname()[1])

    def test_port_in_use(self) -> None:
        """A port another process listens on: one line naming the address and "already in use",
        status 1, before the demo library is generated or any URL printed; also as a supervisor."""
        port = self.hold_port()
        for env in ({}, TWO_WORKERS):
            daemon = self.start([], env, port=port)
            code = daemon.wait(READY_TIMEOUT_S)
            self.assertEqual(code, 1, daemon.output())
            self.assertEqual(
                daemon.stderr().strip().splitlines(),
                [
                    f"streamsrv: cannot listen on 127.0.0.1:{port}: address already in use "
                    "(another process listens there; choose another --listen port)"
                ],
            )
            self.assertNotIn("Traceback", daemon.output())
            self.assertNotIn("curl", daemon.output())
            self.assertFalse((self.data / "demo").exists())

    def test_demo_library(self) -> None:
        """With no --media-dir a demo library is generated in the data dir and served."""
        daemon = self.start([])
        daemon.wait_ready(DEMO_READY_TIMEOUT_S)
        demo = self.data / "demo"
        tracks = sorted(
            p for p in demo.rglob("*") if p.is_file() and not p.name.startswith(".") and audio_format_for(p)
        )
        self.assertTrue(tracks, daemon.output())
        track = tracks[0]
        data = track.read_bytes()
        url = "/stream/" + quote(track.relative_to(demo).as_posix())
        response, body = daemon.request("GET", url, {"Range": "bytes=0-99"})
        self.assertEqual(response.status, 206, body)
        self.assertEqual(body, data[:100])
        response, body = daemon.request("GET", url)
        self.assertEqual(response.status, 200)
        self.assertEqual(body, data)
        self.assertIn("demo library", daemon.output())
        daemon.process.send_signal(signal.SIGTERM)
        self.assert_clean_exit(daemon, daemon.wait(EXIT_TIMEOUT_S))
