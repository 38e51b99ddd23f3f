# -*- test-case-name: tests.test_hls_playlists -*-
"""HLS playlists of a track: the multivariant (master) playlist, the VOD media playlists, child credentials.

Pure functions of a :class:`~streamsrv.hls.segments.Track` (what the source's
headers say) and a function that turns a child's relative name into the URI
written in the playlist: no I/O, no reactor, no request, no clock.  They
follow Apple's HLS authoring rules for audio and RFC 8216:

- master: ``#EXT-X-VERSION:7``, ``#EXT-X-INDEPENDENT-SEGMENTS``, one
  ``#EXT-X-STREAM-INF`` per variant with ``BANDWIDTH`` (a peak bound, container
  included), ``AVERAGE-BANDWIDTH`` and ``CODECS``, lowest rung first;
- media: ``#EXT-X-PLAYLIST-TYPE:VOD``, ``#EXT-X-TARGETDURATION`` = the
  largest ``EXTINF`` rounded up, ``#EXT-X-MEDIA-SEQUENCE:0``,
  ``#EXT-X-MAP:URI="init.mp4…"``, one exact ``EXTINF`` per segment (whole AAC
  frames; the last segment is shorter), ``#EXT-X-ENDLIST``.

URIs are relative (``128k/index.m3u8?expires=…&kid=…&sig=…``,
``0.m4s?…``): a player resolves them against the playlist's own URL, so the
signature is computed over exactly the decoded path the player will request
(:func:`signed_child`).  Nothing here ever writes a secret into a playlist:
only the ``sig`` an HMAC made of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from streamsrv.auth.signing import SigningKey, signed_query
from streamsrv.hls.segments import AAC_LADDER, LOSSLESS, Track, Variant, segment_overhead_bytes

__all__ = [
    "INIT_NAME",
    "MASTER_NAME",
    "MEDIA_NAME",
    "PLAYLIST_VERSION",
    "Bandwidth",
    "aac_ladder",
    "bandwidth",
    "child_expires",
    "master_playlist",
    "media_playlist",
    "segment_name",
    "signed_child",
    "variants_for",
]

#: ``EXT-X-VERSION``: ``EXT-X-MAP`` in a media playlist needs 6; Apple's
#: authoring spec and RFC 8216 describe 7.
PLAYLIST_VERSION: Final = 7

MASTER_NAME: Final = "master.m3u8"
MEDIA_NAME: Final = "index.m3u8"
INIT_NAME: Final = "init.mp4"
SEGMENT_SUFFIX: Final = ".m4s"

#: Child credentials last the track's duration plus this margin (seconds), so
#: a listener who pauses a while can still finish the track.
CHILD_TTL_MARGIN_S: Final = 3600

#: Child ``expires`` is rounded up to a multiple of this (seconds): masters
#: fetched within the same minute list the same URIs (the guard's verified-URL
#: cache and the players' caches hit).
CHILD_EXPIRES_ROUNDING_S: Final = 60

#: Every segment's frames are held to 105 % of their nominal size
#: (:func:`streamsrv.transcode.layout.aac_budget` without slack, enforced by
#: re-encoding at lower bit rates: :mod:`streamsrv.transcode.aac`), so the
#: declared peak is a bound, container included.  On music, noise and tones
#: FFmpeg's encoder holds a segment within ~3 % of its target (the average
#: factor); speech with silences used to overshoot by up to 19 % before the cap.
AAC_PEAK_FACTOR: Final = 1.10
AAC_AVERAGE_FACTOR: Final = 1.01

#: FLAC's worst case is a verbatim frame: PCM plus frame headers (< 1 %).
FLAC_PEAK_FACTOR: Final = 1.02

#: Average FLAC compression assumed when the source's own bit rate is unknown.
FLAC_TYPICAL_RATIO: Final = 0.7


@dataclass(frozen=True)
class Bandwidth:
    """A variant's declared bit rates, bits per second, container included."""

    peak: int
    average: int


def aac_ladder(kbps: Sequence[int]) -> tuple[Variant, ...]:
    """AAC-LC rungs at these kb/s, lowest first, named ``"{kbps}k"`` (``STREAMSRV_HLS_LADDER``)."""
    return tuple(Variant(f"{rate}k", "aac", rate) for rate in sorted(set(kbps)))


def variants_for(track: Track, *, hq: bool, ladder: Sequence[Variant] = AAC_LADDER) -> list[Variant]:
    """The AAC *ladder*, plus the lossless rung for *hq* when the source has one."""
    ladder = list(ladder)
    if hq and track.has_lossless:
        ladder.append(LOSSLESS)
    return ladder


def bandwidth(track: Track, variant: Variant) -> Bandwidth:
    """``BANDWIDTH`` (a peak bound) and ``AVERAGE-BANDWIDTH`` of *variant*, before anything is encoded.

    Container overhead (``moof`` + ``mdat`` headers and the per-sample table)
    is added to both; figures are rounded up to whole kb/s.
    """
    segment_s = track.segment_samples / track.sample_rate
    overhead = segment_overhead_bytes(track.segment_samples) * 8 / segment_s
    if variant.lossless:
        pcm = track.source_rate * track.source_channels * track.bits
        peak = pcm * FLAC_PEAK_FACTOR
        known = track.source_bit_rate
        average = min(known, pcm) if known else pcm * FLAC_TYPICAL_RATIO
    else:
        assert variant.bitrate_kbps is not None
        peak = variant.bitrate_kbps * 1000 * AAC_PEAK_FACTOR
        average = variant.bitrate_kbps * 1000 * AAC_AVERAGE_FACTOR
    return Bandwidth(peak=_kbps_up(peak + overhead), average=_kbps_up(average + overhead))


def _kbps_up(bits_per_s: float) -> int:
    return math.ceil(bits_per_s / 1000) * 1000


def master_playlist(track: Track, variants: Sequence[Variant], uri: Callable[[str], str]) -> str:
    """The multivariant playlist.

    :param variants: The rungs to list (see :func:`variants_for`).
    :param uri: Turns a child's relative name (``"128k/index.m3u8"``) into
        the URI to write (e.g. with its signed query).
    """
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{PLAYLIST_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        rates = bandwidth(track, variant)
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={rates.peak},AVERAGE-BANDWIDTH={rates.average},"
            f'CODECS="{variant.codecs}"'
        )
        lines.append(uri(f"{variant.name}/{MEDIA_NAME}"))
    return "\n".join(lines) + "\n"


def media_playlist(track: Track, variant: Variant, uri: Callable[[str], str]) -> str:
    """The VOD media playlist of *variant*.

    :param uri: Turns a child's name relative to the variant (``"init.mp4"``,
        ``"0.m4s"``) into the URI to write.
    """
    durations = track.durations(variant)
    target = max(1, math.ceil(max(durations)))
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{uri(INIT_NAME)}"',
    ]
    for n, duration in enumerate(durations):
        lines.append(f"#EXTINF:{duration:.6f},")
        lines.append(uri(segment_name(n)))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def segment_name(n: int) -> str:
    """The file name of media segment *n*: ``"7.m4s"``."""
    return f"{n}{SEGMENT_SUFFIX}"


def child_expires(track: Track, now: float, max_ttl_s: int) -> int:
    """When the credentials of a playlist's children expire (Unix seconds).

    The track's duration plus :data:`CHILD_TTL_MARGIN_S`, rounded up to
    :data:`CHILD_EXPIRES_ROUNDING_S`, never more than *max_ttl_s* ahead
    (``STREAMSRV_URL_MAX_TTL_S``: the guard refuses anything further).
    """
    wanted = math.floor(now) + math.ceil(track.duration_s) + CHILD_TTL_MARGIN_S
    rounded = -(-wanted // CHILD_EXPIRES_ROUNDING_S) * CHILD_EXPIRES_ROUNDING_S
    return min(rounded, math.floor(now) + max_ttl_s)


def signed_child(
    base_path: str,
    relative: str,
    *,
    key: SigningKey,
    expires: int,
    bound: Mapping[str, str] | None = None,
) -> str:
    """A child's relative URI with its own signed query.

    :param base_path: The decoded request path of the directory the playlist
        is in, ending with ``/`` (``"/hls/jazz/So What.mp3/"``): what a
        player resolves *relative* against.
    :param relative: The child's name relative to it (ASCII, URL-safe).
    :param key: The signing key (the current one); ``kid`` is included.
    :param bound: Parameters to bind (carried over from the master: ``uid``, ``ip``).
    :return: ``relative + "?" + query``, e.g. ``"128k/index.m3u8?expires=…&kid=…&sig=…"``.
    """
    return f"{relative}?{signed_query(base_path + relative, expires, key, bound)}"
