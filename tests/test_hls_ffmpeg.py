"""End-to-end truth: Debian's ``ffmpeg`` plays a whole track through ``/hls`` from a signed master URL.

A real listening port in this process (the reactor keeps serving while
``ffmpeg`` runs as a child process through ``getProcessOutputAndValue``), a
real worker pool, real child credentials: ``ffmpeg`` is given only the
signed master URL and must follow the signed URIs inside it.
"""

from __future__ import annotations

import shutil
from urllib.parse import quote

import numpy as np
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.audiogen import decode
from tests.test_hls_resource import SECONDS, TRACK, HlsSite

FFMPEG = shutil.which("ffmpeg")


class FfmpegPlaysHlsTests(unittest.TestCase):
    """``ffmpeg -i <signed master URL>`` over a real socket."""

    timeout = 120

    def setUp(self) -> None:
        if FFMPEG is None:
            raise unittest.SkipTest("ffmpeg is not installed")
        self.site = HlsSite(self, anonymous=False)
        self.port = reactor.listenTCP(0, self.site.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def url(self, variant_hq: bool = False) -> str:
        bound = {"hq": "1"} if variant_hq else {}
        target = self.site.signed(f"/hls/{TRACK}/master.m3u8", **bound)
        return f"http://127.0.0.1:{self.port.getHost().port}{target}"

    async def ffmpeg(self, *args: str) -> tuple[bytes, bytes, int]:
        assert FFMPEG is not None
        out, err, code = await getProcessOutputAndValue(FFMPEG, ("-nostdin", "-v", "error", *args), env={})
        return out, err, code

    async def test_plays_whole_track(self) -> None:
        """``-f null`` exits 0; the decoded PCM lasts the source's duration within 50 ms and matches it."""
        out, err, code = await self.ffmpeg("-i", self.url(), "-f", "null", "-")
        self.assertEqual((code, err), (0, b""), err)
        out, err, code = await self.ffmpeg("-i", self.url(), "-f", "f32le", "-ac", "2", "-ar", "44100", "-")
        self.assertEqual(code, 0, err)
        decoded = np.frombuffer(out, dtype="<f4").reshape(-1, 2).T
        self.assertLess(abs(decoded.shape[1] / 44100 - SECONDS), 0.05)
        source, _ = decode(self.site.root / TRACK)
        # FFmpeg 5.1 plays the 1024-sample priming of fragmented MP4 (it ignores the edit list's
        # start there): align on it, then the waveform matches the source.
        lag = int(np.argmax([np.dot(source[0, :44100], decoded[0, k : k + 44100]) for k in range(2048)]))
        self.assertIn(lag, (0, 1024))
        count = min(source.shape[1], decoded.shape[1] - lag)
        error = decoded[:, lag : lag + count] - source[:, :count]
        self.assertLess(float(np.sqrt(np.mean(error[:, 2048:] ** 2))), 0.02)

    async def test_plays_lossless_rung(self) -> None:
        """The FLAC-in-fMP4 rung (``hq=1`` bound by the backend) plays bit-exactly."""
        master = self.url(variant_hq=True)
        out, err, code = await self.ffmpeg("-i", master, "-map", "0:p:4:a", "-f", "s16le", "-")
        self.assertEqual(code, 0, err)
        decoded = np.frombuffer(out, dtype="<i2").reshape(-1, 2).T
        source, _ = decode(self.site.root / TRACK)
        self.assertEqual(decoded.shape[1], source.shape[1])
        self.assertTrue(np.array_equal(decoded.astype(np.float32) / 32768.0, source))

    async def test_refuses_tampered_master(self) -> None:
        """A tampered master URL makes ffmpeg fail (403), with nothing decoded."""
        url = self.url().replace("sig=", "sig=A")
        out, _, code = await self.ffmpeg("-i", url, "-f", "null", "-")
        self.assertNotEqual(code, 0)
        self.assertNotIn(quote(TRACK), out.decode("latin-1"))
