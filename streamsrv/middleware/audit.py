# -*- test-case-name: tests.test_stream -*-
"""The audit trail: security events and media file accesses, logged and counted.

Every refusal that may be an attack (a path escaping the media root, a bad
signature, a reused refresh token…) goes through :func:`security_event`, so
it is one log event with ``event_kind="security"`` and one increment of
``streamsrv_security_events_total{kind}``.  Fields never include the
credential itself.  Every body of a media file that is sent (or cut short)
is one :func:`file_access` event (``event_kind="file_access"``) with who,
what, which range, how many bytes and how it ended; it is counted always, and
built only when an observer would keep it.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

from streamsrv.logs import will_observe

log = Logger(namespace="streamsrv.security")
access_log = Logger(namespace="streamsrv.audit")


def security_event(request: Any, kind: str, **fields: object) -> None:
    """Log and count one security event about *request*.

    :param request: the streamsrv request (its id, client and metrics are used).
    :param kind: a short stable name (``path_refused``, ``signature_invalid``…).
    :param fields: extra fields for the log event (reasons, never secrets).
    """
    metrics = getattr(getattr(request, "site", None), "metrics", None)
    if metrics is not None:
        metrics.security_events.labels(kind).inc()
    log.warn(
        "security event {kind} from {client} on request {request_id}",
        kind=kind,
        client=getattr(request, "client_ip", "-"),
        request_id=getattr(request, "request_id", "-"),
        event_kind="security",
        **fields,
    )


def file_access(request: Any, *, track: str, outcome: str, sent: int, range_header: bytes | None) -> None:
    """Log and count one access to a media file (the audit trail).

    :param track: the track path served (relative to the media root).
    :param outcome: ``complete``, ``aborted`` (the client left) or ``head``.
    :param sent: body bytes sent.
    """
    metrics = getattr(getattr(request, "site", None), "metrics", None)
    if metrics is not None:
        metrics.count(metrics.file_access, outcome)
    if not will_observe(access_log, LogLevel.info):
        # The level drops it: skip building the event.
        return
    access_log.info(
        "file {track} {outcome} for {sub}: {sent} bytes",
        track=track,
        outcome=outcome,
        sent=sent,
        sub=getattr(request, "user", None) or "-",
        via=getattr(request, "auth_via", None) or "-",
        range=range_header.decode("latin-1")[:200] if range_header else None,
        client=getattr(request, "client_ip", "-"),
        request_id=getattr(request, "request_id", "-"),
        event_kind="file_access",
    )
