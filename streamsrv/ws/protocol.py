# -*- test-case-name: tests.test_ws,tests.test_ws_socket -*-
"""The ``/ws`` WebSocket protocol: authenticated subscriptions to hub channels, playback reports.

Wire protocol (docs/api/websockets.md has the long version, with examples).
Every message, both ways, is one JSON object in one text frame::

    {"type": "...", "id": "...", "ts": "2026-01-01T12:00:00.000Z", "data": {...}}

``id`` and ``ts`` are optional from the client.  A server frame that answers
a client message carries that message's ``id``; a message without one (or
with one that is not a string of at most 128 characters) is given one server
id, and every answer to it carries that same id.  Other server frames carry
an id of the server's.

Client -> server:

- ``auth`` ``{token}``: authenticate (or re-authenticate: same ``sub`` only).
  The token may instead come in the ``access_token`` query parameter of the
  upgrade request.  Answered by ``ready`` ``{sub, expires_at}``.
- ``subscribe`` / ``unsubscribe`` ``{channels: [...]}``: ``user:me`` (or
  ``user:{own sub}``), ``track:{path}`` (principals allowed to see a track's
  activity), ``system`` (admins).  Answered by ``subscribed`` ``{channels}``,
  the socket's whole subscription list, after an ``error`` for any refused.
- ``playback.play|pause|seek|progress|ended|buffering``
  ``{session_id, path, position_s, ...}``: no answer unless refused.
- ``ping``: answered by ``pong``.

Server -> client: ``ready``, ``subscribed``, ``event`` ``{channel, event}``,
``notification`` (the user's notifications, without subscribing),
``token.expiring`` ``{expires_at, expires_in_s}``, ``pong``, ``error``
``{code, message}``.

Close codes: 4401 unauthenticated (no ``auth`` within the timeout, refused
credentials, token expired or revoked), 4403 no ``ws:connect`` (or
re-authentication as someone else), 1009 frame or message over the size
limit, 1008 rate limit exceeded persistently, 4008 slow consumer, 1001
server shutting down.

Slow consumers: events for a socket whose transport pushes back (its send
buffer is full and it paused us, its producer) wait in a queue of at most
``queue_max`` frames; beyond that the oldest is dropped and counted.  Once
``max_dropped`` events were dropped without the queue draining in between,
the socket is closed with 4008.  Answers to the client's own messages are
never dropped.

This module must never log, store or echo a token (only the principal's
``sub``), never let a client reach a channel its principal may not see, and
never let one socket's backlog grow the server's memory without bound.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from streamsrv.auth.principal import AuthError, Principal
from streamsrv.events.hub import MAX_BATCH, SYSTEM_CHANNEL, IEventHub, Subscription, user_channel
from streamsrv.media.paths import PathRefused, normalise_relative_path
from streamsrv.ws import direct
from streamsrv.ws.fanout import Fanout, FanoutMember
from streamsrv.ws.limits import TokenBucket, WsLimits, WsStats
from streamsrv.ws.playback import PLAYBACK_TYPES, PlaybackSink, check_playback
from streamsrv.ws.timers import ClockTimer as _ClockTimer

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_POLICY",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_UNAUTHENTICATED",
    "CLOSE_UNAUTHORIZED",
    "Authenticate",
    "EventSocketFactory",
    "EventSocketProtocol",
    "default_track_access",
    "rfc3339",
]

log = Logger()

CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_UNAUTHENTICATED: Final = 4401
CLOSE_UNAUTHORIZED: Final = 4403

#: Longest client message ``id`` echoed back.
MAX_ID_LENGTH: Final = 128

#: Permission needed to open a socket at all.
CONNECT_PERMISSION: Final = "ws:connect"

#: ``authenticate(token)``: the principal of an access token, or
#: :class:`~streamsrv.auth.principal.AuthError` (``TOKEN_EXPIRED``,
#: ``TOKEN_INVALID``, ``TOKEN_REVOKED``…).  It must not log the token.
Authenticate = Callable[[str], Awaitable[Principal]]


#: ``track_access(principal, path)``: may *principal* see the activity
#: (``stream.*``, ``playback.*``) of the track at *path*?
TrackAccess = Callable[[Principal, str], bool]


def default_track_access(principal: Principal, path: str) -> bool:
    """
    DESIGN: a track's channel is for admins and the track's artist.  Without
    a catalog to tell who the artist is, this lets in principals holding
    ``tracks:read`` and ``analytics:read:own`` (artists, admins); give the
    factory a catalog-aware callable to narrow artists to their own tracks.
    """
    return principal.can("tracks:read") and principal.can("analytics:read:own")


def rfc3339(seconds: float) -> str:
    """Unix *seconds* as RFC 3339 UTC with milliseconds (``2026-01-01T12:00:00.000Z``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: An event framed for the sockets: the event, its JSON, its id and ts, its frames by (kind, channel).
_Framed = tuple[Mapping[str, Any], bytes, bytes, dict[Any, PreparedMessage]]


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@implementer(IPushProducer)
class EventSocketProtocol(FanoutMember, WebSocketServerProtocol):  # type: ignore[misc]  # autobahn's own bases disagree
    """One ``/ws`` socket.  Built by :class:`EventSocketFactory`; see the module docstring."""

    factory: EventSocketFactory

    def __init__(self) -> None:
        super().__init__()
        #: Set by the resource: the ``access_token`` query parameter, taken out of the URI.
        self.query_token: str | None = None
        #: Set by the resource: the client's address (after trusted-proxy handling).
        self.client_ip: str = "-"
        #: Set by the resource: the upgrade request's ``X-Request-ID``, echoed on the 101.
        self.request_id: str | None = None
        self.principal: Principal | None = None
        #: Events dropped for this socket because it read too slowly.
        self.dropped = 0
        self._authenticating = False
        self._auth_call: IDelayedCall | None = None
        self._expiring_call: IDelayedCall | None = None
        self._expiry_call: IDelayedCall | None = None
        self._own: Subscription | None = None
        #: Client channel name -> hub subscription (None: served by the own user subscription).
        self._subs: dict[str, Subscription | None] = {}
        self._queue: deque[PreparedMessage] = deque()
        self._paused = False
        self._dropped_in_row = 0
        self._bucket: TokenBucket | None = None
        self._strikes = 0
        self._serial = 0
        self._closing = False
        self._torn_down = False
        #: The plain TCP transport event frames are sent straight through (see :mod:`.direct`), if any.
        self._direct: Any = None
        #: ``_direct`` while an event may go straight into it (not paused, nothing queued, not
        #: closing), else None: what :func:`.fanout.send_frame` reads (as ``_ready``).
        self._ready_transport = None

    # --- autobahn callbacks --------------------------------------------------------------

    def onConnect(self, request: Any) -> tuple[str | None, dict[str, str]]:
        """Accept the handshake (no subprotocol); the 101 carries the request's ``X-Request-ID``,
        as every response does (Autobahn writes it, not the site)."""
        return None, ({"X-Request-ID": self.request_id} if self.request_id else {})

    def onOpen(self) -> None:
        factory = self.factory
        clock = factory.clock
        factory._opened(self)
        if self._perMessageCompress is None and not getattr(self, "logOctets", False):
            self._direct = self._ready = direct.direct_transport(self.transport)
        try:
            self.registerProducer(self, True)
        except RuntimeError:
            log.warn(
                "ws: could not register as the transport's producer; no backpressure for {client}",
                client=self.client_ip,
            )
        limits = factory.limits
        self._bucket = TokenBucket(limits.messages_per_s, limits.message_burst, clock.seconds())
        self._auth_call = clock.callLater(limits.auth_timeout_s, self._auth_timed_out)
        token, self.query_token = self.query_token, None
        if token is not None:
            self._start_auth(token, None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn names it
        if self._closing:
            return
        factory = self.factory
        factory.stats.messages_in += 1
        assert self._bucket is not None
        if not self._bucket.take(factory.clock.seconds()):
            self._strikes += 1
            factory.stats.rate_limited += 1
            if self._strikes == 1:
                self._send_error("RATE_LIMITED", "Too many messages; slow down.", None)
            if self._strikes >= factory.limits.rate_strikes:
                self._security("ws_rate_limited")
                self._close(CLOSE_POLICY, "rate limit exceeded")
            return
        self._strikes = 0
        if isBinary:
            self._send_error("BAD_REQUEST", "Messages are JSON in text frames.", None)
            return
        try:
            message = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._send_error("BAD_REQUEST", "A message is one JSON object.", None)
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._send_error("BAD_REQUEST", 'A message is a JSON object with a string "type".', None)
            return
        raw_id = message.get("id")
        msg_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= MAX_ID_LENGTH else None
        if msg_id is None:
            # One server id for every answer to this message (an error and the
            # subscribed after it, say), so a client can tell they belong together.
            msg_id = self.next_id()
        data = message.get("data", {})
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self._send_error("BAD_REQUEST", '"data" must be a JSON object.', msg_id)
            return
        self._dispatch(message["type"], msg_id, data)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        self._teardown()
        # The code that ended it: ours if we closed, else the peer's, else 1006 (dropped).
        local: int | None = getattr(self, "localCloseCode", None)
        remote: int | None = getattr(self, "remoteCloseCode", None)
        if self.closedByMe and local is not None:
            code = local
        elif remote is not None:
            code = remote
        else:
            code = 1006
        factory = self.factory
        if factory is not None and self in factory.sockets:
            factory._closed(self, code)
            log.info(
                "ws: socket of {sub} from {client} closed ({code}); {dropped} events dropped",
                sub=self.principal.sub if self.principal is not None else "-",
                client=self.client_ip,
                code=code,
                dropped=self.dropped,
            )

    # --- IPushProducer: the transport tells us when its buffer is full ---------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._ready = None

    def resumeProducing(self) -> None:
        self._paused = False
        queue = self._queue
        while queue and not self._paused and not self._closing:
            self._send_event(queue.popleft())
        if not queue:
            self._dropped_in_row = 0
            if not self._paused and not self._closing:
                self._ready = self._direct

    def stopProducing(self) -> None:
        self._queue.clear()

    # --- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, kind: str, msg_id: str | None, data: dict[str, Any]) -> None:
        if kind == "ping":
            self._reply("pong", {}, msg_id)
        elif kind == "auth":
            self._on_auth(msg_id, data)
        elif self.principal is None:
            self._send_error("UNAUTHENTICATED", "Authenticate first.", msg_id)
        elif kind == "subscribe":
            self._on_subscribe(msg_id, data)
        elif kind == "unsubscribe":
            self._on_unsubscribe(msg_id, data)
        elif kind in PLAYBACK_TYPES:
            self._on_playback(kind, msg_id, data)
        else:
            self._send_error("BAD_REQUEST", "Unknown message type.", msg_id)

    # --- authentication ---------------------------------------------------------------------

    def _on_auth(self, msg_id: str | None, data: dict[str, Any]) -> None:
        token = data.get("token")
        if token is None and self.principal is None and self.factory.anonymous is not None:
            self._accept(self.factory.anonymous, msg_id)
            return
        if not isinstance(token, str) or not token:
            self._send_error("BAD_REQUEST", 'auth needs "data": {"token": "..."}.', msg_id)
            return
        self._start_auth(token, msg_id)

    def _start_auth(self, token: str, msg_id: str | None) -> None:
        if self._authenticating:
            self._send_error("BAD_REQUEST", "An authentication is in progress.", msg_id)
            return
        self._authenticating = True
        d = ensureDeferred(self._authenticate(token, msg_id))
        d.addErrback(lambda f: log.failure("ws: authentication crashed", f))

    async def _authenticate(self, token: str, msg_id: str | None) -> None:
        try:
            principal = await self.factory.authenticate(token)
        except AuthError as e:
            self._authenticating = False
            if self._closing:
                return
            self.factory.stats.auth_failures += 1
            self._security("ws_" + e.code.lower(), reason=e.reason)
            self._send_error(e.code, e.message, msg_id)
            if self.principal is None:
                self._close(CLOSE_UNAUTHENTICATED, "authentication failed")
            return
        except Exception:
            self._authenticating = False
            log.failure("ws: the authenticator failed")
            if not self._closing:
                self._send_error("INTERNAL", "Authentication is not available right now.", msg_id)
                if self.principal is None:
                    self._close(CLOSE_INTERNAL, "internal error")
            return
        self._authenticating = False
        if not self._closing:
            self._accept(principal, msg_id)

    def _accept(self, principal: Principal, msg_id: str | None) -> None:
        factory = self.factory
        if not principal.can(CONNECT_PERMISSION):
            self._security("ws_forbidden", sub=principal.sub, permission=CONNECT_PERMISSION)
            self._send_error("FORBIDDEN", "This account may not open event sockets.", msg_id)
            self._close(CLOSE_UNAUTHORIZED, "ws:connect required")
            return
        first = self.principal is None
        if not first and self.principal is not None and principal.sub != self.principal.sub:
            self._security("ws_subject_changed", sub=self.principal.sub)
            self._send_error("FORBIDDEN", "Re-authentication must be for the same subject.", msg_id)
            self._close(CLOSE_UNAUTHORIZED, "subject changed")
            return
        self.principal = principal
        if self._auth_call is not None and self._auth_call.active():
            self._auth_call.cancel()
        self._auth_call = None
        self._arm_expiry(principal)
        if first:
            factory.stats.authenticated += 1
            self._own = factory.hub.subscribe(user_channel(principal.sub), self._on_user_event)
        else:
            self._recheck_subscriptions()
        expires = None if principal.expires_at is None else rfc3339(principal.expires_at)
        self._reply("ready", {"sub": principal.sub, "expires_at": expires}, msg_id)

    def _arm_expiry(self, principal: Principal) -> None:
        for call in (self._expiring_call, self._expiry_call):
            if call is not None and call.active():
                call.cancel()
        self._expiring_call = self._expiry_call = None
        exp = principal.expires_at
        if exp is None:
            return
        clock = self.factory.clock
        now = clock.seconds()
        warn_in = exp - self.factory.limits.token_warning_s - now
        self._expiring_call = clock.callLater(max(0.0, warn_in), self._token_expiring)
        self._expiry_call = clock.callLater(max(0.0, exp - now), self._token_expired)

    def _token_expiring(self) -> None:
        self._expiring_call = None
        if self.principal is None or self.principal.expires_at is None or self._closing:
            return
        exp = self.principal.expires_at
        remaining = max(0, math.ceil(exp - self.factory.clock.seconds()))
        self._reply("token.expiring", {"expires_at": rfc3339(exp), "expires_in_s": remaining}, None)

    def _token_expired(self) -> None:
        self._expiry_call = None
        if self._closing:
            return
        self._send_error("TOKEN_EXPIRED", "The token has expired; reconnect with a new one.", None)
        self._close(CLOSE_UNAUTHENTICATED, "token expired")

    def _auth_timed_out(self) -> None:
        self._auth_call = None
        if self.principal is None and not self._closing:
            self._send_error("UNAUTHENTICATED", "No authentication in time.", None)
            self._close(CLOSE_UNAUTHENTICATED, "authentication timeout")

    def revoked(self) -> None:
        """The principal's token was revoked: tell the client and close with 4401."""
        if self._closing:
            return
        self._security("ws_token_revoked")
        self._send_error("TOKEN_REVOKED", "The token has been revoked.", None)
        self._close(CLOSE_UNAUTHENTICATED, "token revoked")

    # --- subscriptions ------------------------------------------------------------------------

    def _resolve(self, name: str) -> tuple[str, bool]:
        """The hub channel of a client channel name, and whether the own user subscription serves it."""
        principal = self.principal
        assert principal is not None
        if name == "user:me" or name == user_channel(principal.sub):
            return user_channel(principal.sub), True
        if name.startswith("user:"):
            if principal.is_admin and len(name) > len("user:"):
                return name, False
            raise _Refused("FORBIDDEN")
        if name == SYSTEM_CHANNEL:
            if principal.is_admin:
                return SYSTEM_CHANNEL, False
            raise _Refused("FORBIDDEN")
        if name.startswith("track:"):
            try:
                path = "/".join(normalise_relative_path(name[len("track:") :]))
            except PathRefused:
                raise _Refused("BAD_REQUEST") from None
            if not self.factory.track_access(principal, path):
                raise _Refused("FORBIDDEN")
            return "track:" + path, False
        raise _Refused("BAD_REQUEST")

    def _channel_list(self, msg_id: str | None, data: dict[str, Any]) -> list[str] | None:
        channels = data.get("channels")
        limit = self.factory.limits.max_subscriptions
        if (
            not isinstance(channels, list)
            or not channels
            or len(channels) > limit
            or not all(isinstance(c, str) and 0 < len(c) <= 1024 for c in channels)
        ):
            self._send_error("BAD_REQUEST", f'"channels" is a list of 1 to {limit} channel names.', msg_id)
            return None
        return list(dict.fromkeys(channels))

    def _on_subscribe(self, msg_id: str | None, data: dict[str, Any]) -> None:
        names = self._channel_list(msg_id, data)
        if names is None:
            return
        refused: dict[str, list[str]] = {"FORBIDDEN": [], "BAD_REQUEST": []}
        over: list[str] = []
        for name in names:
            if name in self._subs:
                continue
            try:
                channel, own = self._resolve(name)
            except _Refused as e:
                refused[e.code].append(name)
                continue
            if len(self._subs) >= self.factory.limits.max_subscriptions:
                over.append(name)
                continue
            self._subs[name] = None if own else self.factory.fanout.subscribe(channel, name, self)
        if refused["FORBIDDEN"]:
            self._security("ws_subscribe_forbidden", channels=len(refused["FORBIDDEN"]))
            self._send_error("FORBIDDEN", "Not allowed on these channels.", msg_id, refused["FORBIDDEN"])
        if refused["BAD_REQUEST"]:
            self._send_error("BAD_REQUEST", "Unknown or malformed channels.", msg_id, refused["BAD_REQUEST"])
        if over:
            limit = self.factory.limits.max_subscriptions
            self._send_error("BAD_REQUEST", f"At most {limit} subscriptions per socket.", msg_id, over)
        self._reply("subscribed", {"channels": sorted(self._subs)}, msg_id)

    def _on_unsubscribe(self, msg_id: str | None, data: dict[str, Any]) -> None:
        names = self._channel_list(msg_id, data)
        if names is None:
            return
        for name in names:
            subscription = self._subs.pop(name, None)
            if subscription is not None:
                subscription.cancel()
        self._reply("subscribed", {"channels": sorted(self._subs)}, msg_id)

    def _recheck_subscriptions(self) -> None:
        """After re-authentication: drop channels the new token no longer allows."""
        lost = []
        for name in list(self._subs):
            try:
                self._resolve(name)
            except _Refused:
                subscription = self._subs.pop(name)
                if subscription is not None:
                    subscription.cancel()
                lost.append(name)
        if lost:
            self._send_error("FORBIDDEN", "No longer allowed on these channels.", None, lost)
            self._reply("subscribed", {"channels": sorted(self._subs)}, None)

    # --- playback -----------------------------------------------------------------------------

    def _on_playback(self, kind: str, msg_id: str | None, data: dict[str, Any]) -> None:
        sink = self.factory.on_playback
        if sink is None:
            self._send_error("NOT_CONFIGURED", "Playback reports are not recorded by this server.", msg_id)
            return
        problem = check_playback(data)
        if problem is None:
            assert self.principal is not None
            try:
                problem = sink(self.principal, kind.removeprefix("playback."), data)
            except Exception:
                log.failure("ws: the playback sink failed")
                self._send_error("INTERNAL", "The report could not be recorded.", msg_id)
                return
        if problem is not None:
            self._send_error("BAD_REQUEST", problem, msg_id)
            return
        self.factory.stats.playback_reports += 1

    # --- events -------------------------------------------------------------------------------

    def _on_user_event(self, channel: str, event: Mapping[str, Any]) -> None:
        if event.get("type") == "notification":
            self._push(self.factory.event_frame("notification", None, event))
            return
        for name, subscription in self._subs.items():
            if subscription is None:
                self._push(self.factory.event_frame("event", name, event))

    def _on_event(self, name: str, channel: str, event: Mapping[str, Any]) -> None:
        self._push(self.factory.event_frame("event", name, event))

    def _push(self, frame: PreparedMessage) -> None:
        """Send an event frame now, or queue it while the transport pushes back (dropping the oldest)."""
        if self._closing:
            return
        queue = self._queue
        if not self._paused and not queue:
            self._send_event(frame)
            return
        queue.append(frame)
        limits = self.factory.limits
        if len(queue) > limits.queue_max:
            queue.popleft()
            self.dropped += 1
            self._dropped_in_row += 1
            self.factory.stats.events_dropped += 1
            if self._dropped_in_row >= limits.max_dropped:
                log.warn(
                    "ws: closing the socket of {sub} from {client}: it reads too slowly "
                    "({dropped} events dropped)",
                    sub=self.principal.sub if self.principal is not None else "-",
                    client=self.client_ip,
                    dropped=self.dropped,
                )
                self._close(CLOSE_SLOW_CONSUMER, "slow consumer")

    # --- sending and closing ------------------------------------------------------------------

    def next_id(self) -> str:
        """A fresh server frame id, unique on this socket."""
        self._serial += 1
        return f"s{self._serial}"

    def _reply(self, kind: str, data: Mapping[str, Any], msg_id: str | None) -> None:
        if self._closing or self.state != WebSocketProtocol.STATE_OPEN:
            return
        frame = {
            "type": kind,
            "id": msg_id if msg_id is not None else self.next_id(),
            "ts": rfc3339(self.factory.clock.seconds()),
            "data": data,
        }
        self._send_raw(json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))

    def _send_raw(self, payload: bytes) -> None:
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        self.sendMessage(payload, isBinary=False)
        self.factory.stats.frames_out += 1

    def _send_event(self, frame: PreparedMessage) -> None:
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        transport = self._direct
        if transport is None or self.send_queue:
            self.sendPreparedMessage(frame)
        else:
            # sendPreparedMessage -> sendData without the transport's buffer and reactor turn.
            data = frame.payloadHybi
            if not direct.write(transport, data):
                self._demote()
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        stats = self.factory.stats
        stats.frames_out += 1
        stats.events_sent += 1

    def _send_error(
        self, code: str, message: str, msg_id: str | None, channels: list[str] | None = None
    ) -> None:
        data: dict[str, Any] = {"code": code, "message": message}
        if channels is not None:
            data["channels"] = channels
        self._reply("error", data, msg_id)

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake with *code* and stop everything else on this socket."""
        if self._closing:
            return
        self._closing = True
        self._ready = None
        self._teardown()
        if self.state == WebSocketProtocol.STATE_OPEN:
            # sendClose() refuses the 1xxx codes other than 1000; the frame is the same.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)

    def close_going_away(self) -> None:
        """Close because the server stops (1001)."""
        self._close(CLOSE_GOING_AWAY, "server shutting down")

    def _teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        self._ready = None
        for call in (self._auth_call, self._expiring_call, self._expiry_call):
            if call is not None and call.active():
                call.cancel()
        self._auth_call = self._expiring_call = self._expiry_call = None
        for subscription in self._subs.values():
            if subscription is not None:
                subscription.cancel()
        self._subs.clear()
        if self._own is not None:
            self._own.cancel()
            self._own = None
        self._queue.clear()

    def _security(self, kind: str, **fields: object) -> None:
        self.factory.security_event(kind, client=self.client_ip, **fields)


class EventSocketFactory(WebSocketServerFactory):
    """
    Builds ``/ws`` sockets and holds what they share: the hub, the
    authenticator, the limits, the clock, the set of open sockets and the
    counters.  Mount it with :class:`streamsrv.ws.resource.EventSocketResource`.
    """

    protocol = EventSocketProtocol  # type: ignore[assignment]

    def __init__(
        self,
        *,
        hub: IEventHub,
        authenticate: Authenticate,
        clock: IReactorTime,
        limits: WsLimits | None = None,
        on_playback: PlaybackSink | None = None,
        track_access: TrackAccess = default_track_access,
        anonymous: Principal | None = None,
        is_revoked: Callable[[Principal], bool] | None = None,
        allowed_origins: list[str] | None = None,
        metrics: Any = None,
    ) -> None:
        """
        :param hub: Where events come from.
        :param authenticate: Verifies a token (see :data:`Authenticate`).
        :param clock: Times every timer of the sockets (auth, expiry,
            keepalive, handshakes) and the rate limits.
        :param limits: The per-socket limits (defaults: :class:`WsLimits`).
        :param on_playback: Takes playback reports (see :data:`PlaybackSink`);
            without one they are answered ``NOT_CONFIGURED``.
        :param track_access: Who may subscribe to ``track:{path}``.
        :param anonymous: The development-only anonymous principal: an
            ``auth`` message without a token authenticates as it.
        :param is_revoked: Checked by :meth:`revalidate` for every socket.
        :param allowed_origins: ``Origin`` patterns accepted (default: any:
            sockets authenticate by token, not by cookie).
        :param metrics: A :class:`streamsrv.health.metrics.Metrics`, whose
            ``security_events`` counter is incremented.
        """
        super().__init__(reactor=clock)
        self.hub = hub
        self.authenticate = authenticate
        self.clock = clock
        self.limits = limits if limits is not None else WsLimits()
        self.on_playback = on_playback
        self.track_access = track_access
        self.anonymous = anonymous
        self.is_revoked = is_revoked
        self.metrics = metrics
        self.stats = WsStats()
        self.sockets: set[EventSocketProtocol] = set()
        #: One hub subscription per (channel, client name), one loop per event (see :mod:`.fanout`).
        self.fanout = Fanout(self)
        # Autobahn's timers run on txaio's (global) loop; ours run on *clock*.
        self._batched_timer = _ClockTimer(clock)
        #: id(event) -> the event framed, the latest last.
        self._recent_events: dict[int, _Framed] = {}
        self._event_serial = 0
        limits_ = self.limits
        self.setProtocolOptions(
            maxFramePayloadSize=limits_.max_frame,
            maxMessagePayloadSize=limits_.max_frame,
            failByDrop=False,  # send the close frame (1009…) before dropping
            openHandshakeTimeout=limits_.open_timeout_s,
            closeHandshakeTimeout=limits_.close_timeout_s,
            autoPingInterval=limits_.ping_interval_s,
            autoPingTimeout=limits_.ping_timeout_s,
            webStatus=False,
            allowedOrigins=allowed_origins if allowed_origins is not None else ["*"],
            allowNullOrigin=True,
        )

    def _opened(self, socket: EventSocketProtocol) -> None:
        self.sockets.add(socket)
        self.stats.connections += 1

    def _closed(self, socket: EventSocketProtocol, code: int | None) -> None:
        self.sockets.discard(socket)
        self.stats.closes[code if code is not None else 1006] += 1

    def event_frame(self, kind: str, channel: str | None, event: Mapping[str, Any]) -> PreparedMessage:
        """
        The frame carrying *event* on *channel* (the client's name for it),
        framed once however many sockets it goes to: the hub hands the same
        object to every subscriber in turn (up to ``MAX_BATCH`` events at a
        time), so the frames of the last events are remembered, with one id
        (``e{n}``) and one ``ts`` for all of them (an event object is not
        changed once published: every publisher builds a fresh one).
        """
        recent = self._recent_events
        last = recent.get(id(event))
        if last is None or last[0] is not event:
            encoded = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            self._event_serial += 1
            head = b'"id":"e%d","ts":%s' % (
                self._event_serial,
                json.dumps(rfc3339(self.clock.seconds())).encode("ascii"),
            )
            last = recent[id(event)] = (event, encoded, head, {})
            if len(recent) > 2 * MAX_BATCH:
                del recent[next(iter(recent))]
        _, encoded, head, frames = last
        key = (kind, channel)
        prepared = frames.get(key)
        if prepared is None:
            if kind == "notification":
                payload = b'{"type":"notification",%s,"data":%s}' % (head, encoded)
            else:
                name = json.dumps(channel, ensure_ascii=False).encode("utf-8")
                payload = b'{"type":"event",%s,"data":{"channel":%s,"event":%s}}' % (head, name, encoded)
            prepared = frames[key] = self.prepareMessage(payload)
        return prepared

    def revalidate(self) -> None:
        """Close (4401) every socket whose token has been revoked since it authenticated."""
        if self.is_revoked is None:
            return
        for socket in list(self.sockets):
            principal = socket.principal
            if principal is not None and principal.via == "jwt" and self.is_revoked(principal):
                socket.revoked()

    def close_all(self) -> None:
        """Close every socket with 1001 (server shutting down)."""
        for socket in list(self.sockets):
            socket.close_going_away()

    def security_event(self, kind: str, **fields: object) -> None:
        """Log (and count) a security event of a socket."""
        if self.metrics is not None:
            self.metrics.security_events.labels(kind).inc()
        log.warn(
            "security event {kind} on a WebSocket from {client}", kind=kind, event_kind="security", **fields
        )
