# -*- test-case-name: tests.test_stream_fastpath -*-
"""``/stream`` answered without a coroutine when nothing has to wait, and exactly as with one.

:class:`FastPathTests` pins when the synchronous path of
:meth:`~streamsrv.streaming.resource.StreamResource.answer_now` is taken (a
token already verified, an in-memory limiter, a known track) and that what
it answers does not differ from the coroutine's answer: a token revoked
since it was cached, a file changed, ``If-Range`` and several ranges.
:class:`AdmitNowTests` pins :meth:`~streamsrv.middleware.guard.Guard.admit_now`
doing nothing at all when it must leave the request to :meth:`admit`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from streamsrv.auth.principal import Principal
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES, MemoryRateLimiter
from streamsrv.streaming.resource import StreamResource
from tests.test_guard import BODY, POLICIES, TRACK, GuardMixin


class Revocations:
    """A revocation snapshot the test fills."""

    def __init__(self) -> None:
        self.subjects: set[str] = set()

    def is_revoked(self, principal: Principal) -> bool:
        return principal.sub in self.subjects


class FastPathTests(GuardMixin, unittest.TestCase):
    """Which requests skip the coroutine, and that they are answered the same."""

    def setUp(self) -> None:
        self.revocations = Revocations()
        super().setUp()
        self.handled: list[bytes] = []
        original = StreamResource.handle

        def counting(resource: StreamResource, request: Any) -> Any:
            self.handled.append(request.uri)
            return original(resource, request)

        self.patch(StreamResource, "handle", counting)
        self.bearer = "Bearer " + self.token()

    def get(self, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return self.fetch(TRACK, authorization=self.bearer, **headers)

    def test_first_request_waits_then_not(self) -> None:
        """A token's first request runs the coroutine (it is verified); the next ones do not."""
        self.assertEqual(self.get(range="bytes=0-9")[0], 206)
        self.assertEqual(len(self.handled), 1)
        status, headers, body = self.get(range="bytes=10-19")
        self.assertEqual(
            (status, headers["content-range"], body), (206, f"bytes 10-19/{len(BODY)}", BODY[10:20])
        )
        self.assertEqual(len(self.handled), 1)
        self.assertIn("ratelimit-remaining", headers)

    def test_revoked_after_caching(self) -> None:
        """A cached token revoked since is refused at once, logged and charged to the address."""
        self.get(range="bytes=0-9")
        before = self.limiter.peek(POLICIES.stream_ip, "10.0.0.7")
        self.revocations.subjects.add("alice")
        status, headers, body = self.get(range="bytes=10-19")
        self.assertEqual((status, self.code(body)), (401, "TOKEN_REVOKED"))
        self.assertIn("ratelimit-remaining", headers)
        self.assertEqual(self.security_kinds(), ["token_revoked"])
        self.assertLess(self.limiter.peek(POLICIES.api_ip, "10.0.0.7"), POLICIES.api_ip.count)
        self.assertEqual(self.limiter.peek(POLICIES.stream_ip, "10.0.0.7"), before)
        self.assertEqual(len(self.handled), 1)

    def test_file_changed(self) -> None:
        """A file replaced between two fast requests is served as it is now, with its new ETag."""
        _, first, _ = self.get(range="bytes=0-9")
        (self.media_root / "jazz" / "So What.mp3").write_bytes(b"\xff\xfb" + b"new" * 50)
        status, headers, body = self.get(range="bytes=0-4")
        self.assertEqual((status, body), (206, b"\xff\xfbnew"))
        self.assertNotEqual(headers["etag"], first["etag"])
        self.assertEqual(len(self.handled), 1)

    def test_if_range_mismatch_sends_whole_file(self) -> None:
        """On the fast path too, an If-Range that no longer matches gets the whole file with 200."""
        self.get(range="bytes=0-9")
        status, _, body = self.get(range="bytes=0-9", if_range='"stale"')
        self.assertEqual((status, body), (200, BODY))
        self.assertEqual(len(self.handled), 1)

    def test_several_ranges(self) -> None:
        """On the fast path too, several ranges are one multipart/byteranges response."""
        self.get(range="bytes=0-9")
        status, headers, body = self.get(range="bytes=0-1,5-6")
        self.assertEqual(status, 206)
        self.assertTrue(headers["content-type"].startswith("multipart/byteranges; boundary="))
        self.assertIn(BODY[5:7], body)
        self.assertEqual(len(self.handled), 1)

    def test_forbidden_at_once(self) -> None:
        """A download without the permission is refused on the fast path as on the slow one."""
        self.get(range="bytes=0-9")
        status, _, body = self.fetch(TRACK + "?download=1", authorization=self.bearer)
        self.assertEqual((status, self.code(body)), (403, "FORBIDDEN"))
        self.assertEqual(self.security_kinds(), ["forbidden"])


class AdmitNowTests(unittest.TestCase):
    """``Guard.admit_now`` leaves a request untouched when it cannot decide at once."""

    def guard(self, limiter: Any) -> Guard:
        from twisted.internet.task import Clock

        clock = Clock()
        return Guard(
            verifier=None,
            url_keys=(),
            url_max_ttl_s=3600,
            revocations=None,
            limiter=limiter,
            policies=DEFAULT_POLICIES,
            anonymous=Principal(
                sub="anonymous", roles=frozenset(), permissions=frozenset({"*"}), via="anonymous"
            ),
            clock=clock,
        )

    def request(self) -> Any:
        request = DummyRequest([b"x"])
        request.uri = b"/stream/x"
        request.client_ip = "10.0.0.7"
        return request

    def test_asynchronous_limiter(self) -> None:
        """With a limiter that only answers later (Redis), nothing is done and None says so."""

        class Later:
            def check(self, keys: Any) -> Any:
                raise AssertionError("admit_now must not call check")

        request = self.request()
        self.assertIsNone(self.guard(Later()).admit_now(request, permission=None))
        self.assertEqual(list(request.responseHeaders.getAllRawHeaders()), [])
        self.assertIsNone(getattr(request, "user", None))

    def test_in_memory_limiter(self) -> None:
        """With the in-memory limiter the anonymous listener is admitted at once, headers and token taken."""
        from twisted.internet.task import Clock

        limiter = MemoryRateLimiter(Clock())
        request = self.request()
        admission = self.guard(limiter).admit_now(request, permission=None)
        assert admission is not None
        self.assertEqual(admission.principal.sub, "anonymous")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"ratelimit-limit"), [b"300"])
        self.assertEqual(limiter.peek(DEFAULT_POLICIES.api_ip, "10.0.0.7"), 299)

    def test_unverified_token(self) -> None:
        """A bearer token not verified yet is left to admit: nothing charged, no header set."""
        from twisted.internet.task import Clock

        limiter = MemoryRateLimiter(Clock())
        guard = self.guard(limiter)
        guard._verifier = type("V", (), {"verify": lambda self, token, typ: succeed(None)})()
        request = self.request()
        request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer abc.def.ghi"])
        self.assertIsNone(guard.admit_now(request, permission=None))
        self.assertEqual(list(request.responseHeaders.getAllRawHeaders()), [])
        self.assertEqual(limiter.peek(DEFAULT_POLICIES.api_ip, "10.0.0.7"), 300)


class FileHeadersTests(unittest.SynchronousTestCase):
    """The header values remembered per file version."""

    def test_values(self) -> None:
        """ETag, Last-Modified and both dispositions are what the file's parts make."""
        from streamsrv.media.identity import make_etag
        from streamsrv.streaming.resource import file_headers as _file_headers

        block = _file_headers("jazz/So What.mp3", 1000, 5_000_000_000, 42, 5)
        self.assertEqual(block.etag, make_etag(1000, 5_000_000_000, 42))
        self.assertEqual(block.etag_value, block.etag.encode("ascii"))
        self.assertEqual(block.last_modified_value, b"Thu, 01 Jan 1970 00:00:05 GMT")
        self.assertEqual(block.inline, b"inline; filename*=UTF-8''So%20What.mp3")
        self.assertEqual(block.attachment, b"attachment; filename*=UTF-8''So%20What.mp3")

    def test_changed_file_new_values(self) -> None:
        """Another size, mtime or inode of the same track is another ETag."""
        from streamsrv.streaming.resource import file_headers as _file_headers

        etags = {
            _file_headers("a.mp3", *parts).etag
            for parts in [(10, 1, 1, 0), (11, 1, 1, 0), (10, 2, 1, 0), (10, 1, 2, 0)]
        }
        self.assertEqual(len(etags), 4)
