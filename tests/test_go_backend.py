"""The Go backend example mints tokens and signed URLs that streamsrv accepts."""

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
from tests.test_refresh import TokenServiceMixin, body

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "go-backend"
SECRET = "a-test-secret-that-is-long-enough-0123456789"
KID, KEY = "k1", "current-url-signing-key-0123456789abcdef"


def run_example(gocache: Path) -> dict[str, str]:
    """What ``go run .`` prints for alice (premium), building with *gocache*."""
    env = {
        **os.environ,
        "STREAMSRV_JWT_SECRET": SECRET,
        "STREAMSRV_URL_SIGNING_KEY": f"{KID}:{KEY}",
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(gocache.resolve()),
    }
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
        if shutil.which("go") is None:
            raise unittest.SkipTest("go is not on PATH (apt-get install golang-go to run this example)")

    def test_token_and_url_verify(self) -> None:
        """The printed access token verifies as alice/premium and the URL as a uid-bound signed URL."""
        document = run_example(Path(self.mktemp()))
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


class GoBackendReuseTests(TokenServiceMixin, unittest.TestCase):
    """Reusing the example's refresh token revokes the access token the backend minted with it."""

    def setUp(self) -> None:
        if shutil.which("go") is None:
            raise unittest.SkipTest("go is not on PATH (apt-get install golang-go to run this example)")
        super().setUp()

    async def test_reuse_revokes_the_backends_access_token(self) -> None:
        """A spent refresh token presented again revokes the family: the backend's first access token too."""
        document = run_example(Path(self.mktemp()))
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
