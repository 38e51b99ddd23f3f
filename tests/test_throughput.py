"""Per-client throughput for ``format=auto``, and the choice it drives."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.streaming.resource import rendition_for
from streamsrv.streaming.throughput import MAX_AGE_S, ThroughputTracker


def _request(query: dict[bytes, list[bytes]], **headers: bytes) -> SimpleNamespace:
    lowered = {k.replace("_", "-").lower().encode(): v for k, v in headers.items()}
    return SimpleNamespace(args=query, getHeader=lambda name: lowered.get(name.lower()))


class TrackerTests(unittest.SynchronousTestCase):
    """Samples per client: only meaningful bodies, median of the recent ones."""

    def test_median_of_recent_large_bodies(self) -> None:
        tracker = ThroughputTracker()
        tracker.record("a", 1_000_000, 1.0, now=0.0)  # 8 Mb/s
        tracker.record("a", 1_000_000, 4.0, now=1.0)  # 2 Mb/s
        tracker.record("a", 1_000_000, 2.0, now=2.0)  # 4 Mb/s
        tracker.record("a", 10_000, 1.0, now=3.0)  # too small: ignored
        tracker.record("a", 1_000_000, 0.001, now=3.0)  # too fast to be the network: ignored
        self.assertEqual(tracker.estimate_mbps("a", now=3.0), 4.0)
        self.assertIsNone(tracker.estimate_mbps("b", now=3.0))
        self.assertIsNone(tracker.estimate_mbps("a", now=2.0 + MAX_AGE_S + 1))

    def test_bounded(self) -> None:
        tracker = ThroughputTracker(max_clients=3)
        for n in range(10):
            tracker.record(f"c{n}", 1_000_000, 1.0, now=0.0)
        self.assertIsNone(tracker.estimate_mbps("c0", now=0.0))
        self.assertEqual(tracker.estimate_mbps("c9", now=0.0), 8.0)


class AutoTests(unittest.SynchronousTestCase):
    """``format=auto``: Opus at a bitrate for the slower of the hint and the measurement."""

    def bitrate(self, measured: float | None = None, **headers: bytes) -> int | None:
        return rendition_for(_request({b"format": [b"auto"]}, **headers), measured).bitrate_kbps

    def test_choices(self) -> None:
        self.assertEqual(self.bitrate(), 96)
        self.assertEqual(self.bitrate(Save_Data=b"on"), 32)
        self.assertEqual(self.bitrate(Downlink=b"0.5"), 64)
        self.assertEqual(self.bitrate(Downlink=b"0.2"), 32)
        self.assertEqual(self.bitrate(0.4), 64)  # measured slower than the (absent) hint
        self.assertEqual(self.bitrate(50.0, Downlink=b"0.5"), 64)  # the hint is slower
        self.assertEqual(self.bitrate(Downlink=b"nan"), 96)
        self.assertEqual(
            rendition_for(_request({b"format": [b"auto"], b"bitrate": [b"48"]})).bitrate_kbps, 48
        )

    @given(
        st.binary(max_size=20), st.one_of(st.none(), st.floats(allow_nan=False, min_value=0, max_value=1e6))
    )
    def test_any_hint_gives_a_valid_rendition(self, downlink: bytes, measured: float | None) -> None:
        rendition = rendition_for(_request({b"format": [b"auto"]}, Downlink=downlink), measured)
        self.assertEqual(rendition.format, "opus")
        self.assertIn(rendition.bitrate_kbps, (32, 64, 96))


#: User-Agent strings of the clients ``format=auto`` gives AAC (Apple's WebKit and AVFoundation) or not.
SAFARI_MAC = (
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"Version/17.5 Safari/605.1.15"
)
CHROME_IOS = (
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"CriOS/126.0 Mobile/15E148 Safari/604.1"
)
CORE_MEDIA = b"AppleCoreMedia/1.0.0.21F79 (iPhone; U; CPU OS 17_5 like Mac OS X; en_us)"
CHROME_MAC = (
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/126.0.0.0 Safari/537.36"
)
FIREFOX = b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class AutoClientTests(unittest.SynchronousTestCase):
    """``format=auto`` also reads ``ECT`` and, for Apple's players, chooses AAC in M4A."""

    def test_ect(self) -> None:
        """The effective connection type caps the choice like a Downlink of that speed."""
        for ect, kbps in ((b"slow-2g", 32), (b"2g", 32), (b"3g", 64), (b"4g", 96), (b"bogus", 96)):
            self.assertEqual(rendition_for(_request({b"format": [b"auto"]}, ECT=ect)).bitrate_kbps, kbps, ect)

    def test_apple_clients_get_aac(self) -> None:
        """Safari on macOS, any browser on iOS and AVFoundation get AAC in M4A at 32/64/128 kb/s;
        Chrome (which says "Safari" too) and Firefox keep Opus."""
        for agent in (SAFARI_MAC, CHROME_IOS, CORE_MEDIA):
            for headers, kbps in (({}, 128), ({"Downlink": b"0.5"}, 64), ({"Save_Data": b"on"}, 32)):
                rendition = rendition_for(_request({b"format": [b"auto"]}, User_Agent=agent, **headers))
                self.assertEqual(
                    (rendition.format, rendition.container, rendition.bitrate_kbps), ("aac", "m4a", kbps)
                )
        for agent in (CHROME_MAC, FIREFOX, b""):
            rendition = rendition_for(_request({b"format": [b"auto"]}, User_Agent=agent))
            self.assertEqual((rendition.format, rendition.bitrate_kbps), ("opus", 96), agent)
