# -*- test-case-name: tests.test_events_hub,tests.test_events_redis -*-
"""The event hub: publish an event on a named channel, and every subscriber of it, on every process, gets it.

:class:`IEventHub` has two implementations, chosen by :func:`make_hub`:
:class:`InProcessHub` (one process) and :class:`RedisHub`, which also
carries each event through Redis pub/sub (txredisapi) so that subscribers in
other processes and on other hosts get it.  A channel is a plain string
(``user:{sub}``, ``track:{path}``, ``system``; see :func:`user_channel`,
:func:`track_channel`); an event is a JSON object whose ``type`` names it
(``stream.started``, ``track.changed``, ``notification``…).

Delivery is at most once and best effort, as Redis pub/sub is: an event
published while Redis is away reaches this process's subscribers but no other
process's.  A :class:`RedisHub` delivers its own events to its own
subscribers directly (at once, Redis or not) and ignores their echo from
Redis, recognised by the origin node id in the envelope, so every subscriber
gets each event exactly once while Redis is up.  It reconnects with
exponential backoff when the connection is lost and subscribes again to every
channel it needs.

This module must never let one subscriber's exception reach the publisher or
the other subscribers, never queue events for Redis while it is away (they
would arrive late, out of order), and never import txredisapi at module level
(it imports the global reactor).
"""

from __future__ import annotations

import functools
import json
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.defer import TimeoutError as NoAnswerInTime
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from streamsrv.events.registry import (
    MAX_BATCH,
    MAX_CHANNEL_LENGTH,
    EventCallback,
    EventsCallback,
    HubStats,
    Subscription,
    check_channel,
)
from streamsrv.events.registry import Registry as _Registry
from streamsrv.redisconn import (
    CONNECT_TIMEOUT_S,
    RETRY_INITIAL_S,
    RETRY_MAX_S,
    RedisConnection,
    RedisService,
    endpoint_for,
    parse_redis_url,
)
from streamsrv.service import PeriodicService

__all__ = [
    "EVENT_TYPES",
    "MAX_BATCH",
    "MAX_CHANNEL_LENGTH",
    "PLAYBACK_TYPES",
    "SYSTEM_CHANNEL",
    "EventCallback",
    "EventsCallback",
    "HubStats",
    "IEventHub",
    "InProcessHub",
    "RedisHub",
    "Subscription",
    "check_channel",
    "make_hub",
    "track_channel",
    "user_channel",
]

log = Logger()

#: The channel of catalog and alert events (admins only on the WebSocket).
SYSTEM_CHANNEL: Final = "system"

#: The playback reports a client sends over ``/ws`` (and the hub relays).
PLAYBACK_TYPES: Final = frozenset(
    {
        "playback.play",
        "playback.pause",
        "playback.seek",
        "playback.progress",
        "playback.ended",
        "playback.buffering",
    }
)

#: Event types the daemon publishes (``type`` of the event object).
EVENT_TYPES: Final = PLAYBACK_TYPES | frozenset(
    {
        "stream.started",
        "stream.ended",
        "track.added",
        "track.changed",
        "track.removed",
        "notification",
        "alert",
        "alert.firing",
        "alert.resolved",
    }
)

#: Prefix of the Redis pub/sub channels of the hub.
REDIS_PREFIX: Final = "streamsrv:ev:"

#: How long a PUBLISH (or the subscriber's AUTH, SUBSCRIBE, PING) may take.
REDIS_TIMEOUT_S: Final = 2.0

#: How often the subscriber connection is PINGed to find a dead peer.
KEEPALIVE_S: Final = 15.0

#: Version of the JSON envelope carried through Redis.
ENVELOPE_VERSION: Final = 1


def user_channel(sub: str) -> str:
    """The channel of one user's events (``user:{sub}``)."""
    return f"user:{sub}"


def track_channel(path: str) -> str:
    """
    The channel of one track's events: ``track:{path}``, *path* relative to
    the media root, ``/``-separated, NFC-normalised (as the catalog names it).
    """
    return "track:" + unicodedata.normalize("NFC", path)


def encode_event(event: Mapping[str, Any]) -> str:
    """
    *event* as compact JSON.

    :raise TypeError: If it is not a mapping or holds something JSON cannot carry.
    :raise ValueError: If it holds NaN or an infinity.
    """
    if not isinstance(event, Mapping):
        raise TypeError("an event is a JSON object (a mapping)")
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class IEventHub(Interface):
    """Publish events on channels; subscribe callbacks to channels."""

    connected = Attribute("Whether events reach other processes now (always True for an in-process hub).")
    stats = Attribute("The hub's :class:`HubStats` counters.")

    def publish(channel: str, event: Mapping[str, Any]) -> None:  # noqa: N805 - zope interface
        """
        Deliver *event* to every subscriber of *channel*, here and (if
        distributed) on every other process.  Never waits and never raises
        because of a subscriber or of Redis.

        :raise ValueError: If *channel* is not a valid name.
        :raise TypeError: If *event* is not a JSON object.
        """

    def subscribe(
        channel: str,  # noqa: N805 - zope interface
        callback: EventCallback,
        many: EventsCallback | None = None,
    ) -> Subscription:
        """
        Call ``callback(channel, event)`` for every event published on
        *channel* from now until the returned subscription is cancelled.
        Callbacks run on the reactor thread and must not block.

        With *many*, when the hub has several consecutive events of the
        channel at once (a :class:`RedisHub` that read a backlog of messages
        in one go), it calls ``many(channel, events)`` once with up to
        :data:`MAX_BATCH` of them, in order, instead of *callback* for each.

        :raise ValueError: If *channel* is not a valid name.
        """


@implementer(IEventHub)
class InProcessHub(Service):
    """
    Events within one process: :meth:`publish` calls the channel's
    subscribers at once, in subscription order.

    Events are checked to be JSON (as a :class:`RedisHub` must send them) so
    that what works with one hub works with the other.
    """

    connected = True

    def __init__(self) -> None:
        self.setName("events")
        self.stats = HubStats()
        self._registry = _Registry(self.stats)

    @property
    def channels(self) -> list[str]:
        """Channels with at least one local subscriber."""
        return self._registry.channels

    def publish(self, channel: str, event: Mapping[str, Any]) -> None:
        check_channel(channel)
        encode_event(event)
        self.stats.published += 1
        self._registry.deliver(channel, event)

    def subscribe(
        self, channel: str, callback: EventCallback, many: EventsCallback | None = None
    ) -> Subscription:
        return self._registry.subscribe(channel, callback, many)


@functools.cache
def _subscriber_protocol_class() -> type:
    """txredisapi's subscriber protocol, reporting to its hub (imported late: see the module docstring)."""
    import txredisapi

    class HubSubscriberProtocol(txredisapi.SubscriberProtocol):
        """
        Hands the hub every message of a read at once: txredisapi parses one
        reply per reactor turn (after a bulk reply it pauses the transport and
        finishes the buffer in a ``callLater(0)``); this parses on in a loop,
        and the hub delivers what came at the end of the read, consecutive
        events of a channel together (see :meth:`RedisHub._release`).
        """

        hub: RedisHub
        serial: int
        _draining = False
        _rest: Any = None

        def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
            self.hub._hold()
            self._draining = True
            try:
                result = super().dataReceived(data, unpause)
                while self._rest is not None:
                    rest, self._rest = self._rest, None
                    result = super().dataReceived(rest)
                return result
            finally:
                self._draining = False
                self._rest = None
                self.hub._release()

        def setLineMode(self, extra: Any = b"") -> None:
            if extra and self._draining and self._rest is None:
                # The rest of the read, after a bulk reply: parsed by dataReceived's loop.
                self.line_mode = 1
                self._rest = extra
                return
            super().setLineMode(extra)

        def connectionMade(self) -> Any:
            # AUTH runs in the superclass; whenConnected() fires once it is done.
            result = super().connectionMade()
            self.hub._subscriber_connected(self)
            return result

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            self.hub._message(channel, message)

        def connectionLost(self, why: Failure) -> None:
            super().connectionLost(why)
            self.hub._subscriber_lost(self)

    return HubSubscriberProtocol


class _SubscriberFactory(Factory):
    """Builds subscriber connections for the ClientService (and takes txredisapi's AUTH failure calls)."""

    noisy = False
    isLazy = True

    def __init__(self, hub: RedisHub) -> None:
        self._hub = hub
        self._serial = 0

    def buildProtocol(self, addr: Any) -> Any:
        target = self._hub.target
        protocol = _subscriber_protocol_class()(
            charset="utf-8",
            replyTimeout=None,
            password=target.password,
            dbid=None,  # pub/sub channels are not per database
            convertNumbers=False,
            username=target.username,
        )
        self._serial += 1
        protocol.factory = self
        protocol.hub = self._hub
        protocol.serial = self._serial
        return protocol

    def stopTrying(self) -> None:
        # txredisapi calls this when AUTH is refused; the hub keeps retrying
        # (the operator may fix the password) and logs it once.
        self._hub._auth_refused()

    def connectionError(self, why: str) -> None:
        pass


@implementer(IEventHub)
class RedisHub(Service):
    """
    Events shared by every process through Redis pub/sub.

    Two connections: a subscriber (``SUBSCRIBE``, one per channel that has a
    local subscriber, reconnected by a :class:`ClientService` with backoff on
    *clock*) and a publisher (a normal txredisapi connection: the process's
    shared one, or one of the hub's own).  Each event travels as
    ``{"v": 1, "o": node_id, "e": event}`` on Redis channel
    ``streamsrv:ev:{channel}``.

    A :class:`~twisted.application.service.Service`: start it with the
    application (it connects then), stop it at the end.
    """

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        publisher: RedisConnection | None = None,
        clock: IReactorTime | None = None,
        node_id: str | None = None,
        prefix: str = REDIS_PREFIX,
        timeout_s: float = REDIS_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        on_state_change: Callable[[bool], None] | None = None,
    ) -> None:
        """
        :param url: ``STREAMSRV_REDIS_URL``.
        :param reactor: Connects (``IReactorTCP``/``IReactorUNIX``).
        :param publisher: A txredisapi connection to PUBLISH on, e.g. the
            process's ``RedisService.connection``; by default the hub opens
            (and closes) one of its own.
        :param clock: Times reconnections, timeouts and keepalives (default: *reactor*).
        :param node_id: This hub's origin id in envelopes (default: random).
        :param prefix: Prefix of the Redis channel names.
        :param on_state_change: Called with ``True``/``False`` when the
            subscriber connection comes up or goes away (metrics, health);
            its errors are logged.
        :raise ValueError: If the URL is not valid.
        """
        self.setName("events")
        self.target = parse_redis_url(url)
        self.node_id = node_id if node_id is not None else secrets.token_hex(8)
        self.stats = HubStats()
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._on_state_change = on_state_change
        self._registry = _Registry(self.stats, self._first_subscriber, self._last_subscriber)
        self._own_publisher: RedisService | None = None
        if publisher is None:
            self._own_publisher = RedisService(
                url,
                reactor,
                pool_size=1,
                connect_timeout_s=connect_timeout_s,
                retry_initial_s=retry_initial_s,
                retry_max_s=retry_max_s,
            )
            publisher = self._own_publisher.connection
        self._publisher = publisher
        self._subscriber_service = ClientService(
            endpoint_for(self.target, reactor, connect_timeout_s),
            _SubscriberFactory(self),
            retryPolicy=backoffPolicy(initialDelay=retry_initial_s, maxDelay=retry_max_s, factor=2.0),
            clock=self._clock,
        )
        #: The subscriber connection once AUTH is done, else None.
        self._protocol: Any = None
        self._connected = False
        self._ever_connected = False
        self._auth_refused_logged = False
        #: Messages read from the subscriber connection (any channel), for the keepalive.
        self._messages = 0
        #: Events from Redis waiting for the end of the read they came in (see :meth:`_hold`).
        self._held: list[tuple[str, Mapping[str, Any]]] | None = None
        self._keepalive = (
            PeriodicService(
                keepalive_s, self._ping, clock=self._clock, now=False, what="events: the Redis keepalive"
            )
            if keepalive_s > 0
            else None
        )

    # --- IEventHub -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the subscriber connection is up and subscribed (events reach other processes)."""
        return self._connected

    @property
    def channels(self) -> list[str]:
        """Channels with at least one local subscriber."""
        return self._registry.channels

    def publish(self, channel: str, event: Mapping[str, Any]) -> None:
        check_channel(channel)
        payload = f'{{"v":{ENVELOPE_VERSION},"o":{json.dumps(self.node_id)},"e":{encode_event(event)}}}'
        self.stats.published += 1
        self._registry.deliver(channel, event)
        if not self.running:
            return
        if not self._connected:
            # Redis is away: other processes miss this one (pub/sub is at most once).
            self.stats.publish_failures += 1
            return
        d = self._publisher.publish(self._prefix + channel, payload)
        d.addTimeout(self._timeout_s, self._clock)
        d.addErrback(self._publish_failed)

    def subscribe(
        self, channel: str, callback: EventCallback, many: EventsCallback | None = None
    ) -> Subscription:
        return self._registry.subscribe(channel, callback, many)

    # --- service --------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._own_publisher is not None:
            self._own_publisher.startService()
        self._subscriber_service.startService()
        if self._keepalive is not None:
            self._keepalive.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._keepalive is not None:
            self._keepalive.stopService()
        self._set_connected(False)
        waits: list[Deferred[Any]] = [self._subscriber_service.stopService()]
        if self._own_publisher is not None:
            waits.append(self._own_publisher.stopService())
        return gatherResults(waits, consumeErrors=True).addBoth(lambda _: None)

    # --- subscriber connection --------------------------------------------------------

    def _subscriber_connected(self, protocol: Any) -> None:
        """A TCP connection is up: once AUTH is done, subscribe to every channel."""

        def ready(_: object) -> Deferred[Any] | None:
            if not self.running or not protocol.connected:
                return None
            self._protocol = protocol
            channels = [self._prefix + channel for channel in self._registry.channels]
            if not channels:
                self._up()
                return None
            d = protocol.subscribe(channels)
            d.addTimeout(self._timeout_s, self._clock)
            return d.addCallback(lambda _: self._up() if self._protocol is protocol else None)

        def failed(failure: Failure) -> None:
            log.warn(
                "events: setting up the Redis subscriber at {where} failed ({error}); reconnecting",
                where=self.target.describe(),
                error=_describe(failure),
                event_kind="degraded",
            )
            if protocol.transport is not None:
                protocol.transport.abortConnection()

        d = protocol.whenConnected()
        d.addTimeout(self._timeout_s, self._clock)
        d.addCallback(ready)
        d.addErrback(failed)

    def _up(self) -> None:
        if self._ever_connected:
            self.stats.reconnects += 1
            log.info(
                "events: Redis at {where} is back; subscribed again to {count} channels",
                where=self.target.describe(),
                count=len(self._registry.channels),
                event_kind="recovered",
            )
        self._ever_connected = True
        self._auth_refused_logged = False
        self._set_connected(True)

    def _subscriber_lost(self, protocol: Any) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        if self._connected and self.running:
            log.warn(
                "events: lost Redis at {where}; events reach this process only until it is back",
                where=self.target.describe(),
                event_kind="degraded",
            )
        self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if self._on_state_change is not None:
            try:
                self._on_state_change(connected)
            except Exception:
                log.failure("events: the state-change callback failed")

    def _auth_refused(self) -> None:
        if not self._auth_refused_logged:
            self._auth_refused_logged = True
            log.error(
                "events: Redis at {where} refused the credentials; retrying",
                where=self.target.describe(),
            )

    def _first_subscriber(self, channel: str) -> None:
        protocol = self._protocol
        if protocol is not None:
            d = protocol.subscribe([self._prefix + channel])
            d.addTimeout(self._timeout_s, self._clock)
            d.addErrback(self._command_failed, protocol, "SUBSCRIBE")

    def _last_subscriber(self, channel: str) -> None:
        protocol = self._protocol
        if protocol is not None:
            d = protocol.unsubscribe([self._prefix + channel])
            d.addTimeout(self._timeout_s, self._clock)
            d.addErrback(self._command_failed, protocol, "UNSUBSCRIBE")

    def _command_failed(self, failure: Failure, protocol: Any, command: str) -> None:
        if protocol is not self._protocol:
            return  # that connection is gone; the next one subscribes afresh
        if not self.running:
            return  # stopping: the connection is closed on purpose (an UNSUBSCRIBE may be in flight)
        log.warn(
            "events: Redis {command} failed ({error}); reconnecting",
            command=command,
            error=_describe(failure),
            event_kind="degraded",
        )
        # Start again from a clean state: the new connection subscribes to everything.
        if protocol.transport is not None:
            protocol.transport.abortConnection()

    def _ping(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        d = protocol.ping()
        d.addTimeout(self._timeout_s, self._clock)
        d.addErrback(self._ping_failed, protocol, self._messages)

    def _ping_failed(self, failure: Failure, protocol: Any, messages_before: int) -> None:
        """
        A PING not answered in time: the connection is taken for dead, unless
        messages came on it since the PING went out.  Then the answer is only
        queued behind messages this process has not read yet (it is behind,
        e.g. busy fanning events out): dropping the connection would lose
        every event published until it is subscribed again.
        """
        late = failure.check(NoAnswerInTime, TimeoutError) is not None
        if late and protocol is self._protocol and self._messages > messages_before:
            return
        self._command_failed(failure, protocol, "PING")

    def _message(self, redis_channel: Any, message: Any) -> None:
        self._messages += 1
        if isinstance(redis_channel, bytes):
            redis_channel = redis_channel.decode("utf-8", "replace")
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if not (isinstance(redis_channel, str) and redis_channel.startswith(self._prefix)):
            return
        channel = redis_channel[len(self._prefix) :]
        try:
            envelope = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            envelope = None
        if not (
            isinstance(envelope, dict)
            and envelope.get("v") == ENVELOPE_VERSION
            and isinstance(envelope.get("o"), str)
            and isinstance(envelope.get("e"), dict)
        ):
            self.stats.malformed += 1
            log.warn("events: ignored a malformed message on Redis channel {channel}", channel=channel)
            return
        if envelope["o"] == self.node_id:
            return  # our own event: already delivered here when it was published
        self.stats.received += 1
        if self._held is not None:
            self._held.append((channel, envelope["e"]))
        else:
            self._registry.deliver(channel, envelope["e"])

    def _hold(self) -> None:
        """The subscriber connection starts parsing a read: keep its events until :meth:`_release`."""
        if self._held is None:
            self._held = []

    def _release(self) -> None:
        """
        Deliver the events of the read, in order: each run of consecutive
        events of one channel in groups of at most :data:`MAX_BATCH` (so
        that a subscriber with a ``many`` callback, the WebSocket fan-out,
        writes them to each socket in one go), a lone event as
        :meth:`publish` would.
        """
        held, self._held = self._held, None
        if not held:
            return
        registry = self._registry
        start = 0
        while start < len(held):
            channel = held[start][0]
            end = start + 1
            while end < len(held) and end - start < MAX_BATCH and held[end][0] == channel:
                end += 1
            if end - start == 1:
                registry.deliver(channel, held[start][1])
            else:
                registry.deliver_many(channel, [event for _, event in held[start:end]])
            start = end

    def _publish_failed(self, failure: Failure) -> None:
        self.stats.publish_failures += 1
        log.warn(
            "events: PUBLISH to Redis failed ({error}); other processes missed one event",
            error=_describe(failure),
            event_kind="degraded",
        )


def _describe(failure: Failure) -> str:
    if failure.check(NoAnswerInTime, TimeoutError):  # Deferred.addTimeout's, or the builtin
        return "no answer in time"
    return f"{type(failure.value).__name__}: {failure.value}"


def make_hub(
    redis_url: str | None,
    reactor: Any,
    *,
    publisher: RedisConnection | None = None,
    **options: Any,
) -> InProcessHub | RedisHub:
    """
    The hub for this configuration: :class:`RedisHub` when ``STREAMSRV_REDIS_URL``
    is set, else :class:`InProcessHub`.  Either is a Service to add to the
    application.

    :param publisher: For a Redis hub, the process's shared Redis connection.
    :param options: Passed on to :class:`RedisHub`.
    """
    if redis_url is None:
        return InProcessHub()
    return RedisHub(redis_url, reactor, publisher=publisher, **options)
