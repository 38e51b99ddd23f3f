# -*- test-case-name: tests.test_stream -*-
"""``GET``/``HEAD /stream/{path}`` through a real Site in memory (StubTreq).

Each RFC 9110 case the issue lists is pinned here, including the ones
``twisted.web.static.File`` gets wrong (If-Range, all-unsatisfiable
multi-range answering 500).
"""

from __future__ import annotations

import email.parser
import json
import os
from pathlib import Path
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from streamsrv.streaming.conditional import http_date
from tests.sitehelpers import build_site, parse_head, raw_exchange, stub_for

BODY = bytes(range(256)) * 400  # 102400 bytes with a recognisable pattern


class StreamTestMixin:
    """A media root with a few files and a stub client on a fresh site."""

    def setUp(self) -> None:
        root = Path(self.mktemp())  # type: ignore[attr-defined]
        (root / "jazz" / "Miles Davis").mkdir(parents=True)
        self.root = root
        self.track = root / "jazz" / "Miles Davis" / "So What.mp3"
        self.track.write_bytes(BODY)
        (root / "empty.flac").write_bytes(b"")
        (root / "notes.txt").write_bytes(b"not audio")
        (root / ".hidden.mp3").write_bytes(b"hidden")
        (root / "Café.ogg").write_bytes(b"OggS" + b"\0" * 100)
        self.built = build_site(root, max_ranges=4)
        self.stub = stub_for(self.built)

    def get(self, path: str, method: str = "GET", **headers: str) -> tuple[Any, bytes]:
        hdrs = {k.replace("_", "-"): [v] for k, v in headers.items()}
        d = self.stub.request(method, "http://streamsrv.test" + path, headers=hdrs)
        self.stub.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body_d = response.content()
        self.stub.flush()
        return response, self.successResultOf(body_d)  # type: ignore[attr-defined]

    def header(self, response: Any, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    def raw(self, path: str, method: str = "GET", extra: str = "") -> tuple[int, dict[str, str], bytes]:
        request = f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
        return parse_head(raw_exchange(self.built, request))

    def error_code(self, body: bytes) -> str:
        return json.loads(body)["error"]["code"]


TRACK_URL = "/stream/jazz/Miles%20Davis/So%20What.mp3"


class WholeFileTests(StreamTestMixin, unittest.TestCase):
    """Requests without Range."""

    def test_get_whole_file(self) -> None:
        """A plain GET answers 200 with every byte and the validators."""
        response, body = self.get(TRACK_URL)
        self.assertEqual(response.code, 200)
        self.assertEqual(body, BODY)
        self.assertEqual(response.length, len(BODY))
        self.assertEqual(self.header(response, "accept-ranges"), "bytes")
        self.assertEqual(self.header(response, "content-type"), "audio/mpeg")
        self.assertTrue(self.header(response, "etag").startswith('"'))
        self.assertIsNotNone(self.header(response, "last-modified"))
        self.assertEqual(self.header(response, "cross-origin-resource-policy"), "cross-origin")

    def test_head_matches_get(self) -> None:
        """HEAD answers GET's status and headers with no body."""
        status, get_headers, body = self.raw(TRACK_URL)
        self.assertEqual((status, body), (200, BODY))
        self.assertEqual(get_headers["content-length"], str(len(BODY)))
        status, headers, body = self.raw(TRACK_URL, method="HEAD")
        self.assertEqual((status, body), (200, b""))
        for name in ("content-length", "etag", "last-modified", "content-type", "accept-ranges"):
            self.assertEqual(headers[name], get_headers[name], name)

    def test_head_with_range(self) -> None:
        """HEAD with a Range describes the 206 without sending it."""
        status, headers, body = self.raw(TRACK_URL, method="HEAD", extra="Range: bytes=0-9\r\n")
        self.assertEqual(status, 206)
        self.assertEqual(headers["content-length"], "10")
        self.assertEqual(headers["content-range"], f"bytes 0-9/{len(BODY)}")
        self.assertEqual(body, b"")

    def test_empty_file(self) -> None:
        """A zero-byte file answers 200 with Content-Length 0."""
        status, headers, body = self.raw("/stream/empty.flac")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertEqual(headers["content-length"], "0")

    def test_unicode_name(self) -> None:
        """A percent-encoded UTF-8 name is found."""
        response, _body = self.get("/stream/Caf%C3%A9.ogg")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "audio/ogg")

    def test_nfd_request_matches_nfc_file(self) -> None:
        """A request in NFD (decomposed é) is matched after NFC normalisation."""
        response, _ = self.get("/stream/Cafe%CC%81.ogg")
        self.assertEqual(response.code, 200)

    def test_stream_counts_in_metrics(self) -> None:
        """A served stream is counted by route and its bytes by sender."""
        self.get(TRACK_URL)
        text = self.built.metrics.render().decode()
        self.assertIn('streamsrv_http_requests_total{method="GET",route="stream",status="200"} 1.0', text)
        self.assertIn(f'streamsrv_stream_bytes_sent_total{{sender="producer"}} {float(len(BODY))}', text)
        self.assertEqual(self.built.tracker.open_count, 0)


class SingleRangeTests(StreamTestMixin, unittest.TestCase):
    """One byte range."""

    def test_closed_range(self) -> None:
        """bytes=1000-1999 answers 206 with exactly those 1000 bytes."""
        response, body = self.get(TRACK_URL, range="bytes=1000-1999")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[1000:2000])
        self.assertEqual(self.header(response, "content-range"), f"bytes 1000-1999/{len(BODY)}")
        self.assertEqual(response.length, 1000)

    def test_suffix_range(self) -> None:
        """bytes=-500 answers the last 500 bytes."""
        response, body = self.get(TRACK_URL, range="bytes=-500")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[-500:])

    def test_open_range(self) -> None:
        """bytes=N- answers from N to the end."""
        response, body = self.get(TRACK_URL, range="bytes=100000-")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[100000:])

    def test_end_past_eof_clamped(self) -> None:
        """A last-byte position past the end is clamped to the size."""
        response, body = self.get(TRACK_URL, range="bytes=102300-999999")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[102300:])
        self.assertEqual(self.header(response, "content-range"), f"bytes 102300-102399/{len(BODY)}")

    def test_unsatisfiable(self) -> None:
        """A range starting past the end answers 416 with bytes */SIZE and JSON."""
        response, body = self.get(TRACK_URL, range="bytes=200000-")
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, "content-range"), f"bytes */{len(BODY)}")
        self.assertEqual(self.error_code(body), "RANGE_NOT_SATISFIABLE")
        self.assertEqual(json.loads(body)["error"]["request_id"], self.header(response, "x-request-id"))

    def test_range_on_empty_file(self) -> None:
        """Any range of a zero-byte file is unsatisfiable."""
        response, _ = self.get("/stream/empty.flac", range="bytes=0-")
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, "content-range"), "bytes */0")

    def test_malformed_range_serves_whole(self) -> None:
        """A malformed Range is ignored: 200 with the whole file."""
        for header in ("bytes=abc", "bytes=5-1", "bytes", "bytes=--1", "bytes=1-2-3"):
            response, body = self.get(TRACK_URL, range=header)
            self.assertEqual(response.code, 200, header)
            self.assertEqual(body, BODY)

    def test_other_unit_serves_whole(self) -> None:
        """A Range in another unit is ignored: 200 with the whole file."""
        response, body = self.get(TRACK_URL, range="items=0-1")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(body), len(BODY))


class MultiRangeTests(StreamTestMixin, unittest.TestCase):
    """Several byte ranges: multipart/byteranges."""

    def parse(self, response: Any, body: bytes) -> list[tuple[str, bytes]]:
        content_type = self.header(response, "content-type")
        message = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        self.assertTrue(message.is_multipart())
        return [(part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()]

    def test_two_ranges(self) -> None:
        """Two ranges answer a multipart body with exact Content-Length."""
        response, body = self.get(TRACK_URL, range="bytes=0-9,5000-5099")
        self.assertEqual(response.code, 206)
        self.assertTrue(self.header(response, "content-type").startswith("multipart/byteranges; boundary="))
        self.assertEqual(response.length, len(body))
        parts = self.parse(response, body)
        self.assertEqual(
            parts,
            [(f"bytes 0-9/{len(BODY)}", BODY[0:10]), (f"bytes 5000-5099/{len(BODY)}", BODY[5000:5100])],
        )

    def test_overlapping_ranges_coalesce(self) -> None:
        """Overlapping ranges are merged into one part."""
        response, body = self.get(TRACK_URL, range="bytes=0-99,50-149")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[0:150])

    def test_all_unsatisfiable_is_416(self) -> None:
        """Several ranges all past the end answer 416, not 500 (static.File's bug)."""
        response, body = self.get(TRACK_URL, range="bytes=200000-200010,300000-300010")
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, "content-range"), f"bytes */{len(BODY)}")
        self.assertEqual(self.error_code(body), "RANGE_NOT_SATISFIABLE")

    def test_some_unsatisfiable_dropped(self) -> None:
        """Unsatisfiable ranges among satisfiable ones are dropped."""
        response, body = self.get(TRACK_URL, range="bytes=0-9,200000-200010")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[0:10])

    def test_too_many_ranges_serve_whole(self) -> None:
        """More ranges than the cap (4 here) answer 200 with the whole file."""
        response, body = self.get(TRACK_URL, range="bytes=0-0,10-10,20-20,30-30,40-40")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, BODY)


class ConditionalTests(StreamTestMixin, unittest.TestCase):
    """Validators, conditional GET and If-Range."""

    def validators(self) -> tuple[str, str]:
        response, _ = self.get(TRACK_URL, method="HEAD")
        return self.header(response, "etag"), self.header(response, "last-modified")

    def test_if_none_match(self) -> None:
        """If-None-Match with the current ETag answers 304 without a body."""
        etag, _ = self.validators()
        response, body = self.get(TRACK_URL, if_none_match=etag)
        self.assertEqual(response.code, 304)
        self.assertEqual(body, b"")
        self.assertEqual(self.header(response, "etag"), etag)

    def test_if_none_match_other(self) -> None:
        """If-None-Match with another ETag answers 200."""
        response, _ = self.get(TRACK_URL, if_none_match='"other"')
        self.assertEqual(response.code, 200)

    def test_if_modified_since(self) -> None:
        """If-Modified-Since at Last-Modified answers 304."""
        _, last_modified = self.validators()
        response, _ = self.get(TRACK_URL, if_modified_since=last_modified)
        self.assertEqual(response.code, 304)

    def test_if_modified_since_older(self) -> None:
        """If-Modified-Since before Last-Modified answers 200."""
        response, _ = self.get(TRACK_URL, if_modified_since=http_date(0))
        self.assertEqual(response.code, 200)

    def test_if_match_fails(self) -> None:
        """If-Match with another ETag answers 412 PRECONDITION_FAILED."""
        response, body = self.get(TRACK_URL, if_match='"other"')
        self.assertEqual(response.code, 412)
        self.assertEqual(self.error_code(body), "PRECONDITION_FAILED")

    def test_if_range_etag_matches(self) -> None:
        """If-Range with the current ETag honours the Range."""
        etag, _ = self.validators()
        response, body = self.get(TRACK_URL, range="bytes=0-9", if_range=etag)
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BODY[:10])

    def test_if_range_etag_mismatch(self) -> None:
        """If-Range with a stale ETag answers 200 with the whole file (static.File answers 206)."""
        response, body = self.get(TRACK_URL, range="bytes=0-9", if_range='"bogus"')
        self.assertEqual(response.code, 200)
        self.assertEqual(body, BODY)

    def test_if_range_weak_never_matches(self) -> None:
        """A weak tag in If-Range never matches."""
        etag, _ = self.validators()
        response, _ = self.get(TRACK_URL, range="bytes=0-9", if_range="W/" + etag)
        self.assertEqual(response.code, 200)

    def test_if_range_date(self) -> None:
        """If-Range with exactly Last-Modified honours the Range; another date does not."""
        _, last_modified = self.validators()
        response, _ = self.get(TRACK_URL, range="bytes=0-9", if_range=last_modified)
        self.assertEqual(response.code, 206)
        response, _ = self.get(TRACK_URL, range="bytes=0-9", if_range=http_date(0))
        self.assertEqual(response.code, 200)

    def test_etag_changes_with_file(self) -> None:
        """Rewriting the file changes its ETag."""
        etag, _ = self.validators()
        self.track.write_bytes(BODY + b"x")
        os.utime(self.track, ns=(1, 1))
        etag2, _ = self.validators()
        self.assertNotEqual(etag, etag2)


class RefusalTests(StreamTestMixin, unittest.TestCase):
    """What is not served, and how it is refused."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def assertNotFound(self, path: str) -> bytes:
        response, body = self.get(path)
        self.assertEqual(response.code, 404, path)
        self.assertEqual(self.error_code(body), "NOT_FOUND")
        self.assertEqual(self.header(response, "content-type"), "application/json; charset=utf-8")
        return body

    def security_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event_kind") == "security"]

    def test_missing_file(self) -> None:
        """A file that does not exist answers 404 and is no security event."""
        self.assertNotFound("/stream/jazz/nothing.mp3")
        self.assertEqual(self.security_events(), [])

    def test_non_audio(self) -> None:
        """A file that is not audio answers 404."""
        self.assertNotFound("/stream/notes.txt")

    def test_dotfile(self) -> None:
        """A dotfile answers 404 even with an audio extension."""
        self.assertNotFound("/stream/.hidden.mp3")

    def test_directory(self) -> None:
        """A directory answers 404."""
        self.assertNotFound("/stream/jazz")
        self.assertNotFound("/stream/")

    def test_traversal_logged(self) -> None:
        """An encoded ../ answers 404, is logged as a security event and counted."""
        body = self.assertNotFound("/stream/jazz/%2e%2e/%2e%2e/etc/passwd.mp3")
        events = self.security_events()
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["kind"], "path_refused")
        self.assertNotIn(b"etc", body)
        text = self.built.metrics.render().decode()
        self.assertIn('streamsrv_security_events_total{kind="path_refused"} 1.0', text)

    def test_symlink_outside(self) -> None:
        """A symlink leading outside the media root answers 404."""
        outside = Path(self.mktemp())
        outside.mkdir()
        (outside / "secret.mp3").write_bytes(b"secret")
        os.symlink((outside / "secret.mp3").resolve(), self.root / "link.mp3")
        body = self.assertNotFound("/stream/link.mp3")
        self.assertNotIn(b"secret", body)

    def test_swapped_for_symlink_after_serving(self) -> None:
        """A track served once, then swapped for a symlink leading outside, answers 404."""
        name = self.track.relative_to(self.root).as_posix()
        response, body = self.get("/stream/" + name)
        self.assertEqual(response.code, 200)
        outside = Path(self.mktemp())
        outside.mkdir()
        (outside / "secret.mp3").write_bytes(b"secret")
        self.track.unlink()
        os.symlink((outside / "secret.mp3").resolve(), self.track)
        body = self.assertNotFound("/stream/" + name)
        self.assertNotIn(b"secret", body)
        self.assertEqual([e["kind"] for e in self.security_events()], ["path_refused"])

    def test_symlink_inside(self) -> None:
        """A symlink whose target stays inside the root is followed."""
        os.symlink(self.track.resolve(), self.root / "alias.mp3")
        response, body = self.get("/stream/alias.mp3")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, BODY)

    def test_method_not_allowed(self) -> None:
        """POST answers 405 JSON with Allow."""
        response, body = self.get(TRACK_URL, method="POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(self.error_code(body), "METHOD_NOT_ALLOWED")
        self.assertIn("GET", self.header(response, "allow"))

    def test_shutting_down(self) -> None:
        """While draining for shutdown, new streams answer 503 UNAVAILABLE."""
        self.built.tracker.stopService()
        response, body = self.get(TRACK_URL)
        self.assertEqual(response.code, 503)
        self.assertEqual(self.error_code(body), "UNAVAILABLE")
        self.assertIsNotNone(self.header(response, "retry-after"))
