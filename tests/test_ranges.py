# -*- test-case-name: tests.test_ranges -*-
"""Tests for :mod:`streamsrv.streaming.ranges`."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.streaming.ranges import (
    MAX_HEADER_LENGTH,
    MAX_RANGE_SPECS,
    ByteRange,
    RangeNotSatisfiable,
    RangeSpec,
    parse_range_header,
    plays_from_start,
    resolve_ranges,
)

_positions = st.integers(min_value=0, max_value=2**64)
_ows = st.sampled_from(["", " ", "\t", "  ", " \t "])


@st.composite
def _specs(draw: st.DrawFn, bound: st.SearchStrategy[int] = _positions) -> RangeSpec:
    """
    Draw one well-formed range spec: closed, open or suffix.
    """
    kind = draw(st.sampled_from(["closed", "open", "suffix"]))
    if kind == "suffix":
        return (None, draw(bound))
    first = draw(bound)
    if kind == "open":
        return (first, None)
    return (first, first + draw(bound))


@st.composite
def _headers(draw: st.DrawFn) -> tuple[str, list[RangeSpec]]:
    """
    Draw a list of specs and a ``Range`` header spelling them, with random
    unit case, optional whitespace and empty list elements.
    """
    specs = draw(st.lists(_specs(), min_size=1, max_size=20))
    unit = "".join(draw(st.sampled_from([c, c.upper()])) for c in "bytes")
    elements = []
    for first, last in specs:
        text = (
            f"{draw(_ows)}{'' if first is None else first}{draw(_ows)}-"
            f"{draw(_ows)}{'' if last is None else last}{draw(_ows)}"
        )
        elements.append(text)
        if draw(st.booleans()):
            elements.append(draw(_ows))
    return f"{unit}={','.join(elements)}", specs


def _covered(specs: list[RangeSpec], size: int) -> set[int]:
    """
    The offsets a list of specs asks for in a representation of ``size``
    bytes, computed the slow, obvious way.
    """
    covered: set[int] = set()
    for first, last in specs:
        if first is None:
            assert last is not None
            covered.update(range(max(0, size - last), size))
        else:
            end = size - 1 if last is None else min(last, size - 1)
            covered.update(range(first, end + 1))
    return covered


def _runs(offsets: set[int]) -> int:
    """
    The number of maximal runs of consecutive integers in ``offsets``.
    """
    return sum(1 for offset in offsets if offset - 1 not in offsets)


class ByteRangeTests(unittest.SynchronousTestCase):
    """
    Tests for L{ByteRange}.
    """

    def test_length(self) -> None:
        """
        Both ends are inclusive: 0-99 is 100 bytes and 5-5 is one.
        """
        self.assertEqual(ByteRange(0, 99).length, 100)
        self.assertEqual(ByteRange(5, 5).length, 1)

    def test_content_range(self) -> None:
        """
        C{content_range} spells the RFC 9110 §14.4 value.
        """
        self.assertEqual(ByteRange(0, 99).content_range(1000), "bytes 0-99/1000")
        self.assertEqual(ByteRange(999, 999).content_range(1000), "bytes 999-999/1000")

    def test_content_range_outside(self) -> None:
        """
        A range that does not fit inside the size cannot be spelled.
        """
        self.assertRaises(ValueError, ByteRange(0, 1000).content_range, 1000)

    def test_invalid(self) -> None:
        """
        A negative start or an end before the start is no range.
        """
        self.assertRaises(ValueError, ByteRange, -1, 5)
        self.assertRaises(ValueError, ByteRange, 5, 4)

    def test_frozen(self) -> None:
        """
        Ranges are immutable values.
        """
        byte_range = ByteRange(0, 1)
        self.assertRaises(AttributeError, setattr, byte_range, "start", 1)
        self.assertEqual(byte_range, ByteRange(0, 1))


class ParseRangeHeaderTests(unittest.SynchronousTestCase):
    """
    Tests for L{parse_range_header}.
    """

    def test_forms(self) -> None:
        """
        The three forms of RFC 9110 §14.1.2: closed, suffix and open.
        """
        self.assertEqual(parse_range_header("bytes=0-99"), [(0, 99)])
        self.assertEqual(parse_range_header("bytes=-500"), [(None, 500)])
        self.assertEqual(parse_range_header("bytes=9500-"), [(9500, None)])

    def test_single_bytes(self) -> None:
        """
        C{bytes=0-0}, C{bytes=-1}, C{bytes=0-} and C{bytes=-0} are all
        syntactically valid.
        """
        self.assertEqual(parse_range_header("bytes=0-0"), [(0, 0)])
        self.assertEqual(parse_range_header("bytes=-1"), [(None, 1)])
        self.assertEqual(parse_range_header("bytes=0-"), [(0, None)])
        self.assertEqual(parse_range_header("bytes=-0"), [(None, 0)])

    def test_several(self) -> None:
        """
        Several specs come back in the order they were sent, overlaps and all.
        """
        self.assertEqual(
            parse_range_header("bytes=500-600,601-999,0-0,-1,0-1,1-2"),
            [(500, 600), (601, 999), (0, 0), (None, 1), (0, 1), (1, 2)],
        )

    def test_whitespace(self) -> None:
        """
        Optional whitespace around the unit, commas and bounds is tolerated.
        """
        self.assertEqual(parse_range_header("bytes= 0-1 , 3-4"), [(0, 1), (3, 4)])
        self.assertEqual(parse_range_header(" bytes =\t0 - 1\t,-2 "), [(0, 1), (None, 2)])

    def test_line_break_is_not_whitespace(self) -> None:
        """
        Only SP and HTAB are optional whitespace; a line break is malformed.
        """
        self.assertRaises(ValueError, parse_range_header, "bytes=0-1\n")
        self.assertRaises(ValueError, parse_range_header, "bytes=0-1\r\n,2-3")

    def test_unit_case(self) -> None:
        """
        The range unit is case-insensitive.
        """
        self.assertEqual(parse_range_header("BYTES=0-1"), [(0, 1)])
        self.assertEqual(parse_range_header("Bytes=0-1"), [(0, 1)])

    def test_empty_elements(self) -> None:
        """
        Empty list elements (C{, ,}) are ignored.
        """
        self.assertEqual(parse_range_header("bytes=, ,0-1,,\t, 2-3,"), [(0, 1), (2, 3)])

    def test_other_unit(self) -> None:
        """
        Any unit other than C{bytes} is refused, so the header is ignored.
        """
        for value in ["items=0-1", "byte=0-1", "bits=0-1", "bytesx=0-1", "=0-1"]:
            self.assertRaises(ValueError, parse_range_header, value)

    def test_non_ascii_unit(self) -> None:
        """
        Unicode case folding does not smuggle in another unit: the unit must be
        ASCII C{bytes}.
        """
        self.assertRaises(ValueError, parse_range_header, "byte\u017f=0-1")
        self.assertRaises(ValueError, parse_range_header, "\uff42ytes=0-1")

    def test_first_after_last(self) -> None:
        """
        C{bytes=500-400} is malformed (RFC 9110 §14.1.1), not unsatisfiable.
        """
        self.assertRaises(ValueError, parse_range_header, "bytes=500-400")
        self.assertRaises(ValueError, parse_range_header, "bytes=0-1,500-400")

    def test_malformed(self) -> None:
        """
        Anything that is not a list of byte range specs is refused.
        """
        for value in [
            "",
            "bytes",
            "bytes 0-1",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=1",
            "bytes=0-1-2",
            "bytes=--1",
            "bytes=0--1",
            "bytes=a-b",
            "bytes=0-1;",
            "bytes=0-1 2",
            "bytes=0 1-2",
            "bytes=0-1=2",
        ]:
            self.assertRaises(ValueError, parse_range_header, value)

    def test_digits_only(self) -> None:
        """
        Positions are ASCII digits only: no signs, no C{+}, no hex, no
        underscores, no digits of other scripts, no exponent.
        """
        for value in [
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=-+2",
            "bytes=0x10-0x20",
            "bytes=1_000-2_000",
            "bytes=\u0661-\u0662",
            "bytes=\uff11-\uff12",
            "bytes=1e3-2e3",
            "bytes=1.0-2.0",
            "bytes=\u00b9-\u00b2",
        ]:
            self.assertRaises(ValueError, parse_range_header, value)

    def test_leading_zeros(self) -> None:
        """
        Leading zeros are still decimal digits.
        """
        self.assertEqual(parse_range_header("bytes=007-010"), [(7, 10)])

    def test_huge_positions(self) -> None:
        """
        Positions beyond any file size parse; resolution clamps them.
        """
        self.assertEqual(
            parse_range_header("bytes=0-99999999999999999999999"),
            [(0, 99999999999999999999999)],
        )

    def test_absurd_digit_count(self) -> None:
        """
        A position thousands of digits long is refused without converting it.
        """
        self.assertRaises(ValueError, parse_range_header, "bytes=0-" + "9" * 5000)

    def test_spec_limit(self) -> None:
        """
        Up to 1000 specs parse; one more is refused.
        """
        value = "bytes=" + ",".join(["1-1"] * MAX_RANGE_SPECS)
        self.assertEqual(len(parse_range_header(value)), MAX_RANGE_SPECS)
        self.assertRaises(ValueError, parse_range_header, value + ",1-1")

    def test_length_limit(self) -> None:
        """
        A header over 8 KiB is refused whatever it holds.
        """
        padding = " " * (MAX_HEADER_LENGTH - len("bytes=0-1"))
        self.assertEqual(parse_range_header("bytes=0-1" + padding), [(0, 1)])
        self.assertRaises(ValueError, parse_range_header, "bytes=0-1" + padding + " ")

    @given(_headers())
    def test_round_trip(self, header: tuple[str, list[RangeSpec]]) -> None:
        """
        Any list of specs, however spelled within the grammar, parses back to
        the same specs in the same order.
        """
        value, specs = header
        self.assertEqual(parse_range_header(value), specs)

    @given(st.text())
    def test_arbitrary_text(self, value: str) -> None:
        """
        Arbitrary text either parses to well-formed specs or raises
        C{ValueError}, never anything else.
        """
        self._check_parse(value)

    @given(st.text(alphabet="bytesBYTES=0123456789-, \t+x\u0661"))
    def test_arbitrary_range_like_text(self, value: str) -> None:
        """
        Text made of the header's own characters either parses to well-formed
        specs or raises C{ValueError}.
        """
        self._check_parse(value)

    @given(st.text(alphabet="0123456789-, \t"))
    def test_arbitrary_range_sets(self, range_set: str) -> None:
        """
        Any range set after a valid unit either parses to well-formed specs or
        raises C{ValueError}.
        """
        self._check_parse("bytes=" + range_set)

    def _check_parse(self, value: str) -> None:
        """
        Parse C{value}; if it parses, check every spec is well formed.
        """
        try:
            specs = parse_range_header(value)
        except ValueError:
            return
        self.assertTrue(specs)
        for first, last in specs:
            self.assertFalse(first is None and last is None)
            self.assertTrue(first is None or first >= 0)
            self.assertTrue(last is None or last >= 0)
            if first is not None and last is not None:
                self.assertLessEqual(first, last)


class ResolveRangesTests(unittest.SynchronousTestCase):
    """
    Tests for L{resolve_ranges}.
    """

    def test_first_byte(self) -> None:
        """
        C{bytes=0-0} is the first byte.
        """
        self.assertEqual(resolve_ranges([(0, 0)], 1000, 10), [ByteRange(0, 0)])

    def test_last_byte(self) -> None:
        """
        C{bytes=-1} is the last byte.
        """
        self.assertEqual(resolve_ranges([(None, 1)], 1000, 10), [ByteRange(999, 999)])

    def test_open(self) -> None:
        """
        C{bytes=0-} is the whole file as a range; C{bytes=9500-} the rest.
        """
        self.assertEqual(resolve_ranges([(0, None)], 1000, 10), [ByteRange(0, 999)])
        self.assertEqual(resolve_ranges([(9500, None)], 10000, 10), [ByteRange(9500, 9999)])

    def test_zero_suffix(self) -> None:
        """
        C{bytes=-0} selects nothing: unsatisfiable (RFC 9110 §14.1.1).
        """
        self.assertRaises(RangeNotSatisfiable, resolve_ranges, [(None, 0)], 1000, 10)

    def test_zero_suffix_beside_another(self) -> None:
        """
        An unsatisfiable spec is dropped while another is satisfiable.
        """
        self.assertEqual(resolve_ranges([(None, 0), (2, 3)], 10, 10), [ByteRange(2, 3)])

    def test_suffix_longer_than_file(self) -> None:
        """
        A suffix longer than the file is the whole file.
        """
        self.assertEqual(resolve_ranges([(None, 500)], 100, 10), [ByteRange(0, 99)])

    def test_end_clamped(self) -> None:
        """
        A last position past the end is clamped to the last byte.
        """
        self.assertEqual(resolve_ranges([(10, 10**30)], 100, 10), [ByteRange(10, 99)])

    def test_start_at_eof(self) -> None:
        """
        C{bytes=5-} on a 5-byte file starts at EOF: 416.
        """
        self.assertRaises(RangeNotSatisfiable, resolve_ranges, [(5, None)], 5, 10)

    def test_all_past_eof(self) -> None:
        """
        Several ranges all past EOF are unsatisfiable: 416, not the 500 that
        C{twisted.web.static.File} gives for C{bytes=20-30,40-50} on 10 bytes.
        """
        self.assertRaises(RangeNotSatisfiable, resolve_ranges, [(20, 30), (40, 50)], 10, 10)

    def test_some_past_eof(self) -> None:
        """
        Ranges past EOF are dropped when another one is satisfiable.
        """
        self.assertEqual(resolve_ranges([(20, 30), (2, 3), (10, None)], 10, 10), [ByteRange(2, 3)])

    def test_empty_file(self) -> None:
        """
        On a zero-length file every range with a first position is
        unsatisfiable.
        """
        for specs in ([(0, None)], [(0, 0)], [(0, 5), (None, 0)]):
            self.assertRaises(RangeNotSatisfiable, resolve_ranges, specs, 0, 10)

    def test_empty_file_suffix(self) -> None:
        """
        On a zero-length file a non-zero suffix is satisfiable (RFC 9110
        §14.1.1) yet has no C{Content-Range}: the Range is ignored (None, 200
        with the empty body).
        """
        self.assertIsNone(resolve_ranges([(None, 1)], 0, 10))
        self.assertIsNone(resolve_ranges([(0, 0), (None, 500)], 0, 10))

    def test_coalesce_overlap(self) -> None:
        """
        C{bytes=0-1,1-2} overlap and become one range 0-2.
        """
        self.assertEqual(resolve_ranges([(0, 1), (1, 2)], 10, 10), [ByteRange(0, 2)])

    def test_coalesce_adjacent(self) -> None:
        """
        Adjacent ranges become one; a one-byte gap keeps them apart.
        """
        self.assertEqual(resolve_ranges([(0, 1), (2, 3)], 10, 10), [ByteRange(0, 3)])
        self.assertEqual(resolve_ranges([(0, 1), (3, 4)], 10, 10), [ByteRange(0, 1), ByteRange(3, 4)])

    def test_coalesce_contained(self) -> None:
        """
        A range inside another disappears into it.
        """
        self.assertEqual(resolve_ranges([(0, 9), (2, 3)], 10, 10), [ByteRange(0, 9)])

    def test_ascending(self) -> None:
        """
        Ranges come back in ascending order whatever the order asked.
        """
        self.assertEqual(
            resolve_ranges([(50, 59), (None, 5), (0, 9)], 100, 10),
            [ByteRange(0, 9), ByteRange(50, 59), ByteRange(95, 99)],
        )

    def test_overlap_attack(self) -> None:
        """
        Hundreds of overlapping whole-file ranges collapse into one, so the
        response is never larger than the file.
        """
        specs: list[RangeSpec] = [(0, None)] * 500 + [(None, 10**9)] * 500
        self.assertEqual(resolve_ranges(specs, 1000, 2), [ByteRange(0, 999)])

    def test_too_many(self) -> None:
        """
        Many tiny disjoint ranges, more than C{max_ranges}, mean "ignore Range,
        send the whole file": None.
        """
        specs = parse_range_header("bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(500)))
        self.assertIsNone(resolve_ranges(specs, 10000, 16))

    def test_exactly_max(self) -> None:
        """
        Exactly C{max_ranges} ranges are served; one more is not.
        """
        specs: list[RangeSpec] = [(0, 0), (2, 2), (4, 4)]
        self.assertEqual(len(resolve_ranges(specs, 10, 3) or []), 3)
        self.assertIsNone(resolve_ranges(specs, 10, 2))

    def test_max_ranges_after_coalescing(self) -> None:
        """
        The limit counts ranges after coalescing.
        """
        specs: list[RangeSpec] = [(0, 1), (1, 2), (2, 3), (3, 4)]
        self.assertEqual(resolve_ranges(specs, 10, 1), [ByteRange(0, 4)])

    def test_invalid_arguments(self) -> None:
        """
        A negative size, a limit below one, or a spec the parser could not
        have produced is a bug in the caller: C{ValueError}.
        """
        self.assertRaises(ValueError, resolve_ranges, [(0, 1)], -1, 10)
        self.assertRaises(ValueError, resolve_ranges, [(0, 1)], 10, 0)
        self.assertRaises(ValueError, resolve_ranges, [(None, None)], 10, 10)
        self.assertRaises(ValueError, resolve_ranges, [(5, 4)], 10, 10)
        self.assertRaises(ValueError, resolve_ranges, [(-1, 4)], 10, 10)
        self.assertRaises(ValueError, resolve_ranges, [(None, None)], 0, 10)

    @given(
        st.lists(_specs(st.integers(min_value=0, max_value=40)), min_size=1, max_size=12),
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=1, max_value=6),
    )
    def test_invariants(self, specs: list[RangeSpec], size: int, max_ranges: int) -> None:
        """
        Resolved ranges lie within [0, size), ascend, neither overlap nor
        touch, and cover exactly the union of the requested bytes; None comes
        back iff that union needs more than C{max_ranges} ranges (or for the
        suffix-on-empty-file case); 416 iff the union is empty.
        """
        wanted = _covered(specs, size)
        suffix_on_empty = size == 0 and any(first is None and last for first, last in specs)
        try:
            ranges = resolve_ranges(specs, size, max_ranges)
        except RangeNotSatisfiable:
            self.assertEqual(wanted, set())
            self.assertFalse(suffix_on_empty)
            return
        if ranges is None:
            self.assertTrue(suffix_on_empty or _runs(wanted) > max_ranges)
            return
        self.assertTrue(wanted)
        self.assertLessEqual(len(ranges), max_ranges)
        self.assertEqual(len(ranges), _runs(wanted))
        got: set[int] = set()
        for byte_range in ranges:
            self.assertGreaterEqual(byte_range.start, 0)
            self.assertLess(byte_range.end, size)
            got.update(range(byte_range.start, byte_range.end + 1))
        for before, after in itertools.pairwise(ranges):
            self.assertGreater(after.start, before.end + 1)
        self.assertEqual(got, wanted)

    @given(
        st.lists(_specs(), min_size=1, max_size=30),
        st.integers(min_value=1, max_value=2**63),
    )
    def test_huge_values(self, specs: list[RangeSpec], size: int) -> None:
        """
        With positions and sizes far beyond memory, every range still lies
        within the representation, ascends and does not touch its neighbour.
        """
        try:
            ranges = resolve_ranges(specs, size, 1000)
        except RangeNotSatisfiable:
            self.assertTrue(
                all(
                    (first is None and last == 0) or (first is not None and first >= size)
                    for first, last in specs
                )
            )
            return
        assert ranges is not None
        for byte_range in ranges:
            self.assertLess(byte_range.end, size)
            self.assertEqual(byte_range.content_range(size).split("/")[1], str(size))
        for before, after in itertools.pairwise(ranges):
            self.assertGreater(after.start, before.end + 1)


class ParseMemoTests(unittest.TestCase):
    """The last parse is remembered without letting callers share its result."""

    def test_independent_results(self) -> None:
        """Parsing the same header twice gives equal lists that do not alias."""
        first = parse_range_header("bytes=0-9, 20-")
        first.append((1, 2))
        self.assertEqual(parse_range_header("bytes=0-9, 20-"), [(0, 9), (20, None)])

    def test_errors_not_remembered(self) -> None:
        """A malformed header raises every time, and does not disturb the last good one."""
        parse_range_header("bytes=5-6")
        for _ in range(2):
            with self.assertRaises(ValueError):
                parse_range_header("bytes=6-5")
        self.assertEqual(parse_range_header("bytes=5-6"), [(5, 6)])


class PlaysFromStartTests(unittest.TestCase):
    """
    Which ``Range`` headers make a ``/stream`` request a stream start.
    """

    def test_table(self) -> None:
        """
        No header, a first range from byte 0, or a header ``/stream`` ignores
        (malformed) play from the start; seeks and suffix ranges do not.
        """
        table: list[tuple[str | None, bool]] = [
            (None, True),
            ("bytes=0-", True),
            ("bytes=0-1", True),
            ("Bytes = 0 - 499", True),
            ("bytes=0-99,200-299", True),
            ("bytes=, 0-99", True),
            ("bytes=00-", True),
            ("garbage", True),
            ("items=5-", True),
            ("bytes=5-0", True),
            ("bytes=1000-", False),
            ("bytes=1-", False),
            ("bytes=-500", False),
            ("bytes=100-199,0-99", False),
        ]
        for header, expected in table:
            self.assertEqual(plays_from_start(header), expected, header)

    @given(header=st.one_of(st.none(), st.text()))
    def test_never_raises(self, header: str | None) -> None:
        """
        Any ``Range`` value gives a yes or a no.
        """
        self.assertIn(plays_from_start(header), (True, False))
