# -*- test-case-name: tests.test_notify_sms,tests.test_notify_push -*-
"""One HTTP POST for the HTTP channels (SMS gateway, Web Push), with treq and a deadline.

:class:`HttpSender` holds a treq client (with its own persistent connection pool on the given
reactor unless one is passed in); :meth:`~HttpSender.post` sends one request, reads at most a
bounded answer, and turns
every transport failure into a :class:`~.base.RetryableError` (``timeout`` or
``network_error``).  It must never follow a redirect, use the global reactor, or put a URL's
credentials, a request header or a request body into an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers

from streamsrv.notifications.channels.base import ChannelError, RetryableError

__all__ = ["HttpAnswer", "HttpChannel", "HttpSender"]

#: Seconds to open a connection (within the whole request's deadline).
CONNECT_TIMEOUT_S = 10.0
#: Idle persistent connections kept per host.
MAX_PERSISTENT_PER_HOST = 4
#: The most of an answer's body read; the rest is dropped (gateways answer small JSON).
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpAnswer:
    """
    A server's answer: status, headers and (at most :data:`MAX_ANSWER_BYTES` of) body.
    """

    status: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> str | None:
        """
        The first value of header *name*, decoded, or ``None``.
        """
        values = self.headers.getRawHeaders(name)
        return values[0].decode("latin-1") if values else None


async def _exchange(client: Any, url: str, headers: Headers, body: bytes) -> HttpAnswer:
    import treq

    response = await client.post(url, data=body, headers=headers, allow_redirects=False)
    chunks: list[bytes] = []
    received = 0

    def collect(data: bytes) -> None:
        nonlocal received
        if received < MAX_ANSWER_BYTES:
            chunks.append(data[: MAX_ANSWER_BYTES - received])
        received += len(data)

    await treq.collect(response, collect)
    return HttpAnswer(response.code, response.headers, b"".join(chunks))


class HttpSender:
    """
    One HTTP channel's client: POSTs with a deadline through treq, and the pool it owns.
    """

    def __init__(
        self,
        reactor: Any,
        channel: str,
        *,
        timeout_s: float,
        http_client: Any = None,
        trust_root: Any = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        """
        :param reactor: Provides ``IReactorTime`` (and ``IReactorTCP`` unless *http_client*).
        :param channel: The channel's name, for errors.
        :param timeout_s: The deadline of one exchange, connection and answer included.
        :param http_client: A treq ``HTTPClient`` or ``treq.testing.StubTreq``; if ``None``, one
            with its own persistent pool on *reactor* (closed by :meth:`close`), verifying TLS
            against *trust_root* (the system's roots if ``None``).
        """
        self.reactor = reactor
        self._channel = channel
        self._timeout_s = timeout_s
        self._pool: HTTPConnectionPool | None = None
        if http_client is None:
            from treq.client import HTTPClient

            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
            agent = Agent(reactor, contextFactory=policy, connectTimeout=connect_timeout_s, pool=self._pool)
            http_client = HTTPClient(agent)
        self._client = http_client

    def post(self, url: str, headers: Headers, body: bytes) -> Deferred[HttpAnswer]:
        """
        POST *body* to *url* and read the answer, all within the deadline.

        :return: Fires with the :class:`HttpAnswer` whatever its status; fails with a
            :class:`~.base.RetryableError` (``timeout``, ``network_error``) if no answer came.
        """
        channel, timeout_s = self._channel, self._timeout_s
        d = Deferred.fromCoroutine(_exchange(self._client, url, headers, body))

        def timed_out(result: object, timeout: float) -> Failure:
            # Whatever the cancelled request failed with, it failed because time ran out.
            return Failure(RetryableError(channel, "timeout", f"no answer within {timeout_s:g} s"))

        d.addTimeout(timeout_s, self.reactor, onTimeoutCancel=timed_out)

        def no_answer(failure: Failure) -> Failure:
            if failure.check(ChannelError):
                return failure
            raise RetryableError(channel, "network_error", f"the request failed ({failure.type.__name__})")

        return d.addErrback(no_answer)

    def close(self) -> Deferred[None]:
        """
        Close the idle persistent connections of the pool this sender made (if it made one).
        """
        return succeed(None) if self._pool is None else self._pool.closeCachedConnections()


class HttpChannel:
    """What the channels that speak HTTP share: their :class:`HttpSender`, and closing it."""

    _http: HttpSender

    def close(self) -> Deferred[None]:
        """Close the idle connections of the pool this channel made (if it made one)."""
        return self._http.close()
