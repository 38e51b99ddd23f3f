# -*- test-case-name: tests.test_web -*-
"""The web layer: request ids, JSON errors, security headers, compression, access log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel

from streamsrv.errors import STATUS_FOR_CODE, ApiError
from streamsrv.middleware.accesslog import redact_uri
from streamsrv.web.errors import error_body, render_error
from streamsrv.web.openapi import openapi_document
from streamsrv.web.site import choose_request_id, http_date_now
from tests.sitehelpers import build_site, parse_head, raw_exchange, stub_for


class WebTestMixin:
    def setUp(self) -> None:
        root = Path(self.mktemp())  # type: ignore[attr-defined]
        root.mkdir()
        (root / "a.mp3").write_bytes(b"\xff\xfb" + b"\0" * 5000)
        self.built = build_site(root)
        self.stub = stub_for(self.built)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)  # type: ignore[attr-defined]

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
        hdrs = {k: [v] for k, v in (headers or {}).items()}
        d = self.stub.request(method, "http://streamsrv.test" + path, headers=hdrs)
        self.stub.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body_d = response.content()
        self.stub.flush()
        return response, self.successResultOf(body_d)  # type: ignore[attr-defined]


class RequestIdTests(WebTestMixin, unittest.TestCase):
    """X-Request-ID on every response."""

    def test_generated(self) -> None:
        """Without a client id, a fresh one is made and echoed in errors."""
        response, body = self.request("GET", "/nope")
        rid = response.headers.getRawHeaders("x-request-id")[0]
        self.assertRegex(rid, r"^[0-9a-f]{24}$")
        self.assertEqual(json.loads(body)["error"]["request_id"], rid)

    def test_client_id_kept(self) -> None:
        """A well-formed client id is kept."""
        response, body = self.request("GET", "/nope", {"X-Request-ID": "abc.DEF_1-2"})
        self.assertEqual(response.headers.getRawHeaders("x-request-id"), ["abc.DEF_1-2"])
        self.assertEqual(json.loads(body)["error"]["request_id"], "abc.DEF_1-2")

    def test_bad_client_id_replaced(self) -> None:
        """An id with other characters or over 128 long is replaced."""
        for bad in ("a b", "x" * 129, "<script>", ""):
            self.assertNotEqual(choose_request_id(bad.encode()), bad)
        self.assertEqual(choose_request_id(b"x" * 128), "x" * 128)

    def test_on_success_too(self) -> None:
        """Successful responses carry an id as well."""
        response, _ = self.request("GET", "/stream/a.mp3")
        self.assertEqual(len(response.headers.getRawHeaders("x-request-id")), 1)


class ErrorTests(WebTestMixin, unittest.TestCase):
    """The JSON error model everywhere."""

    def test_unknown_path(self) -> None:
        """An unknown path answers JSON 404."""
        response, body = self.request("GET", "/definitely/not/here")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "NOT_FOUND")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"])

    def test_klein_method_not_allowed(self) -> None:
        """A wrong method on a JSON route answers JSON 405 with Allow."""
        response, body = self.request("DELETE", "/health")
        self.assertEqual(response.code, 405)
        self.assertEqual(json.loads(body)["error"]["code"], "METHOD_NOT_ALLOWED")
        self.assertIn("GET", response.headers.getRawHeaders("allow")[0])

    def test_internal_error_hides_details(self) -> None:
        """An unhandled exception answers JSON 500 without traceback or paths."""

        class Boom(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                raise RuntimeError("/secret/path/in/message")

        self.built.site.resource._media[b"boom"] = Boom()
        response, body = self.request("GET", "/boom")
        self.assertEqual(response.code, 500)
        self.assertEqual(json.loads(body)["error"]["code"], "INTERNAL")
        self.assertNotIn(b"secret", body)
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_every_code_has_status(self) -> None:
        """Every contract code maps to an error status and renders as JSON."""
        for code, status in STATUS_FOR_CODE.items():
            self.assertGreaterEqual(status, 400)
            self.assertEqual(json.loads(error_body(code, "m", "r"))["error"]["code"], code)
            self.assertEqual(ApiError(code).status, status)
        self.assertRaises(ValueError, ApiError, "NO_SUCH_CODE")


class HeaderTests(WebTestMixin, unittest.TestCase):
    """Security headers and compression."""

    def test_security_headers(self) -> None:
        """Baseline security headers are on JSON responses; HSTS is not (not production)."""
        response, _ = self.request("GET", "/health")
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(headers.getRawHeaders("referrer-policy"), ["no-referrer"])
        self.assertEqual(headers.getRawHeaders("cross-origin-resource-policy"), ["same-site"])
        self.assertIsNone(headers.getRawHeaders("strict-transport-security"))
        self.assertEqual(headers.getRawHeaders("server"), ["streamsrv"])

    def test_json_gzipped(self) -> None:
        """JSON is gzip-compressed for clients that accept it; a small one (an error) is not, but has Vary."""
        for path, gzipped in ((b"/openapi.json", True), (b"/nope", False)):
            raw = raw_exchange(
                self.built, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
            )
            _status, headers, _rest = parse_head(raw)
            # Origin too: a development site's CORS answers differ by Origin.
            self.assertEqual(headers["vary"], "Origin, Accept-Encoding")
            if gzipped:
                self.assertEqual(headers["content-encoding"], "gzip")
                self.assertEqual(headers["transfer-encoding"], "chunked")
                self.assertNotIn("content-length", headers)
            else:
                self.assertNotIn("content-encoding", headers)
                self.assertEqual(headers["content-length"], str(len(_rest)))

    def test_audio_never_compressed(self) -> None:
        """Audio is never compressed, even when the client accepts gzip."""
        raw = raw_exchange(
            self.built, b"GET /stream/a.mp3 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        _status, headers, body = parse_head(raw)
        self.assertNotIn("content-encoding", headers)
        self.assertEqual(headers["content-length"], "5002")
        self.assertEqual(len(body), 5002)


class AccessLogTests(WebTestMixin, unittest.TestCase):
    """The structured access log."""

    def access(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event_kind") == "access"]

    def test_fields(self) -> None:
        """A finished request logs method, path, status, bytes, range and id."""
        _response, _ = self.request("GET", "/stream/a.mp3", {"Range": "bytes=0-99", "X-Request-ID": "r1"})
        (event,) = self.access()
        self.assertEqual(event["method"], "GET")
        self.assertEqual(event["path"], "/stream/a.mp3")
        self.assertEqual(event["status"], 206)
        self.assertEqual(event["sent"], 100)
        self.assertEqual(event["range"], "bytes=0-99")
        self.assertEqual(event["request_id"], "r1")
        self.assertFalse(event["aborted"])

    def test_credentials_redacted(self) -> None:
        """Signatures and tokens in the query never reach the log."""
        self.request("GET", "/stream/a.mp3?expires=1&sig=SECRETSIG&access_token=SECRETTOK&format=mp3")
        (event,) = self.access()
        self.assertNotIn("SECRET", repr(event))
        self.assertIn("format=mp3", event["path"])
        self.assertIn("sig=REDACTED", event["path"])

    def test_redact_uri(self) -> None:
        """redact_uri keeps the path and ordinary parameters."""
        self.assertEqual(redact_uri(b"/a%20b?token=x&q=1"), "/a%20b?token=REDACTED&q=1")
        self.assertEqual(redact_uri(b"/plain"), "/plain")


class OpenApiTests(unittest.SynchronousTestCase):
    """The OpenAPI document."""

    def test_document(self) -> None:
        """The document is OpenAPI 3.1, JSON-serialisable, lists /stream and the error codes."""
        doc = json.loads(json.dumps(openapi_document()))
        self.assertEqual(doc["openapi"], "3.1.0")
        self.assertIn("/stream/{path}", doc["paths"])
        codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        self.assertEqual(set(codes), set(STATUS_FOR_CODE))


class HttpDateNowTests(unittest.SynchronousTestCase):
    """The Date header value, formatted once per second."""

    def test_matches_twisted(self) -> None:
        """It is what Twisted's datetimeToString() gives for the current second."""
        from twisted.web.http import datetimeToString

        for _ in range(3):
            before = datetimeToString()
            value = http_date_now()
            after = datetimeToString()
            if before == after:
                self.assertEqual(value, before)
                return
        self.fail("the second changed three times in a row")

    def test_follows_the_clock(self) -> None:
        """A new second gives a new value."""
        from streamsrv.web import site as site_module

        now = [1_700_000_000.2]
        self.patch(site_module.time, "time", lambda: now[0])
        first = http_date_now()
        self.assertEqual(first, b"Tue, 14 Nov 2023 22:13:20 GMT")
        now[0] += 1
        self.assertEqual(http_date_now(), b"Tue, 14 Nov 2023 22:13:21 GMT")


class LocalAddressTests(unittest.SynchronousTestCase):
    """The channel asks its transport for the local address once per connection."""

    def test_asked_once(self) -> None:
        """Two requests on one keep-alive connection see the same local address, asked of the socket once."""
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        built = build_site(Path(self.mktemp()))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5000),
        )
        asked: list[int] = []
        real = transport.getHost

        def get_host() -> Any:
            asked.append(1)
            return real()

        transport.getHost = get_host  # type: ignore[method-assign]
        protocol = built.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(len(asked), 1)


class RandomIdTests(unittest.SynchronousTestCase):
    """Fresh request ids: read ahead from the OS in batches, never repeated, never shared with a fork."""

    def test_fresh_ids(self) -> None:
        """Ids are 24 lowercase hex digits and all differ, across several batches."""
        from streamsrv.web.site import _RandomIds

        ids = _RandomIds()
        made = [ids.next() for _ in range(3 * _RandomIds.BATCH + 5)]
        self.assertEqual(len(set(made)), len(made))
        for value in made:
            self.assertRegex(value, r"\A[0-9a-f]{24}\Z")

    def test_fork_forgets_read_ahead(self) -> None:
        """After a fork the child reads fresh bytes instead of its parent's read-ahead."""
        import os

        from streamsrv.web.site import _RandomIds

        ids = _RandomIds()
        ids.next()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its next id and leave at once
            os.write(write, ids.next().encode())
            os._exit(0)
        os.close(write)
        child = os.read(read, 64).decode()
        os.close(read)
        os.waitpid(pid, 0)
        self.assertNotEqual(child, ids.next())


class StatusLineTests(unittest.SynchronousTestCase):
    """Every status goes out with its reason phrase and every 401 with a Bearer challenge."""

    def request(self, path: bytes) -> bytes:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        built = build_site(Path(self.mktemp()))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5000),
        )
        protocol = built.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return bytes(transport.value())

    def test_phrases_twisted_lacks(self) -> None:
        """429, 426 and 431 (unknown to Twisted) get IANA's phrases; known ones keep Twisted's."""
        from streamsrv.web.site import REASON_PHRASES, StreamsrvRequest

        for code, phrase in ((429, b"Too Many Requests"), (426, b"Upgrade Required"), (404, b"Not Found")):
            request = StreamsrvRequest(DummyChannel())
            request.setResponseCode(code)
            self.assertEqual(request.code_message, phrase)
        self.assertEqual(REASON_PHRASES[431], b"Request Header Fields Too Large")

    def test_status_line_on_the_wire(self) -> None:
        """An error answered through the site carries its phrase on the status line."""
        self.assertTrue(self.request(b"/nowhere").startswith(b"HTTP/1.1 404 Not Found\r\n"))

    def test_bearer_challenge(self) -> None:
        """A 401 names the scheme; a refused token adds error="invalid_token" (RFC 6750 section 3)."""
        from twisted.web.test.requesthelper import DummyRequest

        for code, challenge in (
            ("UNAUTHENTICATED", b'Bearer realm="streamsrv"'),
            ("TOKEN_EXPIRED", b'Bearer realm="streamsrv", error="invalid_token"'),
            ("TOKEN_REVOKED", b'Bearer realm="streamsrv", error="invalid_token"'),
        ):
            request = DummyRequest([b""])
            render_error(request, ApiError(code))
            self.assertEqual(request.responseHeaders.getRawHeaders(b"www-authenticate"), [challenge])
        request = DummyRequest([b""])
        render_error(request, ApiError("FORBIDDEN"))
        self.assertIsNone(request.responseHeaders.getRawHeaders(b"www-authenticate"))
