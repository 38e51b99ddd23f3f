# -*- test-case-name: tests.test_examples -*-
"""Run the URL signers of ``docs/examples/`` against the documented test vectors.

Each signer is a separate program (shell with ``openssl``, Python, Node, Go); each
is run as a subprocess on every vector of ``docs/api/authentication.md`` and its
output compared byte for byte with the vector's URL. The Python one always runs;
the others are skipped, with the reason, when their tool is not on ``PATH``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from twisted.trial import unittest

from streamsrv.auth.signing import SigningKey, decode_signed_path, parse_query_pairs, verify
from tests.sitehelpers import serve_websocket
from tests.test_signing import BASE_URL, VECTORS, WEEK, secret_bytes

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

#: Longest a signer may take for one URL (the Go one is compiled once, beforehand).
RUN_TIMEOUT_S = 60

#: Longest ``go build`` may take.
GO_BUILD_TIMEOUT_S = 300


def vector_args(vector: dict[str, Any]) -> list[str]:
    """The command-line arguments of the examples for a vector: KID PATH EXPIRES NAME=VALUE..."""
    kid = vector["kid"] if vector["include_kid"] else ""
    return [kid, vector["path"], str(vector["expires"]), *(f"{n}={v}" for n, v in vector["bound"].items())]


def url_safe_unpadded(secret: str) -> str:
    """A ``base64:`` secret in the URL-safe alphabet without padding (the same key)."""
    return secret.replace("+", "-").replace("/", "_").rstrip("=")


class _SignerTestsMixin:
    """
    The tests every signer must pass; a subclass says how to run it.
    """

    #: Set on the concrete class: the command line before the arguments.
    command: ClassVar[list[str]]

    # Provided by unittest.TestCase.
    assertEqual: Any
    assertNotEqual: Any
    assertIn: Any

    def prefix(self) -> list[str]:
        """The command that runs the signer (arguments follow)."""
        return list(self.command)

    def run_signer(
        self, args: list[str], secret: str, base_url: str | None = BASE_URL
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run the signer.

        :param args: KID PATH EXPIRES NAME=VALUE...
        :param secret: ``SIGNING_SECRET``.
        :param base_url: ``BASE_URL``, or ``None`` to leave it unset.
        :return: The finished process, output as bytes.
        """
        env = {k: v for k, v in os.environ.items() if k not in ("SIGNING_SECRET", "BASE_URL")}
        env["SIGNING_SECRET"] = secret
        if base_url is not None:
            env["BASE_URL"] = base_url
        argv = [part.encode("utf-8") for part in [*self.prefix(), *args]]
        return subprocess.run(argv, env=env, capture_output=True, timeout=RUN_TIMEOUT_S, check=False)

    def test_vectors(self) -> None:
        """
        For every documented vector the signer prints exactly the vector's URL and
        a line feed, exits 0 and writes nothing on stderr.
        """
        for vector in VECTORS:
            done = self.run_signer(vector_args(vector), vector["secret"])
            self.assertEqual(
                (done.returncode, done.stdout, done.stderr),
                (0, vector["url"].encode("ascii") + b"\n", b""),
                vector["name"],
            )

    def test_url_safe_base64_secret(self) -> None:
        """
        A ``base64:`` secret written in the URL-safe alphabet without padding is
        the same key.
        """
        for vector in VECTORS:
            if vector["secret"].startswith("base64:"):
                done = self.run_signer(vector_args(vector), url_safe_unpadded(vector["secret"]))
                self.assertEqual(done.stdout, vector["url"].encode("ascii") + b"\n", vector["name"])

    def test_relative_url(self) -> None:
        """
        Without ``BASE_URL`` the signer prints the encoded path and query.
        """
        vector = VECTORS[0]
        done = self.run_signer(vector_args(vector), vector["secret"], base_url=None)
        relative = vector["url"][len(BASE_URL) :]
        self.assertEqual(done.stdout, relative.encode("ascii") + b"\n")

    def test_relative_expiry_verifies(self) -> None:
        """
        ``+SECONDS`` signs for now plus that many seconds, and streamsrv verifies
        the URL (with ``kid``, a bound ``ip`` and a non-ASCII value).
        """
        secret = "a-test-secret-for-the-examples-0123456789"
        before = time.time()
        done = self.run_signer(["t1", "/stream/jazz/Café.mp3", "+3600", "ip=203.0.113.7", "uid=é 1"], secret)
        after = time.time()
        self.assertEqual((done.returncode, done.stderr), (0, b""))
        parts = urlsplit(done.stdout.decode("ascii").rstrip("\n"))
        pairs = parse_query_pairs(parts.query.encode("ascii"))
        expires = int(dict(pairs)["expires"])
        self.assertIn(expires - 3600, range(int(before), int(after) + 1))
        bound = verify(
            decode_signed_path(parts.path.encode("ascii")),
            pairs,
            keys=[SigningKey("t1", secret_bytes(secret))],
            now=after,
            max_ttl_s=WEEK,
            client_ip="203.0.113.7",
        )
        self.assertEqual(bound, {"ip": "203.0.113.7", "uid": "é 1"})

    def test_refuses_bad_parameters(self) -> None:
        """
        A repeated parameter, a reserved name, a parameter without ``=``, a path
        without a leading ``/`` or a line feed make the signer exit 1 with nothing
        on stdout.
        """
        secret = VECTORS[0]["secret"]
        for args in (
            ["k", "/a", "1", "a=1", "a=2"],
            ["k", "/a", "1", "sig=x"],
            ["k", "/a", "1", "expires=2"],
            ["k", "/a", "1", "novalue"],
            ["k", "a", "1"],
            ["k", "/a\nb", "1"],
            ["k", "/a", "1", "a=1\n2"],
        ):
            done = self.run_signer(args, secret)
            self.assertEqual((done.returncode, done.stdout), (1, b""), args)
            self.assertNotEqual(done.stderr, b"", args)


class PythonExampleTests(_SignerTestsMixin, unittest.TestCase):
    """
    ``docs/examples/sign_url.py`` (Python standard library).
    """

    command = [sys.executable, str(EXAMPLES / "sign_url.py")]


class NodeExampleTests(_SignerTestsMixin, unittest.TestCase):
    """
    ``docs/examples/sign_url.mjs`` (Node, ``node:crypto``).
    """

    command = ["node", str(EXAMPLES / "sign_url.mjs")]
    if shutil.which("node") is None:
        skip = "node is not on PATH"


class ShellExampleTests(_SignerTestsMixin, unittest.TestCase):
    """
    ``docs/examples/sign_url.sh`` (bash, ``openssl``).
    """

    command = ["bash", str(EXAMPLES / "sign_url.sh")]
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        skip = "openssl or bash is not on PATH"


_go_binary: Path | None = None


def _build_go_example() -> Path:
    """
    Compile ``sign_url.go`` once per test run into a temporary directory.

    ``go build`` needs a writable build cache: when neither ``GOCACHE`` nor a home
    directory is set one is made in the same temporary directory. The toolchain
    must not try to download anything (``GOTOOLCHAIN=local``, ``GOFLAGS`` cleared).

    :return: The executable.
    :raise AssertionError: With the compiler's output, if the build fails.
    """
    global _go_binary
    if _go_binary is None:
        work = Path(tempfile.mkdtemp(prefix="streamsrv-go-example-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="")
        if "GOCACHE" not in env and "HOME" not in env and "XDG_CACHE_HOME" not in env:
            env["GOCACHE"] = str(work / "cache")
        binary = work / "sign_url"
        done = subprocess.run(
            ["go", "build", "-o", str(binary), str(EXAMPLES / "sign_url.go")],
            env=env,
            cwd=work,
            check=False,
            capture_output=True,
            timeout=GO_BUILD_TIMEOUT_S,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode("utf-8", "replace")
            raise AssertionError(f"go build of sign_url.go failed:\n{output}")
        _go_binary = binary
    return _go_binary


class GoExampleTests(_SignerTestsMixin, unittest.TestCase):
    """
    ``docs/examples/sign_url.go`` (Go standard library), compiled once.
    """

    command = []
    if shutil.which("go") is None:
        skip = "go is not on PATH"

    def prefix(self) -> list[str]:
        """The compiled example."""
        return [str(_build_go_example())]


#: The ``ws`` release the WebSocket client example is run with.
WS_PACKAGE = "ws@8"

#: Longest ``npm install`` may take.
NPM_INSTALL_TIMEOUT_S = 300

#: The WebSocket client example's section of docs/api/websockets.md.
WS_EXAMPLE_HEADING = "## Example: a client (browser or Node)"

#: Drives the example: on the first ``subscribed`` it cuts the connection (the client must
#: reconnect), on the second it calls ``close()``. Node then exits by itself only if the
#: client left nothing scheduled: a reconnect after ``close()`` would keep it running.
WS_HARNESS = """\
import WebSocket from "ws";
import { connectEvents } from "./client.mjs";

const [url, token] = process.argv.slice(2);
const sockets = [];
class Tracked extends WebSocket {
  constructor(...args) { super(...args); sockets.push(this); }
}
let client;
let readies = 0;
client = connectEvents({
  url,
  WebSocket: Tracked,
  getToken: async () => token,
  refreshToken: async () => token,
  onEvent: (msg) => console.log("event", msg.type),
  onReady: (channels) => {
    readies += 1;
    console.log("ready", readies, channels.join(","));
    if (readies === 1) sockets[0].terminate();
    else client.close();
  },
});
process.on("exit", () => console.log("exit sockets", sockets.length));
"""


def websocket_example_source() -> str:
    """The JavaScript block under :data:`WS_EXAMPLE_HEADING` in docs/api/websockets.md, as written."""
    text = (EXAMPLES.parent / "api" / "websockets.md").read_text(encoding="utf-8")
    section = text[text.index(WS_EXAMPLE_HEADING) :]
    start = section.index("```js\n") + len("```js\n")
    return section[start : section.index("```\n", start)]


_ws_package_dir: Path | None = None


def _install_ws_package() -> Path:
    """
    ``npm install ws`` once per test run into a temporary directory.

    :return: The directory, whose ``node_modules`` holds ``ws``.
    :raise unittest.SkipTest: If npm cannot install it (no registry reachable).
    """
    global _ws_package_dir
    if _ws_package_dir is None:
        work = Path(tempfile.mkdtemp(prefix="streamsrv-ws-example-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        (work / "package.json").write_text('{"private": true, "type": "module"}\n', encoding="utf-8")
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", WS_PACKAGE],
            cwd=work,
            check=False,
            capture_output=True,
            timeout=NPM_INSTALL_TIMEOUT_S,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode("utf-8", "replace")[-2000:]
            raise unittest.SkipTest(f"npm install {WS_PACKAGE} failed:\n{output}")
        _ws_package_dir = work
    return _ws_package_dir


class WebSocketClientExampleTests(unittest.TestCase):
    """
    The WebSocket client of ``docs/api/websockets.md``, run as written under Node with the
    ``ws`` package against the real ``/ws`` on a TCP port.
    """

    timeout = 120
    if shutil.which("node") is None or shutil.which("npm") is None:
        skip = "node or npm is not on PATH"

    def setUp(self) -> None:
        from twisted.internet import reactor

        from streamsrv.auth.principal import AuthError, Principal
        from streamsrv.auth.roles import DEFAULT_ROLES
        from streamsrv.events.hub import InProcessHub
        from streamsrv.ws.limits import WsLimits
        from streamsrv.ws.protocol import EventSocketFactory

        self.token = "ws-example-token-4e2a"

        async def authenticate(token: str) -> Principal:
            if token != self.token:
                raise AuthError("TOKEN_INVALID", reason="unknown")
            return Principal(
                sub="u1",
                roles=frozenset({"listener"}),
                permissions=DEFAULT_ROLES["listener"],
                via="jwt",
                expires_at=reactor.seconds() + 3600,
            )

        self.factory = EventSocketFactory(
            hub=InProcessHub(),
            authenticate=authenticate,
            clock=reactor,
            limits=WsLimits(auth_timeout_s=5, ping_interval_s=0),
        )
        self.url = serve_websocket(self, self.factory)

    async def test_reconnects_but_not_after_close(self) -> None:
        """
        The example authenticates and subscribes, reconnects once its connection is cut, and
        after ``close()`` schedules nothing more: Node exits by itself having opened two sockets.
        """
        from twisted.internet.threads import deferToThread
        from twisted.internet.utils import getProcessOutputAndValue

        work = await deferToThread(_install_ws_package)
        (work / "client.mjs").write_text(websocket_example_source(), encoding="utf-8")
        (work / "harness.mjs").write_text(WS_HARNESS, encoding="utf-8")
        node = shutil.which("node")
        assert node is not None
        out, err, code = await getProcessOutputAndValue(
            node, ["harness.mjs", self.url, self.token], env=dict(os.environ), path=str(work)
        )
        lines = out.decode("utf-8").splitlines()
        self.assertEqual(
            (code, lines), (0, ["ready 1 user:me", "ready 2 user:me", "exit sockets 2"]), err.decode()
        )
