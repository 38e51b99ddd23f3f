# -*- test-case-name: tests.test_demo -*-
"""The generated demo library a development server starts with.

:mod:`~streamsrv.demo.tracks` says what it holds, :mod:`~streamsrv.demo.synth`
synthesises the signals, :mod:`~streamsrv.demo.encode` encodes them with PyAV,
:mod:`~streamsrv.demo.tags` and :mod:`~streamsrv.demo.cover` tag them, and
:mod:`~streamsrv.demo.library` (:func:`ensure_demo_library`) puts the whole
library in place once, atomically.  This package re-exports the public names.
Generating blocks for seconds of CPU work: it must never run on the reactor
thread, and never serve production.
"""

from streamsrv.demo.cover import COVER_SIZE, cover_png
from streamsrv.demo.encode import encode
from streamsrv.demo.library import (
    DEMO_MARKER,
    DEMO_VERSION,
    STALE_PARTIAL_S,
    ensure_demo_library,
    generate_demo_library,
)
from streamsrv.demo.synth import render_music, render_rain
from streamsrv.demo.tracks import COVER_FILE, DEMO_TRACKS, DemoTrack, Encoding, Style, Tags

__all__ = [
    "COVER_FILE",
    "COVER_SIZE",
    "DEMO_MARKER",
    "DEMO_TRACKS",
    "DEMO_VERSION",
    "STALE_PARTIAL_S",
    "DemoTrack",
    "Encoding",
    "Style",
    "Tags",
    "cover_png",
    "encode",
    "ensure_demo_library",
    "generate_demo_library",
    "render_music",
    "render_rain",
]
