# -*- test-case-name: tests.test_media_api,tests.test_analytics_queries -*-
"""Reading one value of a request's query, the way every JSON route does.

A parameter is given at most once and is UTF-8; each route words its own
``BAD_REQUEST`` messages (clients see them), so they are passed in.  This
module must never interpret a value (numbers, times, choices are the
routes' business) nor accept a repeated parameter by picking one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamsrv.errors import ApiError

__all__ = ["one_value"]


def one_value(
    args: Mapping[bytes, Sequence[bytes]], name: str, *, repeated: str, not_utf8: str
) -> str | None:
    """
    The value of query parameter *name*, or ``None`` when it is absent (or empty-listed).

    :param args: ``request.args``.
    :param repeated: The ``BAD_REQUEST`` message when it is given more than once.
    :param not_utf8: The ``BAD_REQUEST`` message when it is not UTF-8.
    :raise ApiError: ``BAD_REQUEST`` with one of those messages.
    """
    values = args.get(name.encode("ascii"))
    if not values:
        return None
    if len(values) > 1:
        raise ApiError("BAD_REQUEST", repeated)
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("BAD_REQUEST", not_utf8) from None
