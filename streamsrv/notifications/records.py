# -*- test-case-name: tests.test_notify_outbox -*-
"""The outbox's values: notifications, their deliveries and states, and the retry schedule.

Plain frozen values and one pure function (:func:`next_attempt`), shared by
:mod:`.outbox` and :mod:`.outboxdb`.  This module must never touch a
database, a clock or the environment; randomness comes in as an argument.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

__all__ = [
    "CHANNELS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFERRED",
    "FAILED",
    "FINISHES",
    "IDEMPOTENCY_WINDOW_S",
    "PENDING_STATES",
    "PRIORITIES",
    "QUEUED",
    "RETRY_BASE_S",
    "RETRY_CAP_S",
    "SENT",
    "STATES",
    "SUPPRESSED",
    "SUPPRESSION_REASONS",
    "Claimed",
    "Delivery",
    "Finish",
    "Lease",
    "NewDelivery",
    "Notification",
    "NotificationRecord",
    "next_attempt",
    "queued_deliveries",
    "unchecked",
]

#: The delivery states of the contract.
QUEUED: Final = "queued"
DEFERRED: Final = "deferred"
SENT: Final = "sent"
FAILED: Final = "failed"
SUPPRESSED: Final = "suppressed"
STATES: Final = (QUEUED, DEFERRED, SENT, FAILED, SUPPRESSED)

#: States a worker may still claim (once ``not_before`` has come).
PENDING_STATES: Final = (QUEUED, DEFERRED)

#: Why a delivery is ``suppressed``.
SUPPRESSION_REASONS: Final = ("opted_out", "no_address", "frequency_cap", "not_configured")

CHANNELS: Final = ("websocket", "email", "sms", "push")
PRIORITIES: Final = ("normal", "urgent")

#: How long an ``idempotency_key`` answers its first notification.
IDEMPOTENCY_WINDOW_S: Final = 86400.0

#: ``STREAMSRV_NOTIFY_MAX_ATTEMPTS``' default.
DEFAULT_MAX_ATTEMPTS: Final = 6

#: Back-off of retry *n*: uniform in ``[0, min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (n - 1))]``.
RETRY_BASE_S: Final = 30.0
RETRY_CAP_S: Final = 3600.0

#: The longest ``last_error`` kept, in characters.
MAX_ERROR_CHARS: Final = 500

#: What a worker may report of a delivery it holds (:class:`Finish`).
FINISHES: Final = ("sent", "retry", "failed", "deferred", "suppressed")


def next_attempt(
    attempt: int,
    now: float,
    rng: random.Random,
    base_s: float = RETRY_BASE_S,
    cap_s: float = RETRY_CAP_S,
) -> float:
    """
    When to retry after failed attempt number *attempt* (1 for the first):
    exponential back-off with full jitter (a uniform draw between now and
    the exponential bound), so retries of many deliveries spread out.

    :param attempt: How many attempts have failed (>= 1).
    :param now: Unix seconds.
    :param rng: The source of jitter (tests pass a seeded one).
    :return: Unix seconds, in ``[now, now + min(cap_s, base_s * 2 ** (attempt - 1))]``.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    bound = min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))
    return now + rng.uniform(0.0, bound)


@dataclass(frozen=True)
class Notification:
    """
    One accepted ``POST /api/v1/notifications``.

    :ivar id: Chosen by the outbox.
    :ivar template: The template name.
    :ivar data: The template's variables (decoded JSON).
    :ivar priority: ``normal`` or ``urgent``.
    :ivar idempotency_key: As given, or ``None``.
    :ivar created_at: Unix seconds.
    """

    id: str
    template: str
    data: Mapping[str, Any] = field(hash=False)
    priority: str
    idempotency_key: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """
    A delivery to create with its notification.

    :ivar user_id: The recipient.
    :ivar channel: One of :data:`CHANNELS`.
    :ivar state: ``queued``, ``deferred`` (with *not_before*) or ``suppressed`` (with *reason*).
    :ivar reason: Why it is suppressed (:data:`SUPPRESSION_REASONS`).
    :ivar not_before: When it may be sent (``None``: at once).
    """

    user_id: str
    channel: str
    state: str = QUEUED
    reason: str | None = None
    not_before: float | None = None

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}")
        if self.state not in (QUEUED, DEFERRED, SUPPRESSED):
            raise ValueError("a new delivery is queued, deferred or suppressed")
        if (self.state == SUPPRESSED) != (self.reason is not None):
            raise ValueError("a reason goes with, and only with, the suppressed state")
        if self.reason is not None and self.reason not in SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {SUPPRESSION_REASONS}")
        if self.state == DEFERRED and self.not_before is None:
            raise ValueError("a deferred delivery needs not_before")


@dataclass(frozen=True, slots=True)
class Delivery:
    """
    One (user, channel) delivery of a notification, as stored.

    :ivar attempts: How many times a worker claimed it to send.
    :ivar not_before: When it is due (``deferred``: the end of quiet hours;
        ``queued`` after a failure: the next retry).
    :ivar last_error: The latest failure, kept for ``failed``.
    :ivar sent_at: When it was sent (``sent`` only).
    """

    id: str
    notification_id: str
    user_id: str
    channel: str
    state: str
    reason: str | None
    not_before: float
    attempts: int
    last_error: str | None
    created_at: float
    updated_at: float
    sent_at: float | None

    def accepted_json(self) -> dict[str, Any]:
        """The delivery as the ``202`` of ``POST /api/v1/notifications`` that created it answers it."""
        out: dict[str, Any] = {"user_id": self.user_id, "channel": self.channel, "state": self.state}
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def to_json(self) -> dict[str, Any]:
        """The delivery as ``GET /api/v1/notifications…`` (and a replayed ``POST``) answer it."""
        out: dict[str, Any] = {"user_id": self.user_id, "channel": self.channel, "state": self.state}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.state == DEFERRED:
            out["not_before"] = self.not_before
        if self.state in (QUEUED, DEFERRED, FAILED) and self.attempts:
            out["attempts"] = self.attempts
        if self.state == FAILED and self.last_error is not None:
            out["last_error"] = self.last_error
        if self.sent_at is not None:
            out["sent_at"] = self.sent_at
        return out


@dataclass(frozen=True)
class NotificationRecord:
    """
    A notification with its deliveries (in the order they were given).

    :ivar created: ``False`` when an earlier notification with the same
        idempotency key answered instead (nothing new was queued).
    """

    notification: Notification
    deliveries: tuple[Delivery, ...]
    created: bool = True

    def to_json(self, accepted: bool = False) -> dict[str, Any]:
        """
        ``{"id", "deliveries": [...]}`` as the contract answers.

        :param accepted: Each delivery as the ``202`` of its creation shows it: ``user_id``,
            ``channel``, ``state`` and ``reason`` only (a websocket delivery stored already
            leased to the accepting process counts an attempt, which ``GET`` shows).
        """
        if accepted:
            deliveries = [d.accepted_json() for d in self.deliveries]
        else:
            deliveries = [d.to_json() for d in self.deliveries]
        return {"id": self.notification.id, "deliveries": deliveries}


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds the lease of, with its notification."""

    delivery: Delivery
    notification: Notification
    lease_until: float


@dataclass(frozen=True)
class Lease:
    """
    Deliveries to store already leased (the websocket fast path): what a claim would write.

    A new delivery on one of *channels*, queued and due at *now*, is inserted held by
    *worker_id* until *until*, its attempt counted, as if that worker had just claimed it.

    :ivar worker_id: The sender that will send them (the accepting process's).
    :ivar now: When the notification was accepted (Unix seconds).
    :ivar until: When the lease runs out and any worker may take them.
    :ivar channels: The channels leased (the others are queued as usual).
    """

    worker_id: str
    now: float
    until: float
    channels: frozenset[str]

    def covers(self, channel: str, state: str, not_before: float | None) -> bool:
        """Whether a new delivery with these values is stored leased."""
        return state == QUEUED and channel in self.channels and (not_before is None or not_before <= self.now)


@dataclass(frozen=True)
class Finish:
    """
    What became of one claimed delivery, reported with others in one transaction.

    :ivar delivery_id: The delivery.
    :ivar outcome: One of :data:`FINISHES`: ``sent``; ``retry`` (queued again for *when*,
        keeping *error*); ``failed`` (for good, with *error*); ``deferred`` until *when*
        (quiet hours, the claim's attempt given back); ``suppressed`` for *reason*.
    :ivar at: Unix seconds of the outcome.
    """

    delivery_id: str
    outcome: str
    at: float
    error: str | None = None
    when: float | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in FINISHES:
            raise ValueError(f"outcome must be one of {FINISHES}")
        if self.outcome in ("retry", "deferred") and self.when is None:
            raise ValueError(f"a {self.outcome} needs its time")
        if self.outcome == "suppressed" and self.reason not in SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {SUPPRESSION_REASONS}")


_V = TypeVar("_V")


def unchecked(cls: type[_V], **values: Any) -> _V:
    """
    A frozen value of *cls* made from values known good, skipping ``__init__``'s checks.

    Ten thousand deliveries are built in a POST; through ``__init__`` that costs a tenth of a
    second.  Only for values just checked or just read back from the outbox.  (:class:`Delivery`
    and :class:`NewDelivery` have slots: one object each, not two, for the garbage collector
    to walk.)
    """
    value = object.__new__(cls)
    for name, field_value in values.items():
        object.__setattr__(value, name, field_value)
    return value


def queued_deliveries(user_ids: Sequence[str], channels: Sequence[str]) -> list[NewDelivery]:
    """One queued :class:`NewDelivery` per user per channel, users outermost."""
    for channel in channels:
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}")
    return [
        unchecked(NewDelivery, user_id=user, channel=channel, state=QUEUED, reason=None, not_before=None)
        for user in user_ids
        for channel in channels
    ]
