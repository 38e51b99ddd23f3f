# -*- test-case-name: tests.test_ws_fanout,tests.test_ws_direct,tests.test_ws -*-
"""One event to every socket subscribed to a channel, in one loop.

Every socket of a factory subscribed to the same hub channel under the same
client name (``system``, ``track:{path}``, an admin's ``user:{sub}``) is a
member of one :class:`_Group`, which holds the channel's single subscription
in the hub.  An event on the channel is framed once
(:meth:`~streamsrv.ws.protocol.EventSocketFactory.event_frame`) and written
to the members in two passes:

- **Clean members** get it from :func:`send_all`: one ``socket.send`` each,
  called from C (``map`` of a ``methodcaller`` over the members' socket
  objects), no Python frame per socket.  A member is clean when its last
  event went straight into its socket in full and nothing has happened to
  it since: the protocol *demotes* it (:meth:`Fanout.demote`) on everything
  that could make a straight write wrong: any write of Autobahn's
  (``sendData``: a reply, a ping, a close frame, which may leave bytes in
  the transport's buffer), ``dropConnection``, a change of ``_ready``
  (paused, resumed, closing, torn down), a send of its own that left bytes
  buffered.  What a socket does not take (a partial send, ``EAGAIN``, an
  error) goes through ``transport.write``, and the member is demoted.
- **Every other member** goes through :func:`send_frame`, the checked path:
  for a member whose socket can take it now (a plain TCP transport with
  nothing buffered, not paused, nothing queued, not closing: the protocol
  keeps that in ``_ready`` as its state changes) straight into the socket,
  as :func:`streamsrv.ws.direct.write` does, after which it is clean again;
  for any other, through the socket's own ``_push`` (queue, drop-oldest,
  4008, ``transport.write``), exactly as before.

Per clean socket and event that is one ``send`` called from C; against a
Python loop reading each socket's protocol and transport (5,000 sets of
objects no cache holds) it costs about three quarters of the CPU
(docs/performance.md, "WebSocket fan-out, third pass").

This module must never send on a socket whose transport has bytes buffered
ahead (they would be overtaken), that is paused, closing or not open (a
socket is clean only while nothing of that has happened since it was
checked), never let one socket's failure stop the others, and never
deliver to a socket that left the group.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.logger import Logger

from streamsrv.events.hub import Subscription
from streamsrv.ws import direct

__all__ = ["Fanout", "FanoutMember", "send_all", "send_frame"]

log = Logger()

_OPEN = WebSocketProtocol.STATE_OPEN


class FanoutMember:
    """The protocol's side of the fan-out (mixed in before Autobahn's protocol): it demotes itself.

    ``_ready`` (set by the protocol as its state changes), Autobahn's every
    write (``sendData``: a reply, a ping, a close frame, which may leave bytes
    in the transport's buffer) and ``dropConnection`` each call
    :meth:`Fanout.demote`, so that nothing goes straight into the socket
    until it has been checked again.
    """

    factory: Any
    _ready_transport: Any = None

    @property
    def _ready(self) -> Any:
        return self._ready_transport

    @_ready.setter
    def _ready(self, transport: Any) -> None:
        self._ready_transport = transport
        self._demote()

    def _demote(self) -> None:
        """Nothing goes straight into this socket until the fan-out has checked it again."""
        factory = self.factory
        if factory is not None:
            factory.fanout.demote(self)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        self._demote()
        super().sendData(data, sync, chopsize)  # type: ignore[misc]

    def dropConnection(self, abort: bool = False) -> None:
        self._demote()
        super().dropConnection(abort)  # type: ignore[misc]


def send_frame(
    sockets: tuple[Any, ...],
    frames: list[PreparedMessage],
    members: dict[Any, None],
    clean: Callable[[Any, Any], object] | None = None,
) -> int:
    """
    Write *frames* (one, or several consecutive events) to each of *sockets*
    that is still in *members*, in order, checking each socket's state.

    A socket with ``_ready`` (its plain TCP transport, set by the protocol
    while it may write straight into it) whose transport has nothing
    buffered and is not being closed gets the bytes (of every frame, one
    after the other) from one ``socket.send``; what the socket does not take
    (all of it on ``EAGAIN`` or an error) goes through ``transport.write``,
    behind which the next frame then waits.  Every other socket gets
    ``_push(frame)`` for each frame.

    :param clean: Called with ``(socket, transport)`` for each socket that took
        all the bytes straight (its transport holds nothing after).
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
            if send_now(transport, data) and clean is not None:
                clean(sock, transport)
            sent += 1
        except Exception:
            log.failure("ws: sending an event to a socket failed")
    return sent


def send_all(sockets: list[Any], data: bytes) -> list[int]:
    """
    ``sockets[i].send(data)`` for each socket, called from C; what each took.

    An exception of one socket's ``send`` (``EAGAIN``, a reset peer) stands
    as ``-1`` in its place, and the sends go on with the next socket.
    """
    taken: list[int] = []
    remaining = iter(sockets)
    send = operator.methodcaller("send", data)
    while True:
        try:
            # extend() keeps what it appended before a send raised; the iterator is past that socket.
            taken.extend(map(send, remaining))
        except Exception:
            taken.append(-1)
        else:
            return taken


class _Group:
    """The sockets subscribed to one hub channel under one client name, and the channel's hub subscription.

    Every member is in exactly one of ``_clean`` (with its socket object:
    :func:`send_all` writes to these) and ``_checked`` (:func:`send_frame`).
    """

    __slots__ = (
        "_checked", "_clean", "_clean_lists", "_fanout", "_subscription", "channel", "members", "name",
    )  # fmt: skip

    def __init__(self, fanout: Fanout, channel: str, name: str) -> None:
        self._fanout = fanout
        self.channel = channel
        self.name = name
        #: Socket -> None, in the order they joined.
        self.members: dict[Any, None] = {}
        #: Members whose last event went straight into their socket, nothing changed since -> its socket.
        self._clean: dict[Any, Any] = {}
        #: ``_clean``'s protocols and socket objects as two lists, made again after ``_clean`` changed.
        self._clean_lists: tuple[list[Any], list[Any]] | None = None
        #: The other members, in order: each event checks them one by one.
        self._checked: dict[Any, None] = {}
        self._subscription = fanout.factory.hub.subscribe(channel, self._on_event, self._on_events)

    def join(self, sock: Any) -> Subscription:
        self.members[sock] = None
        self._checked[sock] = None
        return Subscription(
            self.channel, functools.partial(sock._on_event, self.name), functools.partial(self._leave, sock)
        )

    def _leave(self, sock: Any, subscription: Subscription) -> None:
        if sock not in self.members:
            return
        del self.members[sock]
        self._checked.pop(sock, None)
        if self._clean.pop(sock, None) is not None:
            self._clean_lists = None
        self._fanout._left(sock, self)
        if not self.members:
            self._subscription.cancel()
            self._fanout._groups.pop((self.channel, self.name), None)

    def demote(self, sock: Any) -> None:
        """*sock* must be checked again before anything goes straight into it."""
        if self._clean.pop(sock, None) is not None:
            self._clean_lists = None
            self._checked[sock] = None

    def _promote(self, sock: Any, transport: Any) -> None:
        if self._checked.pop(sock, False) is None:
            self._clean[sock] = transport.socket
            self._clean_lists = None

    def _on_event(self, channel: str, event: Any) -> None:
        self._on_events(channel, [event])

    def _on_events(self, channel: str, events: list[Any]) -> None:
        factory = self._fanout.factory
        frames = [factory.event_frame("event", self.name, event) for event in events]
        # Taken first: a clean member the first pass demotes must not get the frames twice; members
        # may also leave (a 4008 close) or be promoted while the second runs.
        checked = tuple(self._checked)
        sent = 0
        if self._clean:
            data = frames[0].payloadHybi if len(frames) == 1 else b"".join(f.payloadHybi for f in frames)
            sent = self._send_clean(data)
        if checked:
            sent += send_frame(checked, frames, self.members, self._promote)
        sent *= len(frames)
        stats = factory.stats
        stats.frames_out += sent
        stats.events_sent += sent

    def _send_clean(self, data: bytes) -> int:
        """*data* to every clean member from C; what a socket did not take goes through its transport."""
        lists = self._clean_lists
        if lists is None:
            lists = self._clean_lists = (list(self._clean), list(self._clean.values()))
        protocols, sockets = lists
        taken = send_all(sockets, data)
        size = len(data)
        if taken.count(size) == len(taken):
            return len(taken)
        for index, count in enumerate(taken):
            if count == size:
                continue
            sock = protocols[index]
            try:
                sock._ready.write(data[count:] if count > 0 else data)
            except Exception:
                log.failure("ws: sending an event to a socket failed")
            self._fanout.demote(sock)
        return len(taken)


class Fanout:
    """The fan-out groups of one factory, by (hub channel, client name)."""

    def __init__(self, factory: Any) -> None:
        """:param factory: The :class:`~streamsrv.ws.protocol.EventSocketFactory` (its hub, frames, stats)."""
        self.factory = factory
        self._groups: dict[tuple[str, str], _Group] = {}
        #: Socket -> the groups it is a member of.
        self._memberships: dict[Any, list[_Group]] = {}

    def subscribe(self, channel: str, name: str, sock: Any) -> Subscription:
        """
        Deliver the events of hub *channel* to *sock* as frames on its
        channel *name*, until the returned subscription is cancelled.
        """
        group = self._groups.get((channel, name))
        if group is None:
            group = self._groups[(channel, name)] = _Group(self, channel, name)
        self._memberships.setdefault(sock, []).append(group)
        return group.join(sock)

    def demote(self, sock: Any) -> None:
        """Something happened to *sock* (see the module docstring): every group checks it again before
        anything goes straight into its socket."""
        for group in self._memberships.get(sock, ()):
            group.demote(sock)

    def _left(self, sock: Any, group: _Group) -> None:
        groups = self._memberships.get(sock)
        if groups is not None:
            groups.remove(group)
            if not groups:
                del self._memberships[sock]

    @property
    def groups(self) -> int:
        """How many groups (hub subscriptions) there are."""
        return len(self._groups)
