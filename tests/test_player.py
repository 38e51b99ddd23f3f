"""The demo player's files: ``/demo/``, the ``/`` redirect for browsers, CSP, errors, switch.

The page itself is checked in a real browser by :mod:`tests.test_browser`;
here the resource is driven through the real site in memory, and the static
files are read as text to pin what the CSP needs of them (no inline code,
every reference served).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from streamsrv.config import ConfigError, load_settings
from streamsrv.middleware.headers import PLAYER_CSP
from streamsrv.startup import announce_dev_credentials
from streamsrv.web.player.resource import STATIC_DIR, load_static
from tests.sitehelpers import build_site, parse_head, raw_exchange

#: The files index.html names, and each script's imports, must be among these.
SERVED = load_static()


def exchange(
    built: Any, path: bytes, *headers: bytes, method: bytes = b"GET"
) -> tuple[int, dict[str, str], bytes]:
    """One raw request to *built*'s site: status, headers, body (de-chunked)."""
    raw = (
        method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    )
    status, head, rest = parse_head(raw_exchange(built, raw))
    return status, head, dechunk(rest) if head.get("transfer-encoding") == "chunked" else rest


def dechunk(data: bytes) -> bytes:
    """The body of a chunked transfer."""
    chunks, body = io.BytesIO(data), b""
    while size := int(chunks.readline().strip(), 16):
        body += chunks.read(size)
        chunks.readline()
    return body


class PlayerSiteTestsMixin:
    """A development site (player on) over an empty media root."""

    def setUp(self) -> None:
        root = Path(self.mktemp())  # type: ignore[attr-defined]
        root.mkdir()
        self.built = build_site(root)


class PlayerFilesTests(PlayerSiteTestsMixin, unittest.TestCase):
    """``/demo/…`` serves the player's files, and nothing else."""

    def test_index(self) -> None:
        """``/demo/`` is the page: HTML, the player's CSP, no framing, a validator, revalidated."""
        status, headers, body = exchange(self.built, b"/demo/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(headers["content-security-policy"], PLAYER_CSP.decode())
        self.assertEqual(headers["x-frame-options"], "DENY")
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertEqual(body, (STATIC_DIR / "index.html").read_bytes())
        self.assertIn(b'<script type="module" src="js/app.js"></script>', body)

    def test_csp_is_strict(self) -> None:
        """Scripts only from the server itself: no inline code, no eval, no other origin."""
        policy = dict(part.strip().split(" ", 1) for part in PLAYER_CSP.decode().split(";"))
        self.assertEqual(policy["script-src"], "'self'")
        self.assertEqual(policy["default-src"], "'none'")
        self.assertEqual(policy["frame-ancestors"], "'none'")
        self.assertNotIn("unsafe", PLAYER_CSP.decode())

    def test_without_slash_redirects(self) -> None:
        """``/demo`` is sent to ``/demo/`` (relative references in the page need the slash)."""
        status, headers, body = exchange(self.built, b"/demo")
        self.assertEqual((status, headers["location"], body), (302, "/demo/", b""))

    def test_scripts_and_vendor(self) -> None:
        """Modules and vendored libraries are JavaScript; licences are served beside them."""
        for path in (b"/demo/js/app.js", b"/demo/vendor/hls.min.mjs", b"/demo/vendor/peaks.min.js"):
            status, headers, _ = exchange(self.built, path)
            self.assertEqual((status, headers["content-type"]), (200, "text/javascript; charset=utf-8"), path)
        status, headers, body = exchange(self.built, b"/demo/vendor/hls.js-LICENSE.txt")
        self.assertEqual(status, 200)
        self.assertIn(b"Apache", body)

    def test_not_modified(self) -> None:
        """A request with the current ETag gets 304 and no body."""
        _, headers, _ = exchange(self.built, b"/demo/player.css")
        status, again, body = exchange(
            self.built, b"/demo/player.css", b"If-None-Match: " + headers["etag"].encode()
        )
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(again["etag"], headers["etag"])

    def test_head(self) -> None:
        """HEAD answers the length of the file without the body."""
        status, headers, body = exchange(self.built, b"/demo/js/app.js", method=b"HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["content-length"]), len(SERVED["js/app.js"].body))
        self.assertEqual(body, b"")

    def test_gzip(self) -> None:
        """Clients that accept gzip get the files compressed (the vendored libraries are large)."""
        raw = raw_exchange(
            self.built, b"GET /demo/vendor/hls.min.mjs HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        status, headers, rest = parse_head(raw)
        self.assertEqual((status, headers["content-encoding"]), (200, "gzip"))
        self.assertEqual(gzip.decompress(dechunk(rest)), SERVED["vendor/hls.min.mjs"].body)

    def test_nothing_else(self) -> None:
        """Paths outside the file list are the JSON 404: traversal, source, dotfiles, directories."""
        for path in (
            b"/demo/../setup.py",
            b"/demo/%2e%2e/resource.py",
            b"/demo/..%2fresource.py",
            b"/demo/resource.py",
            b"/demo/vendor/",
            b"/demo/js",
            b"/demo/%ff",
            b"/demo/js/app.js/x",
            b"/demo//index.html",
        ):
            status, headers, body = exchange(self.built, path)
            self.assertEqual(status, 404, path)
            self.assertEqual(headers["content-type"], "application/json; charset=utf-8", path)
            self.assertEqual(json.loads(body)["error"]["code"], "NOT_FOUND", path)

    def test_method_not_allowed(self) -> None:
        """A POST is the JSON 405 with ``Allow``."""
        status, headers, body = exchange(self.built, b"/demo/", b"Content-Length: 0", method=b"POST")
        self.assertEqual(status, 405)
        self.assertEqual(json.loads(body)["error"]["code"], "METHOD_NOT_ALLOWED")
        self.assertIn("GET", headers["allow"])


class HomeTests(PlayerSiteTestsMixin, unittest.TestCase):
    """``/``: browsers go to the player, API clients get the JSON index."""

    def test_browser(self) -> None:
        """A navigation (``Accept: text/html…``) is sent to ``/demo/``, varying on ``Accept``."""
        accept = b"Accept: text/html,application/xhtml+xml,*/*;q=0.8"
        status, headers, _ = exchange(self.built, b"/", accept)
        self.assertEqual((status, headers["location"], headers["vary"]), (302, "/demo/", "Accept"))

    def test_api_client(self) -> None:
        """Without HTML in ``Accept`` (curl, fetch) ``/`` is still the JSON index."""
        for headers in ((), (b"Accept: application/json",), (b"Accept: */*",)):
            status, _, body = exchange(self.built, b"/", *headers)
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["name"], "streamsrv")

    def test_other_paths_unchanged(self) -> None:
        """Only ``/`` itself is redirected: an unknown path is still the JSON 404 for a browser."""
        status, _, body = exchange(self.built, b"/nope", b"Accept: text/html")
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "NOT_FOUND"))


class SwitchedOffTests(unittest.TestCase):
    """``STREAMSRV_DEMO_UI=false``: no player, no redirect."""

    def test_off(self) -> None:
        """``/demo/`` is the JSON 404 and a browser's ``/`` gets the JSON index."""
        root = Path(self.mktemp())
        root.mkdir()
        built = build_site(root, demo_ui=False)
        status, _, body = exchange(built, b"/demo/")
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "NOT_FOUND"))
        status, _, body = exchange(built, b"/", b"Accept: text/html")
        self.assertEqual((status, json.loads(body)["name"]), (200, "streamsrv"))


class _Elements(HTMLParser):
    """Every start tag of a document with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()


class StaticFilesTests(unittest.TestCase):
    """What the strict CSP needs of the files, checked on their text."""

    def test_no_inline_code(self) -> None:
        """The page has no inline script, event handler attribute or style attribute."""
        page = _Elements()
        page.feed(SERVED["index.html"].body.decode())
        self.assertEqual(page.script_text, "")
        for tag, attrs in page.tags:
            self.assertNotIn("style", attrs, tag)
            self.assertEqual([a for a in attrs if a.startswith("on")], [], tag)
            if tag == "script":
                self.assertIsNotNone(attrs.get("src"))

    def test_references_served(self) -> None:
        """Every file the page and its modules name is one the player serves."""
        page = _Elements()
        page.feed(SERVED["index.html"].body.decode())
        named = [
            attrs.get("src") or attrs.get("href") for tag, attrs in page.tags if tag in ("script", "link")
        ]
        self.assertEqual([n for n in named if n not in SERVED], [])
        for name, found in SERVED.items():
            if not name.endswith(".js") or name.startswith("vendor/"):
                continue
            for target in re.findall(r'^import .* from "(\.[^"]+)";$', found.body.decode(), re.MULTILINE):
                resolved = (Path(name).parent / target).as_posix()
                resolved = re.sub(r"[^/]+/\.\./", "", resolved)
                self.assertIn(resolved, SERVED, f"{name} imports {target}")

    def test_licences_kept(self) -> None:
        """Each vendored library's licence is served beside it, with the versions file."""
        for licence in ("hls.js", "peaks.js", "konva", "waveform-data", "eventemitter3"):
            self.assertIn(f"vendor/{licence}-LICENSE.txt", SERVED)
        versions = SERVED["vendor/VERSIONS.txt"].body.decode()
        self.assertIn("hls.js@1.7.4", versions)
        self.assertIn("peaks.js@4.0.0", versions)

    def test_load_static_skips(self) -> None:
        """Dotfiles and unknown suffixes are never served."""
        directory = Path(self.mktemp())
        (directory / ".git").mkdir(parents=True)
        (directory / ".git" / "config.js").write_text("x")
        (directory / ".env.js").write_text("x")
        (directory / "notes.py").write_text("x")
        (directory / "ok.css").write_text("x")
        self.assertEqual(list(load_static(directory)), ["ok.css"])


class SettingTests(unittest.TestCase):
    """``STREAMSRV_DEMO_UI``: on in development, off elsewhere, validated."""

    def test_defaults(self) -> None:
        """On in development; off in staging and production."""
        self.assertTrue(load_settings(cli={}, environ={}).demo_ui)
        self.assertFalse(load_settings(cli={}, environ={"STREAMSRV_ENV": "staging"}).demo_ui)

    def test_explicit(self) -> None:
        """Either way by the variable."""
        off = load_settings(cli={}, environ={"STREAMSRV_DEMO_UI": "false"})
        on = load_settings(cli={}, environ={"STREAMSRV_ENV": "staging", "STREAMSRV_DEMO_UI": "yes"})
        self.assertEqual((off.demo_ui, on.demo_ui), (False, True))

    def test_invalid(self) -> None:
        """A value that is not a boolean is a problem naming the variable."""
        with self.assertRaises(ConfigError) as caught:
            load_settings(cli={}, environ={"STREAMSRV_DEMO_UI": "maybe"})
        self.assertTrue(any(p.startswith("STREAMSRV_DEMO_UI:") for p in caught.exception.problems))


class AnnouncementTests(unittest.TestCase):
    """The development credentials include the player's URL, the token in its fragment."""

    def announce(self, **environ: str) -> str:
        data = Path(self.mktemp()).absolute()
        root = data / "media"
        root.mkdir(parents=True)
        (root / "a.wav").write_bytes(b"RIFF")
        settings = load_settings(
            cli={},
            environ={"STREAMSRV_DATA_DIR": str(data), "STREAMSRV_LISTEN": "tcp:8123", **environ},
        )
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        announce_dev_credentials(settings, root, Clock())
        return err.getvalue()

    def test_player_line(self) -> None:
        """With the player on, its URL carries the printed admin token after ``#token=``."""
        out = self.announce()
        token = re.search(r"Bearer (\S+)'", out)
        assert token is not None
        self.assertIn(
            f"player, open in a browser:  http://127.0.0.1:8123/demo/#token={token.group(1)}\n", out
        )

    def test_no_player_line(self) -> None:
        """With the player off, no player line."""
        out = self.announce(STREAMSRV_DEMO_UI="false")
        self.assertIn("admin token", out)
        self.assertNotIn("/demo/", out)
