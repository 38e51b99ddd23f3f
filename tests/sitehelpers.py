"""Build a streamsrv site in memory for tests, and talk to it with StubTreq.

The pieces are assembled the way ``streamsrv.tap`` assembles them, minus
configuration loading, so a test can choose the media root, the clock and
the options it pins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock

from streamsrv.auth.principal import anonymous_principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.health.checks import HealthChecks, media_root_check
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from streamsrv.streaming.resource import StreamResource
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.web.api import ApiApp
from streamsrv.web.root import RootResource
from streamsrv.web.site import StreamsrvSite


@dataclass
class BuiltSite:
    """A site and the parts a test may want to poke."""

    site: StreamsrvSite
    metrics: Metrics
    tracker: StreamTracker
    api: ApiApp
    checks: HealthChecks
    clock: Any
    guard: Guard


def build_site(
    media_root: Path,
    *,
    clock: Any = None,
    max_ranges: int = 16,
    use_sendfile: bool = False,
    development: bool = True,
    metrics_token: str | None = None,
    grace_s: float = 10.0,
    guard: Guard | None = None,
    tokens: Any = None,
    media: Any = None,
    transcodes: Any = None,
    is_audio: Any = None,
    replaygain_of: Any = None,
    durations: Any = None,
) -> BuiltSite:
    """Assemble a site serving *media_root* on *clock* (a MemoryReactorClock by default)."""
    clock = clock if clock is not None else MemoryReactorClock()
    if guard is None:
        guard = Guard(
            verifier=None,
            url_keys=(),
            url_max_ttl_s=604800,
            revocations=None,
            limiter=None,
            policies=DEFAULT_POLICIES,
            anonymous=anonymous_principal(DEFAULT_ROLES),
            clock=clock,
        )
    metrics = Metrics(process=False)
    tracker = StreamTracker(clock, grace_s, metrics)
    tracker.startService()
    checks = HealthChecks(clock)
    checks.register("media_root", media_root_check(media_root))
    api = ApiApp(
        metrics=metrics,
        checks=checks,
        clock=clock,
        detailed_open=development,
        metrics_token=metrics_token,
        guard=guard,
        tokens=tokens,
        media=media,
    )
    api.ready = True
    stream = StreamResource(
        media_root,
        guard=guard,
        tracker=tracker,
        metrics=metrics,
        clock=clock,
        durations=durations,
        max_ranges=max_ranges,
        use_sendfile=use_sendfile,
        transcodes=transcodes(tracker, metrics) if transcodes is not None else None,
        is_audio=is_audio,
        replaygain_of=replaygain_of,
    )
    site = StreamsrvSite(RootResource(api.app.resource(), {b"stream": stream}), metrics=metrics, clock=clock)
    return BuiltSite(site, metrics, tracker, api, checks, clock, guard)


def stub_for(built: BuiltSite) -> StubTreq:
    """A StubTreq whose in-memory agent talks to *built*'s real Site."""
    stub = StubTreq(built.site.resource)
    stub._agent._serverFactory = built.site
    return stub


def raw_exchange(built: BuiltSite, raw: bytes, rounds: int = 10_000) -> bytes:
    """Feed *raw* request bytes to a real protocol; return every byte answered.

    Unlike an HTTP client, this shows the response exactly as sent:
    ``Content-Length``, ``Content-Encoding`` and the framing included.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
    proto = built.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    proto.makeConnection(transport)
    proto.dataReceived(raw)
    out = b""
    for _ in range(rounds):
        out += transport.value()
        transport.clear()
        if built.tracker.open_count == 0:
            break
        if transport.producer is not None:
            transport.producer.resumeProducing()
    return out + transport.value()


def parse_head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split one raw HTTP/1.1 response into status, headers (lower-case) and the rest."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest
