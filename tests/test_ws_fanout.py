"""The fan-out loop of :mod:`streamsrv.ws.fanout`: one hub subscription and one loop per channel.

:class:`SendFrameTests` pins :func:`~streamsrv.ws.fanout.send_frame` against
stub sockets (which go straight into the socket, which go through the
socket's own ``_push`` as before, and that one failing socket does not stop
the others).  :class:`SendAllTests` pins :func:`~streamsrv.ws.fanout.send_all` (one socket's
error does not stop the sends).  :class:`GroupTests` checks that the sockets
of one channel share one hub subscription, released with the last of them,
and when a member is clean (written by ``send_all``) or checked again
(``send_frame``).  :class:`DemotionOverTcpTests` checks, with the real
protocol, that whatever else the socket writes (a pong) or a pause sends its
next event through the checked path, in order.
:class:`SameBytesOverTcpTests` runs the real site on 127.0.0.1 with raw
clients, half of the sockets forced onto the per-socket path of before:
every socket reads the same bytes, for single events and for a batch
(several events written in one ``send``).  Nothing asserts on timing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from streamsrv.events.hub import SYSTEM_CHANNEL, InProcessHub
from streamsrv.ws.fanout import Fanout, send_all, send_frame
from streamsrv.ws.limits import WsLimits, WsStats
from tests import test_ws_direct
from tests.test_ws_direct import _StubSocket, _StubTransport


class _Frame:
    def __init__(self, data: bytes) -> None:
        self.payloadHybi = data


class _Sock:
    """What :func:`send_frame` reads of a protocol, and a recording ``_push``."""

    def __init__(self, transport: _StubTransport | None, fail: bool = False) -> None:
        self._ready = transport
        self.state = WebSocketProtocol.STATE_OPEN
        self.send_queue: list[Any] = []
        self.pushed: list[bytes] = []
        self.fail = fail

    def _push(self, frame: _Frame) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.pushed.append(frame.payloadHybi)

    def _on_event(self, name: str, channel: str, event: Mapping[str, Any]) -> None:
        pass


def _send(socks: list[_Sock], frames: list[bytes], members: list[_Sock] | None = None) -> int:
    member_map = dict.fromkeys(socks if members is None else members)
    return send_frame(tuple(socks), [_Frame(f) for f in frames], member_map)  # type: ignore[misc]


class SendFrameTests(unittest.TestCase):
    """Which sockets get the bytes straight, which through ``_push``."""

    def test_ready_socket_gets_every_frame_in_one_send(self) -> None:
        """Nothing buffered: one ``send`` of the frames one after the other; counted as sent."""
        sock = _Sock(_StubTransport(_StubSocket()))
        self.assertEqual(_send([sock], [b"one", b"two", b"three"]), 1)
        assert sock._ready is not None
        self.assertEqual(sock._ready.socket.sent, [b"onetwothree"])
        self.assertEqual(sock._ready.written, [])
        self.assertEqual(sock.pushed, [])

    def test_partial_send_and_errors_leave_the_rest_to_the_transport(self) -> None:
        """What the socket does not take (all of it on EAGAIN or an error) goes via ``transport.write``."""
        partial = _Sock(_StubTransport(_StubSocket(takes=4)))
        blocked = _Sock(_StubTransport(_StubSocket(error=BlockingIOError())))
        reset = _Sock(_StubTransport(_StubSocket(error=ConnectionResetError())))
        self.assertEqual(_send([partial, blocked, reset], [b"abcdef", b"gh"]), 3)
        assert partial._ready is not None and blocked._ready is not None and reset._ready is not None
        self.assertEqual((partial._ready.socket.sent, partial._ready.written), ([b"abcd"], [b"efgh"]))
        self.assertEqual(blocked._ready.written, [b"abcdefgh"])
        self.assertEqual(reset._ready.written, [b"abcdefgh"])

    def test_anything_else_goes_through_push_frame_by_frame(self) -> None:
        """Not ready, not open, Autobahn's queue busy, bytes buffered, the transport closing: ``_push``."""
        cases: list[tuple[str, _Sock]] = [("not ready", _Sock(None))]
        closed = _Sock(_StubTransport(_StubSocket()))
        closed.state = WebSocketProtocol.STATE_CLOSING
        cases.append(("closing", closed))
        queued = _Sock(_StubTransport(_StubSocket()))
        queued.send_queue.append((b"x", False))
        cases.append(("send_queue", queued))
        for attribute, value in (
            ("dataBuffer", b"old"),
            ("_tempDataBuffer", [b"old"]),
            ("disconnecting", 1),
            ("connected", 0),
            ("_aborting", True),
            ("_writeDisconnecting", True),
            ("_writeDisconnected", True),
        ):
            sock = _Sock(_StubTransport(_StubSocket()))
            setattr(sock._ready, attribute, value)
            cases.append((attribute, sock))
        for what, sock in cases:
            self.assertEqual(_send([sock], [b"a", b"b"]), 0, what)
            self.assertEqual(sock.pushed, [b"a", b"b"], what)
            if sock._ready is not None:
                self.assertEqual(sock._ready.socket.sent, [], what)

    def test_a_socket_that_left_gets_nothing(self) -> None:
        """A socket no longer a member (it left while the loop ran) is skipped."""
        gone, stays = _Sock(None), _Sock(None)
        _send([gone, stays], [b"a"], members=[stays])
        self.assertEqual((gone.pushed, stays.pushed), ([], [b"a"]))

    def test_one_failing_socket_does_not_stop_the_others(self) -> None:
        """A socket whose ``_push`` raises is logged; the next ones still get the frame."""
        bad, after = _Sock(None, fail=True), _Sock(_StubTransport(_StubSocket()))
        self.assertEqual(_send([bad, after], [b"a"]), 1)
        assert after._ready is not None
        self.assertEqual(after._ready.socket.sent, [b"a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SendAllTests(unittest.TestCase):
    """``send_all``: one ``send`` per socket, called from C; an error stands as -1 and the rest go on."""

    def test_errors_and_partial_sends(self) -> None:
        socks = [
            _StubSocket(),
            _StubSocket(error=BlockingIOError()),
            _StubSocket(takes=2),
            _StubSocket(error=ConnectionResetError()),
            _StubSocket(),
        ]
        self.assertEqual(send_all(socks, b"abcd"), [4, -1, 2, -1, 4])
        self.assertEqual([s.sent for s in socks], [[b"abcd"], [], [b"ab"], [], [b"abcd"]])
        self.assertEqual(send_all([], b"abcd"), [])


class _Factory:
    def __init__(self) -> None:
        self.hub = InProcessHub()
        self.stats = WsStats()

    def event_frame(self, kind: str, channel: str, event: Mapping[str, Any]) -> _Frame:
        return _Frame(json.dumps([channel, event]).encode())


class GroupTests(unittest.TestCase):
    """One hub subscription per (channel, client name), whatever the number of sockets."""

    def test_sockets_share_one_hub_subscription(self) -> None:
        """Two sockets on ``system``: one subscriber in the hub; it goes with the last socket."""
        factory = _Factory()
        fanout = Fanout(factory)
        a, b = _Sock(None), _Sock(None)
        sub_a = fanout.subscribe(SYSTEM_CHANNEL, "system", a)
        sub_b = fanout.subscribe(SYSTEM_CHANNEL, "system", b)
        self.assertEqual(len(factory.hub._registry._channels[SYSTEM_CHANNEL]), 1)
        self.assertEqual(fanout.groups, 1)
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 1})
        sub_a.cancel()
        sub_a.cancel()  # idempotent
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 2})
        self.assertEqual(len(a.pushed), 1)
        self.assertEqual(len(b.pushed), 2)
        self.assertEqual(factory.hub.channels, [SYSTEM_CHANNEL])
        sub_b.cancel()
        self.assertEqual(factory.hub.channels, [])
        self.assertEqual(fanout.groups, 0)

    def test_batches_reach_each_socket_in_order(self) -> None:
        """Several events at once (``many``): each socket gets them all, in order."""
        factory = _Factory()
        fanout = Fanout(factory)
        a = _Sock(None)
        fanout.subscribe(SYSTEM_CHANNEL, "system", a)
        factory.hub._registry.deliver_many(SYSTEM_CHANNEL, [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual([json.loads(p)[1]["n"] for p in a.pushed], [1, 2, 3])
        self.assertEqual(factory.hub.stats.delivered, 3)

    def test_clean_members_then_checked_again(self) -> None:
        """A member whose event went straight in whole is written by ``send_all`` next; one that
        took part of it, or that is demoted, goes through the checked path again."""
        factory = _Factory()
        fanout = Fanout(factory)
        whole, partial = _Sock(_StubTransport(_StubSocket())), _Sock(_StubTransport(_StubSocket()))
        for sock in (whole, partial):
            fanout.subscribe(SYSTEM_CHANNEL, "system", sock)
        [group] = fanout._groups.values()
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 1})  # checked, both whole: both clean
        self.assertEqual(list(group._clean), [whole, partial])
        assert partial._ready is not None and whole._ready is not None
        partial._ready.socket.takes = 3
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 2})  # send_all: partial takes 3 bytes
        frame2 = json.dumps(["system", {"n": 2}]).encode()
        self.assertEqual(partial._ready.socket.sent[-1], frame2[:3])
        self.assertEqual(partial._ready.written, [frame2[3:]])
        self.assertEqual((list(group._clean), list(group._checked)), ([whole], [partial]))
        partial._ready.dataBuffer = frame2[3:]  # what a real transport now holds
        fanout.demote(whole)
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 3})
        self.assertEqual(partial.pushed, [json.dumps(["system", {"n": 3}]).encode()])
        self.assertEqual(len(whole._ready.socket.sent), 3)
        self.assertEqual(list(group._clean), [whole])  # checked and whole again
        self.assertEqual(factory.stats.events_sent, 2 + 2 + 1)

    def test_a_member_that_left_is_in_neither_pass(self) -> None:
        """Leaving takes a clean member out of ``send_all``'s list."""
        factory = _Factory()
        fanout = Fanout(factory)
        stays, goes = _Sock(_StubTransport(_StubSocket())), _Sock(_StubTransport(_StubSocket()))
        fanout.subscribe(SYSTEM_CHANNEL, "system", stays)
        subscription = fanout.subscribe(SYSTEM_CHANNEL, "system", goes)
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 1})
        subscription.cancel()
        fanout.demote(goes)  # a late hook of the socket that left: nothing to do
        factory.hub.publish(SYSTEM_CHANNEL, {"n": 2})
        assert stays._ready is not None and goes._ready is not None
        self.assertEqual((len(stays._ready.socket.sent), len(goes._ready.socket.sent)), (2, 1))
        self.assertEqual(fanout._memberships, {stays: [fanout._groups[(SYSTEM_CHANNEL, "system")]]})


class DemotionOverTcpTests(test_ws_direct.OverTcp):
    """The real protocol demotes itself: what it writes otherwise, and a pause, come before the next event."""

    def _group(self) -> Any:
        return self.factory.fanout._groups[(SYSTEM_CHANNEL, "system")]

    async def test_a_reply_comes_before_the_next_event(self) -> None:
        """A clean socket writes a reply (Autobahn's ``sendData``, into the transport's buffer): the
        event published in the same turn waits behind it instead of going straight into the socket."""
        [reader] = await deferToThread(self.open_subscribed, 1)
        [protocol] = self.factory.sockets
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 0})
        self.assertEqual(list(self._group()._clean), [protocol])
        protocol._reply("pong", {}, "p1")
        self.assertEqual(list(self._group()._checked), [protocol])
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 1})
        got = await deferToThread(lambda: [reader.message() for _ in range(3)])
        self.assertEqual(got[0]["data"]["event"], {"seq": 0})
        self.assertEqual((got[1]["type"], got[1]["id"]), ("pong", "p1"))
        self.assertEqual(got[2]["data"]["event"], {"seq": 1})
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 2})  # the buffer is written out: checked, whole, clean
        self.assertEqual((await deferToThread(reader.message))["data"]["event"], {"seq": 2})
        self.assertEqual(list(self._group()._clean), [protocol])

    async def test_a_paused_socket_queues(self) -> None:
        """Paused by its transport: demoted, the event queued; resumed: it goes out, then clean again."""
        [reader] = await deferToThread(self.open_subscribed, 1)
        [protocol] = self.factory.sockets
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 0})
        protocol.pauseProducing()
        self.assertEqual(list(self._group()._checked), [protocol])
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 1})
        self.assertEqual(len(protocol._queue), 1)
        protocol.resumeProducing()
        got = await deferToThread(lambda: [reader.message()["data"]["event"]["seq"] for _ in range(2)])
        self.assertEqual(got, [0, 1])
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 2})
        self.assertEqual(list(self._group()._clean), [protocol])
        self.assertEqual((await deferToThread(reader.message))["data"]["event"], {"seq": 2})

    async def test_a_dropped_connection_gets_nothing_straight(self) -> None:
        """``dropConnection`` (Autobahn closing the TCP connection under the socket) demotes it:
        an event in the same turn goes through the checks, which see the transport closing."""
        [reader] = await deferToThread(self.open_subscribed, 1)
        [protocol] = self.factory.sockets
        self.hub.publish(SYSTEM_CHANNEL, {"seq": 0})
        self.assertEqual(list(self._group()._clean), [protocol])
        transport = protocol.transport
        protocol.dropConnection(abort=False)
        self.assertEqual(list(self._group()._checked), [protocol])
        calls: list[bytes] = []
        transport.socket = _Recording(transport.socket, calls)
        try:
            self.hub.publish(SYSTEM_CHANNEL, {"seq": 1})
        finally:
            transport.socket = transport.socket.wrapped
        self.assertEqual(calls, [], "nothing went straight into a closing connection")
        got = await deferToThread(reader.message)
        self.assertEqual(got["data"]["event"], {"seq": 0})


class _Recording:
    """A socket whose ``send`` calls are recorded (then made)."""

    def __init__(self, wrapped: Any, calls: list[bytes]) -> None:
        self.wrapped = wrapped
        self._calls = calls

    def send(self, data: bytes, *flags: int) -> int:
        self._calls.append(data)
        result: int = self.wrapped.send(data, *flags)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class SameBytesOverTcpTests(test_ws_direct.OverTcp):
    """The loop's sockets and the per-socket path of before read the same bytes."""

    limits = WsLimits(ping_interval_s=0)

    async def test_single_events_and_a_batch(self) -> None:
        """20 sockets, 10 of them on the old path: byte-identical frames, single events and a batch."""
        readers = await deferToThread(self.open_subscribed, 20)
        old_path = sorted(self.factory.sockets, key=id)[:10]
        for protocol in old_path:
            protocol._direct = protocol._ready = None  # as a non-TCP transport: _push for every frame
        events = [{"type": "alert", "seq": n, "pad": "é" * (n * 300)} for n in range(12)]
        for event in events[:6]:
            self.hub.publish(SYSTEM_CHANNEL, event)
        self.hub._registry.deliver_many(SYSTEM_CHANNEL, events[6:])

        def read_all() -> list[list[tuple[int, bytes]]]:
            return [[r.frame() for _ in events] for r in readers]

        frames = await deferToThread(read_all)
        for got in frames:
            self.assertEqual(got, frames[0])
        messages = [json.loads(payload) for _, payload in frames[0]]
        self.assertEqual([m["data"] for m in messages], [{"channel": "system", "event": e} for e in events])
        self.assertEqual(len({m["id"] for m in messages}), len(events))
        self.assertEqual(self.factory.stats.events_sent, 20 * len(events))
