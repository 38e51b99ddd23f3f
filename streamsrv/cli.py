# -*- test-case-name: tests.test_cli -*-
"""The ``streamsrv`` admin command.

One argparse sub-command per task, each a plain function taking the parsed
arguments and a :class:`Console` (environment and output streams) and returning
the exit status, so that tests call :func:`main` with an injected environment
and captured output.  Today there are ``streamsrv config check``,
``streamsrv sign-url``, ``streamsrv mint-token``, ``streamsrv waveform``,
``streamsrv scan`` and ``streamsrv notify-template check``; ``config`` is
added by ``_add_config_command``, the others, whose arguments go to their
own module's parser, are listed in ``_PASSTHROUGH_COMMANDS``.

This command must never start the reactor or bind a port, and must never print
a secret: configuration is shown only through :func:`streamsrv.config.redacted`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from streamsrv import __version__
from streamsrv.cliargs import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from streamsrv.config import ConfigError, Settings, config_warnings, load_settings, redacted
from streamsrv.startup import CONFIG_CHECKS, base_url

if TYPE_CHECKING:
    from streamsrv.auth.devcredentials import SigningMaterial
    from streamsrv.auth.signing import SigningKey

__all__ = [
    "Console",
    "build_parser",
    "config_check",
    "console_main",
    "main",
    "mint_token",
    "notify_template",
    "scan_library",
    "sign_url",
    "waveform_peaks",
]


@dataclass(frozen=True)
class Console:
    """
    What a command may touch: the environment it reads and where it writes.

    :ivar environ: The environment to take ``STREAMSRV_*`` variables from.
    :ivar stdout: Where results go.
    :ivar stderr: Where problems go.
    """

    environ: Mapping[str, str]
    stdout: TextIO
    stderr: TextIO


Command = Callable[[argparse.Namespace, Console], int]


def _add_passthrough(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str, command: Command
) -> None:
    """A sub-command whose arguments, options included, all go to its own module's parser."""
    parser = commands.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(command=command)


def _settings(console: Console) -> Settings | None:
    """The configuration from *console*'s environment, or ``None`` after printing every problem."""
    try:
        return load_settings(environ=console.environ, checks=CONFIG_CHECKS)
    except ConfigError as e:
        for problem in e.problems:
            print(f"streamsrv: {problem}", file=console.stderr)
        return None


def _configured(run: Callable[[list[str], Settings, Console], int]) -> Command:
    """
    A pass-through command that needs the configuration.

    :param run: Called with the arguments for the module's own parser, the
        settings and the console (its output streams), once the configuration
        loaded; returns the exit status.
    :return: The command: :data:`EXIT_INVALID` after printing every problem
        of an invalid configuration, else what *run* returns.
    """

    @functools.wraps(run)
    def command(args: argparse.Namespace, console: Console) -> int:
        settings = _settings(console)
        if settings is None:
            return EXIT_INVALID
        return run(args.rest, settings, console)

    return command


def build_parser() -> argparse.ArgumentParser:
    """
    The ``streamsrv`` argument parser with every sub-command.

    Each parser that runs something sets ``command`` (a :data:`Command`); a
    group without an action of its own (``streamsrv config``) sets
    ``help_parser`` so that its help is shown instead.

    :return: A new parser.
    """
    parser = argparse.ArgumentParser(
        prog="streamsrv",
        description="Administer a streamsrv installation (the daemon itself runs under twistd).",
    )
    parser.add_argument("--version", action="version", version=f"streamsrv {__version__}")
    parser.set_defaults(help_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_config_command(commands)
    for name, help_text, command in _PASSTHROUGH_COMMANDS:
        _add_passthrough(commands, name, help_text, command)
    return parser


@_configured
def scan_library(rest: list[str], settings: Settings, console: Console) -> int:
    """
    Scan ``STREAMSRV_MEDIA_DIR`` into the catalog in ``STREAMSRV_DATA_DIR`` (the daemon's own).

    Its own parser lives in :mod:`streamsrv.audio.scan_cli`.

    :param rest: The arguments for :func:`streamsrv.audio.scan_cli.scan_cli`.
    """
    from streamsrv.audio.scan_cli import scan_cli

    return scan_cli(
        rest,
        data_dir=settings.data_dir,
        media_root=settings.media_dir,
        out=console.stdout,
        err=console.stderr,
    )


def waveform_peaks(args: argparse.Namespace, console: Console) -> int:
    """
    ``streamsrv waveform IN -o OUT.json|OUT.dat [-z N | --pixels-per-second N] [-b 8|16] ...``.

    audiowaveform's flags, parsed in :mod:`streamsrv.audio.waveform`.

    :param args: ``rest`` holds the arguments for :func:`streamsrv.audio.waveform.waveform_cli`.
    :param console: Output streams (the environment is not used).
    :return: The exit status.
    """
    from streamsrv.audio.waveform import waveform_cli

    return waveform_cli(args.rest, out=console.stdout, err=console.stderr)


def _daemon_material(command: str, settings: Settings, console: Console) -> SigningMaterial | None:
    """
    The secrets the daemon signs with, found as the daemon finds them, never made up.

    In development with nothing configured they are the daemon's generated
    ones in ``STREAMSRV_DATA_DIR`` (default ``./streamsrv-data``); when that
    file is not there, one line says where it was looked for and what to do.

    :param command: ``sign-url`` or ``mint-token``, for the message.
    :return: The material, or ``None`` after printing why there is none.
    """
    from streamsrv.auth.devcredentials import DevCredentialsMissing, signing_material

    try:
        return signing_material(settings, create=False)
    except DevCredentialsMissing as e:
        print(
            f"streamsrv {command}: no development credentials at {e.path} (the daemon creates them "
            "at its first start): run this where the daemon runs, or set STREAMSRV_DATA_DIR to its "
            "data dir, or configure STREAMSRV_JWT_SECRET / STREAMSRV_URL_SIGNING_KEYS",
            file=console.stderr,
        )
    except OSError as e:
        print(
            f"streamsrv: STREAMSRV_JWT_PRIVATE_KEY_FILE: cannot read it ({e.strerror})", file=console.stderr
        )
    return None


@_configured
def mint_token(rest: list[str], settings: Settings, console: Console) -> int:
    """
    Mint a token with the configured signing key (or the development one).

    Its own parser lives in :mod:`streamsrv.auth.mint`.

    :param rest: The arguments for :func:`streamsrv.auth.mint.mint_cli`.
    """
    from twisted.internet.task import Clock

    from streamsrv.auth.jwt import TokenIssuer
    from streamsrv.auth.mint import mint_cli

    if _asks_help(rest):
        unused = TokenIssuer(secret=None, private_key_pem=None, issuer=None, audience=None, clock=Clock())
        return mint_cli(rest, issuer=unused, out=console.stdout, err=console.stderr)
    material = _daemon_material("mint-token", settings, console)
    if material is None:
        return EXIT_INVALID
    clock = Clock()
    clock.advance(time.time())  # now, without the reactor
    issuer = TokenIssuer(
        secret=material.jwt_secret,
        private_key_pem=material.private_key_pem,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=clock,
    )
    return mint_cli(rest, issuer=issuer, out=console.stdout, err=console.stderr)


@_configured
def sign_url(rest: list[str], settings: Settings, console: Console) -> int:
    """
    Sign a URL with the configured ``STREAMSRV_URL_SIGNING_KEYS`` (or the development key).

    The URL starts with the first TCP listener of ``STREAMSRV_LISTEN``
    (``--base-url`` to choose another).

    Its own parser lives in :mod:`streamsrv.auth.signing`.

    :param rest: The arguments for :func:`streamsrv.auth.signing.sign_cli`.
    """
    from streamsrv.auth.signing import sign_cli

    keys: tuple[SigningKey, ...] = ()
    if not _asks_help(rest):
        material = _daemon_material("sign-url", settings, console)
        if material is None:
            return EXIT_INVALID
        keys = material.url_keys
    return sign_cli(
        rest,
        keys=keys,
        max_ttl_s=settings.url_max_ttl_s,
        now=time.time(),
        out=console.stdout,
        err=console.stderr,
        base_url=base_url(settings.listen),
    )


def notify_template(args: argparse.Namespace, console: Console) -> int:
    """
    ``streamsrv notify-template check [DIR]``: every problem of the notification templates.

    Its own parser lives in :mod:`streamsrv.notifications.templatecheck`; the
    configuration is read only when no DIR is given (the daemon's directory).
    """
    from streamsrv.notifications.templatecheck import notify_template_cli

    def settings() -> Settings | None:
        # Only the directory is needed: the templates themselves are what this command checks.
        try:
            return load_settings(environ=console.environ)
        except ConfigError as e:
            for problem in e.problems:
                print(f"streamsrv: {problem}", file=console.stderr)
            return None

    return notify_template_cli(args.rest, settings=settings, out=console.stdout, err=console.stderr)


def _asks_help(rest: list[str]) -> bool:
    """Whether a pass-through command's arguments ask for its help (which needs no credentials)."""
    return "-h" in rest or "--help" in rest


#: The sub-commands whose arguments all go to their own module's parser, in
#: the order ``streamsrv --help`` lists them (after ``config``).
_PASSTHROUGH_COMMANDS: tuple[tuple[str, str, Command], ...] = (
    ("sign-url", "print a signed URL for a track, HLS playlist or media API path", sign_url),
    ("mint-token", "print a signed access or refresh token (development and scripting)", mint_token),
    ("waveform", "compute peaks of an audio file as audiowaveform JSON or .dat", waveform_peaks),
    ("scan", "scan the media library into the catalog (progress bar and summary)", scan_library),
    ("notify-template", "check the notification templates (sandbox, samples)", notify_template),
)


def _add_config_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Register ``streamsrv config check``.

    :param commands: The top-level sub-command registry.
    """
    config = commands.add_parser(
        "config", help="inspect the configuration", description="Inspect the configuration."
    )
    config.set_defaults(help_parser=config)
    actions = config.add_subparsers(title="actions", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate the STREAMSRV_* configuration and show it, secrets redacted",
        description=(
            "Load the configuration the daemon would use (environment, then env file, then "
            "profile defaults), print it with every secret redacted followed by warnings, and "
            "exit 0; or print every problem to stderr and exit 1."
        ),
    )
    check.add_argument(
        "--env-file",
        metavar="FILE",
        default=None,
        help="read STREAMSRV_* settings from FILE (default: $STREAMSRV_ENV_FILE, if set)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    check.set_defaults(command=config_check)


def config_check(args: argparse.Namespace, console: Console) -> int:
    """
    ``streamsrv config check``: validate and show the effective configuration.

    :param args: ``env_file`` (a path or ``None``) and ``json`` (a flag).
    :param console: The environment and output streams.
    :return: :data:`EXIT_OK` if the configuration is valid, else :data:`EXIT_INVALID`.
    """
    try:
        settings = load_settings(environ=console.environ, env_file=args.env_file, checks=CONFIG_CHECKS)
    except ConfigError as e:
        print(
            f"streamsrv: invalid configuration ({_count(len(e.problems), 'problem')}):", file=console.stderr
        )
        for problem in e.problems:
            print(f"  - {problem}", file=console.stderr)
        if args.json:
            _print_json({"ok": False, "problems": e.problems}, console.stdout)
        return EXIT_INVALID

    shown = redacted(settings)
    warnings = config_warnings(settings)
    if args.json:
        _print_json({"ok": True, "settings": shown, "warnings": warnings}, console.stdout)
        return EXIT_OK

    out = console.stdout
    source = f"env file {settings.env_file}" if settings.env_file is not None else "no env file"
    print(f"streamsrv configuration: {settings.env} profile, {source}; secrets redacted", file=out)
    print(file=out)
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        print(f"  {name.ljust(width)}  {_display(name, value)}", file=out)
    print(file=out)
    for warning in warnings:
        print(f"warning: {warning}", file=out)
    print(f"configuration OK ({_count(len(warnings), 'warning')})", file=out)
    return EXIT_OK


def _display(name: str, value: object) -> str:
    """
    One value of :func:`~streamsrv.config.redacted` as the table shows it.

    :param name: The variable (``STREAMSRV_LISTEN`` is space-separated, other lists commas).
    :param value: The value.
    :return: ``-`` for unset, ``true``/``false``, lists joined, numbers without a needless ``.0``.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list):
        if not value:
            return "-"
        return (" " if name == "STREAMSRV_LISTEN" else ", ").join(str(item) for item in value)
    return str(value)


def _count(n: int, noun: str) -> str:
    """
    *n* and *noun*, plural unless *n* is 1.
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_json(document: Mapping[str, object], out: TextIO) -> None:
    """
    Write *document* as indented JSON and a newline.
    """
    json.dump(document, out, indent=2)
    out.write("\n")


def main(
    argv: list[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run one ``streamsrv`` command.

    :param argv: The arguments after the program name; ``sys.argv[1:]`` if ``None``.
    :param environ: The environment; :data:`os.environ` if ``None``.
    :param stdout: Where results go; :data:`sys.stdout` if ``None``.
    :param stderr: Where problems go; :data:`sys.stderr` if ``None``.
    :return: The exit status: 0 success, 1 invalid input, 2 bad usage.
    """
    console = Console(
        environ=os.environ if environ is None else environ,
        stdout=sys.stdout if stdout is None else stdout,
        stderr=sys.stderr if stderr is None else stderr,
    )
    parser = build_parser()
    try:
        # argparse prints help and errors to sys.stdout/sys.stderr and exits.
        with redirect_stdout(console.stdout), redirect_stderr(console.stderr):
            args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    command: Command | None = getattr(args, "command", None)
    if command is None:
        args.help_parser.print_help(console.stderr)
        return EXIT_USAGE
    return command(args, console)


def console_main() -> None:
    """
    The ``streamsrv`` console script: run :func:`main` and exit with its status.
    """
    sys.exit(main())


if __name__ == "__main__":
    console_main()
