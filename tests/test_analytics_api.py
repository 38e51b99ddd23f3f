"""``GET /api/v1/analytics/…`` through the real site, over a real SQLite analytics store.

Who sees what: admins everything, artists their own tracks (by the catalog's
artist) without user ids, listeners nothing but their own listening; bad
parameters are 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest

from streamsrv.analytics.api import AnalyticsApi
from streamsrv.analytics.backends import SqliteAnalyticsStore
from streamsrv.analytics.store import SessionRecord
from streamsrv.web.analytics import AnalyticsRoutes
from tests.sitehelpers import build_site, jwt_guard, stub_for

SECRET = "an-analytics-test-secret-long-enough-0123456789"
NOW = 1_767_225_600.0


class _Page:
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.next_cursor = None


class _Record:
    def __init__(self, path: str) -> None:
        self.path = path


class _Catalog:
    """The catalog's search, as the analytics scope uses it: the artist "Band" owns a.mp3."""

    async def search(self, *, artist: str, limit: int, cursor: Any) -> _Page:
        return _Page([_Record("a.mp3")] if artist == "Band" else [])


async def settle(stub: Any, d: Deferred[Any]) -> Any:
    done: list[Any] = []
    d.addBoth(lambda result: done.append(result) or result)
    for _ in range(2000):
        stub.flush()
        if done:
            break
        await deferLater(reactor, 0.005, lambda: None)
    return await d


class AnalyticsApiTests(unittest.TestCase):
    """The analytics routes."""

    async def build(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = SqliteAnalyticsStore(
            Path(self.mktemp()) / "analytics.sqlite3", self.clock, reactor=reactor
        )
        self.store.startService()
        self.addCleanup(self.store.stopService)
        for n, (user, path, listened, completed) in enumerate(
            [("alice", "a.mp3", 180.0, True), ("bob", "a.mp3", 30.0, False), ("alice", "b.mp3", 200.0, True)]
        ):
            self.store.record_session(
                SessionRecord(
                    id=f"s{n}",
                    user_sub=user,
                    track_path=path,
                    source="stream",
                    started_at=NOW - 3600 + n,
                    last_activity_at=NOW - 3000,
                    ended_at=NOW - 3000,
                    seconds_listened=listened,
                    completed=completed,
                    duration_s=200.0,
                )
            )
        for _ in range(500):
            if self.store.check().status == "ok":
                break
            await deferLater(reactor, 0.01, lambda: None)
        await self.store.flush()
        self.issuer, guard = jwt_guard(SECRET, self.clock)
        built = build_site(Path(self.mktemp()), clock=self.clock, guard=guard)
        built.api._analytics = AnalyticsRoutes(AnalyticsApi(self.store, self.clock, _Catalog()), self.clock)
        self.stub = stub_for(built)

    def token(self, sub: str, role: str) -> str:
        return self.issuer.issue(sub=sub, roles=[role], ttl_s=600)

    async def get(self, target: str, token: str) -> tuple[int, Any]:
        d = self.stub.get("http://streamsrv.test" + target, headers={"Authorization": [f"Bearer {token}"]})
        response = await settle(self.stub, d)
        body = await settle(self.stub, response.content())
        return response.code, json.loads(body)

    async def test_admin_summary_and_top_tracks(self) -> None:
        """An admin sees every session."""
        await self.build()
        admin = self.token("ops", "admin")
        code, summary = await self.get("/api/v1/analytics/summary", admin)
        self.assertEqual(code, 200, summary)
        self.assertEqual((summary["listeners"], summary["sessions"]), (2, 3))
        self.assertAlmostEqual(summary["listening_time_s"], 410.0)
        code, top = await self.get("/api/v1/analytics/top-tracks?limit=1", admin)
        self.assertEqual([item["path"] for item in top["items"]], ["a.mp3"])

    async def test_artist_sees_own_tracks_only(self) -> None:
        """An artist's summary counts only their tracks; another track is 403; users are hidden."""
        await self.build()
        artist = self.token("Band", "artist")
        code, summary = await self.get("/api/v1/analytics/summary", artist)
        self.assertEqual((code, summary["sessions"], summary["listeners"]), (200, 2, 2))
        code, _ = await self.get("/api/v1/analytics/tracks/a.mp3?granularity=hour", artist)
        self.assertEqual(code, 200)
        code, body = await self.get("/api/v1/analytics/tracks/" + quote("b.mp3"), artist)
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))
        code, body = await self.get("/api/v1/analytics/users/alice", artist)
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))

    async def test_listener(self) -> None:
        """A listener may see their own listening and nothing else."""
        await self.build()
        alice = self.token("alice", "listener")
        code, body = await self.get("/api/v1/analytics/summary", alice)
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))
        code, own = await self.get("/api/v1/analytics/users/alice", alice)
        self.assertEqual(code, 200, own)
        code, body = await self.get("/api/v1/analytics/users/bob", alice)
        self.assertEqual((code, body["error"]["code"]), (403, "FORBIDDEN"))

    async def test_bad_parameters(self) -> None:
        """Malformed or inverted times, an unknown granularity, a limit out of range: 400."""
        await self.build()
        admin = self.token("ops", "admin")
        for query in (
            "from=yesterday",
            "from=2026-01-02&to=2026-01-01",
            "granularity=year",
            "limit=0",
            "limit=101",
        ):
            code, body = await self.get(f"/api/v1/analytics/top-tracks?{query}", admin)
            self.assertEqual((code, body["error"]["code"]), (400, "BAD_REQUEST"), query)
