# -*- test-case-name: tests.test_web -*-
"""The structured access log.

One event per finished or aborted request, in namespace ``streamsrv.access``,
with method, path, status, bytes, duration, range, user and request id as
fields, so JSON logs need no parsing.  Query parameters that carry
credentials (signatures, tokens) are replaced by ``REDACTED`` before the path
is logged: a log line never holds a credential.  :func:`access_log_observed`
says whether any observer would keep the event, so that callers can skip
building it when the log level drops it anyway.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from twisted.logger import Logger, LogLevel

from streamsrv.logs import will_observe

#: Query parameters whose values are credentials.
CREDENTIAL_PARAMS = frozenset(
    {"sig", "access_token", "token", "refresh_token", "jwt", "key", "api_key", "password"}
)

log = Logger(namespace="streamsrv.access")


def redact_uri(uri: bytes) -> str:
    """The request URI as text, with credential query values redacted.

    :param uri: the raw request target (path and query, still encoded).
    """
    text = uri.decode("latin-1")
    path, sep, query = text.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    redacted = [(name, "REDACTED" if name.lower() in CREDENTIAL_PARAMS else value) for name, value in pairs]
    return path + "?" + urlencode(redacted, safe="/:,")


def access_log_observed() -> bool:
    """Whether an access-log event can reach an observer that keeps it."""
    return will_observe(log, LogLevel.info)


def log_access(
    *,
    method: str,
    uri: bytes,
    status: int,
    sent: int,
    duration_s: float,
    client: str,
    request_id: str,
    range_header: str | None,
    user: str | None,
    aborted: bool,
    user_agent: str | None,
) -> None:
    """Emit the access-log event of one request."""
    log.info(
        '{client} "{method} {path}" {status} {sent} {duration_ms}ms{outcome}',
        client=client,
        method=method,
        path=redact_uri(uri),
        status=status,
        sent=sent,
        duration_ms=round(duration_s * 1000, 1),
        duration_s=round(duration_s, 6),
        range=range_header,
        user=user or "-",
        request_id=request_id,
        user_agent=user_agent,
        aborted=aborted,
        outcome=" (client left)" if aborted else "",
        event_kind="access",
    )
