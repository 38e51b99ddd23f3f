# -*- test-case-name: tests.test_config -*-
"""Read ``STREAMSRV_*`` assignments from an env file (``KEY=VALUE`` lines, shell-style quotes).

:func:`read_env_file` is the env-file layer of :func:`streamsrv.config.load_settings`.
It only reads the one file it is given, and must never echo a line (it may
hold a secret) nor let the file name another env file.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamsrv.config.settings import PREFIX
from streamsrv.config.values import RefusedError

__all__ = ["read_env_file"]

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def read_env_file(path: Path, problems: list[str]) -> dict[str, str]:
    """
    Read ``STREAMSRV_*`` assignments from an env file.

    :param path: The file.
    :param problems: Where to record an unreadable file or malformed lines.
    :return: ``{name: value}`` for every ``STREAMSRV_*`` name (other names
        are ignored); a later assignment wins over an earlier one.
    """
    try:
        text = path.expanduser().read_text(encoding="utf-8-sig")
    except OSError as e:
        problems.append(f"STREAMSRV_ENV_FILE: cannot read {str(path)!r}: {e.strerror or e}")
        return {}
    except UnicodeDecodeError:
        problems.append(f"STREAMSRV_ENV_FILE: {str(path)!r} is not UTF-8 text")
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = _parse_env_line(line)
        except RefusedError as e:
            problems.extend(f"STREAMSRV_ENV_FILE: {str(path)!r} line {number}: {r}" for r in e.reasons)
            continue
        if parsed is None:
            continue
        key, value = parsed
        if key == "STREAMSRV_ENV_FILE":
            problems.append(
                f"STREAMSRV_ENV_FILE: cannot be set inside an env file ({str(path)!r} line {number})"
            )
        elif key.upper().startswith(PREFIX):
            values[key] = value
    return values


def _parse_env_line(line: str) -> tuple[str, str] | None:
    """
    Parse one env file line.

    Accepted: blank lines, ``# comments``, ``KEY=VALUE`` with an optional
    ``export`` prefix, the value optionally in single quotes (taken literally)
    or double quotes (where ``\\"`` and ``\\\\`` are escapes), and an unquoted
    value optionally followed by whitespace and a ``# comment``.  The line is
    never echoed in a reason: it may hold a secret.

    :param line: The line, without its newline.
    :return: ``(key, value)``, or ``None`` for a blank or comment line.
    :raise RefusedError: If the line is malformed.
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export") and stripped[6:7].isspace():
        stripped = stripped[6:].lstrip()
    key, equals, rest = stripped.partition("=")
    key = key.strip()
    if not equals:
        raise RefusedError("expected KEY=VALUE")
    if not _ENV_KEY.fullmatch(key):
        raise RefusedError("the name before '=' is not a valid variable name")
    rest = rest.lstrip()
    if rest[:1] in ("'", '"'):
        value, tail = _unquote(rest)
        tail = tail.strip()
        if tail and not tail.startswith("#"):
            raise RefusedError("unexpected text after the closing quote")
        return key, value
    comment = re.search(r"\s#", rest)
    if comment is not None:
        rest = rest[: comment.start()]
    return key, rest.strip()


def _unquote(text: str) -> tuple[str, str]:
    """
    Split a quoted value from what follows its closing quote.

    :param text: Starts with ``'`` or ``"``.
    :return: ``(value, rest)``.
    :raise RefusedError: If the quote is never closed.
    """
    quote = text[0]
    if quote == "'":
        end = text.find("'", 1)
        if end < 0:
            raise RefusedError("unterminated single quote")
        return text[1:end], text[end + 1 :]
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] in ('"', "\\"):
            out.append(text[index + 1])
            index += 2
        elif char == '"':
            return "".join(out), text[index + 1 :]
        else:
            out.append(char)
            index += 1
    raise RefusedError("unterminated double quote")
