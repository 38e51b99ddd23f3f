"""atheris harness: arbitrary text frames on an authenticated ``/ws`` socket (see README.md here).

    .venv/bin/python bench/fuzz/ws_fuzz.py -max_total_time=60

The socket is on the real site through iosim, rate limits lifted, with the
real session tracker's playback-report parser behind it (its store only
counts).  Any failure logged, ``INTERNAL`` error frame or closed socket is a
crash.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["streamsrv"]):
    from streamsrv.analytics.sessions import SessionTracker
    from streamsrv.ws.limits import WsLimits

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.test_ws import Harness


class _CountingStore:
    """Counts what the tracker records; keeps nothing (memory stays flat over millions of runs)."""

    records = 0

    def record_session(self, session: Any) -> None:
        self.records += 1

    def record_event(self, event: Any) -> None:
        self.records += 1


class _Case(unittest.SynchronousTestCase):
    def runTest(self) -> None:
        """Not run: the harness only borrows cleanups."""


failures: list[Any] = []
globalLogPublisher.addObserver(lambda e: failures.append(e) if "log_failure" in e else None)
tracker = SessionTracker(_CountingStore(), MemoryReactorClock())  # type: ignore[arg-type]


def on_playback(who: Any, kind: str, data: Any) -> str | None:
    outcome = tracker.on_playback_report(who.sub, {"type": f"playback.{kind}", **data})
    return None if outcome.ok else outcome.message or "refused"


harness = Harness(
    _Case(), limits=WsLimits(messages_per_s=1e12, message_burst=10**12), on_playback=on_playback
)
state: dict[str, Any] = {}


def connect() -> None:
    state["client"], state["pump"] = harness.authed()


def one_input(data: bytes) -> None:
    """Send *data* (decoded as UTF-8, replacing what is not) as one text frame."""
    client, pump = state["client"], state["pump"]
    before = len(client.messages)
    client.sendMessage(data.decode("utf-8", "replace").encode("utf-8"))
    pump.flush()
    assert not failures, failures[0]["log_failure"].getTraceback()
    assert not client.closed, (data, client.close_code)
    for message in client.messages[before:]:
        assert isinstance(message.get("type"), str), message
        assert message.get("data", {}).get("code") != "INTERNAL", (data, message)
    del client.messages[:]


def main() -> None:
    connect()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
