# -*- test-case-name: tests.test_paths -*-
"""Tests for :mod:`streamsrv.media.paths`."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.media.paths import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    PathRefused,
    ResolvedPathCache,
    decode_request_path,
    normalise_relative_path,
    resolve_inside,
    safe_media_path,
)

#: Hostile raw paths that must be refused, with the reason they are refused for.
REFUSED: list[tuple[bytes, str]] = [
    (b"../etc/passwd", "dot-dot segment"),
    (b"%2e%2e/etc/passwd", "dot-dot segment"),
    (b"%2E%2E%2Fetc%2Fpasswd", "dot-dot segment"),
    (b"..%2fetc%2fpasswd", "dot-dot segment"),
    (b".%2e/etc/passwd", "dot-dot segment"),
    (b"%2e./etc/passwd", "dot-dot segment"),
    (b"a/../../etc/passwd", "dot-dot segment"),
    (b"jazz/%2e%2e/%2e%2e/outside/secret.mp3", "dot-dot segment"),
    (b"a/..", "dot-dot segment"),
    (b"..", "dot-dot segment"),
    (b"./../x", "dot-dot segment"),
    (b"%2e%2e%5cetc%5cpasswd", "backslash"),
    (b"..\\etc\\passwd", "backslash"),
    (b"..%5c..%5cx", "backslash"),
    (b"C:\\", "backslash"),
    (b"C:%5cWindows%5cwin.ini", "backslash"),
    (b"%c0%ae%c0%ae/etc/passwd", "invalid UTF-8"),
    (b"..%c0%afetc", "invalid UTF-8"),
    (b"%e0%80%ae%e0%80%ae/x", "invalid UTF-8"),
    (b"%ed%a0%80.mp3", "invalid UTF-8"),
    (b"%ff%fe%2e%2e", "invalid UTF-8"),
    (b"%00", "control character"),
    (b"a%00.mp3", "control character"),
    (b"a.mp3%00.txt", "control character"),
    (b"..%00/", "control character"),
    (b"%0d%0aSet-Cookie:%20x=1", "control character"),
    (b"a%0a.mp3", "control character"),
    (b"%09a.mp3", "control character"),
    (b"a\tb.mp3", "control character"),
    (b"a%7f.mp3", "control character"),
    (b"a%c2%85.mp3", "control character"),
    (b"a%c2%9b31m.mp3", "control character"),
    (b"%1b%5b31m.mp3", "control character"),
    (b"%e2%80%aeevil3pm.mp3", "bidi control character"),
    (b"jazz/%e2%81%a6x.mp3", "bidi control character"),
    (b"%2fetc%2fpasswd", "absolute path"),
    (b"/etc/passwd", "absolute path"),
    (b"//etc/passwd", "absolute path"),
    (b"%2f", "absolute path"),
    (b"C:/Windows/win.ini", "drive letter"),
    (b"C:", "drive letter"),
    (b"c%3a/x", "drive letter"),
    (b"jazz/Z:x.mp3", "drive letter"),
    (b"", "empty path"),
    (b".", "empty path"),
    (b"./././", "empty path"),
    (b"%2e", "empty path"),
    (b"%2e%2f%2e", "empty path"),
    (b"a" * (MAX_SEGMENT_BYTES + 1), "segment too long"),
    (quote("\u20ac" * 86).encode("ascii"), "segment too long"),
    (b"/".join([b"a" * 200] * 21), "path too long"),
]

#: Raw paths that look hostile but only name something inside the root, with
#: the segments they must normalise to.
HARMLESS: list[tuple[bytes, tuple[str, ...]]] = [
    (b"%252e%252e%252f", ("%2e%2e%2f",)),
    (b"%252e%252e/%252e%252e/etc/passwd", ("%2e%2e", "%2e%2e", "etc", "passwd")),
    (b"%25%32%65%25%32%65/x", ("%2e%2e", "x")),
    (b"%u002e%u002e/x", ("%u002e%u002e", "x")),
    (b"%e2%80%a4%e2%80%a4/x", ("\u2024\u2024", "x")),
    (b"%ef%bc%8e%ef%bc%8e/x", ("\uff0e\uff0e", "x")),
    (b"....//x", ("....", "x")),
    (b".../x", ("...", "x")),
    (b"..;/x", ("..;", "x")),
    (b"..%20/x", (".. ", "x")),
    (b"file:///etc/passwd", ("file:", "etc", "passwd")),
    (b"a+b.mp3", ("a+b.mp3",)),
    (b"%", ("%",)),
    (b"%zz.mp3", ("%zz.mp3",)),
    (b"jazz//So%20What.mp3", ("jazz", "So What.mp3")),
    (b"./jazz/./So%20What.mp3/", ("jazz", "So What.mp3")),
    (b"e%cc%81.mp3", ("\u00e9.mp3",)),
    (b"%e2%80%8f.mp3", ("\u200f.mp3",)),
    (b"a" * MAX_SEGMENT_BYTES, ("a" * MAX_SEGMENT_BYTES,)),
]

#: Pieces a fuzzed path is made of: traversal spellings and the names of the
#: test tree's escaping symlinks.
_PIECES = [
    "..",
    ".",
    "/",
    "//",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%25",
    "%00",
    "%c0%ae",
    "%e2%80%a4",
    "%ef%bc%8e",
    "\\",
    ";",
    "%20",
    "C:",
    "a",
    "jazz",
    "media",
    "outside",
    "media-evil",
    "secret.mp3",
    "x.mp3",
    "out_file",
    "out_abs",
    "out_dir",
    "evil",
    "evil_file",
    "up",
    "loop",
    "inner",
    "inner_dir",
    "dangling_out",
]


class _TreeTestCase(unittest.SynchronousTestCase):
    """
    Base for tests that need a media root beside an outside directory and a
    C{media-evil} sibling, with symlinks leading in and out.
    """

    def setUp(self) -> None:
        """
        Lay out::

            base/media/jazz/So What.mp3
            base/media/{out_file,out_abs,out_dir,evil,evil_file,up,dangling_out} -> outside
            base/media/{inner,inner_dir,dangling_in,here} -> inside
            base/media/loop -> loop
            base/outside/secret.mp3
            base/media-evil/x.mp3
        """
        base = Path(os.path.realpath(self.mktemp()))
        self.base = base
        self.root = base / "media"
        self.outside = base / "outside"
        (self.root / "jazz").mkdir(parents=True)
        (self.root / "jazz" / "So What.mp3").write_bytes(b"ID3")
        self.outside.mkdir()
        (self.outside / "secret.mp3").write_bytes(b"secret")
        (base / "media-evil").mkdir()
        (base / "media-evil" / "x.mp3").write_bytes(b"evil")
        links = {
            "out_file": "../outside/secret.mp3",
            "out_abs": os.fspath(self.outside / "secret.mp3"),
            "out_dir": "../outside",
            "evil": "../media-evil",
            "evil_file": "../media-evil/x.mp3",
            "up": "..",
            "dangling_out": "../outside/missing.mp3",
            "inner": "jazz/So What.mp3",
            "inner_dir": "jazz",
            "dangling_in": "jazz/missing.mp3",
            "here": ".",
            "loop": "loop",
        }
        for name, target in links.items():
            os.symlink(target, self.root / name)


def _inside(root: Path, path: Path) -> bool:
    """
    Whether C{path}, resolved again from scratch, is C{root} or below it.
    """
    resolved = os.path.realpath(path)
    return os.path.commonpath([os.fspath(root), resolved]) == os.fspath(root)


class DecodeRequestPathTests(unittest.SynchronousTestCase):
    """
    Tests for L{decode_request_path}.
    """

    def test_percent_decoded(self) -> None:
        """
        Percent escapes, upper or lower case, become the UTF-8 text they
        encode.
        """
        self.assertEqual(
            decode_request_path(b"jazz/Miles%20Davis/So%20What.mp3"), "jazz/Miles Davis/So What.mp3"
        )
        self.assertEqual(decode_request_path(b"%C3%A9t%c3%a9.mp3"), "\u00e9t\u00e9.mp3")

    def test_raw_utf8(self) -> None:
        """
        UTF-8 bytes sent unescaped are decoded too.
        """
        self.assertEqual(decode_request_path("\u00e9t\u00e9.mp3".encode()), "\u00e9t\u00e9.mp3")

    def test_once(self) -> None:
        """
        The path is decoded exactly once: C{%252e} is the text C{%2e}.
        """
        self.assertEqual(decode_request_path(b"%252e%252e%252f"), "%2e%2e%2f")

    def test_plus_is_plus(self) -> None:
        """
        C{+} is not a space in a path.
        """
        self.assertEqual(decode_request_path(b"a+b%2Bc"), "a+b+c")

    def test_malformed_escape(self) -> None:
        """
        A malformed escape stays as it is.
        """
        self.assertEqual(decode_request_path(b"%zz%4"), "%zz%4")

    def test_nfc(self) -> None:
        """
        Decomposed text is composed (NFC), so both spellings name one track.
        """
        self.assertEqual(decode_request_path(b"e%CC%81"), "\u00e9")
        self.assertEqual(decode_request_path(b"%C3%A9"), "\u00e9")

    def test_nfc_not_nfkc(self) -> None:
        """
        Compatibility characters are not folded: NFC keeps the one-dot
        leader and the fullwidth full stop that NFKC would turn into C{..}.
        """
        for lookalike in ["\u2024\u2024", "\uff0e\uff0e"]:
            self.assertEqual(unicodedata.normalize("NFKC", lookalike), "..")
            self.assertEqual(decode_request_path(quote(lookalike).encode("ascii")), lookalike)

    def test_invalid_utf8(self) -> None:
        """
        Bytes that are not strict UTF-8 (overlong forms, surrogates, stray
        continuation bytes) are refused.
        """
        for raw in [b"%c0%ae", b"%ed%a0%80", b"%80", b"%ff", b"\xff", b"%e2%82"]:
            with self.assertRaises(PathRefused) as caught:
                decode_request_path(raw)
            self.assertEqual(caught.exception.reason, "invalid UTF-8")


class NormaliseRelativePathTests(unittest.SynchronousTestCase):
    """
    Tests for L{normalise_relative_path}.
    """

    def _reason(self, path: str) -> str:
        """
        The reason C{path} is refused for.
        """
        with self.assertRaises(PathRefused) as caught:
            normalise_relative_path(path)
        return caught.exception.reason

    def test_segments(self) -> None:
        """
        A path is split on C{/}; empty and C{.} segments are dropped.
        """
        self.assertEqual(normalise_relative_path("jazz/So What.mp3"), ("jazz", "So What.mp3"))
        self.assertEqual(normalise_relative_path("./jazz//./So What.mp3/"), ("jazz", "So What.mp3"))

    def test_dot_dot(self) -> None:
        """
        Any C{..} segment is refused, even one that would stay inside.
        """
        self.assertEqual(self._reason("jazz/../jazz/x.mp3"), "dot-dot segment")
        self.assertEqual(self._reason(".."), "dot-dot segment")

    def test_absolute(self) -> None:
        """
        A leading C{/} is an absolute path.
        """
        self.assertEqual(self._reason("/etc/passwd"), "absolute path")

    def test_backslash(self) -> None:
        """
        A backslash anywhere is refused.
        """
        self.assertEqual(self._reason("jazz\\x.mp3"), "backslash")

    def test_control_characters(self) -> None:
        """
        Every C0 control, DEL and every C1 control is refused.
        """
        for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
            self.assertEqual(self._reason(f"a{chr(code)}b"), "control character", hex(code))

    def test_lone_surrogate(self) -> None:
        """
        A lone surrogate (which no UTF-8 decoding yields) is refused.
        """
        self.assertEqual(self._reason("a\udc80b"), "surrogate")

    def test_bidi_controls(self) -> None:
        """
        Bidirectional embeddings, overrides and isolates are refused; the
        marks that real right-to-left names use are not.
        """
        for character in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
            self.assertEqual(self._reason(f"a{character}b"), "bidi control character")
        self.assertEqual(normalise_relative_path("\u05d0\u200f.mp3"), ("\u05d0\u200f.mp3",))

    def test_drive_letter(self) -> None:
        """
        A segment starting with a drive letter is refused.
        """
        self.assertEqual(self._reason("C:"), "drive letter")
        self.assertEqual(self._reason("jazz/c:x"), "drive letter")
        self.assertEqual(normalise_relative_path("jazz/Side A: Intro.mp3"), ("jazz", "Side A: Intro.mp3"))

    def test_empty(self) -> None:
        """
        A path with no segment left is refused.
        """
        for path in ["", ".", "./", "./."]:
            self.assertEqual(self._reason(path), "empty path")

    def test_segment_length(self) -> None:
        """
        A segment may be 255 UTF-8 bytes, not 256; multibyte characters count
        as their bytes.
        """
        self.assertEqual(normalise_relative_path("a" * 255), ("a" * 255,))
        self.assertEqual(self._reason("a" * 256), "segment too long")
        self.assertEqual(normalise_relative_path("\u20ac" * 85), ("\u20ac" * 85,))
        self.assertEqual(self._reason("\u20ac" * 86), "segment too long")

    def test_path_length(self) -> None:
        """
        A path may be 4096 UTF-8 bytes, not more.
        """
        path = "/".join(["a" * 254] * 16) + "/" + "b" * (MAX_PATH_BYTES - 16 * 255)
        self.assertEqual(len(path), MAX_PATH_BYTES)
        self.assertEqual(len(normalise_relative_path(path)), 17)
        self.assertEqual(self._reason(path + "b"), "path too long")

    @given(st.text())
    def test_arbitrary_text(self, path: str) -> None:
        """
        Arbitrary text is either refused or split into plain names: none
        empty, C{.} or C{..}, none with a slash, backslash or control
        character.
        """
        try:
            segments = normalise_relative_path(path)
        except PathRefused as e:
            self.assertTrue(e.reason)
            return
        self.assertTrue(segments)
        for segment in segments:
            self.assertNotIn(segment, ("", ".", ".."))
            self.assertNotIn("/", segment)
            self.assertNotIn("\\", segment)
            self.assertFalse(any(unicodedata.category(c) == "Cc" for c in segment))


class ResolveInsideTests(_TreeTestCase):
    """
    Tests for L{resolve_inside} against a real tree with symlinks.
    """

    def test_plain_file(self) -> None:
        """
        A plain path resolves below the root.
        """
        self.assertEqual(
            resolve_inside(self.root, ("jazz", "So What.mp3")), self.root / "jazz" / "So What.mp3"
        )

    def test_missing_file(self) -> None:
        """
        A missing file is not refused: it is the caller's 404.
        """
        self.assertEqual(
            resolve_inside(self.root, ("jazz", "missing.mp3")), self.root / "jazz" / "missing.mp3"
        )

    def test_root_itself(self) -> None:
        """
        No segments at all is the root itself.
        """
        self.assertEqual(resolve_inside(self.root, ()), self.root)

    def test_symlink_inside(self) -> None:
        """
        A symlink to a file or directory inside the root is followed.
        """
        target = self.root / "jazz" / "So What.mp3"
        self.assertEqual(resolve_inside(self.root, ("inner",)), target)
        self.assertEqual(resolve_inside(self.root, ("inner_dir", "So What.mp3")), target)
        self.assertEqual(resolve_inside(self.root, ("here", "here", "jazz", "So What.mp3")), target)
        self.assertEqual(resolve_inside(self.root, ("dangling_in",)), self.root / "jazz" / "missing.mp3")

    def test_up_and_back_in(self) -> None:
        """
        A symlink to the root's parent is fine as long as the final result
        comes back inside.
        """
        self.assertEqual(
            resolve_inside(self.root, ("up", "media", "jazz", "So What.mp3")),
            self.root / "jazz" / "So What.mp3",
        )

    def test_symlink_outside(self) -> None:
        """
        Symlinks whose target is outside the root, relative or absolute, to a
        file or a directory, existing or not, are refused.
        """
        for segments in [
            ("out_file",),
            ("out_abs",),
            ("out_dir", "secret.mp3"),
            ("out_dir",),
            ("up",),
            ("up", "outside", "secret.mp3"),
            ("dangling_out",),
            ("inner_dir", "..", "out_file"),
        ]:
            with self.assertRaises(PathRefused, msg=repr(segments)):
                resolve_inside(self.root, segments)

    def test_prefix_trap(self) -> None:
        """
        C{media-evil} starts with the string C{media} but is not inside it:
        the comparison is by path components.
        """
        target = os.path.realpath(self.root / "evil" / "x.mp3")
        self.assertTrue(target.startswith(os.fspath(self.root)))
        for segments in [("evil", "x.mp3"), ("evil_file",), ("up", "media-evil", "x.mp3")]:
            with self.assertRaises(PathRefused) as caught:
                resolve_inside(self.root, segments)
            self.assertEqual(caught.exception.reason, "outside root via symlink")

    def test_symlink_loop(self) -> None:
        """
        A symlink loop does not raise; whatever it resolves to is inside the
        root, and opening it will fail with the caller's 404.
        """
        self.assertTrue(_inside(self.root, resolve_inside(self.root, ("loop",))))
        self.assertTrue(_inside(self.root, resolve_inside(self.root, ("loop", "x.mp3"))))

    def test_symlinked_root(self) -> None:
        """
        A root reached through a symlink works once resolved, as the caller
        does at start-up.
        """
        link = self.base / "media-link"
        os.symlink("media", link)
        root = Path(os.path.realpath(link))
        self.assertEqual(resolve_inside(root, ("inner",)), self.root / "jazz" / "So What.mp3")
        self.assertRaises(PathRefused, resolve_inside, root, ("out_file",))

    def test_invalid_segments(self) -> None:
        """
        Segments that are not plain names are refused even though
        L{normalise_relative_path} never produces them.
        """
        for segments in [("..",), ("a", "."), ("",), ("a/b",), ("/etc",), ("a\x00",), ("\ud800",)]:
            with self.assertRaises(PathRefused) as caught:
                resolve_inside(self.root, segments)
            self.assertEqual(caught.exception.reason, "invalid segment")

    def test_relative_root(self) -> None:
        """
        A relative root is a bug in the caller.
        """
        self.assertRaises(ValueError, resolve_inside, Path("media"), ("x",))

    @given(st.lists(st.sampled_from([*_PIECES[18:], "..", "x"]), max_size=8))
    def test_fuzzed_segments(self, segments: list[str]) -> None:
        """
        Any sequence of names, through any of the tree's symlinks, is either
        refused or resolves inside the root.
        """
        try:
            resolved = resolve_inside(self.root, segments)
        except PathRefused:
            return
        self.assertTrue(_inside(self.root, resolved))

    @given(st.lists(st.text(), max_size=6))
    def test_arbitrary_segments(self, segments: list[str]) -> None:
        """
        Arbitrary text segments are refused or resolve inside the root; no
        other exception escapes.
        """
        try:
            resolved = resolve_inside(self.root, segments)
        except PathRefused:
            return
        self.assertTrue(_inside(self.root, resolved))


class SafeMediaPathTests(_TreeTestCase):
    """
    Tests for L{safe_media_path}: decode, normalise and resolve together.
    """

    def test_track(self) -> None:
        """
        A percent-encoded track path gives its track name and file.
        """
        self.assertEqual(
            safe_media_path(self.root, b"jazz/So%20What.mp3"),
            ("jazz/So What.mp3", self.root / "jazz" / "So What.mp3"),
        )

    def test_hostile_battery_size(self) -> None:
        """
        The battery holds at least 40 hostile raw paths.
        """
        self.assertGreaterEqual(len(REFUSED) + len(HARMLESS), 40)
        self.assertGreaterEqual(len(REFUSED), 40)

    def test_hostile_refused(self) -> None:
        """
        Every hostile raw path in the battery is refused, for the expected
        reason.
        """
        for raw, reason in REFUSED:
            with self.assertRaises(PathRefused, msg=repr(raw)) as caught:
                safe_media_path(self.root, raw)
            self.assertEqual(caught.exception.reason, reason, repr(raw))

    def test_harmless_inside(self) -> None:
        """
        Paths that only look hostile (double encoding, dot lookalikes, extra
        dots) are harmless names: they normalise to the expected segments and
        resolve inside the root, to exactly that name.
        """
        for raw, segments in HARMLESS:
            track, path = safe_media_path(self.root, raw)
            self.assertEqual(track, "/".join(segments), repr(raw))
            self.assertEqual(path, self.root.joinpath(*segments), repr(raw))
            self.assertTrue(_inside(self.root, path), repr(raw))

    def test_double_encoded_traversal(self) -> None:
        """
        C{%252e%252e%252f} decodes once to the literal name C{%2e%2e%2f}, a
        nonexistent file inside the root, not a parent directory.
        """
        track, path = safe_media_path(self.root, b"%252e%252e%252f")
        self.assertEqual(track, "%2e%2e%2f")
        self.assertEqual(path.parent, self.root)
        self.assertFalse(path.exists())

    def test_symlinks(self) -> None:
        """
        Symlinks are followed inside the root and refused out of it, when
        named through percent escapes too.
        """
        self.assertEqual(safe_media_path(self.root, b"inner")[1], self.root / "jazz" / "So What.mp3")
        self.assertEqual(safe_media_path(self.root, b"inner%5fdir/So%20What.mp3")[0], "inner_dir/So What.mp3")
        for raw in [
            b"out_file",
            b"out%5ffile",
            b"out_dir/secret.mp3",
            b"evil/x.mp3",
            b"up/outside/secret.mp3",
        ]:
            with self.assertRaises(PathRefused) as caught:
                safe_media_path(self.root, raw)
            self.assertEqual(caught.exception.reason, "outside root via symlink")

    def test_reason_is_not_the_path(self) -> None:
        """
        The reason is a fixed phrase; the hostile path never gets into it.
        """
        with self.assertRaises(PathRefused) as caught:
            safe_media_path(self.root, b"%0d%0aFAKE LOG LINE")
        self.assertNotIn("FAKE", caught.exception.reason)
        self.assertNotIn("FAKE", str(caught.exception))

    @given(st.lists(st.sampled_from(_PIECES), max_size=12))
    def test_fuzzed_traversal(self, pieces: list[str]) -> None:
        """
        Any concatenation of traversal spellings and symlink names is refused
        or stays inside the root; a decoded C{..} segment is always refused.
        """
        raw = "".join(pieces).encode("utf-8")
        self._check(raw)
        try:
            decoded = decode_request_path(raw)
        except PathRefused:
            return
        if ".." in decoded.split("/"):
            self.assertRaises(PathRefused, safe_media_path, self.root, raw)

    @given(st.binary(max_size=64))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        """
        Arbitrary bytes are refused or resolve inside the root.
        """
        self._check(raw)

    @given(st.text(max_size=64))
    def test_arbitrary_text(self, text: str) -> None:
        """
        Arbitrary text, raw or percent-encoded, is refused or resolves inside
        the root.
        """
        encoded = text.encode("utf-8", errors="surrogatepass")
        self._check(encoded)
        self._check(quote(encoded, safe="").encode("ascii"))

    def _check(self, raw: bytes) -> None:
        """
        Assert C{raw} is refused, or gives a plain track name and a path
        inside the root.
        """
        try:
            track, path = safe_media_path(self.root, raw)
        except PathRefused as e:
            self.assertTrue(e.reason)
            return
        self.assertTrue(_inside(self.root, path), (raw, path))
        self.assertFalse(track.startswith("/"))
        self.assertNotIn("..", track.split("/"))
        self.assertNotIn("\\", track)


class ResolvedPathCacheTests(unittest.TestCase):
    """
    Tests for L{ResolvedPathCache}: an entry is used only while the same file
    is still where it was resolved, and only for a short time.
    """

    def setUp(self) -> None:
        self.root = Path(os.path.realpath(self.mktemp()))
        (self.root / "jazz").mkdir(parents=True)
        self.track = self.root / "jazz" / "a.mp3"
        self.track.write_bytes(b"a")
        self.now = 1000.0
        self.cache: ResolvedPathCache[str] = ResolvedPathCache(lambda: self.now, ttl_s=2.0, max_entries=8)

    def test_hit(self) -> None:
        """
        A remembered resolution comes back while the file is unchanged.
        """
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        self.assertEqual(self.cache.get(b"jazz/a.mp3"), ("jazz/a.mp3", self.track, "mp3"))
        self.assertIsNone(self.cache.get(b"jazz/b.mp3"))

    def test_expires(self) -> None:
        """
        An entry older than the TTL is dropped.
        """
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        self.now += 2.0
        self.assertIsNone(self.cache.get(b"jazz/a.mp3"))
        self.assertEqual(len(self.cache), 0)

    def test_replaced_file(self) -> None:
        """
        A file replaced by another (another inode) invalidates the entry.
        """
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        replacement = self.root / "jazz" / "new.mp3"
        replacement.write_bytes(b"b")
        os.replace(replacement, self.track)
        self.assertIsNone(self.cache.get(b"jazz/a.mp3"))

    def test_removed_file(self) -> None:
        """
        A removed file invalidates the entry; a missing file is never remembered.
        """
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        self.track.unlink()
        self.assertIsNone(self.cache.get(b"jazz/a.mp3"))
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        self.assertEqual(len(self.cache), 0)

    def test_directory_swapped_for_symlink(self) -> None:
        """
        A directory on the path swapped for a symlink leading outside the root
        invalidates the entry, even when the file outside has the same name.
        """
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        outside = Path(os.path.realpath(self.mktemp()))
        outside.mkdir()
        (outside / "a.mp3").write_bytes(b"secret")
        os.rename(self.root / "jazz", self.root / "old-jazz")
        os.symlink(outside, self.root / "jazz")
        self.assertIsNone(self.cache.get(b"jazz/a.mp3"))
        with self.assertRaises(PathRefused):
            safe_media_path(self.root, b"jazz/a.mp3")

    def test_file_swapped_for_symlink(self) -> None:
        """
        The file swapped for a symlink to another file invalidates the entry.
        """
        self.cache.put(b"jazz/a.mp3", "jazz/a.mp3", self.track, "mp3")
        outside = Path(os.path.realpath(self.mktemp()))
        outside.mkdir()
        (outside / "secret.mp3").write_bytes(b"secret")
        self.track.unlink()
        os.symlink(outside / "secret.mp3", self.track)
        self.assertIsNone(self.cache.get(b"jazz/a.mp3"))

    def test_bounded(self) -> None:
        """
        The cache never holds more than its maximum, whatever clients ask.
        """
        for i in range(50):
            self.cache.put(b"jazz/a.mp3?%d" % i, "jazz/a.mp3", self.track, "mp3")
        self.assertLessEqual(len(self.cache), 8)
        self.assertIsNotNone(self.cache.get(b"jazz/a.mp3?49"))
        self.cache.clear()
        self.assertEqual(len(self.cache), 0)
