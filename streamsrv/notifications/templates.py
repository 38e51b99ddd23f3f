# -*- test-case-name: tests.test_notify_templates -*-
"""Notification templates: sandboxed Jinja2 files per template name, channel and locale.

A directory (``STREAMSRV_NOTIFY_TEMPLATES_DIR``, by default the packaged
``etc/notifications/``, see :func:`default_templates_dir`) holds
``{name}.{channel}.j2`` and, optionally, ``{name}.{locale}.{channel}.j2``,
and one ``{name}.sample.json`` of sample data per name.  :meth:`TemplateSet.load`
reads them all once (blocking: call it off the reactor thread, or before it
runs); rendering is then pure CPU over memory.  What each channel's file
holds:

- ``email``: blocks ``subject`` (one line), ``text`` and ``html`` (HTML auto-escaped);
- ``push`` and ``websocket``: blocks ``title`` (one line) and ``text``;
- ``sms``: the whole file is the text.

Blocks are rendered on their own, so a ``{% set %}`` outside every block is
not seen inside them (use a macro, or set it in each block).  Templates run
in Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`: a variable the data lacks is an error, not
an empty string.  This module must never let a template reach Python
internals, never put a file-system path or a stack trace into an error, and
never read files while rendering.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from jinja2 import DictLoader, StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing as jinja_missing

from streamsrv.errors import ApiError

__all__ = [
    "BLOCKS",
    "MAX_RENDERED_CHARS",
    "Rendered",
    "TemplateProblem",
    "TemplateSet",
    "default_templates_dir",
    "locale_candidates",
    "parse_template_file",
]

#: The blocks each channel's template must define (``sms``: none, the whole file is the text).
BLOCKS: Final[Mapping[str, tuple[str, ...]]] = {
    "email": ("subject", "text", "html"),
    "push": ("title", "text"),
    "websocket": ("title", "text"),
    "sms": (),
}

#: The longest part (subject, text, html…) a template may render, in characters.
MAX_RENDERED_CHARS: Final = 512 * 1024

#: Most missing values one error names, and the longest path shown (paths hold the data's keys).
MAX_NAMED: Final = 50
MAX_PATH_CHARS: Final = 200

SAMPLE_SUFFIX: Final = ".sample.json"
TEMPLATE_SUFFIX: Final = ".j2"

_NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
_LOCALE = r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}"
_TEMPLATE_FILE = re.compile(rf"({_NAME})(?:\.({_LOCALE}))?\.(email|push|websocket|sms)\.j2")

#: Where the templates live in a checkout, and where ``setup.py``'s data_files install them.
_CHECKOUT_DIR: Final = Path(__file__).resolve().parents[2] / "etc" / "notifications"
_INSTALLED_DIR: Final = Path("share") / "streamsrv" / "notifications"


def default_templates_dir() -> Path:
    """
    The packaged templates: ``etc/notifications/`` of a checkout (or an
    editable install), else ``<prefix>/share/streamsrv/notifications`` where
    ``pip install`` puts them.
    """
    if _CHECKOUT_DIR.is_dir():
        return _CHECKOUT_DIR
    return Path(sys.prefix) / _INSTALLED_DIR


def locale_candidates(locale: str | None) -> tuple[str | None, ...]:
    """
    The locales to try, most specific first, ending with ``None`` (the default file).

    ``pt-BR`` -> ``("pt-br", "pt", None)``; locales are compared case-insensitively.
    """
    if not locale or not re.fullmatch(_LOCALE, locale):
        return (None,)
    parts = locale.lower().split("-")
    return (*("-".join(parts[:n]) for n in range(len(parts), 0, -1)), None)


@dataclass(frozen=True)
class Rendered:
    """
    One rendered template.

    :ivar template: The template name (``new-release``).
    :ivar channel: ``email``, ``push``, ``websocket`` or ``sms``.
    :ivar locale: The locale of the file used, ``None`` for the default one.
    :ivar text: The plain text (email body, push or websocket text, the SMS).
    :ivar subject: ``email``: the subject, one line.
    :ivar html: ``email``: the HTML body, its values escaped.
    :ivar title: ``push`` and ``websocket``: the title, one line.
    """

    template: str
    channel: str
    locale: str | None
    text: str
    subject: str | None = None
    html: str | None = None
    title: str | None = None


def _one_line(text: str) -> str:
    """Whitespace (newlines included: no header injection) collapsed to single spaces."""
    return " ".join(text.split())


class TemplateProblem(Exception):
    """
    Why one template file does not render: what :meth:`TemplateSet.render`
    turns into a 400, and what ``streamsrv notify-template check`` prints.

    :ivar detail: What is wrong, e.g. ``needs data.album`` or ``is broken: …``
        (no file name, path or trace).
    :ivar line: The line of the template at fault, when known.
    """

    def __init__(self, detail: str, line: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.line = line


@dataclass(frozen=True)
class _Key:
    name: str
    locale: str | None
    channel: str

    @property
    def filename(self) -> str:
        middle = f".{self.locale}" if self.locale else ""
        return f"{self.name}{middle}.{self.channel}{TEMPLATE_SUFFIX}"


def parse_template_file(filename: str) -> tuple[str, str | None, str] | None:
    """``new-release.fr.email.j2`` -> ``("new-release", "fr", "email")``; ``None`` for other names."""
    match = _TEMPLATE_FILE.fullmatch(filename)
    if match is None:
        return None
    return match.group(1), match.group(2).lower() if match.group(2) else None, match.group(3)


def _template_line(error: BaseException) -> int | None:
    """The template line an exception raised while rendering comes from (innermost), if any."""
    line = None
    tb = error.__traceback__
    while tb is not None:
        names = tb.tb_frame.f_globals
        template = names.get("__jinja_template__")
        if template is not None:  # a frame of the compiled template: map its line back
            line = template.get_corresponding_lineno(tb.tb_lineno)
        elif "__jinja_exception__" in names:  # a frame Jinja2 rewrote to the template's line
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class TemplateSet:
    """The templates of one directory, in memory, rendered in a sandbox."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        """
        :param sources: File name -> template text.  Names that are not
            ``{name}[.{locale}].{channel}.j2`` are ignored (see :mod:`.templatecheck`).
        """
        self._keys: dict[tuple[str, str | None, str], _Key] = {}
        by_key: dict[str, str] = {}
        for filename, source in sources.items():
            parsed = parse_template_file(filename)
            if parsed is not None:
                key = _Key(*parsed)
                self._keys[parsed] = key
                by_key[key.filename] = source
        options: dict[str, Any] = {
            "loader": DictLoader(by_key),
            "undefined": StrictUndefined,
            "auto_reload": False,
        }
        self._text = ImmutableSandboxedEnvironment(autoescape=False, **options)
        self._html = ImmutableSandboxedEnvironment(autoescape=True, **options)
        # The same, noting each value the data lacks instead of stopping at the first (validate).
        options["undefined"] = _RecordingUndefined
        self._probe_text = ImmutableSandboxedEnvironment(autoescape=False, **options)
        self._probe_html = ImmutableSandboxedEnvironment(autoescape=True, **options)

    @classmethod
    def load(cls, directory: Path) -> TemplateSet:
        """
        Read every ``*.j2`` of *directory* (blocking).

        :raise OSError: If the directory cannot be read.
        """
        return cls({path.name: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.j2"))})

    def names(self) -> tuple[str, ...]:
        """The template names, sorted."""
        return tuple(sorted({key.name for key in self._keys.values()}))

    def variants(self) -> tuple[tuple[str, str | None, str], ...]:
        """Every (name, locale, channel) present, sorted (the default locale first)."""
        return tuple(sorted(self._keys, key=lambda k: (k[0], k[1] or "", k[2])))

    def channels(self, name: str) -> tuple[str, ...]:
        """The channels template *name* has a default-locale file for."""
        return tuple(sorted(c for (n, locale, c) in self._keys if n == name and locale is None))

    def render(self, name: str, channel: str, locale: str | None, data: Mapping[str, Any]) -> Rendered:
        """
        Render template *name* for *channel* in the user's *locale* (else the default).

        :param data: The notification's ``data`` (decoded JSON): its keys are the variables.
        :raise ApiError: ``BAD_REQUEST``: unknown template or channel, a
            variable *data* lacks (named), a sandbox violation, a broken template.
        """
        for candidate in locale_candidates(locale):
            key = self._keys.get((name, candidate, channel))
            if key is not None:
                return self._render(key, data)
        shown = name[:64]
        if name in self.names():
            raise ApiError("BAD_REQUEST", f"template {shown!r} has no {channel!r} version")
        raise ApiError("BAD_REQUEST", f"unknown template {shown!r}")

    def validate(self, name: str, channels: tuple[str, ...], data: Mapping[str, Any]) -> None:
        """
        Render every locale of *name* for *channels* with *data*, so a send
        that would fail later is refused before anything is queued.

        Every variable and nested value some variant needs and *data* lacks
        is named in one error (``data: template 'x' needs data.a,
        data.b.c``), so a client learns them all at once (the first
        :data:`MAX_NAMED`); then every variant that still fails is named.

        :raise ApiError: ``BAD_REQUEST``: a channel without a default file,
            the variables missing, or every failing variant (``; ``-separated).
        """
        keys: list[_Key] = []
        for channel in channels:
            default = self._keys.get((name, None, channel))
            if default is None:
                self.render(name, channel, None, data)  # raises: unknown template, or no such version
                continue
            keys.append(default)
            keys.extend(k for k in self._keys.values() if (k.name, k.channel) == (name, channel) and k.locale)
        missing: set[str] = set()
        for key in keys:
            try:
                missing |= self._undeclared(key)
            except TemplateSyntaxError:
                continue  # reported by the render below
        missing -= set(data)
        lacking: list[str] = []
        problems: list[str] = []
        paths = _value_paths(data)
        for key in keys:
            token = _LACKING.set([])
            try:
                self._attempt(key, data, probe=True)
            except TemplateProblem as e:
                problems.append(f"template {key.filename[: -len(TEMPLATE_SUFFIX)]!r} {e.detail}")
            finally:
                found = _LACKING.get()
                _LACKING.reset(token)
            lacking.extend(_lacking(found or (), paths, missing))
        needed = list(dict.fromkeys([*(f"data.{m}" for m in sorted(missing)), *lacking]))
        if needed:
            shown = ", ".join(path[:MAX_PATH_CHARS] for path in needed[:MAX_NAMED])
            more = f" and {len(needed) - MAX_NAMED} more" if len(needed) > MAX_NAMED else ""
            raise ApiError("BAD_REQUEST", f"data: template {name[:64]!r} needs {shown}{more}")
        if problems:
            raise ApiError("BAD_REQUEST", "; ".join(dict.fromkeys(problems)))

    def source(self, name: str, locale: str | None, channel: str) -> str:
        """The text of one variant (``KeyError`` if it is not in the set)."""
        filename = self._keys[(name, locale, channel)].filename
        return str(self._text.loader.get_source(self._text, filename)[0])  # type: ignore[union-attr]

    def attempt(self, name: str, locale: str | None, channel: str, data: Mapping[str, Any]) -> Rendered:
        """
        Render exactly this variant (no locale fallback), for checking.

        :raise KeyError: If the variant is not in the set.
        :raise TemplateProblem: With the line at fault when known.
        """
        return self._attempt(self._keys[(name, locale, channel)], data)

    def _render(self, key: _Key, data: Mapping[str, Any]) -> Rendered:
        what = f"template {key.filename[: -len(TEMPLATE_SUFFIX)]!r}"
        try:
            return self._attempt(key, data)
        except TemplateProblem as e:
            raise ApiError("BAD_REQUEST", f"{what} {e.detail}") from None

    def _attempt(self, key: _Key, data: Mapping[str, Any], probe: bool = False) -> Rendered:
        try:
            parts = self._parts(key, dict(data), probe)
        except TemplateProblem:
            raise
        except SecurityError as e:
            raise TemplateProblem(f"does something the sandbox forbids: {e.message}", _template_line(e))
        except UndefinedError as e:
            raise TemplateProblem(f"needs a value the data lacks: {e.message}", _template_line(e))
        except TemplateSyntaxError as e:
            raise TemplateProblem(f"is broken: {e.message} (line {e.lineno})", e.lineno)
        except TemplateError as e:
            raise TemplateProblem(f"failed: {e.message}", _template_line(e))
        except Exception as e:  # a filter or operator failing on the data: a TypeError, a ZeroDivisionError…
            raise TemplateProblem(f"failed on the data: {type(e).__name__}", _template_line(e))
        for part, value in parts.items():
            if len(value) > MAX_RENDERED_CHARS:
                raise TemplateProblem(f"renders a {part} of more than {MAX_RENDERED_CHARS} characters")
        if key.channel == "sms":
            return Rendered(key.name, key.channel, key.locale, text=parts["body"])
        return Rendered(
            key.name,
            key.channel,
            key.locale,
            text=parts["text"],
            subject=parts.get("subject"),
            html=parts.get("html"),
            title=parts.get("title"),
        )

    def _parts(self, key: _Key, data: dict[str, Any], probe: bool = False) -> dict[str, str]:
        text, html = (self._probe_text, self._probe_html) if probe else (self._text, self._html)
        text_template = text.get_template(key.filename)
        missing = sorted(self._undeclared(key) - set(data))
        if missing and not probe:
            raise TemplateProblem(f"needs {', '.join('data.' + m for m in missing)}")
        if key.channel == "sms":
            return {"body": text_template.render(data).strip()}
        parts: dict[str, str] = {}
        for block in BLOCKS[key.channel]:
            if block not in text_template.blocks:
                raise TemplateProblem(f"has no {block!r} block")
            template = html.get_template(key.filename) if block == "html" else text_template
            value = _render_block(template, block, data).strip()
            parts[block] = _one_line(value) if block in ("subject", "title") else value
        return parts

    def _undeclared(self, key: _Key) -> set[str]:
        """The top-level variables the template reads and does not set itself."""
        source = self._text.loader.get_source(self._text, key.filename)[0]  # type: ignore[union-attr]
        names = meta.find_undeclared_variables(self._text.parse(source))
        return {n for n in names if n not in self._text.globals}


#: While :meth:`TemplateSet.validate` renders: what :class:`_RecordingUndefined` noted.
_LACKING: ContextVar[list[tuple[Any, Any, str]] | None] = ContextVar(
    "streamsrv_template_lacking", default=None
)

#: How deep :func:`_value_paths` looks into the data.
_PATH_DEPTH: Final = 8


def _value_paths(data: Mapping[str, Any]) -> dict[int, str]:
    """``id(value)`` -> ``data.a.b[0]`` for every object and array in *data* (decoded JSON)."""
    paths: dict[int, str] = {}
    stack: list[tuple[Any, str, int]] = [(value, f"data.{key}", 1) for key, value in data.items()]
    while stack:
        value, path, depth = stack.pop()
        if not isinstance(value, dict | list) or depth > _PATH_DEPTH or id(value) in paths:
            continue
        paths[id(value)] = path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            stack.append((item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]", depth + 1))
    return paths


def _lacking(
    found: Iterable[tuple[Any, Any, str]], paths: Mapping[int, str], missing: set[str]
) -> Iterator[str]:
    """What :class:`_RecordingUndefined` noted, as ``data.release.title`` where the data says where."""
    for obj, name, message in found:
        if obj is jinja_missing:
            if (
                name not in missing
            ):  # a top-level name the static check did not see (a {% set %} outside blocks)
                yield f"data.{name}" if isinstance(name, str) else message
        elif id(obj) in paths:
            yield f"{paths[id(obj)]}.{name}" if isinstance(name, str) else f"{paths[id(obj)]}[{name!r}]"
        else:
            yield message


class _RecordingUndefined(Undefined):
    """
    A value the data lacks, noted (in :data:`_LACKING`) where
    :class:`~jinja2.StrictUndefined` would stop the render: printed,
    iterated, tested, or one attribute further; the render goes on as if it
    were empty, so every missing value of a template is found in one pass.
    An operation on it (``+``, a call) still fails, after noting it.  What
    the sandbox refuses (an unsafe attribute, also an undefined) fails at
    once, as under :class:`~jinja2.StrictUndefined`.
    """

    __slots__ = ()

    def _note(self) -> None:
        if not issubclass(self._undefined_exception, UndefinedError):  # the sandbox's refusal: as strict
            raise self._undefined_exception(self._undefined_message)
        found = _LACKING.get()
        if found is not None:
            found.append((self._undefined_obj, self._undefined_name, self._undefined_message))

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._note()
        raise self._undefined_exception(self._undefined_message)

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)
        self._note()
        return self

    def __getitem__(self, key: Any) -> Any:
        self._note()
        return self

    def __str__(self) -> str:
        self._note()
        return ""

    def __iter__(self) -> Iterator[Any]:
        self._note()
        return iter(())

    def __len__(self) -> int:
        self._note()
        return 0

    def __bool__(self) -> bool:
        self._note()
        return False


def _render_block(template: Template, block: str, data: dict[str, Any]) -> str:
    context = template.new_context(data)
    return "".join(template.blocks[block](context))
