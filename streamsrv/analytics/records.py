# -*- test-case-name: tests.test_analytics_store -*-
"""The values the analytics store keeps: sessions, events and replayed events.

Plain frozen dataclasses, validated when made, and :func:`truncate_ip`, the
only way an address becomes something storable.  :mod:`streamsrv.analytics.store`
re-exports them (callers import them from there).  This module must never
let a full IP address into a record (a :class:`SessionRecord` refuses
anything narrower than a /24 IPv4 or /48 IPv6 network), and never touch a
database or a file.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import astuple, dataclass, fields
from typing import Any, Final

from streamsrv.events.hub import PLAYBACK_TYPES

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_TYPES",
    "IPV4_PREFIX",
    "IPV6_PREFIX",
    "SESSION_COLUMNS",
    "SOURCES",
    "AnalyticsEvent",
    "SessionRecord",
    "SpilledEvent",
    "truncate_ip",
]

#: What a session was derived from.
SOURCES: Final = frozenset({"stream", "hls", "client"})

#: Event types: the client's playback reports and the ones derived from them.
EVENT_TYPES: Final = PLAYBACK_TYPES | {"bitrate.switch"}

#: The widest networks an address is kept as.
IPV4_PREFIX: Final = 24
IPV6_PREFIX: Final = 48


@functools.lru_cache(maxsize=4096)  # pure; every range of a session asks for the same address
def truncate_ip(address: str | None) -> str | None:
    """
    The network an address is stored as: its /24 (IPv4) or /48 (IPv6).

    An IPv4-mapped IPv6 address counts as IPv4.

    :param address: A textual IP address (a zone ``%eth0`` is ignored).
    :return: E.g. ``"203.0.113.0/24"``, or ``None`` for no or an invalid address.
    """
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@functools.lru_cache(maxsize=4096)
def _check_network(value: str) -> None:
    network = ipaddress.ip_network(value, strict=True)
    widest = IPV4_PREFIX if network.version == 4 else IPV6_PREFIX
    if network.prefixlen > widest:
        raise ValueError(f"ip_network must be at most a /{widest}, not a /{network.prefixlen}")


@dataclass(frozen=True)
class SessionRecord:
    """
    The state of one listening session; recording it again replaces it (by ``id``).

    :ivar id: The session's id, chosen by the server.
    :ivar user_sub: Who listened (the principal's ``sub``).
    :ivar track_path: The track, relative to the media root.
    :ivar source: ``stream``, ``hls`` or ``client`` (known from reports only).
    :ivar started_at: Unix seconds.
    :ivar last_activity_at: Unix seconds of the last request or report.
    :ivar ended_at: Unix seconds, ``None`` while open.
    :ivar bytes_sent: Bytes of audio delivered.
    :ivar seconds_listened: Seconds listened (reported) or delivered (estimated).
    :ivar max_position_s: Furthest position reached, in seconds.
    :ivar duration_s: The track's duration, if known.
    :ivar completed: Whether it was listened to the end.
    :ivar client_info: The User-Agent, shortened.
    :ivar ip_network: The client's network (see :func:`truncate_ip`), never an address.
    :ivar client_session_id: The ``session_id`` the client's reports use.
    """

    id: str
    user_sub: str
    track_path: str
    source: str
    started_at: float
    last_activity_at: float
    ended_at: float | None = None
    bytes_sent: int = 0
    seconds_listened: float = 0.0
    max_position_s: float = 0.0
    duration_s: float | None = None
    completed: bool = False
    client_info: str | None = None
    ip_network: str | None = None
    client_session_id: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, got {self.source!r}")
        if self.ip_network is not None:
            _check_network(self.ip_network)

    def row(self) -> tuple[Any, ...]:
        """The values in :data:`SESSION_COLUMNS` order."""
        values = list(astuple(self))
        values[SESSION_COLUMNS.index("completed")] = int(self.completed)
        return tuple(values)


@dataclass(frozen=True)
class AnalyticsEvent:
    """
    One playback event of a session.

    :ivar event_type: One of :data:`EVENT_TYPES`.
    :ivar ts: Unix seconds (the server's clock when it was received).
    :ivar position_s: The playback position, seconds.
    :ivar startup_ms: Time from the play request to the first sound (``playback.play``).
    :ivar stall_ms: How long playback stalled (``playback.buffering``).
    :ivar bitrate_kbps: The bitrate playing, kb/s.
    :ivar from_bitrate_kbps: ``bitrate.switch``: the previous bitrate.
    :ivar to_bitrate_kbps: ``bitrate.switch``: the new bitrate.
    """

    session_id: str
    user_sub: str
    track_path: str
    event_type: str
    ts: float
    position_s: float | None = None
    startup_ms: float | None = None
    stall_ms: float | None = None
    bitrate_kbps: float | None = None
    from_bitrate_kbps: float | None = None
    to_bitrate_kbps: float | None = None

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {sorted(EVENT_TYPES)}, got {self.event_type!r}")

    def row(self) -> tuple[Any, ...]:
        """The values in :data:`EVENT_COLUMNS` order."""
        return astuple(self)


@dataclass(frozen=True)
class SpilledEvent(AnalyticsEvent):
    """
    An event replayed from a spill file (:mod:`streamsrv.analytics.spill`).

    :ivar spill_key: Unique to the event (``<file stem>:<n>``, kept by a
        re-spill); the ``events`` table holds it unique, so an event replayed
        twice is written once.
    """

    spill_key: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.spill_key:
            raise ValueError("a spilled event needs its spill_key")


SESSION_COLUMNS: Final = tuple(f.name for f in fields(SessionRecord))
EVENT_COLUMNS: Final = tuple(f.name for f in fields(AnalyticsEvent))
