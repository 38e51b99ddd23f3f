# -*- test-case-name: tests.test_fuzz -*-
"""Fuzzing the front doors with hypothesis: hostile input never becomes a 500, a hang or a crash.

Each test throws generated input at a real entry point and asserts only what
must hold for *any* input: an answer from the contract's set of statuses (a
JSON error, never 500), no logged failure, bounded output.  The parsers'
exact semantics are pinned elsewhere (``test_ranges``, ``test_signing``,
``test_jwt``, ``test_ws``, ``test_waveform``); these find what those
examples did not think of.

- Range and If-Range headers, as raw bytes on a real ``Site`` (any byte but
  CR/LF in the value);
- signed-URL queries: junk, and correctly signed ones binding arbitrary
  parameters;
- the JWT front door: junk ``Authorization`` headers, JWT-shaped tokens with
  arbitrary headers and claims, and validly signed tokens whose claims have
  the wrong types;
- the waveform parameters through the real media routes (jobs run inline);
- the WebSocket message decoder, through iosim on the real site, with the
  real playback-report parser behind it;
- the Ogg Opus and fMP4 writers: random renditions of random tones,
  every output parsed by ``ffprobe`` (few examples: each one encodes).

Example counts follow the profile (``HYPOTHESIS_PROFILE=explore`` multiplies
them by 25); the suite's ``ci`` profile is derandomized.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial import unittest

from streamsrv.audio.library import MediaLibrary
from streamsrv.auth.signing import sign
from streamsrv.cache.artifacts import ArtifactCache
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from streamsrv.threads import InlineThreads
from tests.audiogen import write_tone
from tests.sitehelpers import build_site, jwt_guard, parse_head, raw_exchange, stub_for
from tests.test_guard import KEYS

#: A fixed "now" for every clock here (2026-01-01T00:00:00Z).
NOW = 1_767_225_600.0

TRACK = "Album/Tone.flac"

#: The HS256 secret of the JWT front-door tests.
SECRET = "fuzz-secret-0123456789abcdef-0123456789abcdef"

#: Statuses any request may get; 500 is never among them.
CONTRACT_STATUSES = frozenset(
    {200, 206, 304, 400, 401, 403, 404, 405, 406, 412, 414, 415, 416, 429, 431, 503}
)


def examples(n: int) -> int:
    """*n* examples under the suite's profile, proportionally more under a longer one."""
    return max(1, n * settings.default.max_examples // 200)


def fast(n: int) -> settings:
    """Settings for a test of *n* examples (scaled) that may be slow per example."""
    return settings(
        max_examples=examples(n),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


#: Any JSON value, nested a little.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

#: Header-value bytes: anything but the line breaks that would end the header.
HEADER_BYTES = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


class LoggedFailures:
    """Collects log events that carry a failure (``log.failure``, ``log.err``) while installed."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self._observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: LogEvent) -> None:
        if "log_failure" in event:
            self.events.append(event)

    def take(self) -> list[str]:
        """The failures seen since the last call, as text."""
        found = [repr(e["log_failure"].value) for e in self.events]
        self.events.clear()
        return found


def status_of(raw: bytes) -> int:
    """The status of the first response in *raw* (0 when nothing was answered)."""
    return parse_head(raw)[0] if raw.startswith(b"HTTP/1.1 ") else 0


# --- Range / If-Range -------------------------------------------------------------------

RANGE_LIKE = st.one_of(
    HEADER_BYTES,
    st.text(alphabet="bytes=0123456789-, \t", max_size=40).map(str.encode),
    st.lists(
        st.tuples(st.none() | st.integers(0, 2**66), st.none() | st.integers(0, 2**66)),
        min_size=1,
        max_size=20,
    ).map(
        lambda specs: (
            b"bytes="
            + b",".join(f"{'' if a is None else a}-{'' if b is None else b}".encode() for a, b in specs)
        )
    ),
)

IF_RANGE = st.one_of(
    st.none(),
    HEADER_BYTES,
    st.sampled_from([b'"x"', b'W/"x"', b"Thu, 01 Jan 1970 00:00:00 GMT", b"Sat, 01 Jan 2050 00:00:00 GMT"]),
)


class RangeFuzzTests(unittest.SynchronousTestCase):
    """Range and If-Range headers as raw bytes on the real site."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        self.body = bytes(range(256)) * 40
        (root / "a.mp3").write_bytes(self.body)
        self.built = build_site(root, max_ranges=16)
        self.failures = LoggedFailures(self)

    @fast(300)
    @given(RANGE_LIKE, IF_RANGE, st.sampled_from([b"GET", b"HEAD"]))
    def test_any_range(self, range_value: bytes, if_range: bytes | None, method: bytes) -> None:
        """Any Range/If-Range answers 200, 206 or 416 with a body that matches its headers."""
        head = b"%s /stream/a.mp3 HTTP/1.1\r\nHost: x\r\nRange: %s\r\n" % (method, range_value)
        if if_range is not None:
            head += b"If-Range: %s\r\n" % if_range
        raw = raw_exchange(self.built, head + b"Connection: close\r\n\r\n")
        status, headers, rest = parse_head(raw)
        self.assertIn(status, {200, 206, 400, 416}, raw[:300])
        self.assertEqual(self.failures.take(), [])
        if method == b"GET" and status == 200:
            self.assertEqual(rest, self.body)
        if method == b"GET" and status == 206 and "multipart" not in headers.get("content-type", ""):
            first, last = map(int, headers["content-range"].split()[1].split("/")[0].split("-"))
            self.assertEqual(rest, self.body[first : last + 1])


# --- signed URLs ------------------------------------------------------------------------

PARAM_NAMES = st.sampled_from(
    ["expires", "sig", "kid", "format", "bitrate", "ip", "uid", "download", "t", "hq", "container"]
) | st.text(max_size=8)
PARAM_VALUES = st.one_of(
    st.text(max_size=24),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["1767229200", "9" * 40, "0", "-1", "1e9", " 1767229200", "１７６７"]),
)


def encode_query(pairs: list[tuple[str, str]], raw_bytes: bool) -> str:
    """A query string of *pairs*: percent-encoded, or (*raw_bytes*) with only ``&``, ``=``,
    ``#``, spaces and controls escaped (what a sloppy client sends)."""
    if raw_bytes:
        return "&".join(
            f"{quote(k, safe='%/:@!$()*+,;?')}={quote(v, safe='%/:@!$()*+,;=?')}" for k, v in pairs
        )
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


class SignedUrlFuzzTests(unittest.SynchronousTestCase):
    """Signed-URL queries on ``/stream`` with a guard that knows only signing keys."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        (root / "a.mp3").write_bytes(b"\xff\xfb" + b"\0" * 4000)
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        guard = Guard(
            verifier=None, url_keys=KEYS, url_max_ttl_s=604800, revocations=None, limiter=None,
            policies=DEFAULT_POLICIES, anonymous=None, clock=self.clock,
        )  # fmt: skip
        self.built = build_site(root, clock=self.clock, guard=guard)
        self.failures = LoggedFailures(self)

    def request(self, target: str) -> bytes:
        return raw_exchange(
            self.built, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode()
        )

    @fast(300)
    @given(st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=8), st.booleans())
    def test_junk_queries(self, pairs: list[tuple[str, str]], raw_bytes: bool) -> None:
        """Any query is answered 401 (no signature), 403 (a bad one), or 400/404, never 500."""
        raw = self.request("/stream/a.mp3?" + encode_query(pairs, raw_bytes))
        self.assertIn(status_of(raw), {400, 401, 403, 404}, raw[:300])
        self.assertEqual(self.failures.take(), [])

    @fast(200)
    @given(
        st.dictionaries(
            PARAM_NAMES.filter(lambda n: n not in ("sig", "kid", "expires")), PARAM_VALUES, max_size=5
        ),
        st.integers(-100, 10**6),
        st.sampled_from([0, 1]),
    )
    def test_signed_with_any_bound_parameters(self, bound: dict[str, str], ttl: int, key_index: int) -> None:
        """A correctly signed URL binding any parameters is answered within the contract."""
        path = "/stream/a.mp3"
        expires = int(NOW) + ttl
        try:
            signature = sign(path, expires, KEYS[key_index], bound)
        except ValueError:
            return  # a parameter the signer itself refuses (a line feed, an '=' in a name)
        pairs = [*bound.items(), ("expires", str(expires)), ("kid", KEYS[key_index].kid), ("sig", signature)]
        raw = self.request(path + "?" + encode_query(pairs, raw_bytes=False))
        self.assertIn(status_of(raw), CONTRACT_STATUSES, raw[:300])
        self.assertEqual(self.failures.take(), [])


# --- the JWT front door -----------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


CLAIM_NAMES = st.sampled_from(
    ["sub", "exp", "nbf", "iat", "iss", "aud", "roles", "permissions", "jti", "typ", "fam"]
) | st.text(max_size=6)
HEADER_NAMES = st.sampled_from(["alg", "typ", "kid", "crit", "jku", "x5u", "b64", "zip", "cty", "jwk"])
ALGS = st.sampled_from(["HS256", "none", "None", "RS256", "ES256", "EdDSA", "HS512", "PS256", "", "hs256"])

JWT_SHAPED = st.builds(
    lambda header, alg, claims, sig: f"{b64(dumps({**header, 'alg': alg}))}.{b64(dumps(claims))}.{b64(sig)}",
    st.dictionaries(HEADER_NAMES, JSON, max_size=3),
    ALGS | JSON,
    st.dictionaries(CLAIM_NAMES, JSON, max_size=8),
    st.binary(max_size=40),
)

#: Claims with the right names and arbitrary values (validly signed below).
ODD_CLAIMS = st.fixed_dictionaries(
    {"sub": JSON, "exp": st.sampled_from([NOW + 600, str(NOW + 600), None, True, 1e308, -1, 2**70]) | JSON},
    optional={
        name: JSON for name in ["nbf", "iat", "iss", "aud", "roles", "permissions", "jti", "typ", "fam"]
    },
)


class JwtFrontDoorFuzzTests(unittest.SynchronousTestCase):
    """The guard's token path on ``/stream`` with an HS256 verifier and no anonymous access."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        (root / "a.mp3").write_bytes(b"\xff\xfb" + b"\0" * 4000)
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.issuer, guard = jwt_guard(SECRET, self.clock)
        self.built = build_site(root, clock=self.clock, guard=guard)
        self.failures = LoggedFailures(self)

    def with_authorization(self, value: bytes) -> int:
        raw = raw_exchange(
            self.built,
            b"GET /stream/a.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nConnection: close\r\n\r\n"
            % value,
        )
        self.assertEqual(self.failures.take(), [])
        return status_of(raw)

    def test_a_good_token_streams(self) -> None:
        """The baseline: a valid token is let through (so the fuzzing below reaches the verifier)."""
        token = self.issuer.issue(sub="u1", roles=["listener"], ttl_s=600)
        self.assertEqual(self.with_authorization(b"Bearer " + token.encode()), 200)

    @fast(300)
    @given(HEADER_BYTES)
    def test_junk_authorization(self, value: bytes) -> None:
        """Any Authorization bytes are 400 or 401, never 500."""
        self.assertIn(self.with_authorization(value), {400, 401})

    @fast(300)
    @given(JWT_SHAPED)
    def test_jwt_shaped(self, token: str) -> None:
        """JWT-shaped tokens with any header and claims (bad signature) are 401."""
        self.assertEqual(self.with_authorization(b"Bearer " + token.encode()), 401)

    @fast(300)
    @given(ODD_CLAIMS, st.dictionaries(st.sampled_from(["kid", "typ", "cty", "crit"]), JSON, max_size=2))
    def test_signed_odd_claims(self, claims: dict[str, Any], header: dict[str, Any]) -> None:
        """Validly signed tokens whose claims have any type are 200 or 401/403, never 500."""
        import jwt

        try:
            token = jwt.encode(claims, SECRET, algorithm="HS256", headers=header)
        except (TypeError, ValueError, jwt.InvalidTokenError):
            return  # PyJWT cannot even encode it
        self.assertIn(self.with_authorization(b"Bearer " + token.encode()), {200, 401, 403})


# --- waveform parameters ----------------------------------------------------------------


class _InlinePool:
    """Runs each job at once in this thread (the real function, no worker process)."""

    queued = 0
    max_queue = 64

    def submit(self, fn: Any, *args: Any, key: str | None = None) -> Any:
        return succeed(fn(*args))


WAVEFORM_PARAMS = st.dictionaries(
    st.sampled_from(
        ["samples_per_pixel", "pixels_per_second", "bits", "channels", "start", "end", "format", "zoom"]
    ),
    st.one_of(
        st.integers(-(2**40), 2**40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["json", "dat", "wavesurfer", "merge", "split", "8", "16", "", "1e3", "0x10", "٣"]),
        st.text(max_size=8),
    ),
    max_size=6,
)


class WaveformParameterFuzzTests(unittest.SynchronousTestCase):
    """Waveform queries through the real media routes, the peaks computed inline."""

    def setUp(self) -> None:
        root = Path(self.mktemp()).resolve()
        (root / "Album").mkdir(parents=True)
        write_tone(root / TRACK, "flac", seconds=2.0, freq=440.0, channels=2)
        cache = ArtifactCache(Path(self.mktemp()), 64 * 1024 * 1024, threads=InlineThreads())
        library = MediaLibrary(root, catalog=None, pool=_InlinePool(), cache=cache)  # type: ignore[arg-type]
        self.built = build_site(root, media=library)
        self.stub = stub_for(self.built)
        self.failures = LoggedFailures(self)

    @fast(150)
    @given(WAVEFORM_PARAMS)
    def test_any_parameters(self, params: dict[str, str]) -> None:
        """Any waveform query answers 200 (bounded) or 400, never 500."""
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        d = self.stub.get(f"http://streamsrv.test/api/v1/waveform/{quote(TRACK)}?{query}")
        self.stub.flush()
        response = self.successResultOf(d)
        body_d = response.content()
        self.stub.flush()
        body = self.successResultOf(body_d)
        self.assertIn(response.code, {200, 400}, body[:300])
        self.assertEqual(self.failures.take(), [])
        if response.code == 200:
            # 2 s of audio: at most one pixel per sample, two channels, 16 bits, plus JSON text.
            self.assertLess(len(body), 2 * 44100 * 2 * 2 * 8 + 4096)


# --- WebSocket messages -----------------------------------------------------------------

MESSAGE_TYPES = st.sampled_from(
    ["auth", "subscribe", "unsubscribe", "ping", "playback.play", "playback.progress", "playback.seek",
     "playback.pause", "playback.ended", "playback.buffering", "", "event", "ready"]
) | st.text(max_size=12)  # fmt: skip

PLAYBACK_DATA = st.fixed_dictionaries(
    {},
    optional={
        "session_id": JSON | st.text(alphabet="abc-_.", max_size=130),
        "path": JSON | st.text(max_size=40),
        "position_s": JSON,
        "duration_s": JSON,
        "startup_ms": JSON,
        "stall_ms": JSON,
        "bitrate_kbps": JSON,
        "channels": JSON,
        "token": JSON,
    },
)

WS_MESSAGES = st.one_of(
    st.fixed_dictionaries(
        {"type": MESSAGE_TYPES}, optional={"id": JSON, "ts": JSON, "data": PLAYBACK_DATA | JSON}
    ).map(lambda m: json.dumps(m, allow_nan=True)),
    JSON.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=80),
)


class _RecordingStore:
    """An analytics store that keeps what the session tracker records (in memory, unbounded here)."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def record_session(self, session: Any) -> None:
        self.records.append(session)

    def record_event(self, event: Any) -> None:
        self.records.append(event)


class WebSocketFuzzTests(unittest.TestCase):
    """Any text frame on an authenticated socket, with the real playback-report parser."""

    def setUp(self) -> None:
        from streamsrv.analytics.sessions import SessionTracker
        from streamsrv.ws.limits import WsLimits
        from tests.test_ws import Harness

        clock = MemoryReactorClock()
        self.tracker = SessionTracker(_RecordingStore(), clock)  # type: ignore[arg-type]

        def on_playback(who: Any, kind: str, data: Any) -> str | None:
            outcome = self.tracker.on_playback_report(who.sub, {"type": f"playback.{kind}", **data})
            return None if outcome.ok else outcome.message or "refused"

        limits = WsLimits(messages_per_s=1e9, message_burst=10**9)
        self.harness = Harness(self, limits=limits, on_playback=on_playback)
        self.client, self.pump = self.harness.authed()
        self.failures = LoggedFailures(self)

    @fast(400)
    @given(WS_MESSAGES)
    def test_any_message(self, text: str) -> None:
        """Every message is answered with well-formed frames or ignored; the socket stays open."""
        if self.client.closed:
            self.client, self.pump = self.harness.authed()
        before = len(self.client.messages)
        self.client.sendMessage(text.encode("utf-8"))
        self.pump.flush()
        self.assertEqual(self.failures.take(), [])
        self.assertFalse(self.client.closed, (text, self.client.close_code))
        for message in self.client.messages[before:]:
            self.assertIsInstance(message.get("type"), str)
            if message["type"] == "error":
                self.assertNotEqual(message["data"]["code"], "INTERNAL", text)


# --- Ogg Opus and fMP4 writers, checked by ffprobe --------------------------------------


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's JSON of *path*'s streams and format, with every error reported; fails on any."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 or done.stderr.strip():
        raise AssertionError(f"ffprobe refused {path.name}: {done.stderr.decode(errors='replace')[:500]}")
    return dict(json.loads(done.stdout))


class WriterFuzzTests(unittest.SynchronousTestCase):
    """Random renditions of random tones through the Ogg Opus and fMP4 writers."""

    def setUp(self) -> None:
        if shutil.which("ffprobe") is None:
            raise unittest.SkipTest("ffprobe is not installed")
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def tone(self, seconds: float, rate: int, channels: int) -> Path:
        path = self.dir / f"tone-{seconds}-{rate}-{channels}.flac"
        if not path.exists():
            write_tone(path, "flac", seconds=seconds, freq=330.0, channels=channels, sample_rate=rate)
        return path

    @settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.floats(0.05, 6.0),
        st.sampled_from([8000, 22050, 44100, 48000, 96000]),
        st.sampled_from([1, 2]),
        st.sampled_from([16, 24, 32, 64, 96, 128, 192, 256]),
        st.sampled_from([1, 2, None]),
    )
    def test_ogg_opus(
        self, seconds: float, rate: int, channels: int, bitrate: int, out_channels: int | None
    ) -> None:
        """Every Ogg Opus rendition parses in ffprobe with the asked channels and a sane duration."""
        from streamsrv.transcode import Rendition
        from streamsrv.transcode.encode import encode_full_bytes

        rendition = Rendition(format="opus", bitrate_kbps=bitrate, channels=out_channels)
        data = encode_full_bytes(str(self.tone(round(seconds, 2), rate, channels)), rendition)
        out = self.dir / "out.opus"
        out.write_bytes(data)
        info = ffprobe(out)
        (stream,) = info["streams"]
        self.assertEqual(stream["codec_name"], "opus")
        self.assertEqual(stream["channels"], rendition.channels)  # low bitrates default to mono
        self.assertLess(abs(float(info["format"]["duration"]) - round(seconds, 2)), 0.1)

    @settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.floats(0.5, 13.0),
        st.sampled_from([22050, 44100, 48000]),
        st.sampled_from([1, 2]),
        st.sampled_from(["64k", "160k", "flac"]),
    )
    def test_fmp4_segments(self, seconds: float, rate: int, channels: int, variant_name: str) -> None:
        """Init segment + every media segment of an HLS variant parse in ffprobe as one fMP4 file."""
        from streamsrv.hls.segments import VARIANTS, encode_init, encode_segment, probe_track

        source = str(self.tone(round(seconds, 1), rate, channels))
        track = probe_track(source)
        variant = VARIANTS[variant_name]
        data = encode_init(source, variant, track) + b"".join(
            encode_segment(source, variant, n, track) for n in range(track.segment_count)
        )
        out = self.dir / "out.mp4"
        out.write_bytes(data)
        info = ffprobe(out)
        (stream,) = info["streams"]
        self.assertEqual(stream["codec_name"], "flac" if variant.lossless else "aac")
        self.assertLess(abs(float(info["format"]["duration"]) - track.duration_s), 0.1)


# --- what the fuzzing found -------------------------------------------------------------


class FoundByFuzzingTests(unittest.SynchronousTestCase):
    """Each input the fuzzers above found to crash, pinned as a plain example."""

    def setUp(self) -> None:
        fixture = WaveformParameterFuzzTests("test_any_parameters")
        fixture.mktemp = self.mktemp  # type: ignore[method-assign]
        fixture.addCleanup = self.addCleanup  # type: ignore[method-assign]
        fixture.setUp()
        self.waveform = fixture

    def waveform_status(self, query: str) -> int:
        d = self.waveform.stub.get(f"http://streamsrv.test/api/v1/waveform/{quote(TRACK)}?{query}")
        self.waveform.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(self.waveform.failures.take(), [])
        return int(response.code)

    def test_window_start_past_int64(self) -> None:
        """``start=1e300`` (finite, past any seekable timestamp) is an empty window, not a 500
        (PyAV's seek raised OverflowError)."""
        self.assertEqual(self.waveform_status("start=1e300"), 200)
        self.assertEqual(self.waveform_status("start=1e18&end=1e300"), 200)

    def test_unicode_digits(self) -> None:
        """``samples_per_pixel=²`` is a 400: ``"²".isdigit()`` is true but ``int("²")`` fails."""
        self.assertEqual(self.waveform_status("samples_per_pixel=%C2%B2"), 400)

    def test_retry_after_unicode_digits(self) -> None:
        """A gateway's ``Retry-After: ²`` (a latin-1 byte) is unreadable, not a ValueError."""
        from streamsrv.notifications.channels.base import parse_retry_after

        self.assertIsNone(parse_retry_after("\u00b2", NOW))
        self.assertEqual(parse_retry_after("30", NOW), 30.0)

    def test_listen_port_unicode_digits(self) -> None:
        """``STREAMSRV_LISTEN=tcp:²`` is refused with a reason, not a ValueError traceback."""
        from streamsrv.config.values import _endpoint_problems

        self.assertIn("port must be a number", _endpoint_problems("tcp:\u00b2")[0])
        self.assertIn("index=N", _endpoint_problems("systemd:domain=INET:index=\u00b2")[0])
