"""Tests for :mod:`streamsrv.notifications.templates`: sandboxed, strict, per channel and locale."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import setuptools
from twisted.trial import unittest

from streamsrv.errors import ApiError
from streamsrv.notifications.templates import (
    MAX_RENDERED_CHARS,
    TemplateSet,
    default_templates_dir,
    locale_candidates,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "etc" / "notifications"

EMAIL = (
    "{% block subject %}Hello {{ name }}\n  again{% endblock %}"
    "{% block text %}Hi {{ name }} & co{% endblock %}"
    "{% block html %}<p>Hi {{ name }}</p>{% endblock %}"
)


def error_of(callable_: Any, *args: Any) -> str:
    """The BAD_REQUEST message *callable_* raises."""
    try:
        callable_(*args)
    except ApiError as e:
        assert e.code == "BAD_REQUEST", e.code
        return str(e.message)
    raise AssertionError("no ApiError")


class RenderTests(unittest.TestCase):
    """Rendering each channel."""

    def test_email_blocks(self) -> None:
        """An email renders subject (one line), text (not escaped) and html (escaped)."""
        t = TemplateSet({"hello.email.j2": EMAIL})
        r = t.render("hello", "email", None, {"name": "<Ana>"})
        self.assertEqual(r.subject, "Hello <Ana> again")
        self.assertEqual(r.text, "Hi <Ana> & co")
        self.assertEqual(r.html, "<p>Hi &lt;Ana&gt;</p>")
        self.assertEqual((r.template, r.channel, r.locale, r.title), ("hello", "email", None, None))

    def test_subject_cannot_inject_headers(self) -> None:
        """Newlines in data never reach the subject line."""
        t = TemplateSet({"hello.email.j2": EMAIL})
        r = t.render("hello", "email", None, {"name": "x\r\nBcc: victim@example.com"})
        assert r.subject is not None
        self.assertNotIn("\n", r.subject)
        self.assertNotIn("\r", r.subject)

    def test_push_and_websocket(self) -> None:
        """Push and websocket render title and text."""
        source = "{% block title %}T {{ a }}{% endblock %}{% block text %} body {{ a }} {% endblock %}"
        t = TemplateSet({"n.push.j2": source, "n.websocket.j2": source})
        for channel in ("push", "websocket"):
            r = t.render("n", channel, None, {"a": 1})
            self.assertEqual((r.title, r.text, r.subject, r.html), ("T 1", "body 1", None, None))

    def test_sms_whole_file(self) -> None:
        """An SMS is the whole file, stripped, not escaped."""
        t = TemplateSet({"n.sms.j2": "\n Code <{{ code }}>\n"})
        self.assertEqual(t.render("n", "sms", None, {"code": 42}).text, "Code <42>")

    def test_locale_then_default(self) -> None:
        """The user's locale is tried first (region, then language), then the default file."""
        t = TemplateSet({"n.sms.j2": "default", "n.fr.sms.j2": "fr", "n.pt-BR.sms.j2": "pt-br"})
        self.assertEqual(t.render("n", "sms", "fr", {}).text, "fr")
        self.assertEqual(t.render("n", "sms", "fr-CA", {}).text, "fr")
        self.assertEqual(t.render("n", "sms", "FR", {}).locale, "fr")
        self.assertEqual(t.render("n", "sms", "pt-br", {}).text, "pt-br")
        self.assertEqual(t.render("n", "sms", "de", {}).text, "default")
        self.assertEqual(t.render("n", "sms", None, {}).locale, None)
        self.assertEqual(t.render("n", "sms", "../x", {}).text, "default")

    def test_locale_candidates(self) -> None:
        """Candidates go from most to least specific, ending with the default."""
        self.assertEqual(locale_candidates("pt-BR"), ("pt-br", "pt", None))
        self.assertEqual(locale_candidates(None), (None,))
        self.assertEqual(locale_candidates("not a locale"), (None,))

    def test_names_and_channels(self) -> None:
        """names() and channels() describe what the directory holds."""
        t = TemplateSet({"a.sms.j2": "", "a.fr.email.j2": "", "b.push.j2": "", "README": "x"})
        self.assertEqual(t.names(), ("a", "b"))
        self.assertEqual(t.channels("a"), ("sms",))
        self.assertEqual(t.variants(), (("a", None, "sms"), ("a", "fr", "email"), ("b", None, "push")))


class RenderErrorTests(unittest.TestCase):
    """What a send must be refused for: a clear 400, no path, no trace."""

    def test_unknown_template(self) -> None:
        """An unknown name and a known name without the channel are told apart."""
        t = TemplateSet({"n.sms.j2": "x"})
        self.assertEqual(error_of(t.render, "nope", "sms", None, {}), "unknown template 'nope'")
        self.assertEqual(error_of(t.render, "n", "email", None, {}), "template 'n' has no 'email' version")

    def test_missing_variables_named(self) -> None:
        """Every top-level variable the data lacks is named."""
        t = TemplateSet(
            {
                "n.sms.j2": "{{ artist }} {{ album }} {% set x = 1 %}{{ x }}"
                "{% for i in [1] %}{{ i }}{% endfor %}"
            }
        )
        self.assertEqual(
            error_of(t.render, "n", "sms", None, {}), "template 'n.sms' needs data.album, data.artist"
        )

    def test_missing_attribute(self) -> None:
        """A nested value the data lacks is an error naming it, not an empty string."""
        t = TemplateSet({"n.sms.j2": "{{ track.title }}"})
        message = error_of(t.render, "n", "sms", None, {"track": {}})
        self.assertIn("needs a value the data lacks", message)
        self.assertIn("'title'", message)

    def test_sandbox(self) -> None:
        """A template reaching for Python internals is refused by the sandbox."""
        for source in (
            "{{ ''.__class__.__mro__ }}",
            "{{ data.__class__ }}",
            "{{ cycler.__init__.__globals__ }}",
            "{{ x.append(1) }}",
        ):
            t = TemplateSet({"n.sms.j2": source})
            message = error_of(t.render, "n", "sms", None, {"data": {}, "x": []})
            self.assertTrue(message.startswith("template 'n.sms' "), message)
            self.assertNotIn("/", message)
            self.assertNotIn("Traceback", message)

    def test_syntax_error(self) -> None:
        """A broken template names its line, not its path."""
        t = TemplateSet({"n.sms.j2": "ok\n{% if %}"})
        message = error_of(t.render, "n", "sms", None, {})
        self.assertIn("is broken", message)
        self.assertIn("line 2", message)

    def test_data_error(self) -> None:
        """An operation failing on the data is a 400 naming the error type only."""
        t = TemplateSet({"n.sms.j2": "{{ a / b }}"})
        self.assertEqual(
            error_of(t.render, "n", "sms", None, {"a": 1, "b": 0}),
            "template 'n.sms' failed on the data: ZeroDivisionError",
        )

    def test_missing_block(self) -> None:
        """An email template without an html block is refused."""
        t = TemplateSet({"n.email.j2": "{% block subject %}s{% endblock %}{% block text %}t{% endblock %}"})
        self.assertEqual(error_of(t.render, "n", "email", None, {}), "template 'n.email' has no 'html' block")

    def test_too_large(self) -> None:
        """A part longer than MAX_RENDERED_CHARS is refused."""
        t = TemplateSet({"n.sms.j2": "{{ 'x' * n }}"})
        self.assertIn("more than", error_of(t.render, "n", "sms", None, {"n": MAX_RENDERED_CHARS + 1}))

    def test_validate_checks_every_locale(self) -> None:
        """validate() fails when a locale variant needs data the default does not."""
        t = TemplateSet({"n.sms.j2": "{{ a }}", "n.fr.sms.j2": "{{ a }} {{ b }}"})
        t.validate("n", ("sms",), {"a": 1, "b": 2})
        self.assertEqual(error_of(t.validate, "n", ("sms",), {"a": 1}), "data: template 'n' needs data.b")
        self.assertEqual(error_of(t.validate, "n", ("push",), {"a": 1}), "template 'n' has no 'push' version")

    def test_validate_names_every_missing_variable_at_once(self) -> None:
        """Variables missing from different channels, locales and blocks come in one error naming data."""
        t = TemplateSet(
            {
                "n.sms.j2": "{{ a }}",
                "n.email.j2": "{% block subject %}{{ b }}{% endblock %}{% block text %}{{ c }}{% endblock %}"
                "{% block html %}{{ d }}{% endblock %}",
                "n.fr.sms.j2": "{{ e }}",
            }
        )
        self.assertEqual(
            error_of(t.validate, "n", ("sms", "email"), {}),
            "data: template 'n' needs data.a, data.b, data.c, data.d, data.e",
        )

    def test_validate_names_nested_values_at_once(self) -> None:
        """Nested values the data lacks, in any block, branch or loop, are named by their path at once."""
        t = TemplateSet(
            {
                "n.sms.j2": "{{ a }} {{ release.title }}{% if release.date %}!{% endif %}"
                "{{ release.by[0].name }}",
                "n.email.j2": "{% block subject %}{{ release.title }}{% endblock %}"
                "{% block text %}{% for x in release.tracks %}{{ x }}{% endfor %}"
                "{{ release.label | default('-') }}{% endblock %}"
                "{% block html %}{{ release.cover }}{% endblock %}",
            }
        )
        self.assertEqual(
            error_of(t.validate, "n", ("sms", "email"), {"release": {"by": [{}]}}),
            "data: template 'n' needs data.a, data.release.title, data.release.date, "
            "data.release.by[0].name, data.release.tracks, data.release.cover",
        )
        full = {
            "a": 1,
            "release": {"title": "T", "date": 1, "by": [{"name": "x"}], "tracks": [], "cover": "c"},
        }
        t.validate("n", ("sms", "email"), full)

    def test_validate_bounds_the_message(self) -> None:
        """However many values are missing and however long the data's keys, the message stays bounded."""
        key = "k" * 5000
        source = "".join(f"{{{{ v{i} }}}}{{{{ d['{key}'].x{i} }}}}" for i in range(100))
        message = error_of(TemplateSet({"n.sms.j2": source}).validate, "n", ("sms",), {"d": {key: {}}})
        self.assertTrue(message.startswith("data: template 'n' needs data.v0, data.v1, "), message[:80])
        self.assertTrue(message.endswith(" and 150 more"), message[-40:])
        self.assertLess(len(message), 50 * 210)

    def test_validate_names_every_failing_variant(self) -> None:
        """With every value present, each variant that still fails is named in the one error."""
        t = TemplateSet(
            {
                "n.sms.j2": "{{ a.append(1) }}",
                "n.push.j2": "{% block title %}{{ 1 / z }}{% endblock %}{% block text %}{% endblock %}",
            }
        )
        message = error_of(t.validate, "n", ("sms", "push"), {"a": [], "z": 0})
        self.assertIn("template 'n.sms' does something the sandbox forbids", message)
        self.assertIn("template 'n.push' failed on the data: ZeroDivisionError", message)


class ShippedTemplatesTests(unittest.TestCase):
    """The templates in etc/notifications."""

    def test_every_name_and_channel_shipped(self) -> None:
        """The four templates exist for the four channels, plus the French new-release email."""
        t = TemplateSet.load(SHIPPED)
        self.assertEqual(t.names(), ("account-security", "alert-firing", "alert-resolved", "new-release"))
        for name in t.names():
            self.assertEqual(t.channels(name), ("email", "push", "sms", "websocket"))
        self.assertIn(("new-release", "fr", "email"), t.variants())

    def test_french_email(self) -> None:
        """The French new-release email is chosen for locale fr."""
        t = TemplateSet.load(SHIPPED)
        data = json.loads((SHIPPED / "new-release.sample.json").read_text())
        r = t.render("new-release", "email", "fr", data)
        self.assertEqual(r.locale, "fr")
        self.assertEqual(r.subject, "Nouveauté de Miles Davis : Kind of Blue")

    def test_default_dir_is_checkout(self) -> None:
        """From a checkout the default directory is etc/notifications."""
        self.assertEqual(default_templates_dir(), SHIPPED)

    def test_setup_ships_templates(self) -> None:
        """setup.py's data_files install every file of etc/notifications where default_templates_dir looks."""
        captured: dict[str, Any] = {}
        original = setuptools.setup
        setuptools.setup = lambda **kwargs: captured.update(kwargs)  # type: ignore[assignment]
        try:
            runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
        finally:
            setuptools.setup = original
        shipped = dict(captured["data_files"])["share/streamsrv/notifications"]
        self.assertEqual(sorted(shipped), sorted(f"etc/notifications/{p.name}" for p in SHIPPED.iterdir()))
        self.assertIn("jinja2>=3.1", captured["install_requires"])
