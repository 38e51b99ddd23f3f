# -*- test-case-name: tests.test_stream -*-
"""Security events: hostile or suspicious input, logged and counted.

Every refusal that may be an attack (a path escaping the media root, a bad
signature, a reused refresh token…) goes through :func:`security_event`, so
it is one log event with ``event_kind="security"`` and one increment of
``streamsrv_security_events_total{kind}``.  Fields never include the
credential itself.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger(namespace="streamsrv.security")


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
