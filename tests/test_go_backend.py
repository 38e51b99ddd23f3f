"""The Go backend example mints tokens and signed URLs that streamsrv accepts, and sends notifications."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.auth.jwt import JwtVerifier
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.auth.signing import SigningKey, parse_query_pairs, verify
from tests.test_daemon import DaemonTestCase
from tests.test_refresh import TokenServiceMixin, body

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "go-backend"
SECRET = "a-test-secret-that-is-long-enough-0123456789"
KID, KEY = "k1", "current-url-signing-key-0123456789abcdef"


def go_env(**extra: str) -> dict[str, str]:
    """The environment for ``go run``: a build cache shared by this run's tests (in trial's temp dir)."""
    return {
        **os.environ,
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(Path("go-build-cache").resolve()),
        **extra,
    }


def skip_without_go() -> None:
    """Skip when the Go toolchain is not installed."""
    if shutil.which("go") is None:
        raise unittest.SkipTest("go is not on PATH (apt-get install golang-go to run this example)")


def run_example() -> dict[str, str]:
    """What ``go run .`` prints for alice (premium)."""
    env = go_env(STREAMSRV_JWT_SECRET=SECRET, STREAMSRV_URL_SIGNING_KEY=f"{KID}:{KEY}")
    out = subprocess.run(
        ["go", "run", ".", "-sub", "alice", "-role", "premium", "-track", "jazz/Café Blue.mp3"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    document: dict[str, str] = json.loads(out)
    return document


class GoBackendTests(unittest.SynchronousTestCase):
    """docs/examples/go-backend/main.go against streamsrv's own verifiers."""

    def setUp(self) -> None:
        skip_without_go()

    def test_token_and_url_verify(self) -> None:
        """The printed access token verifies as alice/premium and the URL as a uid-bound signed URL."""
        document = run_example()
        clock = Clock()
        clock.advance(time.time())
        verifier = JwtVerifier(
            secret=SECRET,
            public_key_pem=None,
            jwks=None,
            issuer=None,
            audience=None,
            leeway_s=30,
            clock=clock,
            roles=DEFAULT_ROLES,
        )
        principal = self.successResultOf(ensureDeferred(verifier.verify(document["access_token"])))
        self.assertEqual(principal.sub, "alice")
        self.assertTrue(principal.can("stream:hq"))
        url = urlsplit(document["stream_url"])
        bound = verify(
            unquote(url.path),
            parse_query_pairs(url.query.encode()),
            keys=(SigningKey(KID, KEY.encode()),),
            now=time.time(),
            max_ttl_s=7200,
        )
        self.assertEqual(bound, {"uid": "alice"})
        self.assertEqual(unquote(url.path), "/stream/jazz/Café Blue.mp3")
        refresh = self.successResultOf(
            ensureDeferred(verifier.verify(document["refresh_token"], typ="refresh"))
        )
        self.assertEqual(refresh.sub, "alice")
        # One family for the session's first access and refresh tokens (the fam claim).
        self.assertIsNotNone(refresh.family)
        self.assertEqual(principal.family, refresh.family)


class GoBackendNotifyTests(DaemonTestCase):
    """``go run . -notify``: the example's notify code against a real ``twistd -n streamsrv``."""

    DATA = (
        '{"artist": "Miles Davis", "album": "Kind of Blue", "track_count": 5, "url": "https://e.example/a"}'
    )

    def setUp(self) -> None:
        skip_without_go()
        super().setUp()

    def notify(self, port: int, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the example's notify mode against the daemon on *port*."""
        return subprocess.run(
            ["go", "run", ".", "-base", f"http://127.0.0.1:{port}", "-notify", *args],
            cwd=EXAMPLE,
            env=go_env(STREAMSRV_JWT_SECRET=SECRET),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def test_send_follow_and_retry(self) -> None:
        """The backend's send is accepted and followed until sent; a retry with its key sends nothing new;
        a send the template cannot render fails with streamsrv's 400 naming the missing data."""
        daemon = self.start(["--media-dir", str(self.media_dir())], {"STREAMSRV_JWT_SECRET": SECRET})
        daemon.wait_ready()
        args = ["new-release", "-to", "alice,bob", "-data", self.DATA, "-key", "release-42"]
        first = self.notify(daemon.port, *args)
        self.assertEqual(first.returncode, 0, first.stderr + daemon.output())
        state = json.loads(first.stdout)
        self.assertEqual(
            [(d["user_id"], d["channel"], d["state"]) for d in state["deliveries"]],
            [("alice", "websocket", "sent"), ("bob", "websocket", "sent")],
        )
        again = json.loads(self.notify(daemon.port, *args).stdout)
        self.assertEqual(again["id"], state["id"])
        refused = self.notify(daemon.port, "new-release", "-to", "alice", "-data", '{"artist": "x"}')
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("400 BAD_REQUEST: data: template 'new-release' needs data.album", refused.stderr)


class GoBackendReuseTests(TokenServiceMixin, unittest.TestCase):
    """Reusing the example's refresh token revokes the access token the backend minted with it."""

    def setUp(self) -> None:
        if shutil.which("go") is None:
            raise unittest.SkipTest("go is not on PATH (apt-get install golang-go to run this example)")
        super().setUp()

    async def test_reuse_revokes_the_backends_access_token(self) -> None:
        """A spent refresh token presented again revokes the family: the backend's first access token too."""
        document = run_example()
        self.clock.advance(time.time() - self.clock.seconds())
        verifier = self.verifier(secret=SECRET)
        service = await self.service(verifier=verifier, issuer=self.issuer(secret=SECRET))
        first_access = await verifier.verify(document["access_token"], typ="access")
        self.assertFalse(self.cache.is_revoked(first_access))
        answer = await service.refresh(body(refresh_token=document["refresh_token"]))
        await self.refused(service.refresh(body(refresh_token=document["refresh_token"])), "TOKEN_REVOKED")
        self.assertTrue(self.cache.is_revoked(first_access))
        self.assertTrue(
            self.cache.is_revoked(await verifier.verify(str(answer["access_token"]), typ="access"))
        )
