# -*- test-case-name: tests.test_hls_resource -*-
"""``GET``/``HEAD /hls/{path}/…``: HLS playlists and fMP4 segments of a track, made on demand.

Routes, all below ``/hls/{path}/`` (``{path}`` may contain ``/``, so the
known suffixes are split off the end of the raw request path):

- ``master.m3u8``: the multivariant playlist (the lossless rung only for
  ``stream:hq``; for a signed master, only when the backend bound ``hq=1``);
- ``{variant}/index.m3u8``: the VOD media playlist;
- ``{variant}/init.mp4`` and ``{variant}/{n}.m4s``: the init and media segments.

Every request is admitted by :meth:`Guard.admit` (``stream:read``, signed
URLs accepted; the lossless variant also needs ``stream:hq``).  Every URI a
playlist lists carries its own signed query, made with the server's current
URL signing key over the child's decoded path, lasting the track's duration
plus a margin, whether the playlist was fetched with a signed URL or a JWT;
``uid`` and ``ip`` bound into a signed master are bound into its children
too, and a JWT's ``sub`` becomes the children's ``uid``.  With no signing key
configured, children carry no credentials and the player must send its JWT.

Segments are encoded by the worker pool, only the one asked for, and kept in
the artifact cache (keyed by the source's identity, the variant and the
segment number); identical concurrent requests share one encode; after a
segment is served the next :data:`PREFETCH_SEGMENTS` are encoded in the
background.  No redirect is ever answered.

This module never joins a request path to the file system as given (the raw
path goes through :func:`safe_media_path`, a refusal is a 404 and a security
event), never runs PyAV on the reactor thread, and never puts a secret or a
file-system path in a response.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from streamsrv.audio.jobs import JOB_FAILURES, job_error
from streamsrv.audio.workers import PoolFull, WorkerCrashed, WorkerPool
from streamsrv.auth.signing import SignedUrlError, SigningKey, decode_signed_path, max_age_for
from streamsrv.cache.artifacts import ArtifactCache, FileIdentity, artifact_key
from streamsrv.errors import ApiError
from streamsrv.hls import playlists
from streamsrv.hls.segments import (
    AAC_LADDER,
    FORMAT_VERSION,
    LOSSLESS,
    VARIANTS,
    SegmentError,
    Track,
    Variant,
    encode_init,
    encode_segment,
    probe_track,
)
from streamsrv.middleware.compression import accepts_gzip, gzip_etag, identity_if_none_match
from streamsrv.middleware.guard import Admission, Guard
from streamsrv.middleware.headers import mark_media
from streamsrv.streaming.conditional import Outcome, evaluate_preconditions
from streamsrv.streaming.producers import FileBodyProducer
from streamsrv.streaming.tracks import resolve_media_indexed
from streamsrv.web.asyncleaf import AsyncLeaf

__all__ = ["PLAYLIST_TYPE", "SEGMENT_TYPE", "HlsResource", "HlsTarget", "parse_hls_path"]

log = Logger()

#: RFC 8216 §4: the playlist type Apple's players expect.
PLAYLIST_TYPE: Final = b"application/vnd.apple.mpegurl"

#: Init and media segments of an audio-only fMP4 rendition (Apple's authoring
#: spec 10.4 lists ``audio/mp4`` for fMP4 audio; RFC 6381 ``audio/`` for a
#: file with no video track).
SEGMENT_TYPE: Final = b"audio/mp4"

#: Playlists carry fresh credentials: a private cache may keep them, but must revalidate.
PLAYLIST_CACHE_CONTROL: Final = b"private, no-cache"

#: Init and media segments never change for a given ETag: a day, clamped to a signed URL's expiry.
SEGMENT_MAX_AGE_S: Final = 86400

#: Segments encoded ahead after serving one.
PREFETCH_SEGMENTS: Final = 2

#: Probed tracks remembered (file identity → :class:`Track`).
TRACK_CACHE_SIZE: Final = 4096

#: The artifact cache's kind for everything HLS.
ARTIFACT_KIND: Final = "hls"

#: ``STREAMSRV_URL_MAX_TTL_S``'s default: child ``expires`` never lies further ahead.
DEFAULT_URL_MAX_TTL_S: Final = 7 * 24 * 3600

_SEGMENT = re.compile(rb"(0|[1-9][0-9]{0,8})\.m4s")

#: ``(request, track, segment number, body bytes sent)``, for listening sessions.
SegmentObserver = Callable[[Any, str, int, int], None]


@dataclass(frozen=True)
class HlsTarget:
    """What an HLS request path names.

    :ivar track_raw: The track's path, still percent-encoded.
    :ivar kind: ``"master"``, ``"media"``, ``"init"`` or ``"segment"``.
    :ivar variant: The variant (``None`` for the master).
    :ivar segment: The segment number (``None`` unless *kind* is ``"segment"``).
    :ivar leaf: The raw last part of the path (``b"master.m3u8"``, ``b"3.m4s"``…).
    """

    track_raw: bytes
    kind: str
    variant: Variant | None = None
    segment: int | None = None
    leaf: bytes = b""


def parse_hls_path(raw: bytes, variants: Mapping[str, Variant] = VARIANTS) -> HlsTarget | None:
    """Split the raw tail of an ``/hls/`` path (after ``/hls/``) into track and target.

    Pure: ``b"jazz/So%20What.mp3/128k/3.m4s"`` is track ``b"jazz/So%20What.mp3"``,
    variant ``128k``, segment 3.  Variant names (the keys of *variants*: the
    configured ladder and the lossless rung) and leaves are matched as raw
    bytes (no decoding): anything else is ``None`` (a 404).
    """
    master = b"/" + playlists.MASTER_NAME.encode()
    if raw.endswith(master):
        track = raw[: -len(master)]
        return HlsTarget(track, "master", leaf=master[1:]) if track else None
    parts = raw.rsplit(b"/", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    track, name, leaf = parts
    variant = variants.get(name.decode("ascii", "replace"))
    if variant is None:
        return None
    if leaf == playlists.MEDIA_NAME.encode():
        return HlsTarget(track, "media", variant, leaf=leaf)
    if leaf == playlists.INIT_NAME.encode():
        return HlsTarget(track, "init", variant, leaf=leaf)
    match = _SEGMENT.fullmatch(leaf)
    if match is not None:
        return HlsTarget(track, "segment", variant, int(match.group(1)), leaf=leaf)
    return None


class _Metrics:
    """HLS metric families, registered next to the site's."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "streamsrv_hls_requests", "HLS requests answered 2xx/3xx, by kind", ["kind"], registry=registry
        )
        self.cache = Counter(
            "streamsrv_hls_segment_cache",
            "Init/media segment lookups by result",
            ["result"],
            registry=registry,
        )
        self.encode_seconds = Histogram(
            "streamsrv_hls_encode_seconds",
            "Wall time from submitting a segment encode to having its bytes",
            ["variant"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=registry,
        )
        self.prefetch = Counter(
            "streamsrv_hls_prefetch", "Background segment encodes by outcome", ["outcome"], registry=registry
        )


class _Shared:
    """One encode-and-store whose result several requests wait for."""

    def __init__(self) -> None:
        self.waiters: list[Deferred[bytes]] = []

    def wait(self) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.waiters.append(d)
        return d

    def fire(self, result: bytes | Failure) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


class HlsResource(AsyncLeaf):
    """Serve HLS playlists and segments of the tracks below *media_root*.

    :param media_root: The library root (resolved here once).
    :param guard: Admission (credentials, revocation, rate limits, permission).
    :param pool: Runs probes and encodes.
    :param cache: Keeps init and media segments (kind ``hls``).
    :param url_keys: URL signing keys, current first; children are signed with
        the first.  Empty: children carry no credentials.
    :param clock: Time for child expiry and cache lifetimes.
    :param catalog: Knows which files are audio (``is_audio``); ``None``
        serves every audio file by extension.
    :param metrics: The site's :class:`~streamsrv.health.metrics.Metrics`;
        HLS families are registered in its registry.
    :param url_max_ttl_s: ``STREAMSRV_URL_MAX_TTL_S``: the furthest a child's
        ``expires`` may lie.
    :param prefetch: Segments encoded ahead after one is served.
    :param on_segment: Told ``(request, track, n, bytes_sent)`` after each
        media segment body (for listening sessions); its exceptions are logged.
    :param ladder: The AAC rungs (``STREAMSRV_HLS_LADDER``, see
        :func:`~streamsrv.hls.playlists.aac_ladder`); the lossless rung comes on top.
    """

    route = "hls"

    def __init__(
        self,
        media_root: Path,
        *,
        guard: Guard,
        pool: WorkerPool,
        cache: ArtifactCache,
        url_keys: Sequence[SigningKey],
        clock: IReactorTime,
        catalog: Any = None,
        metrics: Any = None,
        url_max_ttl_s: int = DEFAULT_URL_MAX_TTL_S,
        prefetch: int = PREFETCH_SEGMENTS,
        on_segment: SegmentObserver | None = None,
        ladder: Sequence[Variant] = AAC_LADDER,
    ) -> None:
        super().__init__()
        self._root = Path(os.path.realpath(media_root))
        self._guard = guard
        self._pool = pool
        self._cache = cache
        self._url_keys = tuple(url_keys)
        self._clock = clock
        self._catalog = catalog
        self._metrics = _Metrics(metrics.registry) if metrics is not None else None
        self._url_max_ttl_s = url_max_ttl_s
        self._prefetch = prefetch
        self._on_segment = on_segment
        self._ladder = tuple(ladder)
        self._variants = {v.name: v for v in (*self._ladder, LOSSLESS)}
        self._tracks: OrderedDict[str, Track] = OrderedDict()
        self._inflight: dict[str, _Shared] = {}
        #: Background encodes running now (tests wait for them).
        self.prefetching: set[Deferred[Any]] = set()

    # -- HTTP --------------------------------------------------------------------------------

    async def handle(self, request: Any) -> bytes | int:
        """Answer a playlist or segment request."""
        found = self._target(request)
        # A master playlist starts a stream (the stream-start rate limits).
        admission = await self._guard.admit(
            request,
            permission="stream:read",
            signed=True,
            stream_start=found is not None and found.kind == "master",
        )
        if found is None:
            raise ApiError("NOT_FOUND")
        target = found
        if target.variant is not None and target.variant.lossless:
            self._guard.require(request, admission, "stream:hq")
        if target.variant is not None:
            kbps = target.variant.bitrate_kbps
            request.delivered_as = (target.variant.codec, kbps * 1000 if kbps is not None else None)
        track_name, path, info = await self._resolve(request, target.track_raw)
        identity = FileIdentity.of(track_name, info)
        track = await self._track(identity, path)
        if target.kind == "master":
            return self._master(request, admission, track)
        if target.kind == "media":
            return self._media(request, admission, track, target)
        return await self._segment(request, track_name, identity, path, track, target)

    def _target(self, request: Any) -> HlsTarget | None:
        prefix = b"/" + b"/".join(request.prepath) + b"/"
        raw = request.path[len(prefix) :] if request.path.startswith(prefix) else b""
        return parse_hls_path(raw, self._variants)

    async def _resolve(self, request: Any, raw: bytes) -> tuple[str, Path, os.stat_result]:
        """The track named by the still-encoded path, exactly as ``/stream`` resolves it
        (one the catalog does not know yet is read on demand first)."""
        catalog = self._catalog
        is_audio = catalog.is_audio if catalog is not None else None
        index_missing = getattr(catalog, "index_missing", None) if catalog is not None else None
        return await resolve_media_indexed(self._root, request, raw, is_audio, index_missing)

    async def _track(self, identity: FileIdentity, path: Path) -> Track:
        name = artifact_key(identity, "hls-track", {"v": FORMAT_VERSION})
        known = self._tracks.get(name)
        if known is not None:
            self._tracks.move_to_end(name)
            return known
        track: Track = await self._job(probe_track, str(path), key=f"hls-probe:{name}")
        if track.samples <= 0:
            raise ApiError("UNSUPPORTED_MEDIA", "This file has no audio to stream.")
        self._tracks[name] = track
        if len(self._tracks) > TRACK_CACHE_SIZE:
            self._tracks.popitem(last=False)
        return track

    async def _job(self, fn: Any, *args: Any, key: str) -> Any:
        """Run a worker job; map its failures to contract errors."""
        try:
            return await self._pool.submit(fn, *args, key=key)
        except SegmentError:
            raise ApiError("NOT_FOUND") from None
        except JOB_FAILURES as e:
            if isinstance(e, WorkerCrashed):
                log.error("hls: a worker crashed on {key}", key=key)
            raise job_error(e) from None

    # -- playlists -----------------------------------------------------------------------------

    def _child_uri(
        self, request: Any, admission: Admission, track: Track, leaf: bytes
    ) -> Callable[[str], str]:
        """How to write a child's URI in this playlist (signed when a key is configured)."""
        if not self._url_keys:
            return lambda relative: relative
        try:
            base = decode_signed_path(request.path[: -len(leaf)])
        except SignedUrlError:
            raise ApiError("NOT_FOUND") from None
        expires = playlists.child_expires(track, self._clock.seconds(), self._url_max_ttl_s)
        bound = _child_bound(admission)
        key = self._url_keys[0]
        return lambda relative: playlists.signed_child(base, relative, key=key, expires=expires, bound=bound)

    def _master(self, request: Any, admission: Admission, track: Track) -> bytes:
        if admission.signed_expires is not None:
            hq = (admission.bound or {}).get("hq") == "1"
        else:
            hq = admission.principal.can("stream:hq")
        variants = playlists.variants_for(track, hq=hq, ladder=self._ladder)
        uri = self._child_uri(request, admission, track, playlists.MASTER_NAME.encode())
        return self._playlist(request, "master", playlists.master_playlist(track, variants, uri))

    def _media(self, request: Any, admission: Admission, track: Track, target: HlsTarget) -> bytes:
        assert target.variant is not None
        if target.variant.lossless and not track.has_lossless:
            raise ApiError("NOT_FOUND")
        uri = self._child_uri(request, admission, track, target.leaf)
        return self._playlist(request, "media", playlists.media_playlist(track, target.variant, uri))

    def _playlist(self, request: Any, kind: str, text: str) -> bytes:
        """A playlist response; gzip-encoded when the client accepts it (Apple's authoring spec 10.1).

        Its ETag is made from the text (children's credentials included,
        whose expiry is rounded, so it holds for a while); the gzip form has
        its own (``-gzip``), and ``If-None-Match`` with either answers 304.
        """
        request.setHeader(b"cache-control", PLAYLIST_CACHE_CONTROL)
        vary = request.responseHeaders.getRawHeaders(b"vary", [])  # CORS may have set Origin
        request.responseHeaders.setRawHeaders(b"vary", [b", ".join([*vary, b"Accept-Encoding"])])
        mark_media(request)
        if self._metrics is not None:
            self._metrics.requests.labels(kind).inc()
        body = text.encode("utf-8")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        compress = accepts_gzip(request.getHeader(b"accept-encoding"))
        request.setHeader(b"etag", gzip_etag(etag.encode("ascii")) if compress else etag.encode("ascii"))
        outcome = evaluate_preconditions(
            request.method.decode("ascii"),
            etag,
            0,
            if_match=None,
            if_none_match=identity_if_none_match(_header(request, b"if-none-match")),
            if_modified_since=None,
            if_unmodified_since=None,
        )
        if outcome is Outcome.NOT_MODIFIED:
            request.setResponseCode(304)
            return b""
        request.setResponseCode(200)
        request.setHeader(b"content-type", PLAYLIST_TYPE)
        if compress:
            request.setHeader(b"content-encoding", b"gzip")
            body = gzip.compress(body, mtime=0)
        return body

    # -- segments ------------------------------------------------------------------------------

    def _artifact(self, identity: FileIdentity, variant: Variant, n: int | None) -> tuple[str, str]:
        """``(key, suffix)`` of the init (*n* ``None``) or media segment *n*."""
        params = {"variant": variant.name, "segment": n, "v": FORMAT_VERSION}
        return artifact_key(identity, ARTIFACT_KIND, params), ".mp4" if n is None else ".m4s"

    async def _segment(
        self,
        request: Any,
        track_name: str,
        identity: FileIdentity,
        path: Path,
        track: Track,
        target: HlsTarget,
    ) -> bytes | int:
        variant = target.variant
        assert variant is not None
        n = target.segment
        if variant.lossless and not track.has_lossless:
            raise ApiError("NOT_FOUND")
        if n is not None and n >= track.segment_count:
            raise ApiError("NOT_FOUND")
        key, suffix = self._artifact(identity, variant, n)
        etag = f'"{key[:32]}"'
        request.setHeader(b"etag", etag.encode("ascii"))
        request.setHeader(b"cache-control", self._segment_cache_control(request))
        mark_media(request)
        outcome = evaluate_preconditions(
            request.method.decode("ascii"),
            etag,
            int(identity.mtime_ns // 1_000_000_000),
            if_match=_header(request, b"if-match"),
            if_none_match=_header(request, b"if-none-match"),
            if_modified_since=None,
            if_unmodified_since=None,
        )
        if outcome is Outcome.PRECONDITION_FAILED:
            raise ApiError("PRECONDITION_FAILED")
        if outcome is Outcome.NOT_MODIFIED:
            request.setResponseCode(304)
            return b""
        body: IO[bytes]
        cached = self._cache.get(key, ARTIFACT_KIND, suffix)
        fileobj = _open_artifact(cached) if cached is not None else None
        if self._metrics is not None:
            self._metrics.cache.labels("hit" if fileobj is not None else "miss").inc()
        if fileobj is not None:
            body = fileobj
        else:
            body = io.BytesIO(await self._encoded(key, suffix, path, track, variant, n))
        if n is not None:
            self._prefetch_after(identity, path, track, variant, n)
        if self._metrics is not None:
            self._metrics.requests.labels("segment" if n is not None else "init").inc()
        return self._send(request, body, track_name, n)

    def _segment_cache_control(self, request: Any) -> bytes:
        """Private caching, never past the expiry of the signed URL that admitted the request."""
        expires = getattr(request, "signed_expires", None)
        max_age = SEGMENT_MAX_AGE_S
        if expires is not None:
            max_age = min(max_age, max_age_for(expires, self._clock.seconds()))
        return b"private, max-age=%d" % max_age

    def _encoded(
        self, key: str, suffix: str, path: Path, track: Track, variant: Variant, n: int | None
    ) -> Deferred[bytes]:
        """The artifact's bytes: one encode (and one store) however many ask at once."""
        shared = self._inflight.get(key)
        if shared is None:
            shared = self._inflight[key] = _Shared()

            def done(result: bytes | Failure) -> None:
                del self._inflight[key]
                shared.fire(result)

            ensureDeferred(self._encode_and_store(key, suffix, path, track, variant, n)).addBoth(done)
        return shared.wait()

    async def _encode_and_store(
        self, key: str, suffix: str, path: Path, track: Track, variant: Variant, n: int | None
    ) -> bytes:
        started = time.monotonic()
        if n is None:
            data: bytes = await self._job(encode_init, str(path), variant, track, key=f"hls:{key}")
        else:
            data = await self._job(encode_segment, str(path), variant, n, track, key=f"hls:{key}")
        if self._metrics is not None:
            self._metrics.encode_seconds.labels(variant.name).observe(time.monotonic() - started)
        try:
            await self._cache.store_bytes(key, ARTIFACT_KIND, data, suffix)
        except OSError as e:
            log.warn("hls: a segment could not be cached ({error})", error=e.strerror)
        return data

    def _prefetch_after(
        self, identity: FileIdentity, path: Path, track: Track, variant: Variant, n: int
    ) -> None:
        """Encode the next segments in the background (not waited for; failures logged)."""
        for ahead in range(n + 1, min(n + 1 + self._prefetch, track.segment_count)):
            key, suffix = self._artifact(identity, variant, ahead)
            if key in self._inflight or self._cache.path_for(key, ARTIFACT_KIND, suffix).exists():
                continue
            if self._pool.queued >= self._pool.max_queue // 2:
                if self._metrics is not None:
                    self._metrics.prefetch.labels("skipped").inc()
                continue  # leave the queue to requests someone is waiting for
            if self._metrics is not None:
                self._metrics.prefetch.labels("submitted").inc()
            d = self._encoded(key, suffix, path, track, variant, ahead)
            self.prefetching.add(d)
            d.addErrback(self._prefetch_failed, ahead)
            d.addBoth(self._prefetch_done, d)

    def _prefetch_failed(self, failure: Failure, n: int) -> None:
        if self._metrics is not None:
            self._metrics.prefetch.labels("failed").inc()
        if failure.check(ApiError):
            log.warn("hls: prefetching segment {n} failed ({code})", n=n, code=failure.value.code)
        elif failure.check(CancelledError, PoolFull):
            # The pool is stopping (shutdown): a prefetch nobody waits for is simply dropped.
            log.debug("hls: prefetching segment {n} dropped: the worker pool is stopping", n=n)
        else:
            log.failure("hls: prefetching segment {n} failed", failure, n=n)

    def _prefetch_done(self, result: object, d: Deferred[Any]) -> None:
        self.prefetching.discard(d)

    def _send(self, request: Any, body: IO[bytes], track_name: str, n: int | None) -> bytes | int:
        """Send *body* (an open artifact or the bytes just encoded) with backpressure."""
        size = _size(body)
        request.setResponseCode(200)
        request.setHeader(b"content-type", SEGMENT_TYPE)
        request.setHeader(b"content-length", b"%d" % size)
        if request.method == b"HEAD" or size == 0:
            body.close()
            return b""
        observer = self._on_segment

        def on_end(completed: bool) -> None:
            if observer is not None and n is not None:
                try:
                    observer(request, track_name, n, sender.bytes_written)
                except Exception:
                    log.failure("hls: the segment observer failed")

        sender = FileBodyProducer(request, body, [(b"", 0, size)], b"", on_end)
        sender.start()
        return server.NOT_DONE_YET


def _child_bound(admission: Admission) -> dict[str, str]:
    """Bound into child URIs: ``uid``/``ip`` of a signed master, else a JWT's ``sub`` as ``uid``."""
    if admission.bound is not None:
        return {name: admission.bound[name] for name in ("uid", "ip") if name in admission.bound}
    if admission.principal.via == "jwt":
        return {"uid": admission.principal.sub}
    return {}


def _open_artifact(path: Path) -> IO[bytes] | None:
    """Open a cached artifact, or ``None`` if it was evicted meanwhile (a late miss)."""
    try:
        return open(path, "rb")  # the producer closes it
    except OSError:
        return None


def _size(body: IO[bytes]) -> int:
    if isinstance(body, io.BytesIO):
        return len(body.getbuffer())
    return os.fstat(body.fileno()).st_size


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None
