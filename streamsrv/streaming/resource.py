# -*- test-case-name: tests.test_stream -*-
"""``GET``/``HEAD /stream/{path}``: original audio files over HTTP, to RFC 9110.

The resource turns a request into one of: 200 with the whole file, 206 with
one range or ``multipart/byteranges``, 304, 412, 416, or a JSON error; then
hands the body to a sender from :mod:`streamsrv.streaming.producers`.
Validators are a strong ``ETag`` (size, mtime, inode) and ``Last-Modified``;
``If-Range`` is honoured (``twisted.web.static.File`` ignores it), and a
request whose ranges are all unsatisfiable gets 416 (where ``static.File``
fails with 500).

It never joins the request path to the file system as given: the raw,
still-encoded path goes through :func:`streamsrv.media.paths.safe_media_path`
and every refusal is a 404 and a security event.  Only files whose type is
audio are served; dotfiles, directories and anything else answer 404.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import stat
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, cast
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import server

from streamsrv.audio.formats import AudioFormat
from streamsrv.auth.roles import Shaping, shaping_for
from streamsrv.auth.signing import max_age_for
from streamsrv.errors import ApiError
from streamsrv.health.metrics import Metrics
from streamsrv.media.identity import make_etag
from streamsrv.media.openfiles import OPEN_FLAGS, OpenFileCache
from streamsrv.media.paths import ResolvedPathCache
from streamsrv.middleware.audit import file_access
from streamsrv.middleware.guard import Admission, Guard
from streamsrv.middleware.headers import mark_media
from streamsrv.streaming.conditional import (
    Outcome,
    http_date,
    if_range_allows_partial,
)
from streamsrv.streaming.durations import TrackDurations
from streamsrv.streaming.multipart import make_boundary, multipart_layout
from streamsrv.streaming.producers import (
    FileBodyProducer,
    Segment,
    SendfileSender,
    can_sendfile,
)
from streamsrv.streaming.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    parse_range_header,
    plays_from_start,
    resolve_ranges,
)
from streamsrv.streaming.throughput import ThroughputTracker
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.streaming.tracks import (
    IndexMissing,
    TrackPending,
    regular_file_stat,
    request_preconditions,
    resolve_track,
)
from streamsrv.streaming.transcoded import TranscodeService
from streamsrv.transcode import Rendition
from streamsrv.transcode.layout import MAX_GAIN_MDB
from streamsrv.web.asyncleaf import AsyncLeaf

log = Logger()


def rendition_for(request: Any, measured_mbps: float | None = None) -> Rendition:
    """The rendition ``format``/``bitrate``/``t``/``channels``/``container`` ask for (``auto`` chooses).

    ``auto`` picks Opus (the best quality per bit) at a bitrate from
    ``Save-Data``, the ``Downlink`` (Mb/s) and ``ECT`` hints and the
    throughput measured on this client's recent streams (the slowest counts):
    32 kb/s to save data or below 0.3 Mb/s, 64 below 1 Mb/s, else 96 — all
    within every role's cap (``stream:hq`` starts above 192).  Apple's
    WebKit on iOS and Safari on macOS (and AVFoundation players) are given
    AAC in M4A instead, at 32, 64 or 128 kb/s: they do not all play Ogg Opus.

    :raise ApiError: ``BAD_REQUEST`` for a missing, repeated or invalid parameter.
    """
    values: dict[str, str | None] = {}
    for name in ("format", "bitrate", "t", "container", "channels"):
        given = request.args.get(name.encode("ascii"))
        if given is not None and len(given) != 1:
            raise ApiError("BAD_REQUEST", f"{name} may be given once.")
        values[name] = given[0].decode("latin-1") if given else None
    fmt = values["format"]
    if fmt is None:
        raise ApiError("BAD_REQUEST", "format is required with bitrate or t (mp3, aac, opus, flac or auto).")
    if fmt == "auto":
        aac = _plays_no_ogg(request)
        fmt = "aac" if aac else "opus"
        if values["bitrate"] is None:
            kbps = _auto_bitrate(request, measured_mbps)
            values["bitrate"] = str(AUTO_AAC_KBPS[kbps] if aac else kbps)
    try:
        return Rendition.from_query(
            fmt, values["bitrate"], values["t"], values["channels"], container=values["container"]
        )
    except ValueError as e:
        raise ApiError("BAD_REQUEST", str(e)) from None


#: ``format=auto`` for clients given AAC: the AAC kb/s standing in for each Opus choice.
AUTO_AAC_KBPS: Final = {32: 32, 64: 64, 96: 128}

#: The ``ECT`` (effective connection type) Client Hint, as the Mb/s it stands for at most.
_ECT_MBPS: Final = {b"slow-2g": 0.05, b"2g": 0.25, b"3g": 0.7}

#: ``Vary`` of a ``format=auto`` response: what the choice was made from.
AUTO_VARY: Final = b"Save-Data, Downlink, ECT, User-Agent"


def _plays_no_ogg(request: Any) -> bool:
    """Whether the client is WebKit on iOS, Safari on macOS or AVFoundation (Ogg Opus is not sure there)."""
    agent = request.getHeader(b"user-agent") or b""
    if b"AppleCoreMedia" in agent or any(device in agent for device in (b"iPhone", b"iPad", b"iPod")):
        return True
    others = (b"Chrome", b"Chromium", b"Edg", b"OPR", b"Firefox")
    return b"Safari" in agent and b"Version/" in agent and not any(name in agent for name in others)


def _auto_bitrate(request: Any, measured_mbps: float | None) -> int:
    if (request.getHeader(b"save-data") or b"").strip().lower() == b"on":
        return 32
    try:
        downlink = float((request.getHeader(b"downlink") or b"10").decode("latin-1"))
    except ValueError:
        downlink = 10.0
    if not downlink >= 0:  # NaN
        downlink = 10.0
    ect = _ECT_MBPS.get((request.getHeader(b"ect") or b"").strip().lower())
    if ect is not None:
        downlink = min(downlink, ect)
    if measured_mbps is not None:
        downlink = min(downlink, measured_mbps)
    if downlink < 0.3:
        return 32
    return 64 if downlink < 1.0 else 96


#: ``(request, track, spans, sent, size, duration_s)``: see :class:`StreamResource`.
Delivered = Callable[[Any, str, list[tuple[int, int]], int, int, "float | None"], None]

#: Cache policy for original files: private (media is usually behind
#: credentials), revalidated with the strong ETag after an hour.
CACHE_MAX_AGE_S = 3600
CACHE_CONTROL = b"private, max-age=%d" % CACHE_MAX_AGE_S


def _starts_stream(request: Any) -> bool:
    """Whether *request* starts a stream: a track asked from its first byte (the stream-start limits)."""
    return bool(b"/".join(request.postpath)) and plays_from_start(_header(request, b"range"))


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


class StreamResource(AsyncLeaf):
    """Serve original files below *media_root* with ranges and validators.

    :param media_root: the library root (resolved here once).
    :param guard: admission (credentials, revocation, rate limits, permission).
    :param tracker: open-stream bookkeeping and shutdown drain.
    :param durations: the catalog's durations, for ``X-Content-Duration``
        (``None``: the header is not sent).
    :param max_ranges: most ranges answered in one multipart response.
    :param use_sendfile: allow zero-copy sends on plain TCP.
    :param is_audio: whether the catalog knows a track as audio (only those
        are served); ``None`` serves every file with an audio extension.
    :param index_missing: the catalog's ``index_missing``: a track it does
        not know yet is read on demand before it is answered (cold start).
    :param transcodes: serves ``format=``/``bitrate=``/``t=`` renditions
        (``None``: they answer ``UNSUPPORTED_MEDIA``).
    :param replaygain_of: a track's ReplayGain values (the catalog's), for
        ``replaygain=track|album`` on transcodes.
    :param shaping: per-role rate caps (``limit_rate`` after
        ``limit_rate_after``) for originals; a capped stream uses the
        portable producer, never ``sendfile``.
    :param on_delivered: told of every body sent (completed or cut short),
        for listening sessions: ``(request, track, spans, sent, size,
        duration_s)`` where *spans* are the ``(start, length)`` byte ranges
        asked for and *sent* the body bytes that left; its exceptions are
        logged, never raised.
    """

    route = "stream"

    #: Recent resolutions of raw request paths (made on first use).
    _path_cache: ResolvedPathCache[AudioFormat] | None = None

    #: The fast lane's open descriptors (made on first use).
    _open_files: OpenFileCache | None = None

    def __init__(
        self,
        media_root: Path,
        *,
        guard: Guard,
        tracker: StreamTracker,
        metrics: Metrics,
        clock: IReactorTime,
        durations: TrackDurations | None = None,
        max_ranges: int = 16,
        use_sendfile: bool = True,
        on_delivered: Delivered | None = None,
        is_audio: Callable[[str], bool] | None = None,
        index_missing: IndexMissing | None = None,
        transcodes: TranscodeService | None = None,
        shaping: Mapping[str, Shaping] | None = None,
        replaygain_of: Callable[[str], Awaitable[Mapping[str, float] | None]] | None = None,
    ) -> None:
        super().__init__()
        self._root = Path(os.path.realpath(media_root))
        self._guard = guard
        self._tracker = tracker
        self._metrics = metrics
        self._clock = clock
        self._durations = durations
        self._max_ranges = max_ranges
        self._use_sendfile = use_sendfile
        self._on_delivered = on_delivered
        self._is_audio = is_audio
        self._index_missing = index_missing
        self._transcodes = transcodes
        self._shaping = dict(shaping or {})
        self._throughput = ThroughputTracker()
        self._replaygain_of = replaygain_of

    async def handle(self, request: Any) -> bytes | int:
        """Admit the request, then answer with the file, a range of it, a rendition, or an error.

        :meth:`answer_now` does the same without this coroutine whenever the
        guard can admit the request at once.
        """
        admission = await self._guard.admit(
            request, permission="stream:read", signed=True, stream_start=_starts_stream(request)
        )
        answer = self._admitted(request, admission)
        return answer if isinstance(answer, (bytes, int)) else await answer

    def answer_now(self, request: Any) -> bytes | int | Coroutine[Any, Any, bytes | int]:
        """:meth:`handle` without a coroutine when nothing has to wait: the usual range request.

        That is: the guard admits at once (a cached or no token, an in-memory
        limiter) and the original file is served, its duration known.  A
        rendition, a track's first request (which waits once for the
        catalog's record of its duration) or an admission that must wait go
        on in a coroutine, from where this left off.
        """
        admission = self._guard.admit_now(
            request, permission="stream:read", signed=True, stream_start=_starts_stream(request)
        )
        if admission is None:
            return self.handle(request)
        return self._admitted(request, admission)

    def _admitted(self, request: Any, admission: Admission) -> bytes | int | Coroutine[Any, Any, bytes | int]:
        """The answer to an admitted request, or the coroutine that will give it."""
        if request.args.get(b"download") == [b"1"]:
            self._guard.require(request, admission, "stream:download")
        if self._shaping:
            request.stream_shaping = shaping_for(admission.principal.roles, self._shaping)
        if b"format" in request.args or b"bitrate" in request.args or b"t" in request.args:
            return self._transcode(request, admission)
        self._refuse_if_draining(request)
        try:
            track, path, fmt = self._resolve(request)
        except TrackPending as pending:
            return self._once_indexed(pending, request)
        return self._known(request, track, path, fmt)

    def _known(
        self, request: Any, track: str, path: Path, fmt: AudioFormat
    ) -> bytes | int | Coroutine[Any, Any, bytes | int]:
        """The original file's answer, once its duration is known (the first request waits once)."""
        request.delivered_as = (fmt.codec, None)  # an original: bitrate estimated from size, duration
        durations = self._durations
        if durations is not None and not durations.known(track):
            return self._serve_once_known(durations, request, track, path, fmt)
        return self._serve(request, track, path, fmt)

    async def _once_indexed(self, pending: TrackPending, request: Any) -> bytes | int:
        """Answer once the catalog has read a track it did not know (404 if it proved unreadable)."""
        await pending.ready
        track, path, fmt = self._resolve(request, index=False)
        answer = self._known(request, track, path, fmt)
        return answer if isinstance(answer, (bytes, int)) else await answer

    async def _serve_once_known(
        self, durations: TrackDurations, request: Any, track: str, path: Path, fmt: AudioFormat
    ) -> bytes | int:
        await durations.load(track)  # once per track: the catalog's record, read off the reactor
        return self._serve(request, track, path, fmt)

    def _refuse_if_draining(self, request: Any) -> None:
        """503 with ``Connection: close`` once the tracker stopped admitting streams (shutdown)."""
        if not self._tracker.accepting:
            request.setHeader(b"connection", b"close")
            raise ApiError("UNAVAILABLE", "The server is shutting down.", {"Retry-After": "5"})

    def _raw_path(self, request: Any) -> bytes:
        """The still-encoded track path after ``/stream/``."""
        prefix = b"/" + b"/".join(request.prepath) + b"/"
        return request.path[len(prefix) :] if request.path.startswith(prefix) else b""

    def _resolve(self, request: Any, *, index: bool = True) -> tuple[str, Path, AudioFormat]:
        """The track; :raise TrackPending: when *index* and the catalog reads it on demand now."""
        cache = self._path_cache
        if cache is None:
            cache = self._path_cache = ResolvedPathCache(self._clock.seconds)
        index_missing = self._index_missing if index else None
        return resolve_track(
            self._root, request, self._raw_path(request), self._is_audio, cache, index_missing
        )

    async def _with_replaygain(self, request: Any, track: str, rendition: Rendition) -> Rendition:
        """*rendition* with ``replaygain=track|album`` applied, limited so the peak does not clip."""
        given = request.args.get(b"replaygain")
        if given is None:
            return rendition
        if given not in ([b"track"], [b"album"]):
            raise ApiError("BAD_REQUEST", "replaygain must be track or album.")
        mode = given[0].decode("ascii")
        values = await self._replaygain_of(track) if self._replaygain_of is not None else None
        gain = (values or {}).get(f"{mode}_gain")
        if gain is None:
            return rendition  # nothing known: the audio as it is
        peak = (values or {}).get(f"{mode}_peak")
        if peak and peak > 0:
            gain = min(gain, -20 * math.log10(peak))
        gain_mdb = max(-MAX_GAIN_MDB, min(MAX_GAIN_MDB, round(gain * 1000)))
        return dataclasses.replace(rendition, gain_mdb=gain_mdb)

    async def _transcode(self, request: Any, admission: Admission) -> bytes | int:
        """A rendition of the track (``format``, ``bitrate`` kb/s, ``t`` seconds)."""
        if self._transcodes is None:
            raise ApiError("UNSUPPORTED_MEDIA", "Transcoding is not available in this build.")
        self._refuse_if_draining(request)
        rendition = rendition_for(
            request, self._throughput.estimate_mbps(request.client_ip, self._clock.seconds())
        )
        if request.args.get(b"format") == [b"auto"]:
            # The same URL gives another rendition to another client: say on what.
            vary = request.responseHeaders.getRawHeaders(b"vary", [])  # CORS may have set Origin
            request.responseHeaders.setRawHeaders(b"vary", [b", ".join([*vary, AUTO_VARY])])
            request.setHeader(b"accept-ch", b"Downlink, ECT, Save-Data")
        if rendition.needs_hq:
            self._guard.require(request, admission, "stream:hq")
        try:
            track, path, _fmt = self._resolve(request)
        except TrackPending as pending:
            await pending.ready
            track, path, _fmt = self._resolve(request, index=False)
        rendition = await self._with_replaygain(request, track, rendition)
        kbps = rendition.bitrate_kbps
        request.delivered_as = (rendition.format, kbps * 1000 if kbps is not None else None)
        info = regular_file_stat(path)
        on_delivered = self._on_delivered

        def on_end(spans: list[tuple[int, int]], sent: int, size: int, completed: bool) -> None:
            range_header = request.getHeader(b"range")
            outcome = "complete" if completed else "aborted"
            file_access(request, track=track, outcome=outcome, sent=sent, range_header=range_header)
            if on_delivered is None:
                return
            try:
                on_delivered(request, track, spans, sent, size, None)
            except Exception:
                log.failure("stream: the delivery observer failed")

        body = await self._transcodes.answer(
            request,
            track=track,
            path=path,
            info=info,
            rendition=rendition,
            cache_control=self._cache_control(request),
            framing=functools.partial(self._framing, request),
            on_end=on_end,
        )
        if body is not server.NOT_DONE_YET and request.method == b"HEAD":
            # No body, so no on_end: HEAD is in the audit trail as for originals.
            range_header = request.getHeader(b"range")
            file_access(request, track=track, outcome="head", sent=0, range_header=range_header)
        return body

    def _open(self, path: Path) -> tuple[IO[bytes], os.stat_result]:
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            raise ApiError("NOT_FOUND") from None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise ApiError("NOT_FOUND") from None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ApiError("NOT_FOUND")
        return cast(IO[bytes], _OpenFile(fd)), info

    def _serve(self, request: Any, track: str, path: Path, fmt: AudioFormat) -> bytes | int:
        fileobj, info = self._open(path)
        try:
            return self._answer(request, track, fmt, fileobj, info)
        except BaseException:
            fileobj.close()
            raise

    def _answer(
        self, request: Any, track: str, fmt: AudioFormat, fileobj: IO[bytes], info: os.stat_result
    ) -> bytes | int:
        size = info.st_size
        last_modified = int(info.st_mtime)
        block = file_headers(track, size, info.st_mtime_ns, info.st_ino, last_modified)
        etag = block.etag

        request.setHeader(b"etag", block.etag_value)
        request.setHeader(b"last-modified", block.last_modified_value)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"cache-control", self._cache_control(request))
        mark_media(request)

        outcome = request_preconditions(request, etag, last_modified)
        if outcome is Outcome.NOT_MODIFIED:
            fileobj.close()
            request.setResponseCode(304)
            return b""
        if outcome is Outcome.PRECONDITION_FAILED:
            raise ApiError("PRECONDITION_FAILED")

        duration = self._durations.get(track, etag) if self._durations is not None else None
        if duration is not None:
            request.setHeader(b"x-content-duration", b"%.3f" % duration)
        download = request.args.get(b"download") == [b"1"]
        request.setHeader(b"content-disposition", block.attachment if download else block.inline)

        segments, trailer, length = self._framing(request, size, etag, last_modified, fmt.mime_type)
        return self._send(request, track, fileobj, segments, trailer, length, (size, duration))

    def _cache_control(self, request: Any) -> bytes:
        """Private caching, never past the expiry of the signed URL that admitted the request."""
        expires = request.signed_expires
        if expires is None:
            return CACHE_CONTROL
        max_age = min(CACHE_MAX_AGE_S, max_age_for(expires, self._clock.seconds()))
        return b"private, max-age=%d" % max_age

    def _ranges(self, request: Any, size: int, etag: str, last_modified: int) -> list[ByteRange] | None:
        """The ranges to send, or ``None`` for the whole representation."""
        header = _header(request, b"range")
        if header is None:
            return None
        try:
            specs = parse_range_header(header)
        except ValueError:
            self._metrics.count(self._metrics.range_requests, "ignored")
            return None
        if not if_range_allows_partial(_header(request, b"if-range"), etag, last_modified):
            self._metrics.count(self._metrics.range_requests, "if_range_mismatch")
            return None
        try:
            ranges = resolve_ranges(specs, size, self._max_ranges)
        except RangeNotSatisfiable:
            self._metrics.count(self._metrics.range_requests, "unsatisfiable")
            error = ApiError("RANGE_NOT_SATISFIABLE")
            raise _Unsatisfiable(error, size) from None
        if ranges is None:
            self._metrics.count(self._metrics.range_requests, "ignored")
            return None
        self._metrics.count(self._metrics.range_requests, "single" if len(ranges) == 1 else "multi")
        return ranges

    def _framing(
        self, request: Any, size: int, etag: str, last_modified: int, content_type: str
    ) -> tuple[list[Segment], bytes, int]:
        """Frame the answer to *request* for a representation of *size* bytes.

        Sets the status and ``Content-Type``, ``Content-Range`` and
        ``Content-Length``: 200 with the whole representation, 206 with one
        range, or 206 ``multipart/byteranges`` whose parts carry
        *content_type*, as :meth:`_ranges` decides (it raises the 416).
        Originals and transcodes (:data:`~streamsrv.streaming.transcoded.Framing`)
        share it, so both follow the same range rules.

        :return: The body as ``(segments, trailer, length)``.
        """
        ranges = self._ranges(request, size, etag, last_modified)
        if ranges is None:
            request.setResponseCode(200)
            request.setHeader(b"content-type", content_type.encode("ascii"))
            request.setHeader(b"content-length", b"%d" % size)
            return [(b"", 0, size)], b"", size
        if len(ranges) == 1:
            (byte_range,) = ranges
            request.setResponseCode(206)
            request.setHeader(b"content-type", content_type.encode("ascii"))
            request.setHeader(b"content-range", byte_range.content_range(size).encode("ascii"))
            request.setHeader(b"content-length", b"%d" % byte_range.length)
            return [(b"", byte_range.start, byte_range.length)], b"", byte_range.length
        layout = multipart_layout(ranges, size, content_type, make_boundary())
        request.setResponseCode(206)
        request.setHeader(b"content-type", layout.content_type.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % layout.content_length)
        segments = [(prefix, r.start, r.length) for prefix, r in layout.parts]
        return segments, layout.trailer, layout.content_length

    def _send(
        self,
        request: Any,
        track: str,
        fileobj: IO[bytes],
        segments: list[tuple[bytes, int, int]],
        trailer: bytes,
        length: int,
        source: tuple[int, float | None],
    ) -> bytes | int:
        """Send *segments* of *fileobj*; *source* is the file's size and duration."""
        if request.method == b"HEAD" or length == 0:
            fileobj.close()
            outcome = "head" if request.method == b"HEAD" else "complete"
            range_header = request.getHeader(b"range")
            file_access(request, track=track, outcome=outcome, sent=0, range_header=range_header)
            return b""
        sender: FileBodyProducer | SendfileSender
        tracker = self._tracker
        spans = [(offset, count) for _, offset, count in segments]
        size, duration = source

        began = self._clock.seconds()

        def on_end(completed: bool) -> None:
            tracker.remove(sender)
            kind = "sendfile" if isinstance(sender, SendfileSender) else "producer"
            self.body_ended(
                request, track, (spans, size, duration), began, kind, sender.bytes_written, completed
            )

        cap = getattr(request, "stream_shaping", None)
        if cap is not None:
            sender = FileBodyProducer(
                request, fileobj, segments, trailer, on_end, shaping=(cap.rate, cap.after, self._clock)
            )
        elif self._use_sendfile and len(segments) == 1 and not trailer and can_sendfile(request):
            _, offset, count = segments[0]
            sender = SendfileSender(request, fileobj, offset, count, on_end)
        else:
            sender = FileBodyProducer(request, fileobj, segments, trailer, on_end)
        tracker.add(sender)
        sender.start()
        return server.NOT_DONE_YET

    def body_ended(
        self,
        request: Any,
        track: str,
        source: tuple[list[tuple[int, int]], int, float | None],
        began: float,
        kind: str,
        sent: int,
        completed: bool,
    ) -> None:
        """Account for one body of an original that ended: throughput, tracker, metrics, audit, sessions.

        :param source: the ``(start, length)`` spans asked for, the file's size and duration.
        :param kind: ``sendfile`` or ``producer``, how the bytes left.
        :param sent: body bytes that left; *completed* whether all of them did.
        """
        spans, size, duration = source
        if completed:
            now = self._clock.seconds()
            self._throughput.record(request.client_ip, sent, now - began, now)
        metrics = self._metrics
        metrics.count(metrics.stream_bytes, kind, amount=sent)
        if not completed:
            metrics.aborted.inc()
        outcome = "complete" if completed else "aborted"
        file_access(
            request, track=track, outcome=outcome, sent=sent, range_header=request.getHeader(b"range")
        )
        on_delivered = self._on_delivered
        if on_delivered is not None:
            try:
                on_delivered(request, track, spans, sent, size, duration)
            except Exception:
                log.failure("stream: the delivery observer failed")

    def open_plain(self, raw: bytes, roles: frozenset[str]) -> PlainFile | None:
        """The original named by *raw*, opened, if the fast lane may serve it as :meth:`answer_now` would.

        That is: streams are admitted (no shutdown), *roles* have no rate cap,
        *raw* resolved before (the path cache, whose entry is checked against
        the device and inode of the descriptor the open-file cache gives, kept
        or just opened, instead of a ``stat``), the
        catalog knows the track as audio and its duration was read, and the
        file is a non-empty regular file.  Otherwise ``None``, with nothing
        left open, logged or counted: the full path then answers.
        """
        cache = self._path_cache
        if cache is None or not self._tracker.accepting:
            return None
        if self._shaping and shaping_for(roles, self._shaping) is not None:
            return None
        hit = cache.recall(raw)
        if hit is None:
            return None
        track, path, fmt, device, inode = hit
        durations = self._durations
        if (self._is_audio is not None and not self._is_audio(track)) or (
            durations is not None and not durations.known(track)
        ):
            return None
        files = self._open_files
        if files is None:
            files = self._open_files = OpenFileCache(self._clock.seconds)
        leased = files.lease(str(path))
        if leased is None:
            return None
        fileobj, info = leased
        if info.st_ino != inode or info.st_dev != device or info.st_size == 0:
            fileobj.close()
            return None
        block = file_headers(track, info.st_size, info.st_mtime_ns, info.st_ino, int(info.st_mtime))
        duration = durations.get(track, block.etag) if durations is not None else None
        # A lease has what the sendfile sender uses of a file: fileno and close.
        return PlainFile(track, fmt, cast(IO[bytes], fileobj), info, block, duration)

    @property
    def guard(self) -> Guard:
        """The admission of ``/stream`` requests."""
        return self._guard

    @property
    def use_sendfile(self) -> bool:
        """Whether bodies may leave with ``sendfile`` (``STREAMSRV_SENDFILE``)."""
        return self._use_sendfile

    @property
    def tracker(self) -> StreamTracker:
        """The open-stream bookkeeping (senders are added and removed there)."""
        return self._tracker


class PlainFile(NamedTuple):
    """An original opened for the fast lane (:meth:`StreamResource.open_plain`)."""

    track: str
    fmt: AudioFormat
    file: IO[bytes]
    info: os.stat_result
    headers: FileHeaders
    duration: float | None


class _OpenFile:
    """An open track as the senders use it (``fileno``, ``seek``, ``read``, ``close``), over a raw descriptor.

    ``os.fdopen`` would ``fstat`` the descriptor again (``FileIO`` does) when
    :meth:`StreamResource._open` has just done so.  Closed at most once;
    a lost one is closed when collected, as a file object would be.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        return self._fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fileno(), offset, whence)

    def read(self, n: int = -1) -> bytes:
        fd = self.fileno()
        if n < 0:
            n = max(0, os.fstat(fd).st_size - os.lseek(fd, 0, os.SEEK_CUR))
        return os.read(fd, n)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class FileHeaders(NamedTuple):
    """The header values of one version of one file, computed once (see :func:`file_headers`)."""

    etag: str
    etag_value: bytes
    last_modified_value: bytes
    inline: bytes
    attachment: bytes


@functools.lru_cache(maxsize=4096)
def file_headers(track: str, size: int, mtime_ns: int, inode: int, last_modified: int) -> FileHeaders:
    """``ETag``, ``Last-Modified`` and both ``Content-Disposition`` values of a file version.

    Keyed by everything they are made of, so a changed file (size, mtime or
    inode) gets its own; a player asks many ranges of the same few files.
    """
    etag = make_etag(size, mtime_ns, inode)
    filename = quote(track.rsplit("/", 1)[-1]).encode("ascii")
    return FileHeaders(
        etag=etag,
        etag_value=etag.encode("ascii"),
        last_modified_value=http_date(last_modified).encode("ascii"),
        inline=b"inline; filename*=UTF-8''" + filename,
        attachment=b"attachment; filename*=UTF-8''" + filename,
    )


class _Unsatisfiable(ApiError):
    """416 carrying the ``Content-Range: bytes */SIZE`` it must be sent with."""

    def __init__(self, error: ApiError, size: int) -> None:
        super().__init__(error.code, error.message, {"Content-Range": f"bytes */{size}"})
