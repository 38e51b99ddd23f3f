# -*- test-case-name: tests.test_transcoded -*-
"""``/stream/{path}?format=…``: transcodes, seekable from the first request.

Progressive renditions (MP3 CBR, Opus in Ogg) have a byte layout known before
anything is encoded (:mod:`streamsrv.transcode.layout`): the header comes
from arithmetic, and the body is fixed-size chunks, each encoded
independently by a worker.  So the very first request of a never-seen
rendition gets an exact ``Content-Length`` and any byte range, or several
(``multipart/byteranges``), and only the chunks the ranges touch are encoded,
each once.  Chunks land in the artifact cache; identical concurrent requests
share one encode of each chunk (the pool coalesces by key); every listener
has its own producer with its own backpressure; a listener who leaves
cancels the chunk jobs only they were waiting for, so an encode nobody
listens to stops.

AAC (ADTS) and FLAC have no such layout: their first request waits for a
full encode into the cache, and from then on they are plain files with
ranges.  Which ranges are answered, and how (200, 206, multipart, 416), is
decided by the caller's *framing* (the originals' rules, shared); this module
only writes the body it describes, never more than
:data:`~streamsrv.streaming.producers.CHUNK_SIZE` bytes per write.  See
``docs/modules/streaming.md``.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final
from urllib.parse import quote

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from zope.interface import implementer

from streamsrv import transcode
from streamsrv.audio.jobs import JOB_FAILURES, job_error
from streamsrv.audio.workers import WorkerCrashed, WorkerPool
from streamsrv.cache.artifacts import ArtifactCache, FileIdentity, artifact_key
from streamsrv.errors import ApiError
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.headers import mark_media
from streamsrv.streaming.conditional import Outcome, http_date
from streamsrv.streaming.producers import CHUNK_SIZE, FileBodyProducer, PushProducer, Segment
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.streaming.tracks import request_preconditions
from streamsrv.transcode import Layout, Rendition, layout_for

if TYPE_CHECKING:
    from streamsrv.transcode import SourceInfo

__all__ = ["BodyEnded", "ChunkProducer", "Framing", "TranscodeService"]

log = Logger()

#: Probed sources remembered (file identity → sample count, rate, channels).
SOURCE_CACHE_SIZE: Final = 4096

#: The 503 message when the worker pool is too busy for a transcode.
BUSY_TRANSCODING: Final = "The server is busy transcoding; try again shortly."

#: The largest whole rendition answered from memory when the cache cannot hold
#: it (its disk full or failing); a bigger one answers 503 until space returns.
UNCACHED_MAX_BYTES: Final = 128 * 1024 * 1024

#: Chunks encoded ahead of the one being written, per listener.
PREFETCH_CHUNKS: Final = 1

#: ``framing(size, etag, last_modified, content_type)``: decides what a
#: request gets of a representation of *size* bytes (the whole, one range,
#: several, or a 416 :class:`~streamsrv.web.errors.ApiError`), sets the status
#: and ``Content-Type``/``Content-Range``/``Content-Length``, and returns the
#: body as ``(segments, trailer, length)`` (``(prefix, start, count)``
#: segments as :class:`~streamsrv.streaming.producers.FileBodyProducer` takes
#: them).  The stream resource passes its own, so renditions follow exactly
#: the originals' range rules.
Framing = Callable[[int, str, int, str], tuple[list[Segment], bytes, int]]

#: ``on_end(spans, sent, size, completed)``: the ``(start, length)`` byte
#: ranges of the rendition the body carries (one for a 200 or a single range,
#: one per part of ``multipart/byteranges``), the body bytes that left
#: (multipart framing included), the rendition's size, and whether the body
#: completed.
BodyEnded = Callable[[list[tuple[int, int]], int, int, bool], None]


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
        self._whole_waiters: dict[str, list[Deferred[Path | bytes]]] = {}
        self._stats = _TranscodeMetrics(metrics.registry)

    async def _job(self, fn: Any, *args: Any, key: str) -> Any:
        try:
            return await self._pool.submit(fn, *args, key=key)
        except JOB_FAILURES as e:
            if isinstance(e, WorkerCrashed):
                log.error("transcode: a worker crashed on {key}", key=key)
            raise job_error(e, busy=BUSY_TRANSCODING) from None

    async def _source(self, identity: FileIdentity, path: Path) -> SourceInfo:
        name = artifact_key(identity, "source", {})
        known = self._sources.get(name)
        if known is not None:
            self._sources.move_to_end(name)
            return known
        info: SourceInfo = await self._job(transcode.probe_source, str(path), key=f"probe:{name}")
        self._sources[name] = info
        if len(self._sources) > SOURCE_CACHE_SIZE:
            self._sources.popitem(last=False)
        return info

    async def _whole(self, path: Path, rendition: Rendition, key: str, source: SourceInfo) -> Path | bytes:
        """The cached file of a whole rendition (ADTS AAC, FLAC), encoded once however many ask.

        The first caller starts the encode into a temp file and commits it;
        everyone asking meanwhile waits for that same commit (the pool's own
        coalescing shares the job, not the temp file it writes).  A listener
        who leaves does not stop it: the result is cached for the next.  If
        the cache cannot take it (its disk full), the rendition is encoded
        again into memory and those bytes are the answer (see :meth:`_uncached`).
        """
        cached = self._cache.get(key, "transcode", rendition.suffix)
        if cached is not None:
            return cached
        waiter: Deferred[Path | bytes] = Deferred()
        waiters = self._whole_waiters.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return await waiter
        self._whole_waiters[key] = [waiter]

        async def encode() -> Path | bytes:
            temp: Path | None = None
            try:
                temp = self._cache.temp_path("transcode")
                await self._job(transcode.encode_full, str(path), rendition, str(temp), key=f"full:{key}")
                committed: Path = await self._cache.commit(key, "transcode", temp, rendition.suffix)
                return committed
            except OSError as e:
                if temp is not None:
                    await self._cache.threads.defer(_remove, temp)
                return await self._uncached(path, rendition, key, source, e)

        def fire(result: Any) -> None:
            for each in self._whole_waiters.pop(key, []):
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(result)

        ensureDeferred(encode()).addBoth(fire)
        return await waiter

    async def _uncached(
        self, path: Path, rendition: Rendition, key: str, source: SourceInfo, error: OSError
    ) -> bytes:
        """The rendition encoded into memory, when the cache could not store it (*error*).

        :raise ApiError: ``UNAVAILABLE`` (503, ``Retry-After``) when it may be
            larger than :data:`UNCACHED_MAX_BYTES`.
        """
        if _size_bound(rendition, source) > UNCACHED_MAX_BYTES:
            log.warn(
                "transcode: the rendition could not be cached ({error}) and is too large to answer "
                "from memory",
                error=error.strerror or type(error).__name__,
                event_kind="degraded",
            )
            raise ApiError("UNAVAILABLE", BUSY_TRANSCODING, {"Retry-After": "60"})
        log.warn(
            "transcode: the rendition could not be cached ({error}); answering it uncached",
            error=error.strerror or type(error).__name__,
            event_kind="degraded",
        )
        data: bytes = await self._job(transcode.encode_full_bytes, str(path), rendition, key=f"memory:{key}")
        return data

    async def answer(
        self,
        request: Any,
        *,
        track: str,
        path: Path,
        info: os.stat_result,
        rendition: Rendition,
        cache_control: bytes,
        framing: Framing,
        on_end: BodyEnded,
    ) -> bytes | int:
        """
        Answer a ``GET``/``HEAD`` for *rendition* of *track*.

        :param framing: Chooses the ranges and frames the answer (see
            :data:`Framing`).
        :param on_end: Called once the body is done, with what it carried
            (for the audit trail and sessions; see :data:`BodyEnded`); not
            called for ``HEAD`` or an empty body.
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
            size = layout.total_length
            segments, trailer, length = framing(size, etag, last_modified, resolved.content_type)
            if method == "HEAD" or length == 0:
                return b""
            spans = _spans(segments)
            label = resolved.format

            def first_byte() -> None:
                self._stats.first_byte.labels(label).observe(self._clock.seconds() - started)

            producer = ChunkProducer(
                request,
                layout,
                segments,
                trailer,
                fetch=lambda index: self._chunk(path, layout, key, index),
                on_end=lambda sent, done: self._ended(producer, spans, sent, size, done, on_end),
                on_first_byte=first_byte,
            )
            self._tracker.add(producer)
            producer.start()
            return server.NOT_DONE_YET

        cached = await self._whole(path, resolved, key, source)
        fileobj: IO[bytes] = (
            open(cached, "rb", buffering=0) if isinstance(cached, Path) else io.BytesIO(cached)
        )
        try:
            size = len(cached) if isinstance(cached, bytes) else os.fstat(fileobj.fileno()).st_size
            segments, trailer, length = framing(size, etag, last_modified, resolved.content_type)
        except BaseException:
            fileobj.close()
            raise
        if method == "HEAD" or length == 0:
            fileobj.close()
            return b""
        spans = _spans(segments)
        sender = FileBodyProducer(
            request,
            fileobj,
            segments,
            trailer,
            lambda done: self._ended(sender, spans, sender.bytes_written, size, done, on_end),
        )
        self._tracker.add(sender)
        sender.start()
        return server.NOT_DONE_YET

    def _ended(
        self,
        sender: Any,
        spans: list[tuple[int, int]],
        sent: int,
        size: int,
        done: bool,
        on_end: BodyEnded,
    ) -> None:
        self._tracker.remove(sender)
        self._metrics.stream_bytes.labels("transcode").inc(sent)
        if not done:
            self._metrics.aborted.inc()
        on_end(spans, sent, size, done)

    def _chunk(self, path: Path, layout: Layout, key: str, index: int) -> Deferred[bytes]:
        """Chunk *index*: from the cache, else encoded (once, however many listeners ask)."""
        chunk_key = artifact_key_for_chunk(key, index)

        async def encode() -> bytes:
            cached = self._cache.get(chunk_key, "transcode-chunk")
            if cached is not None:
                try:
                    data = await self._cache.read_bytes(cached)
                    self._stats.chunks.labels("cache").inc()
                    return data
                except OSError:
                    log.warn("transcode: a cached chunk could not be read; encoding it again")
            began = self._clock.seconds()
            data = await self._job(transcode.encode_chunk, str(path), layout, index, key=f"chunk:{chunk_key}")
            self._stats.chunks.labels("encoded").inc()
            seconds = self._clock.seconds() - began
            if seconds > 0:
                audio_s = layout.chunk_packets * layout.packet_samples / (layout.rendition.sample_rate or 1)
                self._stats.speed.labels(layout.rendition.format).observe(audio_s / seconds)
            try:
                await self._cache.store_bytes(chunk_key, "transcode-chunk", data)
            except OSError as e:
                log.warn("transcode: a chunk could not be cached ({error})", error=e.strerror)
            return data

        return ensureDeferred(encode())


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _size_bound(rendition: Rendition, source: SourceInfo) -> float:
    """An upper bound of a whole rendition's size, bytes: PCM for lossless, the bitrate otherwise."""
    seconds = source.frames / (source.sample_rate or 1)
    rate = rendition.sample_rate or source.sample_rate
    channels = rendition.channels or source.channels
    if rendition.bitrate_kbps:
        return seconds * rendition.bitrate_kbps * 1000 / 8 * 1.25 + 65536
    return seconds * rate * channels * 3 + 65536  # up to 24-bit samples, uncompressed


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


def _spans(segments: list[Segment]) -> list[tuple[int, int]]:
    """The ``(start, length)`` byte ranges of the representation that *segments* carry."""
    return [(start, length) for _, start, length in segments]


def artifact_key_for_chunk(key: str, index: int) -> str:
    """The artifact key of chunk *index* of the rendition *key* (hex, as the cache requires)."""
    return f"{key}{index:08x}"


#: One step of a :class:`ChunkProducer`'s body: literal bytes, or
#: ``(chunk index, first, end)``: bytes ``[first, end)`` of that chunk.
_Step = bytes | tuple[int, int, int]


@implementer(IPushProducer)
class ChunkProducer(PushProducer):
    """
    Writes a body made of literal bytes and byte ranges of a progressive rendition.

    *segments* and *trailer* are what :data:`Framing` returns: one
    ``(prefix, start, length)`` per range (the whole rendition, one range, or
    the parts of ``multipart/byteranges`` with their part headers as
    prefixes), then the closing delimiter.  The header's bytes come from
    :meth:`Layout.header`; every chunk the ranges touch is fetched in body
    order, once even when two ranges share it, at most
    :data:`PREFETCH_CHUNKS` ahead of the one being written, and only while
    the consumer is not paused: a slow reader holds at most a couple of
    chunks in memory.  A chunk is written in slices of at most *write_size*
    bytes, and a pause stops the writing between two slices.  When the
    client leaves, the Deferreds of chunks not yet written are cancelled,
    which drops queued encodes nobody else waits for.

    :param on_end: Called once with the bytes written (framing included)
        and whether the body completed.
    :param on_first_byte: Called just before the first write.
    """

    def __init__(
        self,
        request: Any,
        layout: Layout,
        segments: list[Segment],
        trailer: bytes = b"",
        *,
        fetch: Callable[[int], Deferred[bytes]],
        on_end: Callable[[int, bool], None],
        on_first_byte: Callable[[], None] | None = None,
        write_size: int = CHUNK_SIZE,
    ) -> None:
        self._request = request
        self._layout = layout
        self._fetch = fetch
        self._on_end = on_end
        self._on_first_byte = on_first_byte
        self._write_size = write_size
        self._steps = _steps_for(layout, segments, trailer)
        #: Chunk indices in body order, each once; and the last step using each.
        self._order: list[int] = []
        self._last_use: dict[int, int] = {}
        for position, step in enumerate(self._steps):
            if isinstance(step, tuple):
                if step[0] not in self._last_use:
                    self._order.append(step[0])
                self._last_use[step[0]] = position
        self._fetched = 0  # chunks of _order requested so far
        self._pending: OrderedDict[int, Deferred[bytes]] = OrderedDict()  # requested, not arrived
        self._ready: dict[int, bytes] = {}  # arrived, still to be written
        self._step = 0  # the next step to start
        self._view: memoryview | None = None  # what is left of the step being written
        self._viewing: int | None = None  # the chunk to drop once the view is written
        self._paused = False
        self._producing = False
        self._done = False
        self.bytes_written = 0

    def start(self) -> None:
        """Register with the request and write until paused or waiting for a chunk."""
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(lambda _: self._finish(False))
        self._produce()

    def _queue(self) -> None:
        """Request the next chunks: the one to write and :data:`PREFETCH_CHUNKS` more."""
        while (
            not self._done
            and self._fetched < len(self._order)
            and len(self._pending) + len(self._ready) <= PREFETCH_CHUNKS
        ):
            index = self._order[self._fetched]
            self._fetched += 1
            d = self._pending[index] = self._fetch(index)
            d.addCallbacks(self._chunk_ready, self._chunk_failed, callbackArgs=(index,), errbackArgs=(index,))

    def _produce(self) -> None:
        if self._producing:
            return  # re-entered (from a write or a chunk that was at hand): the outer loop goes on
        self._producing = True
        try:
            while not self._done and not self._paused:
                piece = self._take()
                if piece:
                    self._write(piece)
                elif self._step == len(self._steps) and self._view is None:
                    self._finish(True)
                else:
                    return  # waiting for a chunk: its arrival calls us again
        finally:
            self._producing = False

    def _take(self) -> bytes:
        """Up to *write_size* bytes that are ready, in body order (empty: waiting, or done)."""
        pieces: list[memoryview] = []
        room = self._write_size
        while room:
            view = self._view
            if view is not None:
                if view:
                    pieces.append(view[:room])
                    self._view = view[room:]
                    room -= len(pieces[-1])
                    continue
                self._view = None
                if self._viewing is not None:
                    self._ready.pop(self._viewing, None)
                    self._viewing = None
            if self._step == len(self._steps):
                break
            step = self._steps[self._step]
            if isinstance(step, bytes):
                self._view = memoryview(step)
            else:
                index, first, end = step
                self._queue()
                data = self._ready.get(index)
                if data is None:
                    break
                self._view = memoryview(data)[first:end]
                self._viewing = index if self._last_use[index] == self._step else None
            self._step += 1
        return b"".join(pieces)

    def _chunk_ready(self, data: bytes, index: int) -> None:
        self._pending.pop(index, None)
        if self._done:
            return
        if len(data) != self._layout.chunk_length(index):
            log.error(
                "transcode: chunk {index} has {got} bytes, not {expected}; the response is cut short",
                index=index,
                got=len(data),
                expected=self._layout.chunk_length(index),
            )
            self._abort_connection()
            self._finish(False)
            return
        self._ready[index] = data
        self._produce()

    def _chunk_failed(self, failure: Any, index: int) -> None:
        self._pending.pop(index, None)
        if self._done:
            return  # cancelled by _finish, or too late to matter
        if not failure.check(CancelledError):
            log.failure("transcode: chunk {index} failed; the response is cut short", failure, index=index)
        self._abort_connection()
        self._finish(False)

    def _write(self, piece: bytes) -> None:
        if self._done:
            return  # a chunk at hand turned out bad: the response is already cut
        if self.bytes_written == 0 and self._on_first_byte is not None:
            self._on_first_byte()
        self.bytes_written += len(piece)
        self._request.write(piece)

    def _finish(self, completed: bool) -> None:
        if self._done:
            return
        self._done = True
        pending = list(self._pending.values())
        self._pending.clear()
        self._ready.clear()
        self._view = None
        for d in pending:
            d.cancel()  # a chunk nobody here will write: its errback sees _done and swallows it
        try:
            self._request.unregisterProducer()
        except Exception as e:  # the channel may already be gone
            log.debug("transcode: unregisterProducer: {error!r}", error=e)
        if completed:
            with contextlib.suppress(RuntimeError):  # finishing a dropped connection raises
                self._request.finish()
        self._on_end(self.bytes_written, completed)

    def _abort_connection(self) -> None:
        transport = getattr(self._request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _stop(self) -> None:
        # IPushProducer.stopProducing: cancel what is pending (idempotent).
        self._finish(False)

    def abort(self) -> None:
        """Cut the stream (shutdown grace over)."""
        self._abort_connection()
        self._finish(False)


def _steps_for(layout: Layout, segments: list[Segment], trailer: bytes) -> list[_Step]:
    """The body of *segments* and *trailer* as literal bytes and slices of chunks, in order."""
    steps: list[_Step] = []
    header: bytes | None = None
    header_length = layout.header_length
    for prefix, start, length in segments:
        end = start + length
        if prefix:
            steps.append(prefix)
        if start < header_length and length:
            if header is None:
                header = layout.header()
            steps.append(header[start : min(end, header_length)])
        for index in layout.chunks_for(min(max(start, header_length), end), end):
            offset = layout.chunk_offset(index)
            first = max(start, offset) - offset
            last = min(end, offset + layout.chunk_length(index)) - offset
            if last > first:
                steps.append((index, first, last))
    if trailer:
        steps.append(trailer)
    return steps
