# -*- test-case-name: tests.test_conditional -*-
"""Tests for :mod:`streamsrv.streaming.conditional`."""

from __future__ import annotations

import calendar
import re
import time

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.media.identity import make_etag
from streamsrv.streaming.conditional import (
    Outcome,
    evaluate_preconditions,
    http_date,
    if_range_allows_partial,
    parse_http_date,
)

#: RFC 9110 §5.6.7's example instant, Sun, 06 Nov 1994 08:49:37 GMT.
EXAMPLE = 784111777
EXAMPLE_IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
EXAMPLE_RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
EXAMPLE_ASCTIME = "Sun Nov  6 08:49:37 1994"

ETAG = '"3e8-17f0c2a1b-2a"'
OTHER = '"3e8-17f0c2a1c-2a"'
MODIFIED = EXAMPLE
BEFORE = http_date(MODIFIED - 1)
AT = http_date(MODIFIED)
AFTER = http_date(MODIFIED + 1)

_ENTITY_TAG = re.compile(r'"[\x21\x23-\x7e]*"')


def _evaluate(method: str = "GET", **headers: str) -> Outcome:
    """
    Evaluate preconditions on the representation C{ETAG}/C{MODIFIED} with
    only the given headers present.
    """
    fields: dict[str, str | None] = {
        "if_match": None,
        "if_none_match": None,
        "if_modified_since": None,
        "if_unmodified_since": None,
    }
    fields.update(headers)
    return evaluate_preconditions(method, ETAG, MODIFIED, **fields)


class MakeEtagTests(unittest.SynchronousTestCase):
    """
    Tests for L{make_etag}.
    """

    def test_format(self) -> None:
        """
        The tag is strong, quoted, and made of the hex size, nanosecond mtime
        and inode.
        """
        self.assertEqual(make_etag(1000, 0x17F0C2A1B, 42), ETAG)

    def test_negative_mtime(self) -> None:
        """
        A pre-1970 file still gets a valid entity-tag.
        """
        self.assertRegex(make_etag(10, -5, 3), _ENTITY_TAG)

    def test_negative_size_or_inode(self) -> None:
        """
        A negative size or inode is no file: C{ValueError}.
        """
        self.assertRaises(ValueError, make_etag, -1, 0, 0)
        self.assertRaises(ValueError, make_etag, 0, 0, -1)

    @given(
        st.integers(min_value=0, max_value=2**64),
        st.integers(min_value=-(2**64), max_value=2**64),
        st.integers(min_value=0, max_value=2**64),
    )
    def test_valid_entity_tag(self, size: int, mtime_ns: int, inode: int) -> None:
        """
        Every tag is a valid strong entity-tag (RFC 9110 §8.8.3).
        """
        self.assertRegex(make_etag(size, mtime_ns, inode), _ENTITY_TAG)

    @given(
        st.tuples(
            st.integers(min_value=0, max_value=2**20),
            st.integers(min_value=-(2**20), max_value=2**20),
            st.integers(min_value=0, max_value=2**20),
        ),
        st.tuples(
            st.integers(min_value=0, max_value=2**20),
            st.integers(min_value=-(2**20), max_value=2**20),
            st.integers(min_value=0, max_value=2**20),
        ),
    )
    def test_distinct(self, one: tuple[int, int, int], other: tuple[int, int, int]) -> None:
        """
        Different stat results give different tags, so a change of size, time
        or inode always shows.
        """
        if one != other:
            self.assertNotEqual(make_etag(*one), make_etag(*other))


class HttpDateTests(unittest.SynchronousTestCase):
    """
    Tests for L{http_date} and L{parse_http_date}.
    """

    def test_format(self) -> None:
        """
        L{http_date} writes an IMF-fixdate.
        """
        self.assertEqual(http_date(EXAMPLE), EXAMPLE_IMF)

    def test_fraction_dropped(self) -> None:
        """
        Fractions of a second are dropped, not rounded up.
        """
        self.assertEqual(http_date(EXAMPLE + 0.999), EXAMPLE_IMF)

    def test_three_formats(self) -> None:
        """
        The IMF-fixdate, RFC 850 and asctime forms of RFC 9110 §5.6.7 are all
        read.
        """
        now = calendar.timegm((2025, 1, 1, 0, 0, 0, 0, 0, 0))
        self.assertEqual(parse_http_date(EXAMPLE_IMF), EXAMPLE)
        self.assertEqual(parse_http_date(EXAMPLE_RFC850, now=now), EXAMPLE)
        self.assertEqual(parse_http_date(EXAMPLE_ASCTIME), EXAMPLE)

    def test_asctime_two_digit_day(self) -> None:
        """
        asctime's day is a space and a digit, or two digits.
        """
        self.assertEqual(
            parse_http_date("Thu Nov 17 08:49:37 1994"), calendar.timegm((1994, 11, 17, 8, 49, 37))
        )

    def test_rfc850_century(self) -> None:
        """
        A two-digit year more than 50 years ahead is the most recent past year
        with those digits (RFC 9110 §5.6.7).
        """
        now = calendar.timegm((2025, 6, 1, 0, 0, 0, 0, 0, 0))
        self.assertEqual(
            parse_http_date("Monday, 01-Jan-75 00:00:00 GMT", now=now),
            calendar.timegm((2075, 1, 1, 0, 0, 0)),
        )
        self.assertEqual(
            parse_http_date("Monday, 01-Jan-76 00:00:00 GMT", now=now),
            calendar.timegm((1976, 1, 1, 0, 0, 0)),
        )
        self.assertEqual(
            parse_http_date("Sunday, 01-Jan-95 00:00:00 GMT", now=now),
            calendar.timegm((1995, 1, 1, 0, 0, 0)),
        )

    def test_case_and_whitespace(self) -> None:
        """
        Names are read case-insensitively and surrounding whitespace is
        ignored.
        """
        self.assertEqual(parse_http_date(" sun, 06 NOV 1994 08:49:37 gmt\t"), EXAMPLE)

    def test_leap_second(self) -> None:
        """
        Second 60 is allowed by the grammar and read as the next second.
        """
        self.assertEqual(
            parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT"),
            calendar.timegm((2017, 1, 1, 0, 0, 0)),
        )

    def test_unparseable(self) -> None:
        """
        Anything but exactly one valid HTTP-date is None.
        """
        for value in [
            "",
            "garbage",
            "0",
            str(EXAMPLE),
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Thu, 29 Feb 2001 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 0000 08:49:37 GMT",
            "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            "Sun Nov 6 08:49:37 1994",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            EXAMPLE_IMF + " " * 100,
        ]:
            self.assertIsNone(parse_http_date(value), value)

    @given(st.integers(min_value=0, max_value=253402300799))
    def test_round_trip(self, timestamp: int) -> None:
        """
        Every whole-second time up to year 9999 survives formatting and
        parsing.
        """
        self.assertEqual(parse_http_date(http_date(timestamp)), timestamp)

    @given(st.integers(min_value=0, max_value=253402300799))
    def test_asctime_round_trip(self, timestamp: int) -> None:
        """
        The asctime form written by C{time.asctime} reads back to the same
        time.
        """
        self.assertEqual(parse_http_date(time.asctime(time.gmtime(timestamp))), timestamp)

    @given(st.text())
    def test_arbitrary_text(self, value: str) -> None:
        """
        Arbitrary text gives an int or None, never an exception.
        """
        result = parse_http_date(value)
        self.assertTrue(result is None or isinstance(result, int))


class EvaluatePreconditionsTests(unittest.SynchronousTestCase):
    """
    Tests for L{evaluate_preconditions}, one branch of RFC 9110 §13.2.2 at a
    time.
    """

    def test_no_preconditions(self) -> None:
        """
        Without conditional headers the request proceeds.
        """
        self.assertEqual(_evaluate(), Outcome.PROCEED)

    def test_if_match_star(self) -> None:
        """
        C{If-Match: *} matches an existing representation.
        """
        self.assertEqual(_evaluate(if_match="*"), Outcome.PROCEED)
        self.assertEqual(_evaluate(if_match=" * "), Outcome.PROCEED)

    def test_if_match_strong(self) -> None:
        """
        C{If-Match} with the current tag, alone or in a list, proceeds.
        """
        self.assertEqual(_evaluate(if_match=ETAG), Outcome.PROCEED)
        self.assertEqual(_evaluate(if_match=f"{OTHER}, {ETAG}"), Outcome.PROCEED)
        self.assertEqual(_evaluate(if_match=f'"a,b",{ETAG}'), Outcome.PROCEED)

    def test_if_match_mismatch(self) -> None:
        """
        C{If-Match} without the current tag is 412, whatever the method.
        """
        self.assertEqual(_evaluate(if_match=OTHER), Outcome.PRECONDITION_FAILED)
        self.assertEqual(_evaluate("HEAD", if_match=OTHER), Outcome.PRECONDITION_FAILED)
        self.assertEqual(_evaluate("PUT", if_match=OTHER), Outcome.PRECONDITION_FAILED)

    def test_if_match_weak_never_matches(self) -> None:
        """
        C{If-Match} uses the strong comparison: C{W/} with the same opaque tag
        does not match.
        """
        self.assertEqual(_evaluate(if_match=f"W/{ETAG}"), Outcome.PRECONDITION_FAILED)

    def test_if_match_malformed(self) -> None:
        """
        A malformed C{If-Match} matches nothing: 412, the safe side.
        """
        for value in ["", "abc", ETAG[1:], f"{ETAG} x", f"{ETAG}{ETAG}", f"*, {ETAG}", "w/" + ETAG]:
            self.assertEqual(_evaluate(if_match=value), Outcome.PRECONDITION_FAILED, value)

    def test_if_unmodified_since(self) -> None:
        """
        C{If-Unmodified-Since} fails with 412 only when the representation
        changed after the date.
        """
        self.assertEqual(_evaluate(if_unmodified_since=AT), Outcome.PROCEED)
        self.assertEqual(_evaluate(if_unmodified_since=AFTER), Outcome.PROCEED)
        self.assertEqual(_evaluate(if_unmodified_since=BEFORE), Outcome.PRECONDITION_FAILED)

    def test_if_unmodified_since_invalid(self) -> None:
        """
        An invalid C{If-Unmodified-Since} date is ignored.
        """
        self.assertEqual(_evaluate(if_unmodified_since="yesterday"), Outcome.PROCEED)
        self.assertEqual(_evaluate(if_unmodified_since=f"{BEFORE}, {BEFORE}"), Outcome.PROCEED)

    def test_if_unmodified_since_ignored_with_if_match(self) -> None:
        """
        C{If-Unmodified-Since} is not evaluated when C{If-Match} is present.
        """
        self.assertEqual(_evaluate(if_match=ETAG, if_unmodified_since=BEFORE), Outcome.PROCEED)

    def test_if_none_match_get_head(self) -> None:
        """
        A matching C{If-None-Match} is 304 for GET and HEAD.
        """
        self.assertEqual(_evaluate("GET", if_none_match=ETAG), Outcome.NOT_MODIFIED)
        self.assertEqual(_evaluate("HEAD", if_none_match=ETAG), Outcome.NOT_MODIFIED)

    def test_if_none_match_other_methods(self) -> None:
        """
        A matching C{If-None-Match} is 412 for any other method.
        """
        for method in ["POST", "PUT", "DELETE", "get"]:
            self.assertEqual(_evaluate(method, if_none_match=ETAG), Outcome.PRECONDITION_FAILED)

    def test_if_none_match_star(self) -> None:
        """
        C{If-None-Match: *} matches any existing representation.
        """
        self.assertEqual(_evaluate(if_none_match="*"), Outcome.NOT_MODIFIED)
        self.assertEqual(_evaluate("PUT", if_none_match="*"), Outcome.PRECONDITION_FAILED)

    def test_if_none_match_weak(self) -> None:
        """
        C{If-None-Match} uses the weak comparison: a C{W/} tag with the same
        opaque tag matches.
        """
        self.assertEqual(_evaluate(if_none_match=f"W/{ETAG}"), Outcome.NOT_MODIFIED)

    def test_if_none_match_list(self) -> None:
        """
        Any tag of a list may match, with or without whitespace.
        """
        self.assertEqual(_evaluate(if_none_match=f'"x", W/"y",{ETAG}'), Outcome.NOT_MODIFIED)
        self.assertEqual(_evaluate(if_none_match=f' ,"x" ,\t{ETAG} , '), Outcome.NOT_MODIFIED)

    def test_if_none_match_mismatch(self) -> None:
        """
        C{If-None-Match} without the current tag proceeds.
        """
        self.assertEqual(_evaluate(if_none_match=f'{OTHER}, W/"x"'), Outcome.PROCEED)

    def test_if_none_match_malformed(self) -> None:
        """
        A malformed C{If-None-Match} matches nothing: the full response, the
        safe side. An unquoted tag is not a tag.
        """
        for value in ["", ETAG[1:-1], f"{ETAG} junk", f"{ETAG}, *", '"unterminated']:
            self.assertEqual(_evaluate(if_none_match=value), Outcome.PROCEED, value)

    def test_if_modified_since(self) -> None:
        """
        C{If-Modified-Since} gives 304 when the representation has not
        changed since the date, and proceeds when it has.
        """
        self.assertEqual(_evaluate(if_modified_since=AT), Outcome.NOT_MODIFIED)
        self.assertEqual(_evaluate(if_modified_since=AFTER), Outcome.NOT_MODIFIED)
        self.assertEqual(_evaluate(if_modified_since=BEFORE), Outcome.PROCEED)
        self.assertEqual(_evaluate("HEAD", if_modified_since=AT), Outcome.NOT_MODIFIED)

    def test_if_modified_since_obsolete_formats(self) -> None:
        """
        C{If-Modified-Since} in the asctime form is read like the others.
        """
        self.assertEqual(_evaluate(if_modified_since=EXAMPLE_ASCTIME), Outcome.NOT_MODIFIED)

    def test_if_modified_since_invalid(self) -> None:
        """
        An invalid C{If-Modified-Since} date is ignored.
        """
        for value in ["", "now", "-1", f"{AT}, {AT}", "Sun, 06 Nov 1994 08:49:37 CET"]:
            self.assertEqual(_evaluate(if_modified_since=value), Outcome.PROCEED, value)

    def test_if_modified_since_only_get_head(self) -> None:
        """
        C{If-Modified-Since} is ignored for methods other than GET and HEAD.
        """
        self.assertEqual(_evaluate("POST", if_modified_since=AT), Outcome.PROCEED)

    def test_if_modified_since_ignored_with_if_none_match(self) -> None:
        """
        C{If-Modified-Since} is not evaluated when C{If-None-Match} is present,
        even if that does not match.
        """
        self.assertEqual(_evaluate(if_none_match=OTHER, if_modified_since=AT), Outcome.PROCEED)

    def test_if_match_before_if_none_match(self) -> None:
        """
        A failed C{If-Match} wins over a matching C{If-None-Match}: 412, not
        304.
        """
        self.assertEqual(_evaluate(if_match=OTHER, if_none_match=ETAG), Outcome.PRECONDITION_FAILED)

    def test_if_unmodified_since_before_if_none_match(self) -> None:
        """
        A failed C{If-Unmodified-Since} wins over a matching
        C{If-None-Match}.
        """
        self.assertEqual(
            _evaluate(if_unmodified_since=BEFORE, if_none_match=ETAG), Outcome.PRECONDITION_FAILED
        )

    def test_passed_if_match_then_if_none_match(self) -> None:
        """
        After C{If-Match} passes, C{If-None-Match} is still evaluated.
        """
        self.assertEqual(_evaluate(if_match="*", if_none_match=ETAG), Outcome.NOT_MODIFIED)

    def test_passed_if_unmodified_since_then_if_modified_since(self) -> None:
        """
        After C{If-Unmodified-Since} passes, C{If-Modified-Since} is still
        evaluated.
        """
        self.assertEqual(_evaluate(if_unmodified_since=AT, if_modified_since=AT), Outcome.NOT_MODIFIED)

    def test_invalid_own_etag(self) -> None:
        """
        The server's own tag must be an entity-tag; anything else is a bug.
        """
        self.assertRaises(
            ValueError,
            evaluate_preconditions,
            "GET",
            "unquoted",
            MODIFIED,
            if_match=ETAG,
            if_none_match=None,
            if_modified_since=None,
            if_unmodified_since=None,
        )

    @given(
        st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
        st.one_of(st.none(), st.text()),
        st.one_of(st.none(), st.text()),
        st.one_of(st.none(), st.text()),
        st.one_of(st.none(), st.text()),
    )
    def test_arbitrary_headers(
        self,
        method: str,
        if_match: str | None,
        if_none_match: str | None,
        if_modified_since: str | None,
        if_unmodified_since: str | None,
    ) -> None:
        """
        Arbitrary header text always gives an outcome, never an exception, and
        never a 304 for a method other than GET or HEAD.
        """
        outcome = evaluate_preconditions(
            method,
            ETAG,
            MODIFIED,
            if_match=if_match,
            if_none_match=if_none_match,
            if_modified_since=if_modified_since,
            if_unmodified_since=if_unmodified_since,
        )
        self.assertIsInstance(outcome, Outcome)
        if method not in ("GET", "HEAD"):
            self.assertNotEqual(outcome, Outcome.NOT_MODIFIED)

    @given(
        st.lists(
            st.tuples(
                st.booleans(),
                st.one_of(st.text(alphabet="abc,W/*-", max_size=6), st.just(ETAG[1:-1])),
            ),
            max_size=5,
        )
    )
    def test_tag_lists(self, tags: list[tuple[bool, str]]) -> None:
        """
        A well-formed list matches for If-None-Match iff one of its opaque
        tags equals ours, weak or not.
        """
        spelled = ", ".join(("W/" if weak else "") + f'"{opaque}"' for weak, opaque in tags)
        expected = any(f'"{opaque}"' == ETAG for _, opaque in tags)
        self.assertEqual(
            _evaluate(if_none_match=spelled) if tags else Outcome.PROCEED,
            Outcome.NOT_MODIFIED if expected else Outcome.PROCEED,
        )
        ours = [(False, ETAG[1:-1]), *tags]
        spelled = ", ".join(("W/" if weak else "") + f'"{opaque}"' for weak, opaque in ours)
        self.assertEqual(_evaluate(if_none_match=spelled), Outcome.NOT_MODIFIED)
        self.assertEqual(_evaluate(if_match=spelled), Outcome.PROCEED)


class IfRangeTests(unittest.SynchronousTestCase):
    """
    Tests for L{if_range_allows_partial} (RFC 9110 §13.1.5).
    """

    def test_absent(self) -> None:
        """
        Without C{If-Range} the Range is honoured.
        """
        self.assertTrue(if_range_allows_partial(None, ETAG, MODIFIED))

    def test_strong_match(self) -> None:
        """
        The current strong tag allows a partial response.
        """
        self.assertTrue(if_range_allows_partial(ETAG, ETAG, MODIFIED))
        self.assertTrue(if_range_allows_partial(f" {ETAG}\t", ETAG, MODIFIED))

    def test_weak_never_matches(self) -> None:
        """
        C{W/"x"} never matches, even with the same opaque tag.
        """
        self.assertFalse(if_range_allows_partial(f"W/{ETAG}", ETAG, MODIFIED))

    def test_weak_own_tag(self) -> None:
        """
        A weak tag of ours cannot be matched either.
        """
        self.assertFalse(if_range_allows_partial(ETAG, f"W/{ETAG}", MODIFIED))

    def test_other_tag(self) -> None:
        """
        Another tag means the file changed: the whole representation.
        """
        self.assertFalse(if_range_allows_partial(OTHER, ETAG, MODIFIED))
        self.assertFalse(if_range_allows_partial('"bogus"', ETAG, MODIFIED))

    def test_list(self) -> None:
        """
        C{If-Range} takes one validator; a list is garbage.
        """
        self.assertFalse(if_range_allows_partial(f"{ETAG}, {OTHER}", ETAG, MODIFIED))
        self.assertFalse(if_range_allows_partial("*", ETAG, MODIFIED))

    def test_date_equal(self) -> None:
        """
        An HTTP-date exactly equal to Last-Modified allows a partial response,
        in any of the three formats.
        """
        self.assertTrue(if_range_allows_partial(AT, ETAG, MODIFIED))
        self.assertTrue(if_range_allows_partial(EXAMPLE_ASCTIME, ETAG, MODIFIED))
        self.assertTrue(if_range_allows_partial(f" {AT} ", ETAG, MODIFIED))

    def test_date_not_equal(self) -> None:
        """
        A date before or after Last-Modified is not a match: unlike
        If-Modified-Since, If-Range wants exact equality.
        """
        self.assertFalse(if_range_allows_partial(BEFORE, ETAG, MODIFIED))
        self.assertFalse(if_range_allows_partial(AFTER, ETAG, MODIFIED))

    def test_garbage(self) -> None:
        """
        Unparseable validators, empty included, are not matches.
        """
        for value in ["", " ", "garbage", ETAG[1:-1], '"unterminated', "W/", str(MODIFIED), "W/garbage"]:
            self.assertFalse(if_range_allows_partial(value, ETAG, MODIFIED), value)

    @given(st.text())
    def test_arbitrary_text(self, value: str) -> None:
        """
        Arbitrary text is a boolean, True only for our exact tag or date.
        """
        result = if_range_allows_partial(value, ETAG, MODIFIED)
        if result:
            stripped = value.strip(" \t")
            self.assertTrue(stripped == ETAG or parse_http_date(stripped) == MODIFIED)
