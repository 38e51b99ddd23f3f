"""Tests for :mod:`streamsrv.notifications.preferences`: the preferences document."""

from __future__ import annotations

import base64
from datetime import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.errors import ApiError
from streamsrv.notifications.caps import Caps
from streamsrv.notifications.preferences import (
    CHANNELS,
    MAX_PUSH_SUBSCRIPTIONS,
    ChannelPreference,
    Preferences,
    PushSubscription,
    default_preferences,
    is_e164_number,
    is_email_address,
    parse_preferences,
    preference_problems,
)
from streamsrv.notifications.quiet import QuietHours

CAPS = Caps(4, 12)


def b64u(data: bytes) -> str:
    """Unpadded base64url, as browsers write subscription keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


P256DH = b64u(b"\x04" + bytes(range(64)))
AUTH = b64u(bytes(range(16)))


def subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc", **keys: Any) -> dict[str, Any]:
    """A browser's PushSubscription JSON."""
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": P256DH, "auth": AUTH, **keys}}


FULL: dict[str, Any] = {
    "channels": {
        "email": {"enabled": True, "address": "ana@example.com"},
        "sms": {"enabled": False, "number": "+33612345678"},
        "push": {"enabled": True, "subscriptions": [subscription()]},
        "websocket": {"enabled": True},
    },
    "quiet_hours": {"start": "22:00", "end": "07:30", "time_zone": "Europe/Paris"},
    "caps": {"per_hour": 2, "per_day": 5},
    "locale": "fr",
}


def problems_of(body: Any) -> str:
    """The ApiError message parse_preferences raises for *body*."""
    try:
        parse_preferences(body, CAPS)
    except ApiError as e:
        assert e.code == "BAD_REQUEST"
        return str(e.message)
    raise AssertionError("no error")


class DefaultTests(unittest.TestCase):
    """A user who never set any."""

    def test_websocket_only(self) -> None:
        """The defaults enable websocket and nothing else, with the given caps and no quiet hours."""
        prefs = default_preferences(CAPS)
        self.assertEqual(prefs.enabled_channels(), ("websocket",))
        self.assertEqual(prefs.caps, CAPS)
        self.assertIsNone(prefs.quiet_hours)
        self.assertIsNone(prefs.locale)

    def test_empty_document_is_defaults(self) -> None:
        """``{}`` parses to the defaults."""
        self.assertEqual(parse_preferences({}, Caps(1, 2)), default_preferences(Caps(1, 2)))

    def test_defaults_to_json(self) -> None:
        """The defaults' document lists every channel."""
        doc = default_preferences(CAPS).to_json()
        self.assertEqual(set(doc["channels"]), set(CHANNELS))
        self.assertEqual(doc["channels"]["websocket"], {"enabled": True})
        self.assertEqual(doc["caps"], {"per_hour": 4, "per_day": 12})
        self.assertIsNone(doc["quiet_hours"])


class ParseTests(unittest.TestCase):
    """Valid documents."""

    def test_full_document(self) -> None:
        """The DESIGN.md example parses into its values."""
        prefs = parse_preferences(FULL, CAPS)
        self.assertEqual(prefs.email, ChannelPreference(True, address="ana@example.com"))
        self.assertEqual(prefs.sms, ChannelPreference(False, number="+33612345678"))
        self.assertEqual(
            prefs.push.subscriptions,
            (PushSubscription("https://fcm.googleapis.com/fcm/send/abc", P256DH, AUTH),),
        )
        self.assertEqual(prefs.quiet_hours, QuietHours(time(22, 0), time(7, 30), "Europe/Paris"))
        self.assertEqual(prefs.caps, Caps(2, 5))
        self.assertEqual(prefs.locale, "fr")
        self.assertEqual(prefs.enabled_channels(), ("email", "push", "websocket"))

    def test_round_trip(self) -> None:
        """to_json gives the document back, and parsing it again gives an equal value."""
        prefs = parse_preferences(FULL, CAPS)
        self.assertEqual(prefs.to_json(), FULL)
        self.assertEqual(parse_preferences(prefs.to_json(), Caps(9, 9)), prefs)

    def test_left_out_channel_takes_default(self) -> None:
        """A document naming only email keeps websocket on."""
        prefs = parse_preferences({"channels": {"email": {"enabled": True, "address": "a@b.io"}}}, CAPS)
        self.assertTrue(prefs.websocket.enabled)
        self.assertFalse(prefs.sms.enabled)

    def test_left_out_enabled_takes_default(self) -> None:
        """A channel object without ``enabled`` keeps that channel's default (websocket on, email off)."""
        prefs = parse_preferences({"channels": {"websocket": {}, "email": {"address": "a@b.io"}}}, CAPS)
        self.assertTrue(prefs.websocket.enabled)
        self.assertFalse(prefs.email.enabled)
        self.assertEqual(prefs.email.address, "a@b.io")

    def test_enabled_without_address(self) -> None:
        """A channel may be on without an address (its deliveries are suppressed no_address)."""
        prefs = parse_preferences({"channels": {"email": {"enabled": True}, "push": {"enabled": True}}}, CAPS)
        self.assertTrue(prefs.email.enabled)
        self.assertFalse(prefs.email.has_address("email"))
        self.assertFalse(prefs.push.has_address("push"))
        self.assertTrue(prefs.websocket.has_address("websocket"))

    def test_partial_caps_and_null(self) -> None:
        """A cap left out takes the default; null means no cap."""
        prefs = parse_preferences({"caps": {"per_day": None}}, CAPS)
        self.assertEqual(prefs.caps, Caps(4, None))

    def test_padded_keys_accepted(self) -> None:
        """Padded base64url keys are accepted as well."""
        padded = base64.urlsafe_b64encode(bytes(16)).decode()
        body = {"channels": {"push": {"enabled": True, "subscriptions": [subscription(auth=padded)]}}}
        self.assertEqual(parse_preferences(body, CAPS).push.subscriptions[0].auth, padded)

    def test_channel_lookup(self) -> None:
        """channel() names only the four channels."""
        prefs = default_preferences(CAPS)
        self.assertIs(prefs.channel("websocket"), prefs.websocket)
        self.assertRaises(KeyError, prefs.channel, "fax")


class ProblemTests(unittest.TestCase):
    """Invalid documents: 400 naming each bad field."""

    def test_every_problem_named(self) -> None:
        """Two bad fields are both named, in document order, in one message."""
        message = problems_of(
            {
                "channels": {"email": {"enabled": True, "address": "not-an-address"}},
                "quiet_hours": {"start": "22:00", "end": "07:30", "time_zone": "Mars/Base"},
            }
        )
        self.assertEqual(
            message,
            "channels.email.address: not an email address; "
            "quiet_hours.time_zone: unknown time zone 'Mars/Base'",
        )

    def test_not_an_object(self) -> None:
        """A body that is not an object is refused."""
        self.assertEqual(problems_of([1]), "body: must be a JSON object")

    def test_unknown_fields(self) -> None:
        """Unknown fields at any level are named (a typo never drops a setting silently)."""
        message = problems_of(
            {"chanels": {}, "channels": {"fax": {}, "email": {"enabled": True, "adress": "a@b.io"}}}
        )
        self.assertIn("chanels: unknown field", message)
        self.assertIn("channels.fax: unknown field", message)
        self.assertIn("channels.email.adress: unknown field", message)

    def test_bad_sms_number(self) -> None:
        """A number that is not E.164 is named."""
        self.assertIn(
            "channels.sms.number: not an E.164 number", problems_of({"channels": {"sms": {"number": "0612"}}})
        )

    def test_enabled_must_be_bool(self) -> None:
        """``enabled`` must be a boolean."""
        self.assertIn(
            "channels.websocket.enabled: must be true or false",
            problems_of({"channels": {"websocket": {"enabled": 1}}}),
        )

    def test_times(self) -> None:
        """Quiet-hour times must be HH:MM."""
        message = problems_of({"quiet_hours": {"start": "24:00", "end": "7:30", "time_zone": "UTC"}})
        self.assertIn("quiet_hours.start: must be a 24-hour time HH:MM", message)
        self.assertIn("quiet_hours.end: must be a 24-hour time HH:MM", message)

    def test_zone_not_a_path(self) -> None:
        """Zone names that are paths or empty are unknown zones, not file lookups."""
        for zone in ("../../etc/passwd", "", "europe/paris", "/usr/share/zoneinfo/UTC"):
            self.assertIn(
                "quiet_hours.time_zone: unknown time zone",
                problems_of({"quiet_hours": {"start": "01:00", "end": "02:00", "time_zone": zone}}),
            )

    def test_caps(self) -> None:
        """Caps must be whole numbers >= 0 (not negative, not fractional, not booleans)."""
        message = problems_of({"caps": {"per_hour": -1, "per_day": 1.5}})
        self.assertIn("caps.per_hour: must be a whole number >= 0 or null", message)
        self.assertIn("caps.per_day: must be a whole number >= 0 or null", message)
        self.assertIn("caps.per_hour", problems_of({"caps": {"per_hour": True}}))

    def test_locale(self) -> None:
        """A locale that is not a language tag (e.g. a path) is refused."""
        self.assertIn("locale: must be a language tag", problems_of({"locale": "../fr"}))
        self.assertEqual(parse_preferences({"locale": "pt-BR"}, CAPS).locale, "pt-BR")

    def test_push_subscription_problems(self) -> None:
        """Endpoint, key encodings and key sizes are checked, each named with its index."""
        subs = [
            subscription("http://push.example/x"),
            subscription(p256dh=b64u(b"\x04" + bytes(10))),
            subscription(auth="not base64!"),
            subscription(p256dh=b64u(b"\x02" + bytes(64))),
            {"endpoint": "https://p.example/1"},
        ]
        message = problems_of({"channels": {"push": {"enabled": True, "subscriptions": subs}}})
        where = "channels.push.subscriptions"
        self.assertIn(f"{where}[0].endpoint: must be an https URL", message)
        self.assertIn(f"{where}[1].keys.p256dh: must decode to 65 bytes, not 11", message)
        self.assertIn(f"{where}[2].keys.auth: must be base64url", message)
        self.assertIn(f"{where}[3].keys.p256dh: must be an uncompressed P-256 point", message)
        self.assertIn(f"{where}[4].keys: must be an object", message)

    def test_duplicate_endpoint(self) -> None:
        """The same endpoint twice is named."""
        message = problems_of({"channels": {"push": {"subscriptions": [subscription(), subscription()]}}})
        self.assertIn("channels.push.subscriptions[1].endpoint: the same endpoint as [0]", message)

    def test_too_many_subscriptions(self) -> None:
        """More than MAX_PUSH_SUBSCRIPTIONS is refused."""
        subs = [subscription(f"https://p.example/{i}") for i in range(MAX_PUSH_SUBSCRIPTIONS + 1)]
        self.assertIn("at most", problems_of({"channels": {"push": {"subscriptions": subs}}}))

    def test_problems_list(self) -> None:
        """preference_problems lists without raising; a valid document has none."""
        self.assertEqual(preference_problems(FULL, CAPS), [])
        self.assertEqual(preference_problems({"locale": 3}, CAPS), ["locale: must be a string"])


class EmailRuleTests(unittest.TestCase):
    """The documented email address rule."""

    def test_accepted(self) -> None:
        """Ordinary addresses, plus tags, subdomains and punycode domains are accepted."""
        for address in (
            "ana@example.com",
            "a.b+tag@mail.example.co.uk",
            "x@xn--bcher-kva.example",
            "o'brien@ex-ample.io",
        ):
            self.assertTrue(is_email_address(address), address)

    def test_refused(self) -> None:
        """Malformed, dotless-domain, IP-literal, quoted, non-ASCII and overlong addresses are refused."""
        for address in (
            "",
            "ana",
            "@example.com",
            "ana@",
            "ana@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@b@example.com",
            "ana@[127.0.0.1]",
            '"a b"@example.com',
            "ana@exa_mple.com",
            "ana@-example.com",
            "ana@example.c0m",
            "ana@exämple.com",
            "ana @example.com",
            "a" * 65 + "@example.com",
            "a@" + ("b" * 60 + ".") * 5 + "com",
            "ana@example.com\n",
        ):
            self.assertFalse(is_email_address(address), address)

    @settings(derandomize=True, deadline=None)
    @given(st.text(max_size=80))
    def test_never_accepts_whitespace_or_non_ascii(self, text: str) -> None:
        """Whatever is accepted is ASCII without whitespace and has exactly one @."""
        if is_email_address(text):
            self.assertTrue(text.isascii())
            self.assertFalse(any(c.isspace() for c in text))
            self.assertEqual(text.count("@"), 1)


class E164Tests(unittest.TestCase):
    """E.164 numbers."""

    def test_examples(self) -> None:
        """+ then 8 to 15 digits, the first not 0."""
        self.assertTrue(is_e164_number("+33612345678"))
        self.assertTrue(is_e164_number("+12025550123"))
        for number in (
            "33612345678",
            "+0612345678",
            "+1234567",
            "+1234567890123456",
            "+33 6 12",
            "+3361234567a",
        ):
            self.assertFalse(is_e164_number(number), number)

    @settings(derandomize=True, deadline=None)
    @given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
    def test_every_valid_number(self, number: str) -> None:
        """Every well-formed number is accepted and round-trips through a document."""
        self.assertTrue(is_e164_number(number))
        prefs = parse_preferences({"channels": {"sms": {"enabled": True, "number": number}}}, CAPS)
        self.assertEqual(prefs.to_json()["channels"]["sms"]["number"], number)


class RoundTripTests(unittest.TestCase):
    """Generated valid documents survive to_json and parse."""

    @settings(derandomize=True, deadline=None)
    @given(
        st.booleans(),
        st.booleans(),
        st.none()
        | st.tuples(
            st.integers(0, 23),
            st.integers(0, 59),
            st.integers(0, 23),
            st.integers(0, 59),
            st.sampled_from(["UTC", "Europe/Paris", "Pacific/Chatham"]),
        ),
        st.none() | st.integers(0, 1000),
        st.none() | st.sampled_from(["fr", "en-GB", "pt-BR"]),
    )
    def test_round_trip(
        self, email: bool, sms: bool, quiet: Any, per_hour: int | None, locale: str | None
    ) -> None:
        """parse(to_json(p)) == p for generated documents."""
        prefs = Preferences(
            email=ChannelPreference(email, address="u@example.org" if email else None),
            sms=ChannelPreference(sms, number="+4915112345678"),
            push=ChannelPreference(False),
            websocket=ChannelPreference(True),
            caps=Caps(per_hour, 7),
            quiet_hours=None
            if quiet is None
            else QuietHours(time(quiet[0], quiet[1]), time(quiet[2], quiet[3]), quiet[4]),
            locale=locale,
        )
        self.assertEqual(parse_preferences(prefs.to_json(), CAPS), prefs)
