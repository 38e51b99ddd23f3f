# -*- test-case-name: tests.test_notify_web -*-
"""The notifications routes' request side: sending, a notification's state, a user's preferences.

:class:`NotificationRoutes` is what :class:`~streamsrv.web.api.ApiApp`
mounts: it takes values (the body bytes, the raw path segment, the admitted
principal, now) and calls the notifications component (a
:class:`~streamsrv.notifications.service.NotificationService`); admission
(``notifications:send``) is the app's, before it calls here, and "self or
admin" for preferences is decided here.  This module never validates a
notification or a preferences document itself, and never keeps state.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote

from twisted.logger import Logger

from streamsrv.errors import ApiError
from streamsrv.notifications.outboxdb import OutboxUnavailable

if TYPE_CHECKING:
    from streamsrv.auth.principal import Principal
    from streamsrv.notifications.service import NotificationService

__all__ = ["NotificationRoutes"]

log = Logger()

_T = TypeVar("_T")

#: ``Retry-After`` of a 503 while the outbox's database is away, seconds.
OUTBOX_RETRY_AFTER_S: Final = 5


async def _available(work: Awaitable[_T]) -> _T:
    """*work*'s result; ``503 UNAVAILABLE`` (nothing was changed) while the outbox's database is away."""
    try:
        return await work
    except OutboxUnavailable as e:
        log.warn("notifications: the outbox is unavailable ({error})", error=str(e), event_kind="degraded")
        raise ApiError(
            "UNAVAILABLE",
            "Notifications cannot be stored right now; nothing was queued. Try again shortly.",
            {"Retry-After": str(OUTBOX_RETRY_AFTER_S)},
        ) from None


def _segment(raw: bytes, what: str) -> str:
    """A percent-encoded path segment as text (``BAD_REQUEST`` / ``NOT_FOUND`` when unusable)."""
    try:
        value = unquote(raw.decode("ascii"), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ApiError("BAD_REQUEST", f"The {what} is not valid UTF-8.") from None
    if not value or len(value) > 1024 or "/" in value:
        raise ApiError("NOT_FOUND")
    return value


class NotificationRoutes:
    """
    What the notifications routes answer.

    :param service: The notifications component.
    """

    def __init__(self, service: NotificationService) -> None:
        self._service = service

    async def send(self, body: bytes, now: float) -> dict[str, Any]:
        """``POST /api/v1/notifications``: queued durably, ``{"id", "deliveries"}``."""
        record = await _available(self._service.send(self._service.parse_body(body), now))
        return record.to_json(accepted=record.created)

    async def get(self, raw_id: bytes) -> dict[str, Any]:
        """``GET /api/v1/notifications/{id}``."""
        return await _available(self._service.get(_segment(raw_id, "notification id")))

    def _user(self, principal: Principal, raw_sub: bytes) -> str:
        sub = _segment(raw_sub, "user id")
        if not (principal.is_admin or principal.sub == sub):
            raise ApiError("FORBIDDEN", "Only the user themselves or an admin may do this.")
        return sub

    async def preferences(self, principal: Principal, raw_sub: bytes) -> dict[str, Any]:
        """``GET /api/v1/users/{id}/notification-preferences`` (self or admin)."""
        return await _available(self._service.preferences(self._user(principal, raw_sub)))

    async def put_preferences(
        self, principal: Principal, raw_sub: bytes, body: bytes, now: float
    ) -> dict[str, Any]:
        """``PUT /api/v1/users/{id}/notification-preferences`` (self or admin)."""
        return await _available(self._service.put_preferences(self._user(principal, raw_sub), body, now))
