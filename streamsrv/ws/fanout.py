# -*- test-case-name: tests.test_ws_fanout,tests.test_ws_direct,tests.test_ws -*-
"""One event to every socket subscribed to a channel, in one loop.

Every socket of a factory subscribed to the same hub channel under the same
client name (``system``, ``track:{path}``, an admin's ``user:{sub}``) is a
member of one :class:`_Group`, which holds the channel's single subscription
in the hub.  An event on the channel is framed once
(:meth:`~streamsrv.ws.protocol.EventSocketFactory.event_frame`) and
:func:`send_frame` writes the frame's bytes to every member in one loop: for
a member whose socket can take it now (a plain TCP transport with nothing
buffered, not paused, nothing queued, not closing: the protocol keeps that
in ``_ready`` as its state changes) straight into the socket, as
:func:`streamsrv.ws.direct.write` does; for any other, through the socket's
own ``_push`` (queue, drop-oldest, 4008, ``transport.write``), exactly as
before.  Per socket and event that is a handful of attribute reads and one
``send``, instead of the hub's callback, a ``functools.partial``, three
methods of the protocol and :func:`~streamsrv.ws.direct.write`.

This module must never send on a socket whose transport has bytes buffered
ahead (they would be overtaken), that is paused, closing or not open, never
let one socket's failure stop the others, and never deliver to a socket
that left the group.
"""

from __future__ import annotations

import functools
from typing import Any

from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.logger import Logger

from streamsrv.events.hub import Subscription
from streamsrv.ws import direct

__all__ = ["Fanout", "send_frame"]

log = Logger()

_OPEN = WebSocketProtocol.STATE_OPEN


def send_frame(sockets: tuple[Any, ...], frames: list[PreparedMessage], members: dict[Any, None]) -> int:
    """
    Write *frames* (one, or several consecutive events) to each of *sockets*
    that is still in *members*, in order.

    A socket with ``_ready`` (its plain TCP transport, set by the protocol
    while it may write straight into it) whose transport has nothing
    buffered and is not being closed gets the bytes (of every frame, one
    after the other) from one ``socket.send``; what the socket does not take
    (all of it on ``EAGAIN`` or an error) goes through ``transport.write``,
    behind which the next frame then waits.  Every other socket gets
    ``_push(frame)`` for each frame.

    :return: The sockets written to here (``_push`` counts its own frames).
    """
    data = frames[0].payloadHybi if len(frames) == 1 else b"".join(f.payloadHybi for f in frames)
    holds_back = direct.holds_back
    send_now = direct.send_now
    sent = 0
    for sock in sockets:
        transport = sock._ready
        try:
            if transport is None or sock.state != _OPEN or sock.send_queue or holds_back(transport):
                if sock in members:
                    for frame in frames:
                        sock._push(frame)
                continue
            send_now(transport, data)
            sent += 1
        except Exception:
            log.failure("ws: sending an event to a socket failed")
    return sent


class _Group:
    """The sockets subscribed to one hub channel under one client name, and the channel's hub subscription."""

    __slots__ = ("_fanout", "_snapshot", "_subscription", "channel", "members", "name")

    def __init__(self, fanout: Fanout, channel: str, name: str) -> None:
        self._fanout = fanout
        self.channel = channel
        self.name = name
        #: Socket -> None, in the order they joined.
        self.members: dict[Any, None] = {}
        self._snapshot: tuple[Any, ...] | None = None
        self._subscription = fanout.factory.hub.subscribe(channel, self._on_event, self._on_events)

    def join(self, sock: Any) -> Subscription:
        self.members[sock] = None
        self._snapshot = None
        return Subscription(
            self.channel, functools.partial(sock._on_event, self.name), functools.partial(self._leave, sock)
        )

    def _leave(self, sock: Any, subscription: Subscription) -> None:
        if sock not in self.members:
            return
        del self.members[sock]
        self._snapshot = None
        if not self.members:
            self._subscription.cancel()
            self._fanout._groups.pop((self.channel, self.name), None)

    def _on_event(self, channel: str, event: Any) -> None:
        self._on_events(channel, [event])

    def _on_events(self, channel: str, events: list[Any]) -> None:
        factory = self._fanout.factory
        frames = [factory.event_frame("event", self.name, event) for event in events]
        snapshot = self._snapshot
        if snapshot is None:
            # Members may leave (a 4008 close) while the loop runs: it keeps this copy.
            snapshot = self._snapshot = tuple(self.members)
        sent = send_frame(snapshot, frames, self.members) * len(frames)
        stats = factory.stats
        stats.frames_out += sent
        stats.events_sent += sent


class Fanout:
    """The fan-out groups of one factory, by (hub channel, client name)."""

    def __init__(self, factory: Any) -> None:
        """:param factory: The :class:`~streamsrv.ws.protocol.EventSocketFactory` (its hub, frames, stats)."""
        self.factory = factory
        self._groups: dict[tuple[str, str], _Group] = {}

    def subscribe(self, channel: str, name: str, sock: Any) -> Subscription:
        """
        Deliver the events of hub *channel* to *sock* as frames on its
        channel *name*, until the returned subscription is cancelled.
        """
        group = self._groups.get((channel, name))
        if group is None:
            group = self._groups[(channel, name)] = _Group(self, channel, name)
        return group.join(sock)

    @property
    def groups(self) -> int:
        """How many groups (hub subscriptions) there are."""
        return len(self._groups)
