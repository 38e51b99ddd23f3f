# -*- test-case-name: tests.test_conditional -*-
"""Validators and conditional requests for ``/stream`` (RFC 9110 §8.8, §13).

Makes the strong ``ETag`` and the ``Last-Modified`` date of a file, parses
HTTP-dates and entity-tag lists, and decides what the preconditions of a
request (``If-Match``, ``If-None-Match``, ``If-Modified-Since``,
``If-Unmodified-Since``, ``If-Range``) call for. Everything here is a
function of its arguments (the clock is read only to place an obsolete
two-digit year, when no ``now`` is given): it must never read a request or
stat a file, and a malformed header must never raise; it only ever makes the
server do the safe thing (ignore the header, or refuse the precondition).
"""

from __future__ import annotations

import calendar
import datetime
import enum
import functools
import re
import time
from collections.abc import Callable
from email.utils import formatdate

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY = "(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = "(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_FLAGS = re.ASCII | re.IGNORECASE

#: ``Sun, 06 Nov 1994 08:49:37 GMT``, the preferred format.
_IMF_FIXDATE = re.compile(rf"{_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT", _FLAGS)
#: ``Sunday, 06-Nov-94 08:49:37 GMT``, obsolete.
_RFC850_DATE = re.compile(
    rf"{_LONG_DAY}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} GMT", _FLAGS
)
#: ``Sun Nov  6 08:49:37 1994``, C's ``asctime()``, obsolete.
_ASCTIME_DATE = re.compile(
    rf"{_DAY} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})", _FLAGS
)

#: An ``entity-tag`` (RFC 9110 §8.8.3): optional ``W/`` (case-sensitive), then
#: a quoted string of ``etagc`` (``%x21 / %x23-7E / obs-text``).
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')

#: Optional whitespace, RFC 9110 §5.6.3.
_OWS = " \t"

#: Longest header value worth parsing; anything longer is treated as garbage.
_MAX_FIELD_LENGTH = 8 * 1024

#: Longer than any HTTP-date with generous whitespace around it.
_MAX_DATE_LENGTH = 64

#: Years in a two-digit RFC 850 date more than this far ahead mean last century.
_RFC850_WINDOW_YEARS = 50


class Outcome(enum.Enum):
    """
    What the preconditions of a request call for.

    :cvar PROCEED: Carry on (and then consider ``Range``/``If-Range``).
    :cvar NOT_MODIFIED: Answer 304 Not Modified.
    :cvar PRECONDITION_FAILED: Answer 412 Precondition Failed.
    """

    PROCEED = "proceed"
    NOT_MODIFIED = "not-modified"
    PRECONDITION_FAILED = "precondition-failed"


@functools.lru_cache(maxsize=4096)
def http_date(timestamp: float) -> str:
    """
    Format a POSIX timestamp as an IMF-fixdate (RFC 9110 §5.6.7).

    Remembered per timestamp: ``Last-Modified`` repeats the few modification
    times of the tracks being played.

    :param timestamp: Seconds since the epoch; fractions are dropped.
    :return: For example ``"Sun, 06 Nov 1994 08:49:37 GMT"``.
    """
    return formatdate(timestamp, usegmt=True)


def _to_seconds(match: re.Match[str], year: int) -> int | None:
    """
    Turn the fields of a matched HTTP-date into a POSIX timestamp, checking
    they make a real date and time.

    :param match: A match of one of the date patterns, with groups ``day``,
        ``month``, ``hour``, ``minute`` and ``second``.
    :param year: The full year.
    :return: Seconds since the epoch, or ``None`` if the fields are no date.
        Second 60 (a leap second, which the grammar allows) is read as the
        first second of the next minute.
    """
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if hour > 23 or minute > 59 or second > 60:
        return None
    month = _MONTHS[match["month"].lower()]
    day = int(match["day"])
    try:
        datetime.date(year, month, day)
    except ValueError:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def parse_http_date(value: str, *, now: float | None = None) -> int | None:
    """
    Parse an HTTP-date in any of the three formats of RFC 9110 §5.6.7.

    Day and month names are matched case-insensitively; the day name is not
    checked against the date. A two-digit RFC 850 year that would be more than
    50 years in the future is taken as the most recent past year with those
    digits, as §5.6.7 requires.

    :param value: The field value.
    :param now: The current time for the RFC 850 century rule; the system
        clock if omitted (the only time this module reads it).
    :return: Seconds since the epoch, or ``None`` if ``value`` is not exactly
        one valid HTTP-date.
    """
    if len(value) > _MAX_DATE_LENGTH:
        return None
    text = value.strip(_OWS)
    match = _IMF_FIXDATE.fullmatch(text) or _ASCTIME_DATE.fullmatch(text)
    if match is not None:
        return _to_seconds(match, int(match["year"]))
    match = _RFC850_DATE.fullmatch(text)
    if match is None:
        return None
    current_year = time.gmtime(time.time() if now is None else now).tm_year
    year = current_year - current_year % 100 + int(match["year"])
    if year > current_year + _RFC850_WINDOW_YEARS:
        year -= 100
    return _to_seconds(match, year)


def _parse_entity_tag(text: str) -> tuple[bool, str] | None:
    """
    Parse exactly one entity-tag.

    :param text: The candidate, surrounding whitespace allowed.
    :return: ``(weak, opaque)`` with ``opaque`` still quoted, or ``None`` if
        ``text`` is not one entity-tag.
    """
    match = _ENTITY_TAG.fullmatch(text.strip(_OWS))
    if match is None:
        return None
    return (match.group(1) is not None, f'"{match.group(2)}"')


def _parse_entity_tag_list(value: str) -> list[tuple[bool, str]] | None:
    """
    Parse the field value of ``If-Match`` or ``If-None-Match`` other than
    ``*``: a comma-separated list of entity-tags (commas inside the quotes are
    part of a tag), empty elements ignored.

    :param value: The field value.
    :return: The ``(weak, opaque)`` pairs, or ``None`` if the value is not a
        well-formed list; a malformed list then matches nothing.
    """
    if len(value) > _MAX_FIELD_LENGTH:
        return None
    tags: list[tuple[bool, str]] = []
    position = 0
    expect_tag = True
    while position < len(value):
        character = value[position]
        if character in _OWS:
            position += 1
        elif character == ",":
            expect_tag = True
            position += 1
        elif expect_tag:
            match = _ENTITY_TAG.match(value, position)
            if match is None:
                return None
            tags.append((match.group(1) is not None, f'"{match.group(2)}"'))
            position = match.end()
            expect_tag = False
        else:
            return None
    return tags


def _our_tag(etag: str) -> tuple[bool, str]:
    """
    Parse the server's own entity-tag.

    :param etag: The tag the response carries.
    :return: ``(weak, opaque)``.
    :raise ValueError: If ``etag`` is not an entity-tag: a bug in the caller.
    """
    parsed = _parse_entity_tag(etag)
    if parsed is None:
        raise ValueError(f"not an entity-tag: {etag!r}")
    return parsed


def _list_matches(
    field: str, etag: str, compare: Callable[[tuple[bool, str], tuple[bool, str]], bool]
) -> bool:
    """
    Evaluate ``If-Match``/``If-None-Match``'s "does any listed tag match".

    :param field: The field value: ``*`` or a list of entity-tags.
    :param etag: The representation's current entity-tag.
    :param compare: Strong or weak comparison.
    :return: Whether ``*`` was sent (the representation exists) or a listed
        tag matches; a malformed list matches nothing.
    """
    if field.strip(_OWS) == "*":
        return True
    ours = _our_tag(etag)
    tags = _parse_entity_tag_list(field)
    return tags is not None and any(compare(tag, ours) for tag in tags)


def _strong_match(a: tuple[bool, str], b: tuple[bool, str]) -> bool:
    """
    Strong comparison (RFC 9110 §8.8.3.2): neither weak, same opaque tag.

    :param a: One ``(weak, opaque)`` pair.
    :param b: The other.
    :return: Whether they match.
    """
    return not a[0] and not b[0] and a[1] == b[1]


def _weak_match(a: tuple[bool, str], b: tuple[bool, str]) -> bool:
    """
    Weak comparison (RFC 9110 §8.8.3.2): same opaque tag, weakness ignored.

    :param a: One ``(weak, opaque)`` pair.
    :param b: The other.
    :return: Whether they match.
    """
    return a[1] == b[1]


def evaluate_preconditions(
    method: str,
    etag: str,
    last_modified: int,
    *,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
) -> Outcome:
    """
    Evaluate the preconditions of a request on an existing representation in
    the order of RFC 9110 §13.2.2.

    1. ``If-Match`` (strong comparison; ``*`` matches): no match is 412.
    2. Otherwise ``If-Unmodified-Since`` (a valid date only): modified after
       it is 412.
    3. ``If-None-Match`` (weak comparison; ``*`` matches): a match is 304 for
       GET and HEAD, 412 for any other method.
    4. Otherwise, for GET and HEAD only, ``If-Modified-Since`` (a valid date
       only): not modified after it is 304.

    ``If-Range`` is step 5 and lives in :func:`if_range_allows_partial`.

    :param method: The request method, e.g. ``"GET"`` (case-sensitive).
    :param etag: The representation's entity-tag, as sent in ``ETag``.
    :param last_modified: The representation's modification time in whole
        seconds, exactly as sent in ``Last-Modified``.
    :param if_match: The ``If-Match`` field value, or ``None`` if absent.
    :param if_none_match: The ``If-None-Match`` field value, or ``None``.
    :param if_modified_since: The ``If-Modified-Since`` field value, or
        ``None``.
    :param if_unmodified_since: The ``If-Unmodified-Since`` field value, or
        ``None``.
    :return: What to answer.
    :raise ValueError: If ``etag`` is not an entity-tag.
    """
    safe = method in ("GET", "HEAD")
    if if_match is not None:
        if not _list_matches(if_match, etag, _strong_match):
            return Outcome.PRECONDITION_FAILED
    elif if_unmodified_since is not None:
        date = parse_http_date(if_unmodified_since)
        if date is not None and last_modified > date:
            return Outcome.PRECONDITION_FAILED
    if if_none_match is not None:
        if _list_matches(if_none_match, etag, _weak_match):
            return Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED
    elif safe and if_modified_since is not None:
        date = parse_http_date(if_modified_since)
        if date is not None and last_modified <= date:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


def if_range_allows_partial(if_range: str | None, etag: str, last_modified: int) -> bool:
    """
    Evaluate ``If-Range`` (RFC 9110 §13.1.5): may the ``Range`` be honoured?

    :param if_range: The ``If-Range`` field value, or ``None`` if absent.
    :param etag: The representation's entity-tag, as sent in ``ETag``.
    :param last_modified: The representation's modification time in whole
        seconds, exactly as sent in ``Last-Modified``.
    :return: ``True`` when there is no ``If-Range``, or it is an entity-tag
        that strongly matches ``etag`` (a weak tag never does), or an
        HTTP-date exactly equal to ``last_modified``. Anything else (a
        mismatch, garbage, an empty value) is ``False``: serve the whole
        representation with 200.
    :raise ValueError: If ``etag`` is not an entity-tag.
    """
    if if_range is None:
        return True
    ours = _our_tag(etag)
    text = if_range.strip(_OWS)
    if text.startswith(('"', "W/")):
        theirs = _parse_entity_tag(text)
        return theirs is not None and _strong_match(theirs, ours)
    return parse_http_date(text) == last_modified
