"""HLS playlists: Apple's rules for audio, checked with the ``m3u8`` parser, and their child credentials."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import m3u8
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.auth.signing import SignedUrlError, verify
from streamsrv.hls.playlists import (
    CHILD_TTL_MARGIN_S,
    bandwidth,
    child_expires,
    master_playlist,
    media_playlist,
    signed_child,
    variants_for,
)
from streamsrv.hls.segments import AAC_FRAME, AAC_LADDER, LOSSLESS, VARIANTS, Track
from tests.test_guard import KEYS

NOW = 1_800_000_000

#: 3 min 21.5 s of 16-bit stereo at 44.1 kHz, from a FLAC file of ~900 kb/s.
TRACK = Track(
    samples=8_886_150,
    sample_rate=44100,
    source_samples=8_886_150,
    source_rate=44100,
    source_channels=2,
    bits=16,
    source_bit_rate=900_000,
    lossless_source=True,
)

LOSSY = Track(
    samples=8_886_150,
    sample_rate=44100,
    source_samples=8_886_150,
    source_rate=44100,
    source_channels=2,
    bits=16,
    source_bit_rate=320_000,
    lossless_source=False,
)


def plain(relative: str) -> str:
    return relative


class MasterPlaylistTests(unittest.TestCase):
    """The multivariant playlist."""

    def test_parses_and_follows_the_rules(self) -> None:
        """Version 7, independent segments, every variant with BANDWIDTH >= AVERAGE-BANDWIDTH and CODECS."""
        text = master_playlist(TRACK, variants_for(TRACK, hq=False), plain)
        playlist = m3u8.loads(text)
        self.assertTrue(playlist.is_variant)
        self.assertEqual(playlist.version, 7)
        self.assertTrue(playlist.is_independent_segments)
        self.assertEqual([p.uri for p in playlist.playlists], [f"{v.name}/index.m3u8" for v in AAC_LADDER])
        for variant, entry in zip(AAC_LADDER, playlist.playlists, strict=True):
            info = entry.stream_info
            self.assertEqual(info.codecs, "mp4a.40.2")
            self.assertGreaterEqual(info.bandwidth, info.average_bandwidth)
            assert variant.bitrate_kbps is not None
            # Apple's stereo guidance: 32-160 kb/s of audio; the declared figures include the container.
            self.assertTrue(32 <= variant.bitrate_kbps <= 160)
            self.assertGreater(info.average_bandwidth, variant.bitrate_kbps * 1000)
            self.assertLess(info.bandwidth, variant.bitrate_kbps * 1000 * 1.2)

    def test_lossless_rung_only_for_hq_and_lossless_sources(self) -> None:
        """FLAC (``fLaC``) is listed for hq principals, and only when the source is lossless."""
        self.assertEqual(variants_for(TRACK, hq=True)[-1], LOSSLESS)
        self.assertNotIn(LOSSLESS, variants_for(TRACK, hq=False))
        self.assertNotIn(LOSSLESS, variants_for(LOSSY, hq=True))
        playlist = m3u8.loads(master_playlist(TRACK, variants_for(TRACK, hq=True), plain))
        entry = playlist.playlists[-1]
        self.assertEqual((entry.uri, entry.stream_info.codecs), ("flac/index.m3u8", "fLaC"))
        self.assertGreaterEqual(entry.stream_info.bandwidth, 44100 * 2 * 16)
        self.assertGreaterEqual(entry.stream_info.bandwidth, entry.stream_info.average_bandwidth)

    def test_bandwidth_of_every_variant(self) -> None:
        """Peak and average include the container and never invert."""
        for variant in VARIANTS.values():
            rates = bandwidth(TRACK, variant)
            self.assertGreaterEqual(rates.peak, rates.average)
            self.assertEqual(rates.peak % 1000, 0)


class MediaPlaylistTests(unittest.TestCase):
    """The VOD media playlists."""

    def test_parses_and_follows_the_rules(self) -> None:
        """VOD, ENDLIST, MAP, sequence 0, TARGETDURATION >= every EXTINF, EXTINF summing to the track."""
        text = media_playlist(TRACK, AAC_LADDER[2], plain)
        playlist = m3u8.loads(text)
        self.assertFalse(playlist.is_variant)
        self.assertEqual(playlist.version, 7)
        self.assertEqual(playlist.playlist_type, "vod")
        self.assertTrue(playlist.is_endlist)
        self.assertEqual(playlist.media_sequence, 0)
        self.assertEqual(playlist.segment_map[0].uri, "init.mp4")
        durations = [s.duration for s in playlist.segments]
        self.assertEqual(playlist.target_duration, 6)
        self.assertTrue(all(round(d) <= playlist.target_duration for d in durations))
        self.assertTrue(all(abs(d - 258 * 1024 / 44100) < 1e-6 for d in durations[:-1]))
        self.assertLess(durations[-1], durations[0])
        self.assertLessEqual(abs(sum(durations) - TRACK.duration_s), AAC_FRAME / 44100)
        self.assertEqual([s.uri for s in playlist.segments], [f"{n}.m4s" for n in range(len(durations))])
        self.assertIn("#EXT-X-INDEPENDENT-SEGMENTS", text)

    def test_lossless_grid_matches_the_aac_grid(self) -> None:
        """The lossless rung's segments last exactly as long as the AAC ones."""
        self.assertEqual(TRACK.durations(LOSSLESS), TRACK.durations(AAC_LADDER[0]))

    @given(
        samples=st.integers(min_value=1, max_value=48000 * 3600),
        rate=st.sampled_from([44100, 48000]),
    )
    def test_grid_is_exact(self, samples: int, rate: int) -> None:
        """Every segment is whole AAC frames of ~6 s but the last, and the EXTINFs add up to the track."""
        track = Track(samples, rate, samples, rate, 2, 16)
        durations = track.durations(AAC_LADDER[0])
        self.assertEqual(len(durations), track.segment_count)
        self.assertTrue(all(5.98 < d <= 6.0 for d in durations[:-1]))
        self.assertTrue(0 < durations[-1] <= 6.0)
        self.assertEqual(track.segment_samples % AAC_FRAME, 0)
        self.assertLess(abs(sum(durations) - samples / rate), 1e-6)
        text = media_playlist(track, AAC_LADDER[0], plain)
        target = int(text.split("#EXT-X-TARGETDURATION:")[1].split("\n")[0])
        self.assertEqual(target, math.ceil(max(durations)))


class ChildCredentialTests(unittest.TestCase):
    """The signed queries written into playlists."""

    def test_children_verify_for_the_path_they_resolve_to(self) -> None:
        """A relative child URI, resolved against the playlist's URL, verifies with the server's keys."""
        master_url = "https://media.example.com/hls/jazz/Miles%20Davis/So%20What.flac/master.m3u8"
        base = "/hls/jazz/Miles Davis/So What.flac/"
        expires = child_expires(TRACK, NOW, 604800)
        uri = signed_child(base, "128k/index.m3u8", key=KEYS[0], expires=expires, bound={"uid": "alice"})
        self.assertTrue(uri.startswith("128k/index.m3u8?"))
        resolved = urlsplit(urljoin(master_url, uri))
        pairs = parse_qsl(resolved.query)
        self.assertEqual(dict(pairs)["kid"], KEYS[0].kid)
        bound = verify(unquote(resolved.path), pairs, keys=KEYS, now=NOW, max_ttl_s=604800)
        self.assertEqual(bound, {"uid": "alice"})
        with self.assertRaises(SignedUrlError):
            verify(
                unquote(resolved.path).replace("128k", "160k"), pairs, keys=KEYS, now=NOW, max_ttl_s=604800
            )

    def test_child_lifetime(self) -> None:
        """Children last the track plus the margin, rounded up to a minute, within the server's TTL cap."""
        expires = child_expires(TRACK, NOW + 7, 604800)
        self.assertGreaterEqual(expires - (NOW + 7), math.ceil(TRACK.duration_s) + CHILD_TTL_MARGIN_S)
        self.assertLess(expires - (NOW + 7), math.ceil(TRACK.duration_s) + CHILD_TTL_MARGIN_S + 60)
        self.assertEqual(expires % 60, 0)
        self.assertEqual(child_expires(TRACK, NOW, 600), NOW + 600)
