# -*- test-case-name: tests.test_notify_preferences -*-
"""A user's notification preferences: the document of ``GET/PUT …/notification-preferences``.

:func:`parse_preferences` validates a PUT body (or a stored document) into a
frozen :class:`Preferences`, collecting *every* problem and raising one
:class:`~streamsrv.errors.ApiError` ``BAD_REQUEST`` that names each bad field
(``channels.email.address: not an email address; quiet_hours.time_zone:
unknown time zone 'Mars/Base'``).  :func:`default_preferences` is what a user
who never set any gets.  :meth:`Preferences.to_json` gives the document back;
parsing it again gives an equal value.  This module must never read the
environment, a clock or a database, never take a ``request``, and never
accept a field it does not know (a typo must not silently drop a setting).

Rules worth knowing (``docs/modules/notifications.md`` repeats them):

- **email**: ASCII ``local@domain``, at most 254 characters; the local part
  a dot-atom of RFC 5322 (no quoted strings, no leading, trailing or double
  dot, at most 64 characters); the domain at least two DNS labels of
  letters, digits and hyphens (no IP literal), the last one alphabetic or
  ``xn--`` punycode.  Internationalised addresses must come IDNA-encoded.
- **sms**: E.164: ``+``, then 8 to 15 digits, the first not ``0``.
- **push**: the browser's ``PushSubscription.toJSON()``: an ``https`` endpoint,
  ``keys.p256dh`` (base64url of a 65-byte uncompressed P-256 point) and
  ``keys.auth`` (base64url of 16 bytes); at most :data:`MAX_PUSH_SUBSCRIPTIONS`,
  no endpoint twice.
- A channel may be enabled without an address: its deliveries are then
  ``suppressed`` with ``no_address``.  A channel left out takes its default
  (websocket on, the others off), and so does a channel's ``enabled`` left
  out; a top-level field left out too.
- **quiet_hours**: ``HH:MM`` 24-hour times and an IANA zone known to
  :mod:`zoneinfo`; ``start == end`` means none.
- **caps**: whole numbers >= 0 or ``null`` (no cap); see :mod:`.caps`.
- **locale**: a BCP 47 tag such as ``fr`` or ``pt-BR`` (or ``null``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Final
from urllib.parse import urlsplit

from streamsrv.errors import ApiError
from streamsrv.notifications.caps import Caps
from streamsrv.notifications.quiet import QuietHours

__all__ = [
    "CHANNELS",
    "MAX_PUSH_SUBSCRIPTIONS",
    "ChannelPreference",
    "Preferences",
    "PushSubscription",
    "default_preferences",
    "is_e164_number",
    "is_email_address",
    "parse_preferences",
    "preference_problems",
]

#: The channels, in the order documents list them.
CHANNELS: Final = ("email", "sms", "push", "websocket")

#: The most push subscriptions (browsers, devices) one user may register.
MAX_PUSH_SUBSCRIPTIONS: Final = 20

#: The longest push endpoint URL accepted.
MAX_ENDPOINT_LENGTH: Final = 2048

#: Decoded sizes of a subscription's keys (RFC 8291: an uncompressed P-256 point, a 16-byte secret).
P256DH_BYTES: Final = 65
AUTH_BYTES: Final = 16

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(\.{_ATEXT})*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")

_TOP_FIELDS: Final = frozenset({"channels", "quiet_hours", "caps", "locale"})
_CHANNEL_FIELDS: Final = {
    "email": frozenset({"enabled", "address"}),
    "sms": frozenset({"enabled", "number"}),
    "push": frozenset({"enabled", "subscriptions"}),
    "websocket": frozenset({"enabled"}),
}


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PushSubscription:
    """
    A browser's push subscription (``PushSubscription.toJSON()``).

    :ivar endpoint: The push service URL (``https``).
    :ivar p256dh: The browser's public key, base64url as given.
    :ivar auth: The authentication secret, base64url as given.
    :ivar expiration_time: ``expirationTime`` (milliseconds since the epoch) or ``None``.
    """

    endpoint: str
    p256dh: str
    auth: str
    expiration_time: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The subscription as the browser gave it."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": self.expiration_time,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }


@dataclass(frozen=True)
class ChannelPreference:
    """
    One channel's settings.

    :ivar enabled: Whether the user wants this channel by default.
    :ivar address: ``email`` only: where to.
    :ivar number: ``sms`` only: an E.164 number.
    :ivar subscriptions: ``push`` only: the registered browsers.
    """

    enabled: bool
    address: str | None = None
    number: str | None = None
    subscriptions: tuple[PushSubscription, ...] = ()

    def has_address(self, channel: str) -> bool:
        """Whether there is somewhere to send on *channel* (websocket: always)."""
        if channel == "email":
            return self.address is not None
        if channel == "sms":
            return self.number is not None
        if channel == "push":
            return bool(self.subscriptions)
        return True


@dataclass(frozen=True)
class Preferences:
    """
    A user's whole preferences document.

    :ivar email: See :class:`ChannelPreference`; likewise the other channels.
    :ivar quiet_hours: The daily window email, SMS and push wait out, or ``None``.
    :ivar caps: Sends allowed per channel per sliding hour and day.
    :ivar locale: Preferred template locale, or ``None`` for the default.
    """

    email: ChannelPreference
    sms: ChannelPreference
    push: ChannelPreference
    websocket: ChannelPreference
    caps: Caps
    quiet_hours: QuietHours | None = None
    locale: str | None = None

    def channel(self, name: str) -> ChannelPreference:
        """The settings of channel *name* (one of :data:`CHANNELS`)."""
        if name not in CHANNELS:
            raise KeyError(name)
        preference: ChannelPreference = getattr(self, name)
        return preference

    def enabled_channels(self) -> tuple[str, ...]:
        """The channels the user enabled, in :data:`CHANNELS` order."""
        return tuple(name for name in CHANNELS if self.channel(name).enabled)

    def to_json(self) -> dict[str, Any]:
        """The document, every field present (``GET`` answers this)."""
        return {
            "channels": {
                "email": {"enabled": self.email.enabled, "address": self.email.address},
                "sms": {"enabled": self.sms.enabled, "number": self.sms.number},
                "push": {
                    "enabled": self.push.enabled,
                    "subscriptions": [s.to_json() for s in self.push.subscriptions],
                },
                "websocket": {"enabled": self.websocket.enabled},
            },
            "quiet_hours": None
            if self.quiet_hours is None
            else {
                "start": self.quiet_hours.start.strftime("%H:%M"),
                "end": self.quiet_hours.end.strftime("%H:%M"),
                "time_zone": self.quiet_hours.time_zone,
            },
            "caps": self.caps.to_json(),
            "locale": self.locale,
        }


_OFF: Final = ChannelPreference(enabled=False)


def default_preferences(default_caps: Caps) -> Preferences:
    """
    The preferences of a user who never set any: websocket on, nothing else.

    :param default_caps: ``STREAMSRV_NOTIFY_DEFAULT_CAPS``, already parsed.
    """
    return Preferences(
        email=_OFF, sms=_OFF, push=_OFF, websocket=ChannelPreference(enabled=True), caps=default_caps
    )


# --- field rules ----------------------------------------------------------------------


def is_email_address(value: str) -> bool:
    """Whether *value* is an address this server sends to (the module's documented rule)."""
    if len(value) > 254 or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    if not (1 <= len(local) <= 64 and _LOCAL_PART.fullmatch(local)):
        return False
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2:
        return False
    return all(_LABEL.fullmatch(label) for label in labels) and bool(_TLD.fullmatch(labels[-1]))


def is_e164_number(value: str) -> bool:
    """Whether *value* is an E.164 number: ``+``, then 8 to 15 digits, the first not 0."""
    return _E164.fullmatch(value) is not None


@functools.lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _decode_base64url(value: str) -> bytes | None:
    """The bytes of base64url *value* (padded or not), or ``None`` if it is not base64url."""
    if not _BASE64URL.fullmatch(value):
        return None
    bare = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- parsing --------------------------------------------------------------------------


@dataclass
class _Parser:
    """Collects the problems of one document while building its value."""

    default_caps: Caps
    problems: list[str] = field(default_factory=list)

    def bad(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def unknown_fields(self, where: str, value: dict[str, Any], known: frozenset[str]) -> None:
        for name in sorted(set(value) - known):
            self.bad(f"{where}.{name}" if where else name, "unknown field")

    def obj(self, where: str, value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.bad(where, "must be an object")
        return None

    def string(self, where: str, value: Any) -> str | None:
        if isinstance(value, str):
            return value
        self.bad(where, "must be a string")
        return None

    def document(self, body: Any) -> Preferences | None:
        if not isinstance(body, dict):
            self.bad("body", "must be a JSON object")
            return None
        self.unknown_fields("", body, _TOP_FIELDS)
        defaults = default_preferences(self.default_caps)
        channels = self.channels(body.get("channels", {}), defaults)
        quiet = self.quiet_hours(body.get("quiet_hours"))
        caps = self.caps(body["caps"]) if "caps" in body else self.default_caps
        locale = self.locale(body.get("locale"))
        if self.problems or channels is None or caps is None:
            return None
        return Preferences(**channels, caps=caps, quiet_hours=quiet, locale=locale)

    def channels(self, value: Any, defaults: Preferences) -> dict[str, ChannelPreference] | None:
        channels = self.obj("channels", value)
        if channels is None:
            return None
        self.unknown_fields("channels", channels, frozenset(CHANNELS))
        parsed: dict[str, ChannelPreference] = {}
        for name in CHANNELS:
            if name not in channels:
                parsed[name] = defaults.channel(name)
                continue
            one = self.channel(name, channels[name])
            if one is not None:
                parsed[name] = one
        return parsed

    def channel(self, name: str, value: Any) -> ChannelPreference | None:
        where = f"channels.{name}"
        settings = self.obj(where, value)
        if settings is None:
            return None
        self.unknown_fields(where, settings, _CHANNEL_FIELDS[name])
        enabled = settings.get("enabled", name == "websocket")  # left out: the channel's default
        if not isinstance(enabled, bool):
            self.bad(f"{where}.enabled", "must be true or false")
        address = number = None
        subscriptions: tuple[PushSubscription, ...] = ()
        if name == "email" and settings.get("address") is not None:
            address = self.string(f"{where}.address", settings["address"])
            if address is not None and not is_email_address(address):
                self.bad(f"{where}.address", "not an email address")
        if name == "sms" and settings.get("number") is not None:
            number = self.string(f"{where}.number", settings["number"])
            if number is not None and not is_e164_number(number):
                self.bad(f"{where}.number", "not an E.164 number (+ then 8 to 15 digits)")
        if name == "push":
            subscriptions = self.subscriptions(f"{where}.subscriptions", settings.get("subscriptions", []))
        return ChannelPreference(bool(enabled), address, number, subscriptions)

    def subscriptions(self, where: str, value: Any) -> tuple[PushSubscription, ...]:
        if not isinstance(value, list):
            self.bad(where, "must be a list")
            return ()
        if len(value) > MAX_PUSH_SUBSCRIPTIONS:
            self.bad(where, f"at most {MAX_PUSH_SUBSCRIPTIONS} subscriptions")
            return ()
        found: list[PushSubscription] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            one = self.subscription(f"{where}[{index}]", item)
            if one is None:
                continue
            if one.endpoint in seen:
                self.bad(f"{where}[{index}].endpoint", f"the same endpoint as [{seen[one.endpoint]}]")
                continue
            seen[one.endpoint] = index
            found.append(one)
        return tuple(found)

    def subscription(self, where: str, value: Any) -> PushSubscription | None:
        item = self.obj(where, value)
        if item is None:
            return None
        self.unknown_fields(where, item, frozenset({"endpoint", "expirationTime", "keys"}))
        before = len(self.problems)
        endpoint = self.string(f"{where}.endpoint", item.get("endpoint"))
        if endpoint is not None and not _is_push_endpoint(endpoint):
            self.bad(f"{where}.endpoint", "must be an https URL")
        expiration = item.get("expirationTime")
        if expiration is not None and not _is_number(expiration):
            self.bad(f"{where}.expirationTime", "must be a number or null")
        keys = self.obj(f"{where}.keys", item.get("keys"))
        p256dh = auth = None
        if keys is not None:
            self.unknown_fields(f"{where}.keys", keys, frozenset({"p256dh", "auth"}))
            p256dh = self.key(f"{where}.keys.p256dh", keys.get("p256dh"), P256DH_BYTES)
            auth = self.key(f"{where}.keys.auth", keys.get("auth"), AUTH_BYTES)
        if len(self.problems) > before or endpoint is None or p256dh is None or auth is None:
            return None
        return PushSubscription(endpoint, p256dh, auth, None if expiration is None else float(expiration))

    def key(self, where: str, value: Any, size: int) -> str | None:
        text = self.string(where, value)
        if text is None:
            return None
        raw = _decode_base64url(text)
        if raw is None:
            self.bad(where, "must be base64url")
            return None
        if len(raw) != size:
            self.bad(where, f"must decode to {size} bytes, not {len(raw)}")
            return None
        if size == P256DH_BYTES and raw[0] != 4:
            self.bad(where, "must be an uncompressed P-256 point")
            return None
        return text

    def quiet_hours(self, value: Any) -> QuietHours | None:
        if value is None:
            return None
        window = self.obj("quiet_hours", value)
        if window is None:
            return None
        self.unknown_fields("quiet_hours", window, frozenset({"start", "end", "time_zone"}))
        start = self.hhmm("quiet_hours.start", window.get("start"))
        end = self.hhmm("quiet_hours.end", window.get("end"))
        zone = self.string("quiet_hours.time_zone", window.get("time_zone"))
        if zone is not None and zone not in _known_zones():
            self.bad("quiet_hours.time_zone", f"unknown time zone {zone[:64]!r}")
            zone = None
        if start is None or end is None or zone is None:
            return None
        return QuietHours(start, end, zone)

    def hhmm(self, where: str, value: Any) -> time | None:
        text = self.string(where, value)
        if text is None:
            return None
        match = _HHMM.fullmatch(text)
        if match is None:
            self.bad(where, "must be a 24-hour time HH:MM")
            return None
        return time(int(match.group(1)), int(match.group(2)))

    def caps(self, value: Any) -> Caps | None:
        caps = self.obj("caps", value)
        if caps is None:
            return None
        self.unknown_fields("caps", caps, frozenset({"per_hour", "per_day"}))
        counts: dict[str, int | None] = {}
        for name in ("per_hour", "per_day"):
            count = caps.get(name, getattr(self.default_caps, name))
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                self.bad(f"caps.{name}", "must be a whole number >= 0 or null")
                count = None
            counts[name] = count
        return Caps(**counts)

    def locale(self, value: Any) -> str | None:
        if value is None:
            return None
        text = self.string("locale", value)
        if text is not None and not _LOCALE.fullmatch(text):
            self.bad("locale", "must be a language tag such as 'fr' or 'pt-BR'")
            return None
        return text


def _is_push_endpoint(value: str) -> bool:
    if len(value) > MAX_ENDPOINT_LENGTH or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc


def preference_problems(body: Any, default_caps: Caps) -> list[str]:
    """Every problem of *body* as ``field: what is wrong``, in document order; empty if valid."""
    parser = _Parser(default_caps)
    parser.document(body)
    return parser.problems


def parse_preferences(body: Any, default_caps: Caps) -> Preferences:
    """
    Validate a PUT body (the decoded JSON) into :class:`Preferences`.

    :param body: The decoded JSON document.
    :param default_caps: Caps for a document without ``caps`` (or with one of them left out).
    :raise ApiError: ``BAD_REQUEST`` naming each bad field, ``; ``-separated.
    """
    parser = _Parser(default_caps)
    preferences = parser.document(body)
    if preferences is None:
        raise ApiError("BAD_REQUEST", "; ".join(parser.problems))
    return preferences
