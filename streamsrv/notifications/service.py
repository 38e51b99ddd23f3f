# -*- test-case-name: tests.test_notify_service -*-
"""Accept notifications and preferences: what the HTTP routes and the alerts call.

:class:`NotificationService` validates a send (fields, recipients, channels,
every locale of the template rendered with the data) before anything is
queued, turns it into one delivery per user per channel, and answers only once
the outbox has committed them; it also reads and replaces a user's
preferences.  It takes decoded values and Unix times, never a ``request``,
and raises :class:`streamsrv.errors.ApiError`.  It must never send anything
itself (the :mod:`.sender` does) nor block the reactor (the outbox runs in a
thread pool).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamsrv.errors import ApiError
from streamsrv.notifications.caps import Caps
from streamsrv.notifications.outbox import IOutbox
from streamsrv.notifications.preferences import Preferences, default_preferences, parse_preferences
from streamsrv.notifications.records import (
    CHANNELS,
    PRIORITIES,
    SUPPRESSED,
    Claimed,
    Lease,
    NewDelivery,
    NotificationRecord,
    queued_deliveries,
)
from streamsrv.notifications.templates import TemplateSet

__all__ = ["NotificationService", "SendRequest", "parse_send_request"]

log = Logger()

#: The longest user id and idempotency key accepted.
MAX_ID_CHARS = 1024
MAX_KEY_CHARS = 255
_FIELDS = frozenset({"template", "user_ids", "data", "channels", "priority", "idempotency_key"})


@dataclass(frozen=True)
class SendRequest:
    """A ``POST /api/v1/notifications`` body, checked field by field.

    :ivar channels: As asked (``None``: each user's enabled channels).
    """

    template: str
    user_ids: tuple[str, ...]
    data: dict[str, Any]
    channels: tuple[str, ...] | None = None
    priority: str = "normal"
    idempotency_key: str | None = None


def _bad(problems: list[str]) -> ApiError:
    return ApiError("BAD_REQUEST", "; ".join(problems))


def _strings(name: str, value: Any, problems: list[str], limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{name}: must be a non-empty array of strings")
        return ()
    if not all(isinstance(v, str) and 0 < len(v) <= limit for v in value):
        problems.append(f"{name}: every item must be a string of 1 to {limit} characters")
        return ()
    return tuple(dict.fromkeys(value))


def parse_send_request(body: Any, max_recipients: int) -> SendRequest:
    """
    Check a decoded send body.

    :param max_recipients: ``STREAMSRV_NOTIFY_MAX_RECIPIENTS``.
    :raise ApiError: ``BAD_REQUEST`` naming every bad field, ``; ``-separated.
    """
    if not isinstance(body, dict):
        raise ApiError("BAD_REQUEST", "the body must be a JSON object")
    problems = [f"{name}: unknown field" for name in body if name not in _FIELDS]
    template = body.get("template")
    if not isinstance(template, str) or not template:
        problems.append("template: must be a non-empty string")
    user_ids = _strings("user_ids", body.get("user_ids"), problems, MAX_ID_CHARS)
    if len(user_ids) > max_recipients:
        problems.append(f"user_ids: at most {max_recipients} users, got {len(user_ids)}")
    data = body.get("data", {})
    if not isinstance(data, dict):
        problems.append("data: must be an object")
    channels = None
    if body.get("channels") is not None:
        channels = _strings("channels", body["channels"], problems, 16)
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            problems.append(f"channels: unknown channel {unknown[0][:16]!r} (one of {', '.join(CHANNELS)})")
    priority = body.get("priority", "normal")
    if priority not in PRIORITIES:
        problems.append("priority: must be normal or urgent")
    key = body.get("idempotency_key")
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_KEY_CHARS):
        problems.append(f"idempotency_key: must be a string of 1 to {MAX_KEY_CHARS} characters")
    if problems:
        raise _bad(problems)
    return SendRequest(str(template), user_ids, dict(data), channels, str(priority), key)


class FastPath(Protocol):
    """What sends the websocket deliveries a POST stores already leased (the sender)."""

    def lease(self, now: float) -> Lease | None:
        """The lease to store them with, or ``None`` (then they are queued as usual)."""

    def send_claimed(
        self, claimed: Sequence[Claimed], preferences: Mapping[str, Preferences] | None = None
    ) -> None:
        """Send them now (after the commit), as a claimed round would."""


def not_configured(channel: str) -> ApiError:
    """The contract's 400 ``NOT_CONFIGURED`` for a channel asked for that this server cannot send on."""
    # The client asked for it: a request problem, not the server's 501 (DESIGN.md).
    message = f"channels: the {channel!r} channel is not configured on this server"
    return ApiError("NOT_CONFIGURED", message, status=400)


class NotificationService:
    """
    Sends (queues) notifications and keeps preferences, over an :class:`~.outbox.IOutbox`.

    :param outbox: The durable outbox (started).
    :param templates: The loaded templates.
    :param configured: The channels that can send (``NotifyOptions.configured_channels``).
    :param default_caps: ``STREAMSRV_NOTIFY_DEFAULT_CAPS``.
    :param max_recipients: ``STREAMSRV_NOTIFY_MAX_RECIPIENTS``.
    :param clock: Gives now for :meth:`notify` (the reactor; tests a ``task.Clock``).
    :param on_queued: Called once a send is durable (the sender's ``wake``: the
        deliveries go out now, not at the sender's next interval).
    :param fast_path: The sender of this process: a send's websocket deliveries are stored
        leased to it and handed to it right after the commit, so the frames go out without
        waiting for a claim round (``None``: they are queued like the others).
    """

    def __init__(
        self,
        outbox: IOutbox,
        templates: TemplateSet,
        configured: frozenset[str],
        default_caps: Caps,
        max_recipients: int,
        clock: IReactorTime,
        on_queued: Callable[[], None] | None = None,
        fast_path: FastPath | None = None,
    ) -> None:
        self.outbox = outbox
        self.on_queued = on_queued
        self.fast_path = fast_path
        self.templates = templates
        self.configured = configured
        self.default_caps = default_caps
        self.max_recipients = max_recipients
        self.clock = clock

    def parse_body(self, body: bytes) -> SendRequest:
        """A raw JSON body as a :class:`SendRequest` (``BAD_REQUEST`` otherwise)."""
        return parse_send_request(_decode(body), self.max_recipients)

    async def send(self, asked: SendRequest, now: float) -> NotificationRecord:
        """
        Validate, then queue one delivery per user per channel; fires once durable.

        :raise ApiError: ``BAD_REQUEST`` (template, data), 400 ``NOT_CONFIGURED``.
        """
        if asked.idempotency_key is not None:
            earlier = await self.outbox.find_by_idempotency_key(asked.idempotency_key, now)
            if earlier is not None:
                return replace(earlier, created=False)
        for channel in asked.channels or ():
            if channel not in self.configured:
                raise not_configured(channel)
        if asked.template not in self.templates.names():
            raise ApiError("BAD_REQUEST", f"template: unknown template {asked.template[:64]!r}")
        deliveries, preferences = await self._deliveries(asked)
        queued = tuple(sorted({d.channel for d in deliveries if d.state != SUPPRESSED}))
        self.templates.validate(asked.template, queued, asked.data)
        fast = self.fast_path
        lease = fast.lease(now) if fast is not None and "websocket" in queued else None
        record = await self.outbox.enqueue(
            asked.template, asked.data, asked.priority, deliveries, asked.idempotency_key, now, lease
        )
        if record.created:
            if fast is not None and lease is not None:
                try:
                    fast.send_claimed(_leased(record, lease), preferences)
                except Exception:  # committed: the 202 stands; the leases run out, a round sends them
                    log.failure("handing websocket deliveries to the sender failed")
            if self.on_queued is not None:
                self.on_queued()
        return record

    async def _deliveries(
        self, asked: SendRequest
    ) -> tuple[list[NewDelivery], dict[str, Preferences] | None]:
        """The deliveries to store, and the users' preferences if they had to be read for them."""
        if asked.channels is not None:
            return queued_deliveries(asked.user_ids, asked.channels), None
        out = []
        preferences = await self.preferences_of(asked.user_ids)
        for user in asked.user_ids:
            for channel in preferences[user].enabled_channels():
                if channel in self.configured:
                    out.append(NewDelivery(user, channel))
                else:
                    out.append(NewDelivery(user, channel, SUPPRESSED, "not_configured"))
        return out, preferences

    def notify(
        self, template: str, user_ids: Sequence[str], channels: Sequence[str] | None, data: Any, priority: str
    ) -> Deferred[NotificationRecord]:
        """The alerts' ``notify(template, user_ids, channels, data, priority)``, sent now."""
        asked = parse_send_request(
            {
                "template": template,
                "user_ids": list(user_ids),
                "data": dict(data),
                "channels": list(channels) if channels else None,
                "priority": priority,
            },
            self.max_recipients,
        )
        return Deferred.fromCoroutine(self.send(asked, self.clock.seconds()))

    async def get(self, notification_id: str) -> dict[str, Any]:
        """``GET /api/v1/notifications/{id}``: the record as JSON, ``NOT_FOUND`` if none."""
        record = await self.outbox.get(notification_id) if 0 < len(notification_id) <= 64 else None
        if record is None:
            raise ApiError("NOT_FOUND", "No such notification.")
        return record.to_json()

    async def user_preferences(self, user_id: str) -> Preferences:
        """The user's preferences, the defaults if they never set any."""
        document = await self.outbox.get_preferences(user_id)
        if document is None:
            return default_preferences(self.default_caps)
        return parse_preferences(document, self.default_caps)

    async def preferences_of(self, user_ids: Sequence[str]) -> dict[str, Preferences]:
        """Every user's preferences (the defaults for those who never set any), read at once."""
        documents = await self.outbox.get_preferences_many(user_ids)
        default = default_preferences(self.default_caps)
        return {
            user: default if user not in documents else parse_preferences(documents[user], self.default_caps)
            for user in user_ids
        }

    async def preferences(self, user_id: str) -> dict[str, Any]:
        """``GET …/notification-preferences``: every field present."""
        return (await self.user_preferences(user_id)).to_json()

    async def put_preferences(self, user_id: str, body: bytes, now: float) -> dict[str, Any]:
        """``PUT …/notification-preferences``: validate and replace; answers the stored document."""
        document = parse_preferences(_decode(body), self.default_caps).to_json()
        await self.outbox.put_preferences(user_id, document, now)
        return document


def _leased(record: NotificationRecord, lease: Lease) -> list[Claimed]:
    """The deliveries of *record* stored under *lease*, as a claim would have answered them."""
    notification, until = record.notification, lease.until
    return [
        Claimed(d, notification, until)
        for d in record.deliveries
        if d.attempts and lease.covers(d.channel, d.state, d.not_before)
    ]


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError("BAD_REQUEST", "the body must be JSON (UTF-8)") from None
