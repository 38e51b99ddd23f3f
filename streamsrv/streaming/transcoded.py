# -*- test-case-name: tests.test_transcoded -*-
"""``/stream/{path}?format=…``: transcodes, seekable from the first request.

Progressive renditions (MP3 CBR, Opus in Ogg) have a byte layout known before
anything is encoded (:mod:`streamsrv.transcode.layout`): the header comes
from arithmetic, and the body is fixed-size chunks, each encoded
independently by a worker.  So the very first request of a never-seen
rendition gets an exact ``Content-Length`` and any byte range, and only the
chunks a range touches are encoded.  Chunks land in the artifact cache;
identical concurrent requests share one encode of each chunk (the pool
coalesces by key); every listener has its own producer with its own
backpressure; a listener who leaves cancels the chunk jobs only they were
waiting for, so an encode nobody listens to stops.

AAC (ADTS) and FLAC have no such layout: their first request waits for a
full encode into the cache, and from then on they are plain files with
ranges.  See ``docs/modules/streaming.md``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import quote

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web import server
from zope.interface import implementer

from streamsrv.audio.decode import DecodeError
from streamsrv.audio.workers import PoolFull, WorkerCrashed, WorkerPool
from streamsrv.cache.artifacts import ArtifactCache, FileIdentity, artifact_key
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.headers import mark_media
from streamsrv.streaming.conditional import (
    Outcome,
    http_date,
    if_range_allows_partial,
)
from streamsrv.streaming.producers import FileBodyProducer
from streamsrv.streaming.ranges import RangeNotSatisfiable, parse_range_header, resolve_ranges
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.streaming.tracks import request_preconditions
from streamsrv.transcode import (
    Layout,
    Rendition,
    SourceInfo,
    encode_chunk,
    encode_full,
    layout_for,
    probe_source,
)
from streamsrv.web.errors import ApiError

__all__ = ["TranscodeService"]

log = Logger()

#: Probed sources remembered (file identity → sample count, rate, channels).
SOURCE_CACHE_SIZE: Final = 4096

#: Chunks encoded ahead of the one being written, per listener.
PREFETCH_CHUNKS: Final = 1


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


class TranscodeService:
    """
    Serves renditions for :class:`~streamsrv.streaming.resource.StreamResource`.

    :param pool: Runs probes and encodes.
    :param cache: Keeps chunks and whole renditions.
    :param tracker: Open streams (drained on shutdown).
    :param metrics: Stream metrics.
    :param clock: Unused today beyond consistency with the stream resource.
    """

    def __init__(
        self,
        *,
        pool: WorkerPool,
        cache: ArtifactCache,
        tracker: StreamTracker,
        metrics: Metrics,
        clock: IReactorTime,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._tracker = tracker
        self._metrics = metrics
        self._clock = clock
        self._sources: OrderedDict[str, SourceInfo] = OrderedDict()
        self._stats = _TranscodeMetrics(metrics.registry)

    async def _job(self, fn: Any, *args: Any, key: str) -> Any:
        try:
            return await self._pool.submit(fn, *args, key=key)
        except PoolFull as e:
            busy = "The server is busy transcoding; try again shortly."
            raise ApiError("UNAVAILABLE", busy, {"Retry-After": str(e.retry_after_s)}) from None
        except DecodeError:
            raise ApiError("UNSUPPORTED_MEDIA", "This file cannot be decoded.") from None
        except WorkerCrashed:
            log.error("transcode: a worker crashed on {key}", key=key)
            raise ApiError("INTERNAL") from None

    async def _source(self, identity: FileIdentity, path: Path) -> SourceInfo:
        name = artifact_key(identity, "source", {})
        known = self._sources.get(name)
        if known is not None:
            self._sources.move_to_end(name)
            return known
        info: SourceInfo = await self._job(probe_source, str(path), key=f"probe:{name}")
        self._sources[name] = info
        if len(self._sources) > SOURCE_CACHE_SIZE:
            self._sources.popitem(last=False)
        return info

    async def answer(
        self,
        request: Any,
        *,
        track: str,
        path: Path,
        info: os.stat_result,
        rendition: Rendition,
        cache_control: bytes,
        on_end: Callable[[int, bool], None],
    ) -> bytes | int:
        """
        Answer a ``GET``/``HEAD`` for *rendition* of *track*.

        :param on_end: Called once the body is done with the bytes sent and
            whether it completed (for the audit trail and sessions).
        :return: A body, or ``NOT_DONE_YET`` while a producer writes it.
        """
        identity = FileIdentity.of(track, info)
        started = self._clock.seconds()
        source = await self._source(identity, path)
        resolved = rendition.resolved(source.sample_rate)
        key = artifact_key(identity, "transcode", resolved.cache_params())
        etag = f'"t{key[:40]}"'
        last_modified = int(info.st_mtime)
        method = request.method.decode("ascii")
        request.setHeader(b"etag", etag.encode("ascii"))
        request.setHeader(b"last-modified", http_date(last_modified).encode("ascii"))
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"cache-control", cache_control)
        request.setHeader(b"content-type", resolved.content_type.encode("ascii"))
        name = track.rsplit("/", 1)[-1].rsplit(".", 1)[0] + resolved.suffix
        kind = b"attachment" if request.args.get(b"download") == [b"1"] else b"inline"
        request.setHeader(b"content-disposition", kind + b"; filename*=UTF-8''" + quote(name).encode("ascii"))
        mark_media(request)
        outcome = request_preconditions(request, etag, last_modified)
        if outcome is Outcome.NOT_MODIFIED:
            request.setResponseCode(304)
            return b""
        if outcome is Outcome.PRECONDITION_FAILED:
            raise ApiError("PRECONDITION_FAILED")

        if resolved.progressive:
            layout = layout_for(resolved, source.frames, source.sample_rate)
            request.setHeader(b"x-content-duration", b"%.3f" % (layout.frames / (resolved.sample_rate or 1)))
            start, length = self._range(request, layout.total_length, etag, last_modified)
            if method == "HEAD" or length == 0:
                return b""
            kind = resolved.format

            def first_byte() -> None:
                self._stats.first_byte.labels(kind).observe(self._clock.seconds() - started)

            producer = ChunkProducer(
                request,
                layout,
                start,
                length,
                fetch=lambda index: self._chunk(path, layout, key, index),
                on_end=lambda sent, done: self._ended(producer, sent, done, on_end),
                on_first_byte=first_byte,
            )
            self._tracker.add(producer)
            producer.start()
            return server.NOT_DONE_YET

        cached = self._cache.get(key, "transcode", resolved.suffix)
        if cached is None:
            temp = self._cache.temp_path("transcode")
            await self._job(encode_full, str(path), resolved, str(temp), key=f"full:{key}")
            cached = self._cache.commit_file(key, "transcode", temp, resolved.suffix)
        fileobj: IO[bytes] = open(cached, "rb", buffering=0)
        try:
            size = os.fstat(fileobj.fileno()).st_size
            start, length = self._range(request, size, etag, last_modified)
        except BaseException:
            fileobj.close()
            raise
        if method == "HEAD" or length == 0:
            fileobj.close()
            return b""
        sender = FileBodyProducer(
            request,
            fileobj,
            [(b"", start, length)],
            b"",
            lambda done: self._ended(sender, sender.bytes_written, done, on_end),
        )
        self._tracker.add(sender)
        sender.start()
        return server.NOT_DONE_YET

    def _ended(self, sender: Any, sent: int, done: bool, on_end: Callable[[int, bool], None]) -> None:
        self._tracker.remove(sender)
        self._metrics.stream_bytes.labels("transcode").inc(sent)
        if not done:
            self._metrics.aborted.inc()
        on_end(sent, done)

    def _range(self, request: Any, size: int, etag: str, last_modified: int) -> tuple[int, int]:
        """``(start, length)`` to send, with status and headers set; one range at most.

        Several ranges are answered with the whole rendition (RFC 9110 lets a
        server ignore ``Range``), which every player handles.
        """
        header = _header(request, b"range")
        whole = (0, size)
        ranges = None
        if header is not None and if_range_allows_partial(_header(request, b"if-range"), etag, last_modified):
            try:
                ranges = resolve_ranges(parse_range_header(header), size, 1)
            except ValueError:
                ranges = None
            except RangeNotSatisfiable:
                request.setHeader(b"content-range", b"bytes */%d" % size)
                raise ApiError(
                    "RANGE_NOT_SATISFIABLE", headers={"Content-Range": f"bytes */{size}"}
                ) from None
        if not ranges:
            request.setResponseCode(200)
            request.setHeader(b"content-length", b"%d" % size)
            return whole
        (byte_range,) = ranges
        request.setResponseCode(206)
        request.setHeader(b"content-range", byte_range.content_range(size).encode("ascii"))
        request.setHeader(b"content-length", b"%d" % byte_range.length)
        return byte_range.start, byte_range.length

    def _chunk(self, path: Path, layout: Layout, key: str, index: int) -> Deferred[bytes]:
        """Chunk *index*: from the cache, else encoded (once, however many listeners ask)."""
        chunk_key = artifact_key_for_chunk(key, index)

        async def encode() -> bytes:
            cached = self._cache.get(chunk_key, "transcode-chunk")
            if cached is not None:
                try:
                    data = cached.read_bytes()
                    self._stats.chunks.labels("cache").inc()
                    return data
                except OSError:
                    log.warn("transcode: a cached chunk could not be read; encoding it again")
            began = self._clock.seconds()
            data = await self._job(encode_chunk, str(path), layout, index, key=f"chunk:{chunk_key}")
            self._stats.chunks.labels("encoded").inc()
            seconds = self._clock.seconds() - began
            if seconds > 0:
                audio_s = layout.chunk_packets * layout.packet_samples / (layout.rendition.sample_rate or 1)
                self._stats.speed.labels(layout.rendition.format).observe(audio_s / seconds)
            try:
                self._cache.put_bytes(chunk_key, "transcode-chunk", data)
            except OSError as e:
                log.warn("transcode: a chunk could not be cached ({error})", error=e.strerror)
            return data

        return ensureDeferred(encode())


class _TranscodeMetrics:
    """The transcode families, registered in the process's registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.first_byte = Histogram(
            "streamsrv_transcode_first_byte_seconds",
            "From request to the first body byte of a progressive rendition",
            ["format"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.chunks = Counter(
            "streamsrv_transcode_chunks", "Rendition chunks served, by origin (cache, encoded)", ["origin"],
            registry=registry,
        )  # fmt: skip
        self.speed = Histogram(
            "streamsrv_transcode_speed_ratio",
            "Encode speed of one chunk, seconds of audio per second of work (x realtime)",
            ["format"],
            buckets=(1, 5, 10, 20, 40, 80, 160, 320),
            registry=registry,
        )


def _ignore_cancel(failure: Any) -> None:
    failure.trap(CancelledError)


def artifact_key_for_chunk(key: str, index: int) -> str:
    """The artifact key of chunk *index* of the rendition *key* (hex, as the cache requires)."""
    return f"{key}{index:08x}"


@implementer(IPushProducer)
class ChunkProducer:
    """
    Writes bytes ``[start, start + length)`` of a progressive rendition.

    Fetches one chunk at a time (plus :data:`PREFETCH_CHUNKS` ahead), writes
    the part of it the range covers, and fetches the next only while the
    consumer is not paused: a slow reader holds at most a couple of chunks
    in memory.  When the client leaves, the Deferreds of chunks not yet
    written are cancelled, which drops queued encodes nobody else waits for.
    """

    def __init__(
        self,
        request: Any,
        layout: Layout,
        start: int,
        length: int,
        *,
        fetch: Callable[[int], Deferred[bytes]],
        on_end: Callable[[int, bool], None],
        on_first_byte: Callable[[], None] | None = None,
    ) -> None:
        self._request = request
        self._layout = layout
        self._start = start
        self._end = start + length  # exclusive
        self._fetch = fetch
        self._on_end = on_end
        self._on_first_byte = on_first_byte
        self._position = start
        self._chunks = iter(layout.chunks_for(start, self._end))
        self._pending: OrderedDict[int, Deferred[bytes]] = OrderedDict()
        self._paused = False
        self._writing = False
        self._done = False
        self.bytes_written = 0

    def start(self) -> None:
        """Register with the request and write the first piece."""
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(lambda _: self._finish(False))
        if self._position < self._layout.header_length:
            piece = self._layout.header()[self._position : min(self._end, self._layout.header_length)]
            self._write(piece)
        self._advance()

    def _queue(self) -> None:
        """Keep the next chunks requested (the current one and the prefetch)."""
        while len(self._pending) <= PREFETCH_CHUNKS:
            index = next(self._chunks, None)
            if index is None:
                return
            self._pending[index] = self._fetch(index)

    def _advance(self) -> None:
        if self._done or self._paused or self._writing:
            return
        if self._position >= self._end:
            self._finish(True)
            return
        self._queue()
        if not self._pending:
            self._finish(True)
            return
        index, d = next(iter(self._pending.items()))
        self._writing = True
        d.addCallbacks(lambda data: self._chunk_ready(index, data), lambda f: self._chunk_failed(index, f))

    def _chunk_ready(self, index: int, data: bytes) -> None:
        self._pending.pop(index, None)
        self._writing = False
        if self._done:
            return
        offset = self._layout.chunk_offset(index)
        piece = data[max(self._position - offset, 0) : max(self._end - offset, 0)]
        self._write(piece)
        self._advance()

    def _chunk_failed(self, index: int, failure: Any) -> None:
        self._pending.pop(index, None)
        self._writing = False
        if not failure.check(CancelledError):
            log.failure("transcode: chunk {index} failed; the response is cut short", failure, index=index)
        self._abort_connection()
        self._finish(False)

    def _write(self, piece: bytes) -> None:
        if piece and not self._done:
            if self.bytes_written == 0 and self._on_first_byte is not None:
                self._on_first_byte()
            self._position += len(piece)
            self.bytes_written += len(piece)
            self._request.write(piece)

    def _finish(self, completed: bool) -> None:
        if self._done:
            return
        self._done = True
        for d in list(self._pending.values()):
            d.addErrback(_ignore_cancel)  # a prefetched chunk nobody will write
            d.cancel()
        self._pending.clear()
        try:
            self._request.unregisterProducer()
        except Exception as e:  # the channel may already be gone
            log.debug("transcode: unregisterProducer: {error!r}", error=e)
        if completed:
            self._request.finish()
        self._on_end(self.bytes_written, completed)

    def _abort_connection(self) -> None:
        transport = getattr(self._request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._advance()

    def stopProducing(self) -> None:
        self._finish(False)

    def abort(self) -> None:
        """Cut the stream (shutdown grace over)."""
        self._abort_connection()
        self._finish(False)
