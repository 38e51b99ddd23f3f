"""Tests for the email channel: the SMTP URL parser, message building, and sends to a real server.

The server is aiosmtpd in its own process (:mod:`tests.smtp_server`) with STARTTLS or implicit
TLS on a throwaway certificate and AUTH required; the messages it wrote are read back and
parsed with :mod:`email`.
"""

from __future__ import annotations

import shutil
import socket
from email import policy
from email.message import EmailMessage as MimeMessage
from email.parser import BytesParser

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.ssl import Certificate
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from streamsrv.notifications.channels.base import (
    ChannelError,
    EmailMessage,
    IChannel,
    PermanentError,
    RetryableError,
    SendResult,
)
from streamsrv.notifications.channels.email import EmailChannel, _wire_format, build_email
from streamsrv.notifications.channels.settings import (
    ChannelConfigError,
    SmtpSettings,
    parse_smtp_from,
    parse_smtp_url,
)
from tests.services import send_failure
from tests.smtp_server import SmtpServerProcess, make_certificate, temporary_directory

USER = "mailer"
PASSWORD = "s3cret-p@ss"
SENDER = parse_smtp_from("Streamsrv Été <noreply@example.com>")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpUrlTests(unittest.SynchronousTestCase):
    """
    ``STREAMSRV_SMTP_URL`` and ``STREAMSRV_SMTP_FROM`` parsing.
    """

    def test_submission_with_starttls(self) -> None:
        """
        ``smtp://user:pass@host:587`` requires STARTTLS and keeps the decoded credentials.
        """
        settings = parse_smtp_url("smtp://me%40example.com:p%3Ass@mail.example.com:587")
        self.assertEqual(
            settings,
            SmtpSettings(
                "mail.example.com", 587, "me@example.com", "p:ss", implicit_tls=False, starttls=True
            ),
        )

    def test_implicit_tls_and_default_ports(self) -> None:
        """
        ``smtps://`` is implicit TLS on 465 by default; an authenticated ``smtp://`` defaults to
        587 and a credential-less one (a local relay) to 25 without TLS.
        """
        smtps = parse_smtp_url("smtps://u:p@mail.example.com")
        self.assertEqual((smtps.port, smtps.implicit_tls, smtps.starttls), (465, True, False))
        self.assertEqual(parse_smtp_url("smtp://u:p@mail.example.com").port, 587)
        relay = parse_smtp_url("smtp://localhost")
        self.assertEqual(
            (relay.port, relay.username, relay.starttls, relay.implicit_tls), (25, None, False, False)
        )

    def test_errors_name_the_problem_without_the_password(self) -> None:
        """
        Each problem is listed, and the password never appears in a reason or the repr.
        """
        for value, expected in [
            ("http://u:hunter2@host", "smtp:// or smtps://"),
            ("smtp://u:hunter2@", "needs a host"),
            ("smtp://u:hunter2@host/path", "no path"),
            ("smtp://u@host", "no password"),
            ("smtps://host", "needs user:password"),
            ("smtp://u:hunter2@host:99999", "not a valid URL"),
        ]:
            with self.assertRaises(ChannelConfigError) as caught:
                parse_smtp_url(value)
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("hunter2", str(caught.exception))
        self.assertNotIn("hunter2", repr(parse_smtp_url("smtp://u:hunter2@host")))

    def test_sender(self) -> None:
        """
        The sender may carry a Unicode display name; the envelope address is the bare address.
        """
        sender = parse_smtp_from("Streamsrv Été <noreply@example.com>")
        self.assertEqual(sender.address, "noreply@example.com")
        self.assertEqual(sender.domain, "example.com")
        self.assertEqual(parse_smtp_from("noreply@example.com").header, "noreply@example.com")
        for bad in ("not an address", "Name <>", "a@b.com\nBcc: x@y.com"):
            with self.assertRaises(ChannelConfigError):
                parse_smtp_from(bad)


class BuildEmailTests(unittest.SynchronousTestCase):
    """
    :func:`build_email` and the wire format.
    """

    def test_multipart_alternative_utf8(self) -> None:
        """
        Text then HTML in multipart/alternative, UTF-8 subject and bodies, Date and Message-ID.
        """
        message_id, data = build_email(
            EmailMessage(
                to="ana@example.org",
                subject="Nouveautés — été 🎵",
                text="Bonjour Ana, écoutez ça.",
                html="<p>Bonjour <b>Ana</b>, écoutez ça.</p>",
                headers=(("List-Unsubscribe", "<https://example.com/u/1>"),),
            ),
            SENDER,
            now=1_700_000_000,
        )
        self.assertTrue(data.isascii())

        parsed = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(parsed, MimeMessage)
        self.assertEqual(parsed["Subject"], "Nouveautés — été 🎵")
        self.assertEqual(parsed["From"].addresses[0].display_name, "Streamsrv Été")
        self.assertEqual(parsed["To"], "ana@example.org")
        self.assertEqual(parsed["Message-ID"], message_id)
        self.assertTrue(message_id.endswith("@example.com>"))
        self.assertEqual(parsed["Date"].datetime.timestamp(), 1_700_000_000)
        self.assertEqual(parsed["List-Unsubscribe"], "<https://example.com/u/1>")
        self.assertEqual(parsed.get_content_type(), "multipart/alternative")
        parts = list(parsed.iter_parts())
        self.assertEqual([p.get_content_type() for p in parts], ["text/plain", "text/html"])
        self.assertEqual(parts[0].get_content().strip(), "Bonjour Ana, écoutez ça.")
        self.assertIn("<b>Ana</b>", parts[1].get_content())

    def test_text_only(self) -> None:
        """
        Without HTML the message is a single text/plain part.
        """
        _, data = build_email(EmailMessage("a@example.org", "Hi", "Just text"), SENDER, now=0)
        self.assertIn(b"Content-Type: text/plain", data)
        self.assertNotIn(b"multipart", data)

    def test_refused_messages(self) -> None:
        """
        A bad recipient, a reserved header or a header with a line break is a permanent error.
        """
        cases = [
            (EmailMessage("not-an-address", "s", "t"), "bad_address"),
            (EmailMessage("a@example.org", "s", "t", headers=(("Bcc", "x@example.org"),)), "bad_header"),
            (
                EmailMessage("a@example.org", "s", "t", headers=(("X-Tag", "a\r\nBcc: x@example.org"),)),
                "bad_header",
            ),
            (EmailMessage("a@example.org", "s\nBcc: x@example.org", "t"), "bad_header"),
            (EmailMessage("pépé@example.org", "s", "t"), "bad_address"),  # no SMTPUTF8
        ]
        for message, reason in cases:
            with self.assertRaises(PermanentError) as caught:
                build_email(message, SENDER, now=0)
            self.assertEqual(caught.exception.reason, reason)

    def test_message_id_from_ref(self) -> None:
        """
        A ref makes the Message-ID ``<ref@sender domain>`` on every build (receivers dedupe
        a retried delivery by it); without one, or with one unfit for it, it is random; the
        shared part of one rendered message is the same for every recipient.
        """
        message = EmailMessage("a@example.org", "Hi", "t", "<p>h</p>", ref="0123abcd000001")
        first_id, first = build_email(message, SENDER, now=0)
        second_id, _ = build_email(message, SENDER, now=60)
        self.assertEqual((first_id, second_id), ("<0123abcd000001@example.com>",) * 2)
        parsed = BytesParser(policy=policy.default).parsebytes(first)
        self.assertEqual((parsed["Message-ID"], parsed["To"]), (first_id, "a@example.org"))
        self.assertEqual(len(parsed.get_all("Message-ID")), 1)
        other_id, other = build_email(
            EmailMessage("b@example.org", "Hi", "t", "<p>h</p>", ref="x y"), SENDER, now=0
        )
        self.assertNotEqual(other_id, "<x y@example.com>")
        self.assertEqual(first.split(b"From:", 1)[1], other.split(b"From:", 1)[1])

    def test_wire_format_stuffs_dots_and_uses_crlf(self) -> None:
        """
        Lines starting with a dot are doubled and every line ends with CRLF.
        """
        self.assertEqual(_wire_format(b"a\n.b\r\n..c\n"), b"a\r\n..b\r\n...c\r\n")


class _ServerTestsMixin:
    """
    Start a real SMTP server process per test and a channel pointed at it.
    """

    mode = "starttls"
    exclude_auth: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.directory = temporary_directory()
        self.addCleanup(shutil.rmtree, self.directory, True)  # type: ignore[attr-defined]
        self.certificate = make_certificate(self.directory)
        self.server = SmtpServerProcess(
            self.directory, self.mode, self.certificate, USER, PASSWORD, exclude_auth=self.exclude_auth
        )
        self.server.start()
        self.addCleanup(self.server.stop)  # type: ignore[attr-defined]

    def channel(self, url: str | None = None, **kwargs: object) -> EmailChannel:
        scheme = "smtps" if self.mode == "smtps" else "smtp"
        url = url or f"{scheme}://{USER}:{PASSWORD.replace('@', '%40')}@127.0.0.1:{self.server.port}"
        channel = EmailChannel(
            reactor,
            parse_smtp_url(url),
            SENDER,
            trust_root=kwargs.pop("trust_root", Certificate.loadPEM(self.certificate.ca_pem)),
            helo_name="test.example.com",
            **kwargs,  # type: ignore[arg-type]
        )
        self.addCleanup(channel.close)  # type: ignore[attr-defined]
        return channel

    async def failure_of(self, d: Deferred[SendResult]) -> ChannelError:
        return await send_failure(d)


class StartTlsTests(_ServerTestsMixin, unittest.TestCase):
    """
    ``smtp://user:pass@host:port``: STARTTLS then AUTH, one pooled session.
    """

    def test_provides_the_interface(self) -> None:
        """
        The channel provides :class:`IChannel` and is named ``email``.
        """
        channel = self.channel()
        self.assertTrue(verifyObject(IChannel, channel))
        self.assertEqual(channel.name, "email")

    async def test_messages_arrive_parsed_over_one_authenticated_session(self) -> None:
        """
        Three messages sent one after the other (and two at once) arrive whole — From, To,
        UTF-8 subject, text and HTML parts — over TLS with AUTH, on one connection.
        """
        channel = self.channel()
        results = []
        for i in range(3):
            results.append(
                await channel.send(
                    EmailMessage(
                        to=f"user{i}@example.org",
                        subject=f"Nouvel album n°{i} — « Été »",
                        text=f"Bonjour {i}, votre album est là.\n.a line with a leading dot",
                        html=f"<p>Bonjour <b>{i}</b> — écoutez</p>",
                    )
                )
            )
        pair = [channel.send(EmailMessage(f"pair{i}@example.org", "Pair", "t", "<p>h</p>")) for i in range(2)]
        for d in pair:
            results.append(await d)
        self.assertTrue(all(r.status == 250 and r.channel == "email" for r in results))
        received = self.server.received()
        self.assertEqual(len(received), 5)
        self.assertEqual({r.connection for r in received}, {1})
        self.assertEqual(self.server.connections(), 1)
        self.assertEqual(channel.sessions_opened, 1)
        for i, got in enumerate(received[:3]):
            self.assertTrue(got.tls)
            self.assertEqual(got.auth_user, USER)
            self.assertEqual(got.auth_mechanism, "LOGIN")
            self.assertEqual(got.mail_from, "noreply@example.com")
            self.assertEqual(got.rcpt_tos, [f"user{i}@example.org"])
            message = got.message
            self.assertEqual(message["Subject"], f"Nouvel album n°{i} — « Été »")
            self.assertEqual(message["From"].addresses[0].addr_spec, "noreply@example.com")
            self.assertEqual(message["From"].addresses[0].display_name, "Streamsrv Été")
            self.assertEqual(message["To"], f"user{i}@example.org")
            self.assertEqual(message["Message-ID"], results[i].provider_id)
            self.assertIsNotNone(message["Date"])
            text, html = message.iter_parts()
            self.assertEqual(
                text.get_content().replace("\r\n", "\n").strip(),
                f"Bonjour {i}, votre album est là.\n.a line with a leading dot",
            )
            self.assertEqual(html.get_content_type(), "text/html")
            self.assertIn(f"<b>{i}</b> — écoutez", html.get_content())

    async def test_burst_uses_the_pool(self) -> None:
        """
        Thirty messages queued at once go out over more than one session, never more than
        ``pool_size``, all authenticated; each arrives once.
        """
        channel = self.channel(pool_size=3)
        sends = [channel.send(EmailMessage(f"u{i}@example.org", "s", "t", ref=f"m{i}")) for i in range(30)]
        for d in sends:
            await d
        received = self.server.received()
        self.assertEqual(
            sorted(r.rcpt_tos[0] for r in received), sorted(f"u{i}@example.org" for i in range(30))
        )
        self.assertEqual(len({str(r.message["Message-ID"]) for r in received}), 30)
        self.assertTrue(all(r.tls and r.auth_user == USER for r in received))
        self.assertIn(channel.sessions_opened, (2, 3))
        self.assertEqual(len({r.connection for r in received}), channel.sessions_opened)

    async def test_refused_recipient_is_permanent_and_the_session_goes_on(self) -> None:
        """
        A 550 to RCPT fails that message permanently; a 451 is retryable; the next message
        still goes through on the same connection.
        """
        channel = self.channel()
        refused = await self.failure_of(channel.send(EmailMessage("refuse@example.org", "s", "t")))
        self.assertIsInstance(refused, PermanentError)
        self.assertEqual((refused.reason, refused.status), ("recipient_refused", 550))
        self.assertIn("No such user", refused.detail)
        later = await self.failure_of(channel.send(EmailMessage("later@example.org", "s", "t")))
        self.assertIsInstance(later, RetryableError)
        self.assertEqual((later.reason, later.status), ("recipient_refused", 451))
        await channel.send(EmailMessage("ok@example.org", "s", "t"))
        self.assertEqual([r.rcpt_tos for r in self.server.received()], [["ok@example.org"]])
        self.assertEqual(self.server.connections(), 1)

    async def test_wrong_password_is_retryable_and_sends_nothing(self) -> None:
        """
        A refused AUTH fails every queued message as retryable ``smtp_auth_failed`` and never
        puts the password in the error.
        """
        channel = self.channel(f"smtp://{USER}:wrong-password@127.0.0.1:{self.server.port}")
        sends = [channel.send(EmailMessage(f"u{i}@example.org", "s", "t")) for i in range(2)]
        for d in sends:
            error = await self.failure_of(d)
            self.assertIsInstance(error, RetryableError)
            self.assertEqual(error.reason, "smtp_auth_failed")
            self.assertNotIn("wrong-password", str(error))
        self.assertEqual(self.server.received(), [])

    async def test_auth_is_required_by_the_server(self) -> None:
        """
        The server refuses a client that neither upgrades to TLS nor authenticates, so the
        messages above were really authenticated.
        """
        channel = self.channel(f"smtp://127.0.0.1:{self.server.port}")
        error = await self.failure_of(channel.send(EmailMessage("u@example.org", "s", "t")))
        self.assertIsInstance(error, PermanentError)
        self.assertEqual((error.reason, error.status), ("message_refused", 530))
        self.assertEqual(self.server.received(), [])

    async def test_untrusted_certificate_is_refused(self) -> None:
        """
        Verifying against the system roots (not the test CA) fails the TLS handshake: a
        retryable ``smtp_tls_failed``, nothing sent.
        """
        channel = self.channel(trust_root=None)
        error = await self.failure_of(channel.send(EmailMessage("u@example.org", "s", "t")))
        self.assertIsInstance(error, RetryableError)
        self.assertEqual(error.reason, "smtp_tls_failed")
        self.assertEqual(self.server.received(), [])

    async def test_idle_session_is_closed_and_reopened(self) -> None:
        """
        An idle session is closed with QUIT after ``idle_close_s``; the next message opens a
        new authenticated one.
        """
        channel = self.channel(idle_close_s=0.05)
        await channel.send(EmailMessage("a@example.org", "s", "t"))
        while channel._clients:
            await deferLater(reactor, 0.02, lambda: None)
        await channel.send(EmailMessage("b@example.org", "s", "t"))
        self.assertEqual(channel.sessions_opened, 2)
        self.assertEqual([r.connection for r in self.server.received()], [1, 2])

    async def test_server_restart_reconnects(self) -> None:
        """
        When the server goes away the next message fails retryable (or is sent over a new
        session once it is back); after the restart messages flow again.
        """
        channel = self.channel()
        await channel.send(EmailMessage("a@example.org", "s", "t"))
        self.server.stop()
        error = await self.failure_of(channel.send(EmailMessage("b@example.org", "s", "t")))
        self.assertIsInstance(error, RetryableError)
        self.server.start()
        await channel.send(EmailMessage("c@example.org", "s", "t"))
        self.assertEqual([r.rcpt_tos for r in self.server.received()], [["a@example.org"], ["c@example.org"]])


class PlainAuthTests(_ServerTestsMixin, unittest.TestCase):
    """
    A server that offers AUTH PLAIN only.
    """

    exclude_auth = ("LOGIN",)

    async def test_plain_mechanism(self) -> None:
        """
        The client falls back to AUTH PLAIN when LOGIN is not offered.
        """
        await self.channel().send(EmailMessage("a@example.org", "s", "t"))
        (got,) = self.server.received()
        self.assertEqual((got.auth_mechanism, got.auth_user, got.tls), ("PLAIN", USER, True))


class SmtpsTests(_ServerTestsMixin, unittest.TestCase):
    """
    ``smtps://``: implicit TLS from the first byte, then AUTH.
    """

    mode = "smtps"

    async def test_implicit_tls(self) -> None:
        """
        Two messages go over one implicit-TLS, authenticated connection.
        """
        channel = self.channel()
        await channel.send(EmailMessage("a@example.org", "Sujet été", "t", "<p>h</p>"))
        await channel.send(EmailMessage("b@example.org", "s", "t"))
        received = self.server.received()
        self.assertEqual([(r.tls, r.auth_user, r.connection) for r in received], [(True, USER, 1)] * 2)
        self.assertEqual(received[0].message["Subject"], "Sujet été")


class UnreachableTests(unittest.TestCase):
    """
    No server at all.
    """

    async def test_down_server_is_retryable(self) -> None:
        """
        A refused connection fails the message as retryable ``smtp_unreachable``.
        """
        port = _free_port()
        channel = EmailChannel(reactor, parse_smtp_url(f"smtp://u:p@127.0.0.1:{port}"), SENDER)
        self.addCleanup(channel.close)
        try:
            await channel.send(EmailMessage("a@example.org", "s", "t"))
        except RetryableError as e:
            self.assertEqual(e.reason, "smtp_unreachable")
            self.assertIn(f"smtp://127.0.0.1:{port}", e.detail)
        else:
            self.fail("the send succeeded")

    def test_refuses_other_messages(self) -> None:
        """
        Sending something other than an EmailMessage is a programming error (TypeError).
        """
        channel = EmailChannel(reactor, parse_smtp_url("smtp://127.0.0.1:1"), SENDER)
        self.assertRaises(TypeError, channel.send, object())
        return ensureDeferred(_none())


async def _none() -> None:
    return None
