"""The spectrogram grid's size: defaults, bounds and their check.

Kept apart from :mod:`streamsrv.audio.spectrogram` (numpy, PyAV) so that the
HTTP process validates ``frames`` and ``bins`` without importing either.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_BINS", "DEFAULT_FRAMES", "MAX_BINS", "MAX_CELLS", "MAX_FRAMES", "check_grid"]

#: Columns (time) and rows (frequency) of the JSON spectrogram by default: ~40 KB of JSON.
DEFAULT_FRAMES: Final = 200
DEFAULT_BINS: Final = 64
#: Bounds of ``frames`` and ``bins``, and of their product (~1.5 MB of JSON at most).
MAX_FRAMES: Final = 2000
MAX_BINS: Final = 1024
MAX_CELLS: Final = 2**18


def check_grid(frames: int, bins: int) -> None:
    """Refuse a grid size out of bounds.

    :raises ValueError: naming ``frames`` or ``bins`` (or both, for their product).
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be within 1..{MAX_FRAMES}")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be within 1..{MAX_BINS}")
    if frames * bins > MAX_CELLS:
        raise ValueError(f"frames x bins must be at most {MAX_CELLS}")
