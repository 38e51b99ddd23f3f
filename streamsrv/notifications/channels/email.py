# -*- test-case-name: tests.test_notify_email -*-
"""The email channel: multipart text + HTML messages over a small pool of SMTP sessions per process.

:func:`build_email` turns an :class:`~.base.EmailMessage` into RFC 5322 bytes with the standard
``email`` package (UTF-8 subjects and bodies, Date, Message-ID).  :class:`EmailChannel` submits
them with Twisted's own ESMTP client (:class:`twisted.mail.smtp.ESMTPClient`: STARTTLS or
implicit TLS, AUTH LOGIN/PLAIN/CRAM-MD5), keeping up to ``pool_size`` authenticated sessions
open and sending ``MAIL``/``RCPT``/``DATA`` per message on each (``RSET`` only after a refused
transaction: a completed one leaves the session ready for the next ``MAIL``, RFC 5321 section
4.1.4); a session is closed after an idle while and opened again on demand.  Every wait has a
timeout (connect, each reply, the whole send).  This module must never log or put into an error
the password, the AUTH exchange or a message body, and never use the global reactor.
"""

from __future__ import annotations

import email.policy
import functools
import re
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid
from io import BytesIO
from typing import Any

from OpenSSL import SSL
from twisted.internet import protocol
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.mail._cred import CramMD5ClientAuthenticator, LOGINAuthenticator
from twisted.python.failure import Failure
from zope.interface import implementer

from streamsrv.notifications.channels.base import (
    ChannelError,
    EmailMessage,
    IChannel,
    PermanentError,
    RetryableError,
    SendResult,
)
from streamsrv.notifications.channels.settings import SmtpSender, SmtpSettings, is_email_address

__all__ = ["EmailChannel", "build_email"]

log = Logger()

CHANNEL = "email"

#: Seconds to open the TCP connection (TLS and greeting are covered by the reply timeout).
CONNECT_TIMEOUT_S = 10.0
#: Seconds to wait for any one server reply.
REPLY_TIMEOUT_S = 30.0
#: Seconds one :meth:`EmailChannel.send` may take, waiting in the queue included.
SEND_TIMEOUT_S = 120.0
#: Seconds an idle pooled session stays open before the channel says QUIT.
IDLE_CLOSE_S = 30.0
#: SMTP sessions one channel keeps at most (``STREAMSRV_SMTP_POOL_SIZE``).
DEFAULT_POOL_SIZE = 4

#: Headers the channel writes itself; a message's extra headers may not set them.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "sender",
        "reply-to",
        "return-path",
    }
)
_HEADER_NAME = re.compile(r"[!-9;-~]+", re.ASCII)
#: A message reference usable as a Message-ID's left part (RFC 5322 dot-atom-text, kept simple).
_ID_LEFT = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)

#: UTF-8 bodies as quoted-printable or base64, so no 8BITMIME is needed from the server.
_POLICY = email.policy.default.clone(cte_type="7bit")
#: Longest server reply text kept in an error.
_DETAIL_LIMIT = 200


def build_email(message: EmailMessage, sender: SmtpSender, *, now: float) -> tuple[str, bytes]:
    """
    The RFC 5322 message for *message* from *sender*, and its Message-ID.

    Plain text alone, or ``multipart/alternative`` (text first, then HTML) when *html* is
    given; non-ASCII text is encoded (RFC 2047 headers, quoted-printable bodies).  Everything
    but ``To``, ``Date`` and ``Message-ID`` is the same for every recipient of one
    notification, so it is built once (:func:`_common_part`) and only those three lines are
    written per message.

    :param now: POSIX time for the ``Date`` header.
    :return: ``(message_id, bytes)`` with ``\\n`` line ends (the SMTP client converts).
    :raise PermanentError: ``bad_address`` or ``bad_header`` for a message no server could take.
    """
    if not is_email_address(message.to) or not message.to.isascii():
        # No SMTPUTF8: a non-ASCII mailbox could not be put in RCPT TO.
        raise PermanentError(CHANNEL, "bad_address", "the recipient is not a plain local@domain address")
    if message.ref is not None and _ID_LEFT.fullmatch(message.ref):
        message_id = f"<{message.ref}@{sender.domain}>"  # the same for every attempt: receivers dedupe
    else:
        message_id = make_msgid(domain=sender.domain)
    try:
        common = _common_part(sender.header, message.subject, message.text, message.html, message.headers)
    except ValueError:
        # The email package refuses CR/LF in a header value (header injection).
        raise PermanentError(CHANNEL, "bad_header", "a header value holds a line break") from None
    own = f"To: {message.to}\nDate: {formatdate(now, usegmt=True)}\nMessage-ID: {message_id}\n"
    return message_id, own.encode("ascii") + common


@functools.lru_cache(maxsize=64)
def _common_part(
    from_header: str, subject: str, text: str, html: str | None, headers: tuple[tuple[str, str], ...]
) -> bytes:
    """The headers and body every recipient of one rendered message shares."""
    mime = MimeMessage(policy=_POLICY)
    mime["From"] = from_header
    mime["Subject"] = subject
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise PermanentError(CHANNEL, "bad_header", f"the header name {name[:40]!r} may not be set")
        mime[name] = value
    mime.set_content(text)
    if html is not None:
        mime.add_alternative(html, subtype="html")
    return mime.as_bytes()


def _wire_format(data: bytes) -> bytes:
    """
    *data* with CRLF line ends and leading dots doubled (RFC 5321 section 4.5.2).

    Done on the whole message, not per chunk, so a dot at a chunk boundary is not missed.
    """
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def _text(resp: bytes | str) -> str:
    """
    A server reply's text, decoded and shortened, for an error.
    """
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return " ".join(resp.split())[:_DETAIL_LIMIT]


def _refusal(code: int, resp: bytes | str, addresses: list[tuple[bytes, int, bytes]]) -> ChannelError:
    """
    The error for a transaction the server refused: 5xx permanent, anything else retryable.
    """
    reason = "message_refused"
    refused = [
        (rcpt_code, rcpt_resp) for _, rcpt_code, rcpt_resp in addresses if rcpt_code not in smtp.SUCCESS
    ]
    if refused and len(refused) == len(addresses):
        code, resp = refused[0]
        reason = "recipient_refused"
    if 500 <= code < 600:
        return PermanentError(CHANNEL, reason, _text(resp), status=code)
    return RetryableError(CHANNEL, reason, _text(resp), status=code)


def _session_error(exc: Exception) -> ChannelError:
    """
    The error for a session that failed before or outside a transaction (all retryable).

    Only the class and the server's reply code and text are kept: the client's own message
    and log would hold the AUTH exchange.
    """
    code = getattr(exc, "code", None)
    resp = getattr(exc, "resp", b"")
    if isinstance(exc, smtp.SMTPTimeoutError):
        return RetryableError(CHANNEL, "timeout", "the SMTP server stopped answering")
    if isinstance(exc, (smtp.AUTHDeclinedError, smtp.AUTHRequiredError, smtp.AuthenticationError)):
        return RetryableError(CHANNEL, "smtp_auth_failed", _text(resp), status=code)
    if isinstance(exc, (smtp.TLSRequiredError, smtp.TLSError)):
        return RetryableError(CHANNEL, "smtp_tls_failed", _text(resp), status=code)
    if isinstance(exc, smtp.SMTPConnectError):
        return RetryableError(
            CHANNEL, "smtp_unavailable", _text(resp), status=code if code and code > 0 else None
        )
    return RetryableError(
        CHANNEL, "smtp_protocol_error", type(exc).__name__, status=code if code and code > 0 else None
    )


@dataclass(eq=False)
class _Job:
    """
    One message waiting for, or going through, the pooled session.
    """

    sender: bytes
    recipient: bytes
    data: bytes = field(repr=False)
    message_id: str
    deferred: Deferred[SendResult]
    client: _PooledSMTPClient | None = None


class _PooledSMTPClient(smtp.ESMTPClient):
    """
    An ESMTP session that asks its channel for the next message instead of quitting.

    Twisted's client calls ``smtpState_from`` when it is ready for a transaction (after AUTH,
    and after the ``RSET`` that follows each message); here it takes the next queued job, or
    goes idle until :meth:`wake`.
    """

    #: Keep no session log: it would hold the base64 AUTH exchange.
    debug = False

    def __init__(self, channel: EmailChannel, context: Any, identity: bytes) -> None:
        settings = channel.settings
        secret = settings.password.encode("utf-8") if settings.password else None
        super().__init__(secret, context, identity)
        self._channel = channel
        self.timeout = channel.reply_timeout_s  # type: ignore[assignment]
        self.requireAuthentication = settings.username is not None
        self.requireTransportSecurity = settings.starttls or settings.implicit_tls
        self.heloFallback = not self.requireAuthentication and not self.requireTransportSecurity
        if settings.username is not None:
            user = settings.username.encode("utf-8")
            for authenticator in (CramMD5ClientAuthenticator, LOGINAuthenticator, smtp.PLAINAuthenticator):
                self.registerAuthenticator(authenticator(user))
        self.ready = False
        self.idle = False
        #: Whether a failure of this session was already reported to the channel.
        self.failed = False
        #: Whether the session is reporting a message it just sent (it takes the next one after).
        self.finishing = False
        self._job: _Job | None = None
        self._idle_call: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """
        Turn Nagle's algorithm off: a command line or the end of DATA left waiting for the
        server's delayed ACK costs up to 40 ms per message on Linux.
        """
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        super().connectionMade()

    def callLater(self, period: float, func: Any) -> IDelayedCall:
        """
        The reply timeout on the channel's reactor, not the global one.
        """
        return self._channel.reactor.callLater(period, func)

    # The transaction loop.

    def smtpState_from(self, code: int, resp: bytes) -> None:
        self.ready = True
        job = self._channel._take_job()
        if job is None:
            self._go_idle()
            return
        job.client = self
        self._job = job
        self.setTimeout(self.timeout)
        super().smtpState_from(code, resp)

    def wake(self) -> None:
        """
        Start the next transaction if the session is idle.
        """
        if self.idle:
            self.idle = False
            self._cancel_idle_call()
            self.smtpState_from(250, b"")

    def _go_idle(self) -> None:
        self.idle = True
        self.setTimeout(None)
        self._expected = smtp.SUCCESS
        self._okresponse = self._failresponse = self._unexpected
        self._idle_call = self.callLater(self._channel.idle_close_s, self._close_idle)

    def _unexpected(self, code: int, resp: bytes) -> None:
        """
        A reply nobody asked for (an idle timeout's 421): drop the session.
        """
        self._channel._forget(self)
        if self.transport is not None:
            self.transport.loseConnection()

    def _close_idle(self) -> None:
        self._idle_call = None
        self.idle = False
        self._channel._forget(self)
        self.setTimeout(self.timeout)
        self._disconnectFromServer()

    def quit(self) -> None:
        """
        End the session politely (QUIT) if it is idle, else once the current message is done.
        """
        if self.idle:
            self._cancel_idle_call()
            self._close_idle()

    def abort(self) -> None:
        """
        Drop the connection now (a send timed out in the middle of a transaction).
        """
        self._channel._forget(self)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _cancel_idle_call(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def smtpState_msgSent(self, code: int, resp: bytes) -> None:
        """
        The end of a transaction: after an accepted message go straight to the next ``MAIL``.

        Twisted's client always sends ``RSET`` here; a completed transaction already cleared
        the server's state (RFC 5321 section 4.1.4), so that round trip is only kept after a
        refusal (a transaction left half-open).
        """
        if code not in smtp.SUCCESS:
            super().smtpState_msgSent(code, resp)
            return
        if self._from is not None:
            self.finishing = True  # what the message's callbacks queue, this session takes next
            try:
                self.sentMail(code, resp, len(self.successAddresses), self.toAddressesResult, self.log)
            finally:
                self.finishing = False
        self.toAddressesResult = []
        self._from = None
        self.smtpState_from(code, resp)

    # What Twisted's client asks of a subclass.

    def getMailFrom(self) -> bytes | None:
        return None if self._job is None else self._job.sender

    def getMailTo(self) -> list[bytes]:
        assert self._job is not None
        return [self._job.recipient]

    def getMailData(self) -> BytesIO:
        assert self._job is not None
        return BytesIO(self._job.data)

    def transformChunk(self, chunk: bytes) -> bytes:
        # The data is already in wire format (see _wire_format).
        self.resetTimeout()
        return chunk

    def sentMail(
        self,
        code: int,
        resp: bytes,
        numOk: int,  # noqa: N803 - Twisted's name
        addresses: list[tuple[bytes, int, bytes]],
        log: object,
    ) -> None:
        job, self._job = self._job, None
        if job is None or job.deferred.called:
            return
        job.client = None
        if code in smtp.SUCCESS:
            job.deferred.callback(SendResult(CHANNEL, job.message_id, code))
        else:
            job.deferred.errback(_refusal(code, resp, addresses))

    def sendError(self, exc: Exception) -> None:
        job, self._job = self._job, None
        self._channel._session_failed(self, _session_error(exc), job)
        super().sendError(exc)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self._cancel_idle_call()
        if reason.check(SSL.Error):
            error = RetryableError(
                CHANNEL, "smtp_tls_failed", "the TLS handshake or certificate check failed"
            )
        else:
            error = RetryableError(
                CHANNEL, "connection_lost", f"the SMTP connection closed ({reason.type.__name__})"
            )
        job, self._job = self._job, None
        self._channel._session_failed(self, error, job, lost=True)


class _ClientFactory(protocol.Factory):
    def __init__(self, channel: EmailChannel, context: Any, identity: bytes) -> None:
        self._channel = channel
        self._context = context
        self._identity = identity

    def buildProtocol(self, addr: object) -> _PooledSMTPClient:
        client = _PooledSMTPClient(self._channel, self._context, self._identity)
        client.factory = self
        return client


@implementer(IChannel)
class EmailChannel:
    """
    Sends :class:`~.base.EmailMessage` values through a small pool of SMTP sessions.

    Messages queue in order; up to *pool_size* sessions (opened on demand, kept while there is
    work and :data:`IDLE_CLOSE_S` after) each take the next message when their last transaction
    ends.  A new session is opened only while more messages wait than there are sessions, so
    a trickle of mail keeps using one connection.  A session that fails before it is ready
    (refused connection, TLS, AUTH) fails every queued message with the same retryable error;
    one that drops mid-way fails the message in flight and the other sessions (or a new one)
    take the rest.  Delivery is at-least-once: a connection lost after the final ``.`` but
    before the server's reply reports a retryable error for a message the server may have kept.

    :ivar sessions_opened: How many SMTP connections this channel opened (for metrics).
    """

    name = CHANNEL

    def __init__(
        self,
        reactor: Any,
        settings: SmtpSettings,
        sender: SmtpSender,
        *,
        trust_root: IOpenSSLTrustRoot | None = None,
        helo_name: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
        idle_close_s: float = IDLE_CLOSE_S,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        """
        :param reactor: Provides ``IReactorTCP`` and ``IReactorTime`` (and name resolution).
        :param trust_root: Whom to trust for the server's certificate; the system's roots
            if ``None`` (tests pass their own CA with ``ssl.Certificate.loadPEM``).
        :param helo_name: The EHLO name; this host's FQDN if ``None``.
        :param pool_size: The most sessions open at once (>= 1).
        """
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.pool_size = pool_size
        self.reactor = reactor
        self.settings = settings
        self.sender = sender
        self.reply_timeout_s = reply_timeout_s
        self.send_timeout_s = send_timeout_s
        self.idle_close_s = idle_close_s
        self.sessions_opened = 0
        identity = helo_name.encode("ascii") if helo_name else smtp.DNSNAME
        context = None
        if settings.starttls or settings.implicit_tls:
            context = optionsForClientTLS(settings.host, trustRoot=trust_root)
        endpoint: Any = HostnameEndpoint(reactor, settings.host, settings.port, timeout=connect_timeout_s)
        if context is not None and settings.implicit_tls:
            endpoint = wrapClientTLS(context, endpoint)
        self._endpoint = endpoint
        self._factory = _ClientFactory(self, context, identity)
        self._queue: deque[_Job] = deque()
        #: Sessions that may take a message (connected, not failed nor closing).
        self._usable: set[_PooledSMTPClient] = set()
        self._connecting: set[Deferred[Any]] = set()
        self._closing: list[Deferred[None]] = []
        self._clients: set[_PooledSMTPClient] = set()
        self._closed = False

    def send(self, message: object) -> Deferred[SendResult]:
        """
        Queue *message* (an :class:`~.base.EmailMessage`) on the pooled session.
        """
        if not isinstance(message, EmailMessage):
            raise TypeError(f"the email channel sends EmailMessage, not {type(message).__name__}")
        try:
            message_id, data = build_email(message, self.sender, now=self.reactor.seconds())
        except ChannelError as e:
            return fail(e)
        job = _Job(
            sender=self.sender.address.encode("ascii"),
            recipient=message.to.encode("ascii"),
            data=_wire_format(data),
            message_id=message_id,
            deferred=Deferred(lambda d: self._cancel(job)),
        )
        self._queue.append(job)
        result = job.deferred
        result.addTimeout(self.send_timeout_s, self.reactor)
        result.addErrback(self._timed_out)
        self._pump()
        return result

    def close(self) -> Deferred[None]:
        """
        Fail what is still queued (retryable) and end the pooled session.

        :return: Fires once every connection this channel opened is closed.
        """
        self._closed = True
        self._fail_queue(RetryableError(CHANNEL, "channel_closed", "the email channel was closed"))
        for connecting in list(self._connecting):
            connecting.cancel()
        for client in list(self._clients):
            if client.idle:
                client.quit()
            else:
                client.abort()
        if not self._clients:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._closing.append(done)
        return done

    # The pool.

    def _pump(self) -> None:
        for client in list(self._usable):
            if not self._queue:
                return
            client.wake()
        # A session ending a transaction takes the next message at once: it is not waiting.
        free = sum(1 for c in self._usable if c.finishing)
        sessions = len(self._usable) + len(self._connecting)
        waiting = len(self._queue) - free
        if waiting > 0 and (sessions == 0 or (waiting > sessions and sessions < self.pool_size)):
            self._open()

    def _open(self) -> None:
        self._closed = False
        self.sessions_opened += 1
        connecting = self._endpoint.connect(self._factory)
        self._connecting.add(connecting)
        connecting.addCallbacks(self._connected, self._connect_failed, errbackArgs=(connecting,))
        connecting.addCallback(lambda _: self._connecting.discard(connecting))

    def _connected(self, client: _PooledSMTPClient) -> None:
        self._usable.add(client)
        self._clients.add(client)

    def _connect_failed(self, failure: Failure, connecting: Deferred[Any]) -> None:
        self._connecting.discard(connecting)
        if self._usable or self._connecting:
            return  # the other sessions take the queue (a failing server fails them too)
        if self._closed or failure.check(CancelledError):
            self._fail_queue(RetryableError(CHANNEL, "channel_closed", "the email channel was closed"))
            return
        detail = f"cannot connect to {self.settings.shown} ({failure.type.__name__})"
        log.warn("email: {detail}", detail=detail)
        self._fail_queue(RetryableError(CHANNEL, "smtp_unreachable", detail))

    def _take_job(self) -> _Job | None:
        while self._queue:
            job = self._queue.popleft()
            if not job.deferred.called:
                return job
        return None

    def _forget(self, client: _PooledSMTPClient) -> None:
        self._usable.discard(client)

    def _session_failed(
        self, client: _PooledSMTPClient, error: ChannelError, job: _Job | None, lost: bool = False
    ) -> None:
        self._forget(client)
        if job is not None and not job.deferred.called:
            job.deferred.errback(error)
        if not client.ready and not client.failed:
            # A session that never got ready would fail again at once: fail the queue too.
            client.failed = True
            log.warn(
                "email: SMTP session to {server} failed: {error}",
                server=self.settings.shown,
                error=str(error),
            )
            self._fail_queue(error)
        if lost:
            self._clients.discard(client)
            if not self._clients:
                closing, self._closing = self._closing, []
                for done in closing:
                    done.callback(None)
            self._pump()

    def _fail_queue(self, error: ChannelError) -> None:
        # Take the jobs first: an errback may queue a new message, which must not fail too.
        jobs = list(self._queue)
        self._queue.clear()
        for job in jobs:
            if not job.deferred.called:
                job.deferred.errback(error)

    def _cancel(self, job: _Job) -> None:
        if job in self._queue:
            self._queue.remove(job)
        elif job.client is not None:
            job.client.abort()

    def _timed_out(self, failure: Failure) -> Failure | None:
        if failure.check(TimeoutError):
            raise RetryableError(CHANNEL, "timeout", f"no answer within {self.send_timeout_s:g} s")
        return failure
