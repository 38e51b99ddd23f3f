# -*- test-case-name: tests.test_notify_email,tests.test_notify_sms,tests.test_notify_push -*-
"""Parse the channels' ``STREAMSRV_*`` values: the SMTP URL and sender, the SMS gateway URL, VAPID.

Each ``parse_*`` takes one variable's stripped value and returns a frozen value, or raises
:class:`ChannelConfigError` whose reasons name the problem without the variable's name (the
caller adds it, as :mod:`streamsrv.config` does).  Pure functions over the standard library and
``cryptography``: they must never open a connection or read a file, and never put a password,
token or key into a reason or a ``repr`` (URLs are shown as ``scheme://host:port`` only).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from email.utils import formataddr, parseaddr
from typing import cast
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ChannelConfigError",
    "SmsSettings",
    "SmtpSender",
    "SmtpSettings",
    "VapidSettings",
    "b64url_decode",
    "b64url_encode",
    "is_e164",
    "is_email_address",
    "is_loopback_host",
    "parse_sms_url",
    "parse_smtp_from",
    "parse_smtp_url",
    "parse_vapid",
    "parse_vapid_private_key",
    "parse_vapid_subject",
]

#: Default ports: submission with STARTTLS, implicit TLS, and a plain local relay.
SUBMISSION_PORT = 587
SMTPS_PORT = 465
RELAY_PORT = 25

#: Form fields the SMS URL's query may carry; exactly one of the first two is required.
SMS_SENDER_FIELDS = ("From", "MessagingServiceSid")
SMS_OPTIONAL_FIELDS = ("StatusCallback",)

_ADDRESS = re.compile(r"[^@\s<>()\[\]\\,;:\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+|[^@\s<>]+@localhost", re.ASCII)
_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)


class ChannelConfigError(ValueError):
    """
    A channel's configuration value is refused; each reason is one problem, without secrets.
    """

    def __init__(self, *reasons: str) -> None:
        super().__init__(*reasons)
        self.reasons = reasons

    def __str__(self) -> str:
        return "; ".join(self.reasons)


def b64url_encode(data: bytes) -> str:
    """
    Unpadded base64url, as Web Push and JWTs write it.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """
    Base64url with or without padding (also accepts the standard alphabet).

    :raise ValueError: If *text* is not base64.
    """
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url")


def is_loopback_host(host: str) -> bool:
    """
    Whether *host* names this machine (``localhost``, 127.0.0.0/8, ``::1``).
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(scheme: str, host: str | None, port: int | None) -> str:
    """
    A URL without user information, path or query, safe for an error message.
    """
    where = host or ""
    if port is not None:
        where = f"{where}:{port}"
    return f"{scheme}://{where}"


@dataclass(frozen=True)
class SmtpSettings:
    """
    Where and how to submit mail: ``STREAMSRV_SMTP_URL`` parsed.

    :ivar implicit_tls: ``smtps://``: TLS from the first byte.
    :ivar starttls: ``smtp://`` with credentials: the session must be upgraded with STARTTLS
        before AUTH (refused if the server does not offer it).
    """

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    implicit_tls: bool
    starttls: bool

    @property
    def shown(self) -> str:
        """
        The URL without credentials, for logs.
        """
        return _shown("smtps" if self.implicit_tls else "smtp", self.host, self.port)


def parse_smtp_url(value: str) -> SmtpSettings:
    """
    Parse ``STREAMSRV_SMTP_URL``.

    ``smtp://user:pass@host:587`` submits with STARTTLS required then AUTH;
    ``smtps://user:pass@host:465`` uses implicit TLS then AUTH; ``smtp://host:25`` (no
    credentials) talks plain SMTP to a local relay.  The port defaults to 587, 465 and 25
    respectively.  User and password are percent-decoded (write ``@`` as ``%40``).

    :raise ChannelConfigError: Naming every problem, without the password.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ChannelConfigError("not a valid URL (expected smtp://user:pass@host:587 or smtps://…)")
    scheme = parts.scheme.lower()
    shown = _shown(scheme, parts.hostname, port)
    problems: list[str] = []
    if scheme not in ("smtp", "smtps"):
        problems.append(f"must start with smtp:// or smtps://, got {_shown(scheme, parts.hostname, port)}")
    if not parts.hostname:
        problems.append(f"needs a host, as in smtp://user:pass@mail.example.com:587, got {shown}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        problems.append(f"takes no path, query or fragment after the host, in {shown}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and not password:
        problems.append(f"has a user but no password in {shown}")
    if password and not username:
        problems.append(f"has a password but no user in {shown}")
    if scheme == "smtps" and not username:
        problems.append(
            f"smtps:// needs user:password@ (use smtp://host:25 for an unauthenticated relay), in {shown}"
        )
    if problems:
        raise ChannelConfigError(*problems)
    implicit = scheme == "smtps"
    if port is None:
        port = SMTPS_PORT if implicit else SUBMISSION_PORT if username else RELAY_PORT
    return SmtpSettings(
        host=cast(str, parts.hostname),
        port=port,
        username=username,
        password=password,
        implicit_tls=implicit,
        starttls=not implicit and username is not None,
    )


@dataclass(frozen=True)
class SmtpSender:
    """
    ``STREAMSRV_SMTP_FROM`` parsed: the ``From:`` header and the envelope sender.
    """

    header: str
    address: str

    @property
    def domain(self) -> str:
        """
        The address's domain, for Message-IDs.
        """
        return self.address.rsplit("@", 1)[1]


def parse_smtp_from(value: str) -> SmtpSender:
    """
    Parse ``STREAMSRV_SMTP_FROM``: ``noreply@example.com`` or ``Streamsrv <noreply@example.com>``.

    The display name may be any Unicode (it is RFC 2047 encoded in the header); the address
    must be ASCII ``local@domain``.

    :raise ChannelConfigError: If there is no valid address.
    """
    if "\r" in value or "\n" in value:
        raise ChannelConfigError("must be one line")
    name, address = parseaddr(value)
    if not address or not _ADDRESS.fullmatch(address):
        raise ChannelConfigError(
            "must be an address such as noreply@example.com or 'Name <noreply@example.com>', "
            f"got {value[:60]!r}"
        )
    return SmtpSender(header=formataddr((name, address)) if name else address, address=address)


def is_email_address(value: str) -> bool:
    """
    Whether *value* is a plain ASCII ``local@domain`` address this channel can send to.
    """
    return _ADDRESS.fullmatch(value) is not None


def is_e164(value: str) -> bool:
    """
    Whether *value* is an E.164 number: ``+`` then 7 to 15 digits, not starting with 0.
    """
    return _E164.fullmatch(value) is not None


@dataclass(frozen=True)
class SmsSettings:
    """
    ``STREAMSRV_SMS_URL`` parsed: the Messages resource to POST to and the credentials.

    :ivar url: The resource without user information or query.
    :ivar account_sid: The HTTP basic-auth user (Twilio's Account SID or an API key SID).
    :ivar auth_token: The HTTP basic-auth password.
    :ivar fields: Form fields sent with every message: ``From`` or ``MessagingServiceSid``,
        optionally ``StatusCallback``.
    """

    url: str
    account_sid: str
    auth_token: str = field(repr=False)
    fields: tuple[tuple[str, str], ...]


def parse_sms_url(value: str) -> SmsSettings:
    """
    Parse ``STREAMSRV_SMS_URL``, a Twilio-style Messages resource with credentials and sender.

    ``https://ACxxx:token@api.twilio.com/2010-04-01/Accounts/ACxxx/Messages.json?From=%2B15550001111``:
    the user and password are the basic-auth credentials (percent-decoded), the query
    carries ``From`` (an E.164 number or alphanumeric sender id) or ``MessagingServiceSid``
    and optionally ``StatusCallback``; these become form fields of every POST.  ``https`` is
    required, except to a loopback host (a gateway on this machine, tests).

    :raise ChannelConfigError: Naming every problem, without the token.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ChannelConfigError(
            "not a valid URL (expected https://SID:TOKEN@host/2010-04-01/Accounts/SID/Messages.json?From=…)"
        )
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    shown = _shown(scheme, host, port) + parts.path
    problems: list[str] = []
    if scheme != "https" and not (scheme == "http" and is_loopback_host(host)):
        problems.append(
            f"must be an https:// URL (http:// only to a loopback host), got {_shown(scheme, host, port)}"
        )
    if not host:
        problems.append(f"needs a host, got {shown}")
    if not parts.username or parts.password is None or not parts.password:
        problems.append(f"needs the credentials as SID:TOKEN@ before the host, in {shown}")
    names = [name for name, _ in query]
    senders = [name for name in names if name in SMS_SENDER_FIELDS]
    if len(senders) != 1:
        problems.append(f"needs exactly one of ?From=… or ?MessagingServiceSid=… in its query, in {shown}")
    unknown = sorted({name for name in names if name not in SMS_SENDER_FIELDS + SMS_OPTIONAL_FIELDS})
    if unknown:
        problems.append(
            f"has unknown query fields {', '.join(unknown)} "
            "(known: From, MessagingServiceSid, StatusCallback)"
        )
    if len(set(names)) != len(names):
        problems.append("repeats a query field")
    if any(not field_value for _, field_value in query):
        problems.append("has an empty query field")
    if problems:
        raise ChannelConfigError(*problems)
    return SmsSettings(
        url=f"{scheme}://{parts.netloc.rsplit('@', 1)[1]}{parts.path}",
        account_sid=unquote(cast(str, parts.username)),
        auth_token=unquote(cast(str, parts.password)),
        fields=tuple(query),
    )


@dataclass(frozen=True)
class VapidSettings:
    """
    The VAPID key pair and contact: ``STREAMSRV_VAPID_PRIVATE_KEY`` and ``STREAMSRV_VAPID_SUBJECT``.
    """

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    subject: str

    @property
    def public_key(self) -> str:
        """
        The application server key as browsers take it (``applicationServerKey``) and the
        ``k=`` of the ``Authorization`` header: the uncompressed P-256 point, base64url.
        """
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url_encode(point)


def parse_vapid_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """
    Parse ``STREAMSRV_VAPID_PRIVATE_KEY``: a P-256 private key, PEM or raw base64url.

    Accepted: a PEM block (``-----BEGIN PRIVATE KEY-----`` PKCS #8 or ``-----BEGIN EC PRIVATE
    KEY-----`` SEC 1; ``\\n`` written as two characters is read as a line break, for env
    files), or the 32-byte private scalar in base64url (43 characters), which is what
    ``web-push generate-vapid-keys`` prints as the private key.

    :raise ChannelConfigError: If it is neither, or not a P-256 key (the key is never shown).
    """
    text = value.strip()
    if text.startswith("-----BEGIN"):
        pem = text.replace("\\n", "\n").encode("ascii", "replace")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ChannelConfigError("is a PEM block that is not an unencrypted private key")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ChannelConfigError("must be a P-256 (prime256v1) EC key, as VAPID requires")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ChannelConfigError(
            "must be a P-256 private key: a PEM block or the 32-byte key in base64url (43 characters)"
        )
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError:
        raise ChannelConfigError("is not a valid P-256 private key")


def parse_vapid_subject(value: str) -> str:
    """
    Parse ``STREAMSRV_VAPID_SUBJECT``: a ``mailto:`` address or an ``https:`` URL (RFC 8292).

    :raise ChannelConfigError: Otherwise.
    """
    if value.startswith("mailto:") and is_email_address(value[len("mailto:") :]):
        return value
    if value.startswith("https://"):
        try:
            host = urlsplit(value).hostname
        except ValueError:
            host = None
        if host:
            return value
    raise ChannelConfigError(
        "must be mailto:ops@example.com or an https:// URL a push service can reach you at, "
        f"got {value[:60]!r}"
    )


def parse_vapid(private_key: str, subject: str) -> VapidSettings:
    """
    Both VAPID values; every problem of either is listed.

    :raise ChannelConfigError: With the reasons of both values, each prefixed by its name.
    """
    problems: list[str] = []
    key: ec.EllipticCurvePrivateKey | None = None
    try:
        key = parse_vapid_private_key(private_key)
    except ChannelConfigError as e:
        problems.extend(f"STREAMSRV_VAPID_PRIVATE_KEY {reason}" for reason in e.reasons)
    try:
        subject = parse_vapid_subject(subject)
    except ChannelConfigError as e:
        problems.extend(f"STREAMSRV_VAPID_SUBJECT {reason}" for reason in e.reasons)
    if problems or key is None:
        raise ChannelConfigError(*problems)
    return VapidSettings(private_key=key, subject=subject)
