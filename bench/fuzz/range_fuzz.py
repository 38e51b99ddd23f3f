"""atheris harness: the Range and If-Range parsers with arbitrary bytes (see README.md here).

.venv/bin/python bench/fuzz/range_fuzz.py -max_total_time=60
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from streamsrv.streaming.conditional import if_range_allows_partial
    from streamsrv.streaming.ranges import (
        RangeNotSatisfiable,
        parse_range_header,
        plays_from_start,
        resolve_ranges,
    )

ETAG = '"abc123"'
LAST_MODIFIED = 1_767_225_600


def one_input(data: bytes) -> None:
    """Parse and resolve *data* as a Range header against a few sizes; check the invariants."""
    provider = atheris.FuzzedDataProvider(data)
    size = provider.ConsumeIntInRange(0, 1 << 40)
    max_ranges = provider.ConsumeIntInRange(1, 64)
    if_range = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64)).decode("latin-1")
    value = provider.ConsumeBytes(provider.remaining_bytes()).decode("latin-1")
    if_range_allows_partial(if_range or None, ETAG, LAST_MODIFIED)
    plays_from_start(value)
    try:
        specs = parse_range_header(value)
    except ValueError:
        return
    try:
        ranges = resolve_ranges(specs, size, max_ranges)
    except RangeNotSatisfiable:
        return
    if ranges is None:
        return
    previous_end = -2
    for r in ranges:
        assert 0 <= r.start <= r.end < size, (value, size, r)
        assert r.start > previous_end + 1, (value, ranges)  # sorted, disjoint, not adjacent
        previous_end = r.end
    assert len(ranges) <= max_ranges, (value, ranges)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
