# -*- test-case-name: tests.test_events_hub,tests.test_events_redis -*-
"""The hub's local side: channel names, subscriptions, and the registry that calls subscribers.

Used by both hubs of :mod:`streamsrv.events.hub` (which re-exports the public
names); a subscriber takes events one by one, or several consecutive events
of its channel at once (``many``) when the hub has them together.

This module must never let one subscriber's exception reach the publisher or
the other subscribers, and never call a subscription after it was cancelled.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.logger import Logger

__all__ = [
    "MAX_BATCH",
    "MAX_CHANNEL_LENGTH",
    "EventCallback",
    "EventsCallback",
    "HubStats",
    "Registry",
    "Subscription",
    "check_channel",
]

log = Logger()

#: The longest channel name accepted, in characters.
MAX_CHANNEL_LENGTH: Final = 1024

#: What subscribers are called with: the channel and the event.
EventCallback = Callable[[str, Mapping[str, Any]], None]

#: What a subscriber that takes several events at once is called with: the
#: channel and consecutive events of it, in order (see :meth:`IEventHub.subscribe`).
EventsCallback = Callable[[str, list[Mapping[str, Any]]], None]

#: Most events handed to an ``many`` callback in one call (a subscriber may
#: count on remembering this many recent events, see the WebSocket frames).
MAX_BATCH: Final = 16


def check_channel(channel: object) -> str:
    """
    *channel* if it is a usable channel name.

    :raise ValueError: If it is not a non-empty string of at most
        :data:`MAX_CHANNEL_LENGTH` characters without control characters.
    """
    if not isinstance(channel, str) or not channel or len(channel) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"a channel is a string of 1 to {MAX_CHANNEL_LENGTH} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in channel):
        raise ValueError("a channel must not contain control characters")
    return channel


class Subscription:
    """One callback's subscription to one channel; :meth:`cancel` ends it (idempotent)."""

    __slots__ = ("_cancel", "callback", "channel", "many")

    def __init__(
        self,
        channel: str,
        callback: EventCallback,
        cancel: Callable[[Subscription], None],
        many: EventsCallback | None = None,
    ) -> None:
        self.channel = channel
        self.callback = callback
        #: Takes several consecutive events at once, if given (see :meth:`IEventHub.subscribe`).
        self.many = many
        self._cancel: Callable[[Subscription], None] | None = cancel

    @property
    def active(self) -> bool:
        """Whether events are still delivered to this subscription."""
        return self._cancel is not None

    def cancel(self) -> None:
        """Stop delivering events to this subscription; calling it again does nothing."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel(self)


@dataclass
class HubStats:
    """
    Counters of one hub, for the metrics.

    :ivar published: Events published through this hub.
    :ivar delivered: Callback invocations (one event to one subscriber).
    :ivar received: Events received from other processes through Redis.
    :ivar reconnects: Connections to Redis made after the first one.
    :ivar publish_failures: Events that could not be sent to Redis (it was
        away, or did not answer in time); local subscribers still got them.
    :ivar malformed: Messages from Redis that were not a valid envelope.
    :ivar callback_errors: Subscriber callbacks that raised.
    """

    published: int = 0
    delivered: int = 0
    received: int = 0
    reconnects: int = 0
    publish_failures: int = 0
    malformed: int = 0
    callback_errors: int = 0


class Registry:
    """The local subscribers, per channel, with hooks on a channel's first and last subscriber."""

    def __init__(
        self,
        stats: HubStats,
        on_first: Callable[[str], None] | None = None,
        on_last: Callable[[str], None] | None = None,
    ) -> None:
        self._stats = stats
        self._channels: dict[str, dict[Subscription, None]] = {}
        self._on_first = on_first
        self._on_last = on_last

    @property
    def channels(self) -> list[str]:
        """Channels with at least one subscriber."""
        return list(self._channels)

    def subscribe(
        self, channel: str, callback: EventCallback, many: EventsCallback | None = None
    ) -> Subscription:
        check_channel(channel)
        subscription = Subscription(channel, callback, self._remove, many)
        subscribers = self._channels.get(channel)
        if subscribers is None:
            subscribers = self._channels[channel] = {}
            subscribers[subscription] = None
            if self._on_first is not None:
                self._on_first(channel)
        else:
            subscribers[subscription] = None
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return
        del subscribers[subscription]
        if not subscribers:
            del self._channels[subscription.channel]
            if self._on_last is not None:
                self._on_last(subscription.channel)

    def deliver(self, channel: str, event: Mapping[str, Any]) -> int:
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        count = 0
        # A callback may subscribe or cancel (itself or others): iterate over a copy.
        for subscription in list(subscribers):
            if not subscription.active:
                continue
            try:
                subscription.callback(channel, event)
            except Exception:
                self._stats.callback_errors += 1
                log.failure("events: a subscriber of {channel} failed", channel=channel)
            count += 1
        self._stats.delivered += count
        return count

    def deliver_many(self, channel: str, events: list[Mapping[str, Any]]) -> None:
        """
        Consecutive *events* of *channel*, in order: to a subscriber with a
        ``many`` callback in one call, to any other one by one.
        """
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        count = 0
        for subscription in list(subscribers):
            many = subscription.many
            if many is not None:
                if subscription.active:
                    count += len(events)
                    self._call(many, channel, events)
                continue
            for event in events:
                if not subscription.active:
                    break
                count += 1
                self._call(subscription.callback, channel, event)
        self._stats.delivered += count

    def _call(self, callback: Callable[[str, Any], None], channel: str, what: Any) -> None:
        try:
            callback(channel, what)
        except Exception:
            self._stats.callback_errors += 1
            log.failure("events: a subscriber of {channel} failed", channel=channel)
