# -*- test-case-name: tests.test_signing -*-
"""Tests for :mod:`streamsrv.auth.signing`.

The test vectors are read from the JSON block of ``docs/api/authentication.md``,
so the documentation and the implementation cannot drift apart.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.auth.signing import (
    RESERVED_PARAMETERS,
    SIGNATURE_INVALID,
    URL_EXPIRED,
    SignedUrlError,
    SigningKey,
    decode_signed_path,
    max_age_for,
    parse_query_pairs,
    sign,
    sign_cli,
    sign_url,
    signature_message,
    signed_query,
    signing_keys,
    verify,
)

#: The page that carries the test vectors.
AUTH_DOC = Path(__file__).resolve().parent.parent / "docs" / "api" / "authentication.md"

#: The comment that precedes the vectors' JSON block in :data:`AUTH_DOC`.
VECTORS_MARKER = "<!-- signed-url-test-vectors"

#: ``STREAMSRV_URL_MAX_TTL_S``'s default.
WEEK = 7 * 24 * 3600


def load_vector_document() -> dict[str, Any]:
    """
    The JSON block that follows :data:`VECTORS_MARKER` in :data:`AUTH_DOC`.

    :return: ``{"base_url": …, "vectors": [...]}``.
    """
    text = AUTH_DOC.read_text(encoding="utf-8")
    start = text.index(VECTORS_MARKER)
    match = re.compile(r"```json\n(.*?)\n```", re.DOTALL).search(text, start)
    assert match is not None, "no json block after the test-vector marker"
    document: dict[str, Any] = json.loads(match.group(1))
    return document


def secret_bytes(secret: str) -> bytes:
    """
    A secret written as in ``STREAMSRV_URL_SIGNING_KEYS``: text, or ``base64:`` (either alphabet).

    :param secret: The written secret.
    :return: The key bytes.
    """
    if secret.startswith("base64:"):
        data = secret[len("base64:") :].replace("-", "+").replace("_", "/")
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    return secret.encode("utf-8")


DOCUMENT = load_vector_document()
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
BASE_URL: str = DOCUMENT["base_url"]


def vector_key(vector: dict[str, Any]) -> SigningKey:
    """The key of a vector."""
    return SigningKey(vector["kid"], secret_bytes(vector["secret"]))


def all_vector_keys() -> list[SigningKey]:
    """Every distinct key of the vectors, the first vector's (the current key) first."""
    keys: dict[str, SigningKey] = {}
    for vector in VECTORS:
        keys.setdefault(vector["kid"], vector_key(vector))
    return list(keys.values())


#: Keys for the tests that do not use the vectors: current first, then the previous one.
CURRENT = SigningKey("k2", b"current-secret-0123456789abcdef-0123456789")
PREVIOUS = SigningKey("k1", b"previous-secret-0123456789abcdef-012345678")
KEYS = [CURRENT, PREVIOUS]

PATH = "/stream/jazz/So What.mp3"
EXPIRES = 2_000_000_000
NOW = EXPIRES - 600.0


def query_of(
    path: str = PATH,
    expires: int = EXPIRES,
    key: SigningKey = CURRENT,
    bound: dict[str, str] | None = None,
    include_kid: bool = True,
) -> list[tuple[str, str]]:
    """The decoded query pairs of a genuine signed URL."""
    return parse_query_pairs(signed_query(path, expires, key, bound, include_kid).encode("ascii"))


def replace(pairs: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    """``pairs`` with the value of ``name`` replaced."""
    return [(n, value if n == name else v) for n, v in pairs]


def check(pairs: list[tuple[str, str]], path: str = PATH, **kwargs: Any) -> dict[str, str]:
    """:func:`verify` with the defaults of these tests."""
    options: dict[str, Any] = {"keys": KEYS, "now": NOW, "max_ttl_s": WEEK}
    options.update(kwargs)
    return verify(path, pairs, **options)


class VectorTests(unittest.TestCase):
    """
    The test vectors of ``docs/api/authentication.md``.
    """

    def test_coverage(self) -> None:
        """
        The page carries at least the vectors the contract asks for: a plain path,
        a path with spaces and an é, bound format and bitrate, bound uid and ip, a
        ``base64:`` key, a second kid, and a URL without kid.
        """
        self.assertGreaterEqual(len(VECTORS), 4)
        self.assertTrue(any(not v["bound"] and " " not in v["path"] and v["path"].isascii() for v in VECTORS))
        self.assertTrue(any(" " in v["path"] and "é" in v["path"] for v in VECTORS))
        self.assertTrue(any({"format", "bitrate"} <= set(v["bound"]) for v in VECTORS))
        self.assertTrue(any({"uid", "ip"} <= set(v["bound"]) for v in VECTORS))
        self.assertTrue(any(v["secret"].startswith("base64:") for v in VECTORS))
        self.assertGreaterEqual(len({v["kid"] for v in VECTORS}), 3)
        self.assertTrue(any(not v["include_kid"] for v in VECTORS))

    def test_message(self) -> None:
        """
        :func:`signature_message` gives each vector's message, byte for byte.
        """
        for vector in VECTORS:
            message = signature_message(vector["path"], vector["expires"], vector["bound"])
            self.assertEqual(message, vector["message"].encode("utf-8"), vector["name"])

    def test_sig(self) -> None:
        """
        :func:`sign` gives each vector's ``sig``.
        """
        for vector in VECTORS:
            sig = sign(vector["path"], vector["expires"], vector_key(vector), vector["bound"])
            self.assertEqual(sig, vector["sig"], vector["name"])

    def test_query(self) -> None:
        """
        :func:`signed_query` gives each vector's query string.
        """
        for vector in VECTORS:
            query = signed_query(
                vector["path"], vector["expires"], vector_key(vector), vector["bound"], vector["include_kid"]
            )
            self.assertEqual(query, vector["query"], vector["name"])

    def test_url(self) -> None:
        """
        :func:`sign_url` gives each vector's URL (those that send ``kid``; it always does).
        """
        for vector in VECTORS:
            if not vector["include_kid"]:
                continue
            url = sign_url(
                BASE_URL,
                vector["path"],
                keys=[vector_key(vector)],
                expires=vector["expires"],
                bound=vector["bound"],
            )
            self.assertEqual(url, vector["url"], vector["name"])

    def test_url_is_path_and_query(self) -> None:
        """
        Each vector's URL is the base URL, the encoded path, ``?`` and the query.
        """
        for vector in VECTORS:
            self.assertTrue(vector["url"].startswith(BASE_URL), vector["name"])
            self.assertTrue(vector["url"].endswith("?" + vector["query"]), vector["name"])
            self.assertTrue(vector["url"].isascii(), vector["name"])

    def test_verify(self) -> None:
        """
        Each vector's URL, taken apart as a server does, verifies with every vector
        key configured (current first) before its ``expires``, and gives back its
        bound parameters.
        """
        keys = all_vector_keys()
        for vector in VECTORS:
            parts = urlsplit(vector["url"])
            bound = verify(
                decode_signed_path(parts.path.encode("ascii")),
                parse_query_pairs(parts.query.encode("ascii")),
                keys=keys,
                now=vector["expires"] - 60,
                max_ttl_s=WEEK,
                client_ip="203.0.113.7",
            )
            self.assertEqual(bound, vector["bound"], vector["name"])

    def test_expired_after(self) -> None:
        """
        Each vector's URL is ``URL_EXPIRED`` at its ``expires``.
        """
        keys = all_vector_keys()
        for vector in VECTORS:
            e = self.assertRaises(
                SignedUrlError,
                verify,
                vector["path"],
                parse_query_pairs(vector["query"].encode("ascii")),
                keys=keys,
                now=vector["expires"],
                max_ttl_s=WEEK,
                client_ip="203.0.113.7",
            )
            self.assertEqual(e.code, URL_EXPIRED, vector["name"])

    def test_table_agrees(self) -> None:
        """
        The Markdown table above the JSON block shows each vector's sig and query.
        """
        text = AUTH_DOC.read_text(encoding="utf-8")
        table = text[text.index("### Test vectors") : text.index(VECTORS_MARKER)]
        for vector in VECTORS:
            self.assertIn(f"`{vector['sig']}`", table, vector["name"])
            self.assertIn(f"`{vector['query']}`", table, vector["name"])
            self.assertIn(f"`{vector['message']}`".replace("\n", "\\n"), table, vector["name"])

    def test_configuration_syntax(self) -> None:
        """
        The vectors' secrets, written in ``STREAMSRV_URL_SIGNING_KEYS`` (``base64:``
        in the URL-safe unpadded spelling too), load through
        :mod:`streamsrv.config` into the same keys.
        """
        from streamsrv.config import load_settings

        expected = all_vector_keys()
        written = {v["kid"]: v["secret"] for v in VECTORS}
        for transform in (lambda s: s, lambda s: s.replace("+", "-").replace("/", "_").rstrip("=")):
            value = ",".join(f"{kid}:{transform(secret)}" for kid, secret in written.items())
            settings = load_settings(environ={"STREAMSRV_URL_SIGNING_KEYS": value})
            self.assertEqual(list(signing_keys(settings.url_signing_keys)), expected)


class SigningKeyTests(unittest.TestCase):
    """
    :class:`SigningKey`.
    """

    def test_repr_hides_secret(self) -> None:
        """
        A key's ``repr`` and ``str`` show its kid but never its secret.
        """
        key = SigningKey("k1", b"very-secret-value")
        for text in (repr(key), str(key)):
            self.assertIn("k1", text)
            self.assertNotIn("very-secret-value", text)

    def test_refuses_bad_kid(self) -> None:
        """
        A kid must be non-empty ``[A-Za-z0-9._-]``.
        """
        for kid in ("", "a b", "k:1", "é", "a,b"):
            self.assertRaises(ValueError, SigningKey, kid, b"secret")

    def test_refuses_empty_secret(self) -> None:
        """
        A key needs a non-empty bytes secret.
        """
        self.assertRaises(ValueError, SigningKey, "k1", b"")

    def test_signing_keys(self) -> None:
        """
        :func:`signing_keys` keeps the configured order.
        """
        keys = signing_keys([("a", b"1"), ("b", b"2")])
        self.assertEqual([k.kid for k in keys], ["a", "b"])
        self.assertEqual(keys[1].secret, b"2")


class SignTests(unittest.TestCase):
    """
    :func:`signature_message`, :func:`sign`, :func:`signed_query` and :func:`sign_url`.
    """

    def test_message_layout(self) -> None:
        """
        The message is expires, the path and ``name=value`` lines sorted by name,
        joined by line feeds, with no line feed at the end.
        """
        self.assertEqual(
            signature_message("/stream/a b.mp3", 12, {"uid": "42", "format": "mp3"}),
            b"12\n/stream/a b.mp3\nformat=mp3\nuid=42",
        )
        self.assertEqual(signature_message("/x", 0, {}), b"0\n/x")

    def test_sorted_by_name_bytes(self) -> None:
        """
        Names sort by their UTF-8 bytes alone: ``t`` before ``t-end`` (a whole-line
        sort would put ``t-end=…`` first), upper case before lower case, U+FB01
        before U+1F600 (UTF-16 order would swap them).
        """
        message = signature_message(
            "/x", 1, {"t-end": "2", "t": "1", "\U0001f600": "", "\ufb01": "", "Z": ""}
        )
        self.assertEqual(
            message.decode("utf-8").split("\n")[2:], ["Z=", "t=1", "t-end=2", "\ufb01=", "\U0001f600="]
        )

    def test_sig_shape(self) -> None:
        """
        A signature is 43 characters of the base64url alphabet, unpadded, and
        decodes to the 32 bytes of HMAC-SHA256.
        """
        sig = sign(PATH, EXPIRES, CURRENT)
        self.assertRegex(sig, r"\A[A-Za-z0-9_-]{43}\Z")
        self.assertEqual(len(base64.urlsafe_b64decode(sig + "=")), 32)

    def test_refuses_ambiguous_parts(self) -> None:
        """
        A line feed in the path, a name or a value, an ``=`` in a name, a reserved
        name, a path without a leading ``/``, a lone surrogate, or an ``expires``
        that is not a non-negative int cannot be signed.
        """
        bad: list[tuple[str, int, dict[str, str]]] = [
            ("/a\nb", 1, {}),
            ("/a", 1, {"x\ny": "1"}),
            ("/a", 1, {"x": "1\nip=1.2.3.4"}),
            ("/a", 1, {"x=y": "1"}),
            ("a", 1, {}),
            ("/a\ud800", 1, {}),
            ("/a", -1, {}),
        ]
        bad.extend(("/a", 1, {name: "1"}) for name in RESERVED_PARAMETERS)
        for path, expires, bound in bad:
            self.assertRaises(ValueError, sign, path, expires, CURRENT, bound)
        self.assertRaises(ValueError, sign, "/a", True, CURRENT)
        self.assertRaises(ValueError, sign, "/a", 1.5, CURRENT)

    def test_query_order_and_kid(self) -> None:
        """
        The query lists bound parameters in message order, then ``expires``,
        ``kid`` (unless left out) and ``sig``.
        """
        sig = sign(PATH, EXPIRES, CURRENT, {"uid": "7", "format": "mp3"})
        self.assertEqual(
            signed_query(PATH, EXPIRES, CURRENT, {"uid": "7", "format": "mp3"}),
            f"format=mp3&uid=7&expires={EXPIRES}&kid=k2&sig={sig}",
        )
        self.assertEqual(
            signed_query(PATH, EXPIRES, CURRENT, include_kid=False),
            f"expires={EXPIRES}&sig={sign(PATH, EXPIRES, CURRENT)}",
        )

    def test_query_encoding(self) -> None:
        """
        Names and values are percent-encoded except ``A-Za-z0-9-._~``: space as
        ``%20``, ``+`` as ``%2B``, upper-case hex.
        """
        query = signed_query("/a", 1, CURRENT, {"n m": "a+b c&d=é~"})
        self.assertTrue(query.startswith("n%20m=a%2Bb%20c%26d%3D%C3%A9~&expires=1&"), query)

    def test_sign_url(self) -> None:
        """
        :func:`sign_url` signs with the first key, sends its kid, encodes the path
        keeping ``/``, and drops a trailing ``/`` of the base URL.
        """
        url = sign_url("https://h.example/", "/stream/a b/é?.mp3", keys=KEYS, expires=5, bound={"uid": "1"})
        self.assertEqual(
            url,
            "https://h.example/stream/a%20b/%C3%A9%3F.mp3?"
            + signed_query("/stream/a b/é?.mp3", 5, CURRENT, {"uid": "1"}),
        )
        self.assertIn("&kid=k2&", url)

    def test_sign_url_needs_key(self) -> None:
        """
        :func:`sign_url` with no key raises ``ValueError``.
        """
        self.assertRaises(ValueError, sign_url, "https://h.example", PATH, keys=[], expires=5)


class VerifyTests(unittest.TestCase):
    """
    :func:`verify`.
    """

    def assertRefused(
        self,
        reason: str,
        pairs: list[tuple[str, str]],
        path: str = PATH,
        code: str = SIGNATURE_INVALID,
        **kw: Any,
    ) -> SignedUrlError:
        """Assert that :func:`check` raises with ``code`` and ``reason``."""
        e = self.assertRaises(SignedUrlError, check, pairs, path, **kw)
        self.assertEqual((e.code, e.reason), (code, reason))
        return e

    def test_genuine(self) -> None:
        """
        A genuine URL verifies and gives back its bound parameters, without
        ``expires``, ``kid`` or ``sig``.
        """
        self.assertEqual(
            check(query_of(bound={"format": "mp3", "bitrate": "320"})), {"format": "mp3", "bitrate": "320"}
        )
        self.assertEqual(check(query_of()), {})

    def test_order_of_pairs_irrelevant(self) -> None:
        """
        The parameters may come in any order.
        """
        self.assertEqual(check(list(reversed(query_of(bound={"a": "1", "b": "2"})))), {"a": "1", "b": "2"})

    def test_tampered_path(self) -> None:
        """
        The same query on another path (even one that names the same file after
        normalisation) is refused.
        """
        for path in (
            "/stream/jazz/So What.flac",
            "/stream/jazz/./So What.mp3",
            "/stream/jazz//So What.mp3",
            "/hls/jazz/So What.mp3",
        ):
            self.assertRefused("bad_signature", query_of(), path)

    def test_tampered_expires(self) -> None:
        """
        A changed ``expires`` (later or earlier) is refused.
        """
        for expires in (EXPIRES + 1, EXPIRES - 1):
            self.assertRefused("bad_signature", replace(query_of(), "expires", str(expires)))

    def test_tampered_sig(self) -> None:
        """
        A signature with one character changed, truncated, padded, or of another
        key is refused.
        """
        pairs = query_of()
        sig = dict(pairs)["sig"]
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        for forged in (
            flipped,
            sig[:-1],
            sig + "=",
            sig.upper(),
            sign(PATH, EXPIRES, PREVIOUS),
            "",
            "é" * 43,
        ):
            self.assertRefused("bad_signature", replace(pairs, "sig", forged))

    def test_tampered_kid(self) -> None:
        """
        Naming another configured kid than the one that signed is refused.
        """
        self.assertRefused("bad_signature", replace(query_of(), "kid", "k1"))

    def test_added_param(self) -> None:
        """
        A parameter added after signing is bound, so it invalidates the URL.
        """
        self.assertRefused("bad_signature", [*query_of(), ("download", "1")])
        self.assertRefused("bad_signature", [*query_of(bound={"format": "mp3"}), ("bitrate", "320")])

    def test_removed_param(self) -> None:
        """
        Removing a bound parameter invalidates the URL.
        """
        pairs = query_of(bound={"ip": "203.0.113.7", "uid": "42"})
        for name in ("ip", "uid"):
            self.assertRefused("bad_signature", [p for p in pairs if p[0] != name], client_ip="203.0.113.7")

    def test_changed_param(self) -> None:
        """
        Changing a bound value (a higher bitrate, a lossless format) invalidates the URL.
        """
        pairs = query_of(bound={"format": "mp3", "bitrate": "128"})
        self.assertRefused("bad_signature", replace(pairs, "bitrate", "320"))
        self.assertRefused("bad_signature", replace(pairs, "format", "flac"))

    def test_repeated_param(self) -> None:
        """
        Any parameter given twice is refused, even with the same value, even
        ``sig``, ``kid`` or ``expires``.
        """
        pairs = query_of(bound={"format": "mp3"})
        for name, value in pairs:
            self.assertRefused("repeated_param", [*pairs, (name, value)])
        self.assertRefused("repeated_param", [*pairs, ("format", "flac")])

    def test_missing_param(self) -> None:
        """
        Without ``expires`` or ``sig`` a URL is refused.
        """
        pairs = query_of()
        for name in ("expires", "sig"):
            self.assertRefused("missing_param", [p for p in pairs if p[0] != name])
        self.assertRefused("missing_param", [])

    def test_bad_expires(self) -> None:
        """
        ``expires`` must be canonical ASCII decimal digits of at most 15 digits.
        """
        pairs = query_of()
        for text in (
            "",
            "-1",
            "+5",
            "0" + str(EXPIRES),
            "1.5",
            " 1",
            "1 ",
            "1e9",
            "\uff11\uff12",
            "9" * 16,
            "0x10",
        ):
            self.assertRefused("bad_expires", replace(pairs, "expires", text))

    def test_zero_expires(self) -> None:
        """
        ``expires=0`` is canonical: a genuine one is simply expired.
        """
        self.assertRefused("expired", query_of(expires=0), code=URL_EXPIRED)

    def test_bad_path(self) -> None:
        """
        A path without a leading ``/`` or with a line feed is refused.
        """
        self.assertRefused("bad_path", query_of(), "stream/jazz/So What.mp3")
        self.assertRefused("bad_path", query_of(), "/stream/a\nip=1.2.3.4")

    def test_bad_param(self) -> None:
        """
        A name with ``=`` or a line feed, or a value with a line feed, is refused:
        the message would be ambiguous.
        """
        pairs = query_of()
        for extra in (("a=b", "1"), ("a\nb", "1"), ("a", "1\nip=1.2.3.4")):
            self.assertRefused("bad_param", [*pairs, extra])

    def test_line_feed_cannot_move_a_binding(self) -> None:
        """
        A URL bound to an ``ip`` cannot be rewritten so that the ``ip`` line of the
        message comes from another parameter's name, value, or from the path.
        """
        pairs = query_of(bound={"ip": "203.0.113.7", "uid": "42"})
        sig = dict(pairs)["sig"]
        base = [("expires", str(EXPIRES)), ("kid", "k2"), ("sig", sig)]
        self.assertRefused("bad_param", [("ip=203.0.113.7\nuid", "42"), *base], client_ip="198.51.100.1")
        self.assertRefused("bad_param", [("ip", "203.0.113.7\nuid=42"), *base], client_ip="198.51.100.1")
        self.assertRefused("bad_path", base, PATH + "\nip=203.0.113.7\nuid=42", client_ip="198.51.100.1")

    def test_rotated_key_still_valid(self) -> None:
        """
        A URL signed with an older key that is still configured, naming its kid,
        verifies.
        """
        self.assertEqual(check(query_of(key=PREVIOUS, bound={"uid": "1"})), {"uid": "1"})

    def test_removed_key(self) -> None:
        """
        Once its key is removed from the configuration, an old URL is ``unknown_kid``.
        """
        self.assertRefused("unknown_kid", query_of(key=PREVIOUS), keys=[CURRENT])

    def test_no_kid_only_current_key(self) -> None:
        """
        Without ``kid`` a URL verifies with the first key only: one signed with the
        previous key is refused.
        """
        self.assertEqual(check(query_of(include_kid=False)), {})
        self.assertRefused("bad_signature", query_of(key=PREVIOUS, include_kid=False))

    def test_unknown_kid(self) -> None:
        """
        A kid that is not configured (or empty) is refused.
        """
        for kid in ("k3", "", "K2", "k2 "):
            self.assertRefused("unknown_kid", replace(query_of(), "kid", kid))

    def test_no_keys(self) -> None:
        """
        With no key configured nothing verifies.
        """
        self.assertRefused("no_keys", query_of(include_kid=False), keys=[])
        self.assertRefused("unknown_kid", query_of(), keys=[])

    def test_expired(self) -> None:
        """
        A genuine URL is valid strictly before ``expires`` and ``URL_EXPIRED`` from
        that second on.
        """
        self.assertEqual(check(query_of(), now=EXPIRES - 0.001), {})
        e = self.assertRefused("expired", query_of(), now=EXPIRES, code=URL_EXPIRED)
        self.assertEqual(e.message, "This signed URL has expired.")
        self.assertRefused("expired", query_of(), now=EXPIRES + 86400, code=URL_EXPIRED)

    def test_forged_expired_is_invalid(self) -> None:
        """
        The signature is checked before the time: a forged or altered URL whose
        ``expires`` has passed is ``SIGNATURE_INVALID``, not ``URL_EXPIRED``.
        """
        pairs = replace(query_of(expires=EXPIRES - 10_000), "sig", sign(PATH, EXPIRES - 10_000, PREVIOUS))
        self.assertRefused("bad_signature", pairs)
        self.assertRefused("bad_signature", [*query_of(expires=EXPIRES - 10_000), ("x", "1")])

    def test_ttl_too_long(self) -> None:
        """
        A genuine URL that expires more than ``max_ttl_s`` ahead is refused; exactly
        ``max_ttl_s`` ahead is accepted.
        """
        self.assertEqual(check(query_of(), now=EXPIRES - WEEK), {})
        self.assertRefused("ttl_too_long", query_of(), now=EXPIRES - WEEK - 1)
        self.assertRefused("ttl_too_long", query_of(), max_ttl_s=599)

    def test_ip_bound(self) -> None:
        """
        A bound ``ip`` must name the client: equal, or the same address written
        differently (IPv6 forms, an IPv4-mapped IPv6 client).
        """
        for bound_ip, client in [
            ("203.0.113.7", "203.0.113.7"),
            ("2001:db8::1", "2001:DB8:0:0:0:0:0:1"),
            ("203.0.113.7", "::ffff:203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
        ]:
            self.assertEqual(check(query_of(bound={"ip": bound_ip}), client_ip=client), {"ip": bound_ip})

    def test_ip_mismatch(self) -> None:
        """
        A bound ``ip`` that is another address, unknown (no client address), or not
        an address at all is ``ip_mismatch``.
        """
        for bound_ip, client in [
            ("203.0.113.7", "203.0.113.8"),
            ("203.0.113.7", None),
            ("203.0.113.7", "garbage"),
            ("not-an-ip", "203.0.113.7"),
            ("203.0.113.0/24", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::2"),
        ]:
            self.assertRefused("ip_mismatch", query_of(bound={"ip": bound_ip}), client_ip=client)

    def test_ip_checked_after_signature(self) -> None:
        """
        Changing the bound ``ip`` to the client's own address breaks the signature.
        """
        pairs = replace(query_of(bound={"ip": "203.0.113.7"}), "ip", "198.51.100.1")
        self.assertRefused("bad_signature", pairs, client_ip="198.51.100.1")

    def test_constant_time_comparison(self) -> None:
        """
        The signature is compared with :func:`hmac.compare_digest`, on bytes.
        """
        calls: list[tuple[object, object]] = []
        real = hmac.compare_digest

        def recording(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(hmac, "compare_digest", recording)
        check(query_of())
        self.assertRaises(SignedUrlError, check, replace(query_of(), "sig", "x"))
        self.assertEqual(len(calls), 2)
        self.assertTrue(all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls))

    def test_error_tells_nothing(self) -> None:
        """
        The client-facing message is the same for every reason of a code, names
        no reason, key or value; ``str`` of the error is that message.
        """
        messages = set()
        for pairs in (replace(query_of(), "sig", "x"), replace(query_of(), "kid", "zz"), query_of()[:1]):
            e = self.assertRaises(SignedUrlError, check, pairs)
            messages.add(str(e))
            self.assertEqual(str(e), e.message)
            self.assertNotIn(e.reason, str(e))
        self.assertEqual(len(messages), 1)
        self.assertNotIn(CURRENT.secret.decode(), repr(SignedUrlError(SIGNATURE_INVALID, "bad_signature")))

    def test_error_codes(self) -> None:
        """
        :class:`SignedUrlError` accepts only the two contract codes.
        """
        self.assertRaises(ValueError, SignedUrlError, "FORBIDDEN", "x")


# --- hypothesis -------------------------------------------------------------

#: Any text that can be signed: no line feed, no lone surrogate.
_signable_text = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=30)

_paths = _signable_text.map(lambda s: "/" + s)
_names = st.text(st.characters(codec="utf-8", exclude_characters="\n="), min_size=0, max_size=12).filter(
    lambda n: n not in RESERVED_PARAMETERS
)
_bounds = st.dictionaries(_names, _signable_text, max_size=5)
_expires = st.integers(min_value=0, max_value=10**15 - 1)


def _split_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    """The decoded path and query pairs of a signed URL, taken apart as a server does."""
    assert url.isascii()
    parts = urlsplit(url)
    return decode_signed_path(parts.path.encode("ascii")), parse_query_pairs(parts.query.encode("ascii"))


class RoundTripTests(unittest.TestCase):
    """
    Property tests: what :func:`sign_url` makes, :func:`verify` accepts, and nothing else.
    """

    @given(path=_paths, expires=_expires, bound=_bounds)
    def test_sign_then_verify(self, path: str, expires: int, bound: dict[str, str]) -> None:
        """
        Any path and bound parameters survive encoding into a URL and decoding by
        the server, and verify, giving back the bound parameters.
        """
        path_seen, pairs = _split_url(
            sign_url("https://h.example", path, keys=KEYS, expires=expires, bound=bound)
        )
        self.assertEqual(path_seen, path)
        self.assertEqual(verify(path_seen, pairs, keys=KEYS, now=expires - 1, max_ttl_s=10), bound)

    @given(path=_paths, bound=_bounds, other=_paths)
    def test_other_path_refused(self, path: str, bound: dict[str, str], other: str) -> None:
        """
        The query of one path never verifies for another path.
        """
        assume(other != path)
        pairs = query_of(path, bound=bound)
        e = self.assertRaises(SignedUrlError, verify, other, pairs, keys=KEYS, now=NOW, max_ttl_s=WEEK)
        self.assertEqual(e.reason, "bad_signature")

    @given(bound=_bounds, name=_names, value=_signable_text)
    def test_added_param_refused(self, bound: dict[str, str], name: str, value: str) -> None:
        """
        Adding any parameter not already there invalidates a URL.
        """
        assume(name not in bound)
        pairs = [*query_of(bound=bound), (name, value)]
        e = self.assertRaises(SignedUrlError, check, pairs)
        self.assertEqual(e.reason, "bad_signature")

    @given(bound=_bounds.filter(bool), data=st.data())
    def test_removed_or_changed_param_refused(self, bound: dict[str, str], data: st.DataObject) -> None:
        """
        Removing any bound parameter, or changing its value, invalidates a URL.
        """
        name = data.draw(st.sampled_from(sorted(bound)))
        pairs = query_of(bound=bound)
        e = self.assertRaises(SignedUrlError, check, [p for p in pairs if p[0] != name])
        self.assertEqual(e.reason, "bad_signature")
        value = data.draw(_signable_text.filter(lambda v: v != bound[name]))
        e = self.assertRaises(SignedUrlError, check, replace(pairs, name, value))
        self.assertEqual(e.reason, "bad_signature")

    @given(position=st.integers(min_value=0, max_value=42), char=st.sampled_from("AZaz09-_"))
    def test_any_sig_change_refused(self, position: int, char: str) -> None:
        """
        Changing any one character of ``sig`` invalidates a URL.
        """
        pairs = query_of()
        sig = dict(pairs)["sig"]
        assume(sig[position] != char)
        forged = sig[:position] + char + sig[position + 1 :]
        e = self.assertRaises(SignedUrlError, check, replace(pairs, "sig", forged))
        self.assertEqual(e.reason, "bad_signature")

    @given(path=_paths, expires=_expires, bound=_bounds)
    def test_message_is_unambiguous(self, path: str, expires: int, bound: dict[str, str]) -> None:
        """
        The message splits back into exactly the expires, path and bound
        parameters it was made from.
        """
        lines = signature_message(path, expires, bound).decode("utf-8").split("\n")
        self.assertEqual(int(lines[0]), expires)
        self.assertEqual(lines[1], path)
        self.assertEqual(dict(line.split("=", 1) for line in lines[2:]), bound)


# --- the request side -------------------------------------------------------


class ParseQueryPairsTests(unittest.TestCase):
    """
    :func:`parse_query_pairs` and :func:`decode_signed_path`.
    """

    def assertBadEncoding(self, f: Callable[[bytes], object], raw: bytes) -> None:
        """Assert that ``f(raw)`` is ``SIGNATURE_INVALID``/``bad_encoding``."""
        e = self.assertRaises(SignedUrlError, f, raw)
        self.assertEqual((e.code, e.reason), (SIGNATURE_INVALID, "bad_encoding"))

    def test_empty(self) -> None:
        """
        An empty query, and empty pairs between ``&``, give nothing.
        """
        self.assertEqual(parse_query_pairs(b""), [])
        self.assertEqual(parse_query_pairs(b"&&"), [])
        self.assertEqual(parse_query_pairs(b"a=1&&b=2&"), [("a", "1"), ("b", "2")])

    def test_empty_value_and_name(self) -> None:
        """
        ``a=`` and ``a`` have an empty value; ``=b`` has an empty name.
        """
        self.assertEqual(parse_query_pairs(b"a="), [("a", "")])
        self.assertEqual(parse_query_pairs(b"a"), [("a", "")])
        self.assertEqual(parse_query_pairs(b"=b"), [("", "b")])
        self.assertEqual(parse_query_pairs(b"="), [("", "")])

    def test_first_equals_splits(self) -> None:
        """
        The name ends at the first ``=``; later ones belong to the value.
        """
        self.assertEqual(parse_query_pairs(b"a=b=c"), [("a", "b=c")])

    def test_semicolon_is_not_a_separator(self) -> None:
        """
        ``;`` is data, not a separator (unlike old CGI parsers).
        """
        self.assertEqual(parse_query_pairs(b"a=1;b=2"), [("a", "1;b=2")])

    def test_order_and_repeats_kept(self) -> None:
        """
        Pairs keep their order and repetitions, for :func:`verify` to judge.
        """
        self.assertEqual(parse_query_pairs(b"b=1&a=2&b=3"), [("b", "1"), ("a", "2"), ("b", "3")])

    def test_plus_and_escapes(self) -> None:
        """
        ``+`` is a space, ``%2B`` a plus, escapes are decoded once, either case.
        """
        self.assertEqual(parse_query_pairs(b"n+m=a+b%2Bc%20d"), [("n m", "a b+c d")])
        self.assertEqual(parse_query_pairs(b"x=%c3%A9%252e"), [("x", "é%2e")])

    def test_raw_utf8(self) -> None:
        """
        Raw UTF-8 bytes (as some clients send them) are accepted.
        """
        self.assertEqual(parse_query_pairs("x=é".encode()), [("x", "é")])

    def test_malformed_escape(self) -> None:
        """
        A ``%`` not followed by two hex digits is refused.
        """
        for raw in (b"a=%zz", b"a=%", b"a=%4", b"%zz=1", b"a=100%", b"a=%%41"):
            self.assertBadEncoding(parse_query_pairs, raw)

    def test_invalid_utf8(self) -> None:
        """
        Escapes or bytes that are not UTF-8 (stray bytes, overlong forms, encoded
        surrogates) are refused.
        """
        for raw in (b"a=%ff", b"a=%c0%ae", b"a=%ed%a0%80", b"a=\xff", b"%e9=1"):
            self.assertBadEncoding(parse_query_pairs, raw)

    def test_decode_path(self) -> None:
        """
        The path is decoded once, ``+`` kept, no Unicode normalisation.
        """
        self.assertEqual(decode_signed_path(b"/stream/So%20What+1%252e.mp3"), "/stream/So What+1%2e.mp3")
        self.assertEqual(decode_signed_path(b"/stream/e%CC%81.mp3"), "/stream/e\u0301.mp3")
        self.assertEqual(decode_signed_path(b"/stream/a%2Fb"), "/stream/a/b")

    def test_decode_path_refuses(self) -> None:
        """
        A malformed escape or invalid UTF-8 in the path is refused.
        """
        for raw in (b"/stream/%zz", b"/stream/%ff.mp3", b"/stream/100%"):
            self.assertBadEncoding(decode_signed_path, raw)


class MaxAgeTests(unittest.TestCase):
    """
    :func:`max_age_for`.
    """

    def test_whole_seconds(self) -> None:
        """
        With a whole ``now`` the max-age is the seconds left.
        """
        self.assertEqual(max_age_for(1000, 400.0), 600)

    def test_fraction_rounds_down(self) -> None:
        """
        A fraction of a second left is not counted: the cache never outlives expiry.
        """
        self.assertEqual(max_age_for(1000, 399.2), 600)
        self.assertEqual(max_age_for(1000, 999.5), 0)

    def test_expired(self) -> None:
        """
        At or past expiry the max-age is 0, never negative.
        """
        self.assertEqual(max_age_for(1000, 1000.0), 0)
        self.assertEqual(max_age_for(1000, 5000.0), 0)

    @given(expires=st.integers(min_value=0, max_value=10**12), now=st.floats(min_value=0, max_value=10**12))
    def test_never_past_expiry(self, expires: int, now: float) -> None:
        """
        ``now + max_age`` never passes ``expires``, and is within a second of it
        while time is left.
        """
        age = max_age_for(expires, now)
        self.assertGreaterEqual(age, 0)
        self.assertLessEqual(now + age, max(expires, now))
        if expires > now:
            self.assertGreaterEqual(now + age + 1, expires)


# --- streamsrv sign-url -----------------------------------------------------


class SignCliTests(unittest.TestCase):
    """
    :func:`sign_cli`.
    """

    now = 1_800_000_000.75

    def run_cli(
        self, *argv: str, keys: list[SigningKey] | None = None, max_ttl_s: int = WEEK
    ) -> tuple[int, str, str]:
        """Run :func:`sign_cli`; return the status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        status = sign_cli(
            argv, keys=KEYS if keys is None else keys, max_ttl_s=max_ttl_s, now=self.now, out=out, err=err
        )
        for stream in (out.getvalue(), err.getvalue()):
            for key in KEYS:
                self.assertNotIn(key.secret.decode(), stream)
        return status, out.getvalue(), err.getvalue()

    def verify_printed(self, printed: str, **kwargs: Any) -> tuple[str, dict[str, str], dict[str, str]]:
        """Take the printed URL apart and verify it at :attr:`now`; return the path, bound and query."""
        self.assertTrue(printed.endswith("\n"))
        self.assertEqual(printed.count("\n"), 1)
        path, pairs = _split_url(printed.rstrip("\n"))
        options: dict[str, Any] = {"keys": KEYS, "now": self.now, "max_ttl_s": WEEK}
        options.update(kwargs)
        return path, verify(path, pairs, **options), dict(pairs)

    def test_track_path(self) -> None:
        """
        A bare track path means ``/stream/…``; the URL uses the default base URL,
        the current key and kid, and expires one hour after (the whole second of) now.
        """
        status, out, err = self.run_cli("jazz/So What.mp3")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("http://127.0.0.1:8080/stream/jazz/So%20What.mp3?expires="), out)
        path, bound, query = self.verify_printed(out)
        self.assertEqual((path, bound), ("/stream/jazz/So What.mp3", {}))
        self.assertEqual(query["kid"], "k2")
        self.assertEqual(int(query["expires"]), 1_800_000_000 + 3600)

    def test_full_paths(self) -> None:
        """
        A full request path under a signed prefix is used as it is.
        """
        for path in (
            "/stream/a.mp3",
            "/hls/jazz/So What.mp3/master.m3u8",
            "/api/v1/artwork/a.mp3",
            "/api/v1/waveform/a.mp3",
            "/api/v1/spectrum/a.mp3",
        ):
            status, out, _ = self.run_cli(path)
            self.assertEqual(status, 0)
            self.assertEqual(self.verify_printed(out)[0], path)

    def test_other_paths_refused(self) -> None:
        """
        A full path outside the signed routes, or an empty one, is refused with status 1.
        """
        for path in ("/api/v1/tracks", "/health", "", "/"):
            status, out, err = self.run_cli(path)
            self.assertEqual((status, out), (1, ""), path)
            self.assertIn("streamsrv sign-url:", err)

    def test_bind(self) -> None:
        """
        ``--bind`` parameters are bound into the URL.
        """
        status, out, _ = self.run_cli(
            "a.flac", "--bind", "format=mp3", "--bind", "bitrate=320", "--bind", "ip=203.0.113.7"
        )
        self.assertEqual(status, 0)
        _, bound, _ = self.verify_printed(out, client_ip="203.0.113.7")
        self.assertEqual(bound, {"format": "mp3", "bitrate": "320", "ip": "203.0.113.7"})

    def test_bad_bind(self) -> None:
        """
        A ``--bind`` without ``=``, with an empty or reserved name, given twice, or
        with a line feed is refused with status 1.
        """
        for binds in (["uid"], ["=1"], ["sig=x"], ["expires=1"], ["kid=k1"], ["a=1", "a=2"], ["a=1\n2"]):
            argv = ["a.mp3"]
            for item in binds:
                argv += ["--bind", item]
            status, out, err = self.run_cli(*argv)
            self.assertEqual((status, out), (1, ""), binds)
            self.assertTrue(err.startswith("streamsrv sign-url: "), err)

    def test_expires_in(self) -> None:
        """
        ``--expires-in`` up to the maximum lifetime is accepted, and the URL verifies
        at the same instant; beyond it, or below 1, status 1.
        """
        status, out, _ = self.run_cli("a.mp3", "--expires-in", str(WEEK))
        self.assertEqual(status, 0)
        self.verify_printed(out)
        status, out, err = self.run_cli("a.mp3", "--expires-in", str(WEEK + 1))
        self.assertEqual((status, out), (1, ""))
        self.assertIn("STREAMSRV_URL_MAX_TTL_S", err)
        self.assertEqual(self.run_cli("a.mp3", "--expires-in", "0")[0], 1)

    def test_expires_absolute(self) -> None:
        """
        ``--expires`` signs for that instant: it reproduces a documented vector
        exactly (with a note on stderr when it has passed), and is refused beyond
        the maximum lifetime.
        """
        vector = next(v for v in VECTORS if {"format", "bitrate"} <= set(v["bound"]) and v["include_kid"])
        argv = [vector["path"], "--expires", str(vector["expires"]), "--base-url", BASE_URL]
        for name, value in vector["bound"].items():
            argv += ["--bind", f"{name}={value}"]
        status, out, err = self.run_cli(*argv, keys=[vector_key(vector)])
        self.assertEqual((status, out), (0, vector["url"] + "\n"))
        self.assertIn("already past", err)
        status, _, err = self.run_cli("a.mp3", "--expires", str(int(self.now) + WEEK + 1))
        self.assertEqual(status, 1)
        self.assertIn("STREAMSRV_URL_MAX_TTL_S", err)

    def test_no_keys(self) -> None:
        """
        Without configured keys the command says so and returns 1.
        """
        status, out, err = self.run_cli("a.mp3", keys=[])
        self.assertEqual((status, out), (1, ""))
        self.assertIn("STREAMSRV_URL_SIGNING_KEYS is not set", err)

    def test_kid(self) -> None:
        """
        ``--kid`` signs with that key; an unknown kid is status 1, naming the known ones.
        """
        status, out, _ = self.run_cli("a.mp3", "--kid", "k1")
        self.assertEqual(status, 0)
        self.assertEqual(self.verify_printed(out)[2]["kid"], "k1")
        status, _, err = self.run_cli("a.mp3", "--kid", "nope")
        self.assertEqual(status, 1)
        self.assertIn("k2, k1", err)

    def test_base_url(self) -> None:
        """
        ``--base-url`` may end with ``/``; a non-HTTP one is refused.
        """
        status, out, _ = self.run_cli("a.mp3", "--base-url", "https://media.example.com/")
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("https://media.example.com/stream/a.mp3?"))
        for base in ("ftp://x", "media.example.com", "https://x/?a=1"):
            self.assertEqual(self.run_cli("a.mp3", "--base-url", base)[0], 1)

    def test_percent_note(self) -> None:
        """
        A PATH that looks percent-encoded is signed literally, with a note.
        """
        status, out, err = self.run_cli("So%20What.mp3")
        self.assertEqual(status, 0)
        self.assertIn("/stream/So%2520What.mp3?", out)
        self.assertIn("note:", err)

    def test_usage_errors(self) -> None:
        """
        A malformed command line (no PATH, unknown option, non-integer lifetime,
        both lifetimes) is status 2 with usage on stderr.
        """
        for argv in (
            [],
            ["a.mp3", "--nope"],
            ["a.mp3", "--expires-in", "soon"],
            ["a.mp3", "--expires", "1", "--expires-in", "1"],
        ):
            status, out, err = self.run_cli(*argv)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn("usage:", err)

    def test_help(self) -> None:
        """
        ``--help`` prints the usage on stdout and returns 0, with or without PATH.
        """
        for argv in (["--help"], ["-h", "a.mp3"]):
            status, out, err = self.run_cli(*argv)
            self.assertEqual((status, err), (0, ""))
            self.assertIn("usage: streamsrv sign-url", out)
