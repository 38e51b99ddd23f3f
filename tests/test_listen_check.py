# -*- test-case-name: tests.test_listen_check -*-
"""A port that cannot be bound ends start-up with one line and status 1, never a traceback.

:func:`streamsrv.startup.listen_or_exit` checks before anything slow happens;
:class:`streamsrv.service.RootService` says the same if the port was taken in
between (the real bind).  ``tests.test_daemon`` runs the real process.
"""

from __future__ import annotations

import errno
import io
import socket
from contextlib import redirect_stderr

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.trial import unittest

from streamsrv.service import RootService, cannot_listen
from streamsrv.startup import _tcp_target, listen_or_exit


class _Taken(Service):
    def privilegedStartService(self) -> None:
        raise CannotListenError("127.0.0.1", 8123, OSError(errno.EADDRINUSE, "Address already in use"))


class ListenCheckTests(unittest.SynchronousTestCase):
    """The check and its line."""

    def held(self) -> int:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        return int(holder.getsockname()[1])

    def test_taken_port_exits_with_one_line(self) -> None:
        """A port another socket listens on: SystemExit(1) and one line naming address and port."""
        port = self.held()
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as raised:
            listen_or_exit(["unix:/nonexistent/sock", f"tcp:{port}:interface=127.0.0.1"])
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(
            err.getvalue(),
            f"streamsrv: cannot listen on 127.0.0.1:{port}: address already in use "
            "(another process listens there; choose another --listen port)\n",
        )

    def test_free_port_passes_and_stays_free(self) -> None:
        """A free port passes the check and is not kept (the real bind follows)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        listen_or_exit([f"tcp:{port}:interface=127.0.0.1", "tcp:0"])
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))

    def test_targets(self) -> None:
        """What each endpoint string binds; others (unix, systemd, malformed) are left to Twisted."""
        self.assertEqual(_tcp_target("tcp:8080"), (socket.AF_INET, "", 8080))
        self.assertEqual(_tcp_target("tcp:port=8081:interface=10.0.0.1"), (socket.AF_INET, "10.0.0.1", 8081))
        self.assertEqual(_tcp_target(r"tcp6:8082:interface=\:\:1"), (socket.AF_INET6, "::1", 8082))
        self.assertEqual(_tcp_target("tcp6:8083"), (socket.AF_INET6, "::", 8083))
        self.assertEqual(_tcp_target("ssl:8443:privateKey=k.pem"), (socket.AF_INET, "", 8443))
        for other in ("unix:/run/s.sock", "systemd:domain=INET:index=0", "tcp:http", "tcp", "tcp:0"):
            self.assertIsNone(_tcp_target(other), other)

    def test_lines(self) -> None:
        """The reasons operators meet, in plain words; an IPv6 address in brackets."""
        denied = cannot_listen("", 80, OSError(errno.EACCES, "Permission denied"))
        self.assertEqual(
            denied,
            "streamsrv: cannot listen on 0.0.0.0:80: permission denied "
            "(a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
        )
        self.assertIn(
            "[::1]:81: no such local address", cannot_listen("::1", 81, OSError(errno.EADDRNOTAVAIL, "x"))
        )
        self.assertEqual(cannot_listen("h", 1, None), "streamsrv: cannot listen on h:1: it cannot be bound")

    def test_root_service_turns_a_late_failure_into_the_line(self) -> None:
        """A port taken between the check and the real bind: the same line, SystemExit(1)."""
        root = RootService()
        _Taken().setServiceParent(root)
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as raised:
            root.privilegedStartService()
        self.assertEqual(raised.exception.code, 1)
        self.assertIn("cannot listen on 127.0.0.1:8123: address already in use", err.getvalue())
        self.assertEqual(len(err.getvalue().splitlines()), 1)
