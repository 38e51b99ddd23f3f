"""Start, check and stop the servers under test: streamsrv, twisted.web.static.File, nginx.

Each server runs in its own session (process group) on a free loopback port, pinned to
the server core when ``taskset`` is usable, with stdout and stderr going to a log file
in the benchmark's temp dir (never a pipe, which a busy server could fill and block on).
A server counts as started only once it answers a 256 KiB range request with a 206 and
the right bytes; otherwise ``ServerStartError`` says why, and the harness skips it.
``Server.stop`` signals only the process group this module created, and always reaps it.
Nothing here binds anything but 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from corpus import Corpus

BENCH_DIR = Path(__file__).resolve().parent
NGINX_TEMPLATE = BENCH_DIR / "nginx.conf.template"
PROBE_SPAN = 256 * 1024
PROBE_OFFSET = 1000
#: Rate limits far above anything the benchmark sends, so streamsrv serves every request.
UNLIMITED = "1000000000/1"


class ServerStartError(Exception):
    """A server could not be started or did not serve the probe correctly."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd_command() -> list[str]:
    """How to run twistd with this interpreter.

    ``python -m twisted.scripts.twistd`` does nothing at all (that module has no
    ``__main__`` block and exits 0 silently), so use the venv's ``twistd`` script, or
    call ``twisted.scripts.twistd.run`` directly if there is none.
    """
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())"]


@dataclass
class Server:
    """One server process: how to start it, where it listens, what it logs."""

    name: str
    prefix: str
    argv: list[str]
    port: int
    log_path: Path
    cwd: Path
    env: dict[str, str]
    access_log: str
    extra_logs: list[Path] = field(default_factory=list)
    popen: subprocess.Popen[bytes] | None = None
    #: ``Authorization`` the start probe sends (a server that refuses anonymous requests).
    authorization: str | None = None

    @property
    def pid(self) -> int:
        """The server's pid (also its process group id)."""
        assert self.popen is not None
        return self.popen.pid

    def url_path(self, name: str) -> str:
        """The URL path of a corpus file on this server."""
        return self.prefix + name

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen is not None and self.popen.poll() is None

    def start(self, pin: list[str], corpus: Corpus, timeout: float) -> None:
        """Launch the process and wait until it serves the probe; raise if it cannot."""
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [*pin, *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        last = "did not accept connections"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                status = self.popen.returncode
                self.popen = None
                raise ServerStartError(f"exited with status {status}: {self.log_tail()}")
            try:
                probe(self, corpus)
                return
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            except ServerStartError as e:
                last = str(e)
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"not serving after {timeout:.0f} s ({last}); {self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; reap it."""
        if self.popen is None:
            return
        popen, self.popen = self.popen, None
        if popen.poll() is None:
            try:
                os.killpg(popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                popen.wait()
        # Reap anything else left in the group (a forked worker whose parent died).
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_text(self) -> str:
        """Everything the server wrote to its log files so far."""
        parts = []
        for path in [self.log_path, *self.extra_logs]:
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of the server's own output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        if not tail:
            return "(empty log)"
        # The last line (an exception's message, usually) first, then the lines before it.
        return tail[-1] + (" -- log tail: " + " | ".join(tail[:-1]) if len(tail) > 1 else "")


def probe(server: Server, corpus: Corpus, request_id: str = "bench-probe") -> None:
    """GET a 256 KiB range of the first track; raise unless it is a correct 206."""
    track = corpus.tracks[0]
    last = PROBE_OFFSET + PROBE_SPAN - 1
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    headers = {"Range": f"bytes={PROBE_OFFSET}-{last}", "X-Request-ID": request_id}
    if server.authorization is not None:
        headers["Authorization"] = server.authorization
    try:
        conn.request("GET", server.url_path(track.name), headers=headers)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 206:
        raise ServerStartError(
            f"probe GET {server.url_path(track.name)} with Range answered {response.status}: {body[:200]!r}"
        )
    expected_range = f"bytes {PROBE_OFFSET}-{last}/{track.size}"
    if response.getheader("Content-Range") != expected_range:
        raise ServerStartError(
            f"probe: Content-Range {response.getheader('Content-Range')!r}, expected {expected_range!r}"
        )
    with open(corpus.root / track.name, "rb") as f:
        f.seek(PROBE_OFFSET)
        if body != f.read(PROBE_SPAN):
            raise ServerStartError("probe: range body differs from the file's bytes")


def count_access_lines(server: Server, corpus: Corpus, requests: int = 3) -> int:
    """Send ``requests`` probes with a marker request id; count log lines naming them."""
    marker = "bench-logcheck-7f3a"
    before = server.log_text()
    for _ in range(requests):
        probe(server, corpus, request_id=marker)
    time.sleep(0.5)
    after = server.log_text()
    new = after[len(before) :] if after.startswith(before) else after
    needle = corpus.tracks[0].name
    return sum(1 for line in new.splitlines() if marker in line or needle in line)


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment plus ``extra``, without the caller's venv quirks."""
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    env.update(extra)
    return env


def source_digest(repo: Path) -> str:
    """SHA-256 over streamsrv's Python sources and plugin: which code a run measured."""
    digest = hashlib.sha256()
    paths = sorted((repo / "streamsrv").rglob("*.py"))
    paths.append(repo / "twisted" / "plugins" / "streamsrv_plugin.py")
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError:
            continue
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def streamsrv_plugin_visible(repo: Path) -> str | None:
    """None if ``twistd streamsrv`` is available with ``repo`` on PYTHONPATH, else why not."""
    plugin = repo / "twisted" / "plugins" / "streamsrv_plugin.py"
    if not plugin.exists():
        return f"{plugin.relative_to(repo)} does not exist yet"
    if not (repo / "streamsrv" / "tap.py").exists():
        return "streamsrv/tap.py does not exist yet"
    env = python_env({"PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))})
    try:
        out = subprocess.run(
            [*twistd_command(), "--help"], cwd=repo, env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"twistd --help failed: {e}"
    if "streamsrv" not in out.stdout:
        return "twistd --help lists no streamsrv plugin: " + (out.stderr.strip().splitlines() or [""])[-1]
    return None


def streamsrv(
    tmp: Path, repo: Path, corpus: Corpus, port: int, extra_env: dict[str, str] | None = None
) -> Server:
    """streamsrv under twistd, development profile, warn logging, rate limits lifted.

    ``extra_env`` (e.g. ``STREAMSRV_SENDFILE=false``) is applied last and wins.
    """
    data_dir = tmp / "streamsrv-data"
    data_dir.mkdir(exist_ok=True)
    env = python_env(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
            "STREAMSRV_ENV": "development",
            "STREAMSRV_DATA_DIR": str(data_dir),
            "STREAMSRV_LOG_LEVEL": "warn",
            "STREAMSRV_SHUTDOWN_GRACE_S": "1",
            "STREAMSRV_RATELIMIT_API_PER_IP": UNLIMITED,
            "STREAMSRV_RATELIMIT_API_PER_USER": UNLIMITED,
            "STREAMSRV_RATELIMIT_STREAM_PER_IP": UNLIMITED,
            "STREAMSRV_RATELIMIT_STREAM_PER_USER": UNLIMITED,
            **(extra_env or {}),
        }
    )
    argv = [
        *twistd_command(),
        "--nodaemon",
        "--pidfile=",
        "streamsrv",
        "--media-dir",
        str(corpus.root),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
    ]
    return Server(
        name="streamsrv",
        prefix="/stream/",
        argv=argv,
        port=port,
        log_path=tmp / "streamsrv.out",
        cwd=repo,
        env=env,
        access_log="(not checked yet)",
    )


def static_file(tmp: Path, corpus: Corpus, port: int, access_log: bool) -> Server:
    """``twistd web --path`` (twisted.web.static.File) with its CLF log to a file in *tmp*.

    Never ``--logfile /dev/null``: twistd's access log is a rotating
    ``LogFile``, which after 1 MB renames its path and creates a new file
    there, so it would move the machine's ``/dev/null`` away and leave a
    regular file in its place.
    """
    target = tmp / "static-access.log"
    argv = [
        *twistd_command(),
        "--nodaemon",
        "--pidfile=",
        "web",
        "--path",
        str(corpus.root),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--logfile",
        str(target),
    ]
    described = (
        f"CLF access log, one line per request, to {target.name}"
        if access_log
        else "CLF lines formatted and written to a scratch file (twistd web cannot turn them off)"
    )
    return Server(
        name="static.File",
        prefix="/",
        argv=argv,
        port=port,
        log_path=tmp / "static.out",
        cwd=tmp,
        env=python_env({}),
        access_log=described,
        extra_logs=[target] if access_log else [],
    )


def nginx_binary() -> str | None:
    """Path of nginx (PATH, then /usr/sbin), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx(tmp: Path, corpus: Corpus, port: int, access_log: bool) -> Server:
    """nginx, one process, sendfile on, its config generated from the template."""
    binary = nginx_binary()
    if binary is None:
        raise ServerStartError("nginx is not installed (not on PATH nor in /usr/sbin)")
    access_path = tmp / "nginx-access.log"
    conf = tmp / "nginx.conf"
    conf.write_text(
        string.Template(NGINX_TEMPLATE.read_text()).substitute(
            # Root without "user root;" would make workers run as nobody, who cannot
            # read the 0700 temp dir (only matters if master_process is turned on).
            user_line="user root;" if os.geteuid() == 0 else "",
            tmp=str(tmp),
            media=str(corpus.root),
            port=port,
            access_log_line=f"access_log {access_path};" if access_log else "access_log off;",
        )
    )
    error_log = tmp / "nginx-error.log"
    argv = [binary, "-c", str(conf), "-p", str(tmp), "-e", str(error_log)]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ServerStartError(f"nginx -t rejected {conf.name}: {check.stderr.strip()}")
    return Server(
        name="nginx",
        prefix="/stream/",
        argv=argv,
        port=port,
        log_path=tmp / "nginx.out",
        cwd=tmp,
        env=dict(os.environ),
        access_log=(
            f"combined access log, one line per request, to {access_path.name}"
            if access_log
            else "access_log off"
        ),
        extra_logs=[access_path, error_log] if access_log else [error_log],
    )


def nginx_version() -> str | None:
    """``nginx -v`` output, or None without nginx."""
    binary = nginx_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")
