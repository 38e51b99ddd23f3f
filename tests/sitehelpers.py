"""Build a streamsrv site in memory for tests, and talk to it with StubTreq.

The site is built with the factories ``streamsrv.tap`` uses
(:mod:`streamsrv.health.factory`, :mod:`streamsrv.web.factory`) from
settings made like the daemon's, so a test exercises the daemon's wiring;
only the parts a test chooses (media root, clock, guard, options) differ.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock

from streamsrv.audio.catalog import Catalog
from streamsrv.audio.synchronous import ImmediateReactor, SynchronousThreadPool
from streamsrv.auth.jwt import JwtVerifier, TokenIssuer
from streamsrv.auth.principal import anonymous_principal
from streamsrv.auth.roles import DEFAULT_ROLES
from streamsrv.config import Settings, load_settings
from streamsrv.health.checks import HealthChecks, ReactorLagMonitor
from streamsrv.health.factory import make_health
from streamsrv.health.metrics import Metrics
from streamsrv.middleware.guard import Guard
from streamsrv.middleware.ratelimit import DEFAULT_POLICIES
from streamsrv.streaming.tracker import StreamTracker
from streamsrv.web.api import ApiApp
from streamsrv.web.factory import make_api, make_site, make_stream
from streamsrv.web.site import StreamsrvSite


@dataclasses.dataclass
class BuiltSite:
    """A site and the parts a test may want to poke."""

    site: StreamsrvSite
    metrics: Metrics
    tracker: StreamTracker
    api: ApiApp
    checks: HealthChecks
    clock: Any
    guard: Guard
    lag: ReactorLagMonitor


def site_settings(
    *,
    development: bool = True,
    metrics_token: str | None = None,
    max_ranges: int = 16,
    use_sendfile: bool = False,
    demo_ui: bool | None = None,
) -> Settings:
    """The daemon's default settings with a test's choices.

    ``development=False`` is the staging profile: ``/health/detailed`` is
    closed, the demo player is off (unless *demo_ui* says otherwise), and
    (unlike production) nothing is refused for want of secrets.
    """
    return dataclasses.replace(
        load_settings(cli={}, environ={}),
        env="development" if development else "staging",
        metrics_token=metrics_token,
        max_ranges=max_ranges,
        sendfile=use_sendfile,
        demo_ui=development if demo_ui is None else demo_ui,
    )


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
    data_dir: Path | None = None,
    demo_ui: bool | None = None,
    index_missing: Any = None,
) -> BuiltSite:
    """Assemble a site serving *media_root* on *clock* (a MemoryReactorClock by default).

    :param data_dir: where the disk-space check looks (the media root by default).
    """
    clock = clock if clock is not None else MemoryReactorClock()
    settings = site_settings(
        development=development,
        metrics_token=metrics_token,
        max_ranges=max_ranges,
        use_sendfile=use_sendfile,
        demo_ui=demo_ui,
    )
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
    health = make_health(clock, MultiService(), media_root, data_dir or media_root, tracker)
    api = make_api(
        settings, metrics=metrics, checks=health.checks, clock=clock, guard=guard, tokens=tokens, media=media
    )
    api.ready = True
    stream = make_stream(
        settings,
        media_root,
        guard=guard,
        tracker=tracker,
        metrics=metrics,
        clock=clock,
        durations=durations,
        transcodes=transcodes(tracker, metrics) if transcodes is not None else None,
        is_audio=is_audio,
        index_missing=index_missing,
        replaygain_of=replaygain_of,
    )
    site = make_site(settings, api, {b"stream": stream}, metrics=metrics, clock=clock)
    return BuiltSite(site, metrics, tracker, api, health.checks, clock, guard, health.lag)


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


def jwt_guard(secret: str, clock: Any) -> tuple[TokenIssuer, Guard]:
    """An HS256 issuer and a guard that admits only its tokens (no anonymous, no limits)."""
    issuer = TokenIssuer(secret=secret, private_key_pem=None, issuer=None, audience=None, clock=clock)
    verifier = JwtVerifier(
        secret=secret, public_key_pem=None, jwks=None, issuer=None, audience=None,
        leeway_s=30, clock=clock, roles=DEFAULT_ROLES,
    )  # fmt: skip
    guard = Guard(
        verifier=verifier, url_keys=(), url_max_ttl_s=60, revocations=None, limiter=None,
        policies=DEFAULT_POLICIES, anonymous=None, clock=clock,
    )  # fmt: skip
    return issuer, guard


def scanned_catalog(testcase: Any, root: Path) -> Catalog:
    """A catalog of *root* scanned in the calling thread (no reactor, no pool), closed at cleanup."""
    from tests.test_catalog import result

    catalog = Catalog(
        Path(testcase.mktemp() + ".sqlite3"),
        root,
        reactor=ImmediateReactor(),
        threadpool=SynchronousThreadPool(),
    )
    result(catalog.open())
    testcase.addCleanup(lambda: result(catalog.close()))
    result(catalog.scan())
    return catalog


def serve_websocket(testcase: Any, factory: Any) -> str:
    """Serve *factory* at ``/ws`` on a free loopback port until cleanup; its ``ws://`` URL.

    Cleanup closes every socket, stops listening and waits until the
    factory has let all its sockets go.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from twisted.web.resource import Resource

    from streamsrv.ws.resource import EventSocketResource

    root = Resource()
    root.putChild(b"ws", EventSocketResource(factory))
    site = StreamsrvSite(root, metrics=Metrics(process=False), clock=reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")

    async def stop() -> None:
        factory.close_all()
        await port.stopListening()
        while factory.sockets:
            await deferLater(reactor, 0.01, lambda: None)

    testcase.addCleanup(stop)
    return f"ws://127.0.0.1:{port.getHost().port}/ws"
