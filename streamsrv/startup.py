# -*- test-case-name: tests.test_tap,tests.test_stop_signals -*-
"""What the daemon says and prepares at start, once per host: the data dir, the media root, the try-me lines.

The composition root calls these before it builds the parts: the data
directory is created (or start-up ends with status 1, naming
``STREAMSRV_DATA_DIR``); without ``STREAMSRV_MEDIA_DIR`` the demo library is
generated and a few commands to try it are logged; a development server
prints a ready-to-use token and signed URL.  :func:`or_exit` turns a
configuration value that only proves invalid when used (a roles file, a DSN)
into the same one-line refusal; :func:`listen_or_exit` refuses a port that is
already taken before anything else happens; :func:`log_observer` makes the
observer for wherever twistd is told to log; :func:`stop_once_on_signals`
turns a second SIGTERM while stopping into a logged line.
This module must never log a credential (they go to stderr, for a person)
and never start a service.
"""

from __future__ import annotations

import functools
import ipaddress
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from twisted.internet.endpoints import _parse  # the endpoint-string grammar serverFromString uses
from twisted.logger import ILogObserver, Logger

from streamsrv.alerts.factory import alert_rules_problems, rules_of
from streamsrv.alerts.rules import RulesError
from streamsrv.audio.formats import audio_format_for
from streamsrv.auth.devcredentials import signing_material
from streamsrv.auth.factory import make_issuer
from streamsrv.auth.roles import load_roles
from streamsrv.auth.signing import sign_url
from streamsrv.config import ConfigError, Settings, load_settings
from streamsrv.config.values import endpoint_arguments
from streamsrv.logs import (
    SignalModule,
    log_file_observer,
    make_log_observer,
    make_syslog_observer,
    rotate_on_sigusr1,
)
from streamsrv.notifications.options import notify_options, notify_problems
from streamsrv.notifications.templatecheck import templates_problems
from streamsrv.notifications.templates import TemplateSet
from streamsrv.service import cannot_listen

log = Logger(namespace="streamsrv.tap")

#: How long the printed development admin token lasts, seconds.
DEV_TOKEN_TTL_S = 7 * 24 * 3600

#: How long the printed development signed URL lasts, seconds.
DEV_URL_TTL_S = 24 * 3600

T = TypeVar("T")


def alert_notify_problems(settings: Settings) -> list[str]:
    """
    Whether what the alert rules would notify can be sent: for each rule's
    (and ``[alertmanager]``'s) ``notify``, the templates ``{template}-firing``
    and ``{template}-resolved`` exist and each channel it names is configured.

    A rules file, templates directory or channel variable that is itself
    invalid is left to its own check (nothing is reported here twice).
    """
    try:
        rules = rules_of(settings)
        options = notify_options(settings)
        names = set(TemplateSet.load(options.templates_dir).names())
    except (RulesError, ConfigError, OSError, UnicodeDecodeError):
        return []
    problems = []
    targets = [(f"rule {rule.name!r}", rule.notify) for rule in rules.rules]
    targets.append(("alertmanager", rules.alertmanager))
    for where, notify in targets:
        if notify is None:
            continue
        for suffix in ("firing", "resolved"):
            if f"{notify.template}-{suffix}" not in names:
                problems.append(
                    f"STREAMSRV_ALERT_RULES_FILE: {where}: notify.template: no {notify.template}-{suffix} "
                    "template in STREAMSRV_NOTIFY_TEMPLATES_DIR"
                )
        for channel in notify.channels:
            if channel not in options.configured_channels:
                problems.append(
                    f"STREAMSRV_ALERT_RULES_FILE: {where}: notify.channels: the {channel!r} channel "
                    "is not configured (see docs/modules/notification-channels.md)"
                )
    return problems


#: Checks of values whose format a part owns (``load_settings(checks=...)``): ``streamsrv config
#: check`` runs them, and the daemon before it builds or prints anything (development credentials
#: included).
CONFIG_CHECKS = (notify_problems, templates_problems, alert_rules_problems, alert_notify_problems)


def or_exit(variable: str, build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``build(*args, **kwargs)``; a ``ValueError`` ends start-up with status 1, naming *variable*."""
    try:
        return build(*args, **kwargs)
    except ValueError as e:
        print(f"streamsrv: {variable}: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def load_or_exit(cli_values: Mapping[str, str], env_file: str | None) -> Settings:
    """The settings from the command line, environment and env file; exit 1 listing every problem."""
    try:
        return load_settings(dict(cli_values), env_file=env_file, checks=CONFIG_CHECKS)
    except ConfigError as e:
        print("streamsrv: invalid configuration:", file=sys.stderr)
        for problem in e.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def roles_or_exit(settings: Settings) -> dict[str, frozenset[str]]:
    """The roles file's roles (exit 1, saying why, when it is invalid)."""
    return or_exit("STREAMSRV_ROLES_FILE", load_roles, settings.roles_file)


@dataclass(frozen=True)
class LogTarget:
    """Where twistd's own options send the log.

    :ivar kind: ``stdout``; ``file`` (*path*); ``syslog`` (with *prefix*);
        or ``twistd``: left to twistd (a daemon told ``--logfile -``, which
        twistd refuses with its own message).
    """

    kind: Literal["stdout", "file", "syslog", "twistd"]
    path: str = ""
    prefix: str = ""


def log_target(twistd_options: Mapping[str, Any] | None) -> LogTarget:
    """Where twistd would log given *twistd_options*, by its own rules (``UnixAppLogger``).

    ``--syslog`` wins (with ``--prefix``); then ``--logfile FILE``;
    ``--logfile -`` or none is stdout under ``-n``, and a daemon without
    ``--logfile`` writes ``twistd.log`` in the directory it was started from.

    :param twistd_options: twistd's own options (the plugin options' ``parent``);
        ``None`` (not run by twistd): stdout.
    """
    if twistd_options is None:
        return LogTarget("stdout")
    if twistd_options.get("syslog"):
        return LogTarget("syslog", prefix=str(twistd_options.get("prefix") or ""))
    logfile = str(twistd_options.get("logfile") or "")
    daemonizes = not twistd_options.get("nodaemon")
    if logfile == "-":
        return LogTarget("twistd" if daemonizes else "stdout")
    if not logfile:
        return LogTarget("file", path="twistd.log") if daemonizes else LogTarget("stdout")
    return LogTarget("file", path=logfile)


def log_observer(
    twistd_options: Mapping[str, Any] | None, settings: Settings, reactor: Any = None
) -> ILogObserver | None:
    """streamsrv's observer for wherever twistd is told to log, at ``STREAMSRV_LOG_LEVEL``.

    stdout (``twistd -n``: systemd, Docker, a terminal) and ``--logfile``
    (or a daemon's ``twistd.log``) get ``STREAMSRV_LOG_FORMAT`` lines, the
    file opened and rotated as twistd's own (SIGUSR1 rotates it when
    *reactor* is given); ``--syslog`` gets twistd's syslog observer.  A file
    that cannot be opened ends start-up with status 1 and one line.

    :param twistd_options: twistd's own options (the plugin options' ``parent``), if any.
    :param reactor: rotates the log file on SIGUSR1 (``None``: no signal handler).
    :return: ``None`` only where twistd refuses to run anyway (see :class:`LogTarget`).
    """
    target = log_target(twistd_options)
    level, fmt = settings.log_level, settings.log_format
    if target.kind == "twistd":
        return None
    if target.kind == "syslog":
        return make_syslog_observer(target.prefix, level)
    if target.kind == "stdout":
        return make_log_observer(fmt, level, sys.stdout)
    try:
        observer, log_file = log_file_observer(fmt, level, target.path)
    except OSError as e:
        print(f"streamsrv: --logfile: cannot open {target.path} ({e.strerror})", file=sys.stderr)
        raise SystemExit(1) from None
    if reactor is not None:
        rotate_on_sigusr1(log_file, reactor)
    return observer


def stop_once_on_signals(reactor: Any, signals: SignalModule = signal) -> None:
    """Once the daemon is stopping, a further SIGTERM or SIGINT is noted, not handed to the reactor.

    Call it when the reactor runs (``callWhenRunning``): it wraps the
    handlers the reactor installed.  Twisted's handler asks the reactor to
    stop again, which logs ``ReactorNotRunning`` with its traceback at
    critical; systemd, Docker and a supervisor script may each send one
    SIGTERM, and an impatient operator a second Ctrl-C.  Stopping (the
    first signal, or any other cause) goes on as before.

    :param reactor: the running reactor (its ``before shutdown`` trigger marks the stop).
    """
    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
    for signum in (signals.SIGTERM, signals.SIGINT):
        first = signals.getsignal(signum)
        if callable(first):
            signals.signal(signum, functools.partial(_unless_stopping, stopping, first))


def _unless_stopping(
    stopping: list[bool], first: Callable[[int, Any], object], signum: int, frame: Any
) -> None:
    """Pass *signum* to *first*, the reactor's handler, unless the daemon is stopping already."""
    if stopping:
        log.info("{signal} while stopping: already stopping", signal=signal.Signals(signum).name)
        return
    first(signum, frame)


def logs_to_stdout(twistd_options: Mapping[str, Any] | None) -> bool:
    """Whether :func:`log_observer` writes to stdout for these twistd options (a foreground run)."""
    return log_target(twistd_options).kind == "stdout"


def make_data_dir(settings: Settings) -> None:
    """Create ``STREAMSRV_DATA_DIR`` (exit 1, saying why, when it cannot be)."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"streamsrv: STREAMSRV_DATA_DIR: cannot create it ({e.strerror})", file=sys.stderr)
        raise SystemExit(1) from None


def prepare_host_or_exit(settings: Settings) -> None:
    """The first steps of the process that binds the ports: the data dir, then the ports' check."""
    make_data_dir(settings)
    listen_or_exit(settings.listen)


def _tcp_target(description: str) -> tuple[socket.AddressFamily, str, int] | None:
    """``(family, interface, port)`` a ``tcp:``/``tcp6:``/``ssl:`` endpoint binds; ``None`` for others."""
    try:
        args, kwargs = _parse(description)
        kind = str(args[0]).lower()
        port = int(kwargs.get("port", args[1] if len(args) > 1 else 0))
    except (ValueError, IndexError, TypeError):
        return None  # the endpoint itself will say what is wrong with it
    if kind not in ("tcp", "tcp6", "ssl") or port <= 0:
        return None
    interface = str(kwargs.get("interface", "::" if kind == "tcp6" else ""))
    family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
    return family, interface, port


def listen_or_exit(listen: Sequence[str]) -> None:
    """Bind each TCP endpoint once and let it go: one taken or forbidden ends start-up at once.

    Run before anything slow or talkative (the demo library, the printed
    URLs), so that a port already in use is one line and status 1.  The
    bind is Twisted's (``SO_REUSEADDR``, the same interface); the real one
    follows when the service starts, and a port taken in between is reported
    the same way (:class:`~streamsrv.service.RootService`).
    """
    for description in listen:
        target = _tcp_target(description)
        if target is None:
            continue
        family, interface, port = target
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((interface, port))
            except OSError as e:
                print(cannot_listen(interface, port, e), file=sys.stderr)
                raise SystemExit(1) from None


#: The URL :func:`base_url` falls back on when no listener has a TCP port (unix:, systemd:).
FALLBACK_BASE_URL = "http://127.0.0.1:8080"


def base_url(listen: Sequence[str]) -> str:
    """The URL this host reaches the first TCP listener at, for commands printed to try the server.

    ``tcp:9000`` and ``tcp:9000:interface=0.0.0.0`` give ``http://127.0.0.1:9000``,
    ``tcp6:9000`` ``http://[::1]:9000``, a specific interface its own address
    (``interface=192.0.2.7`` gives ``http://192.0.2.7:9000``), ``ssl:`` https.

    :param listen: ``STREAMSRV_LISTEN``'s endpoint strings.
    :return: ``scheme://host:port``; :data:`FALLBACK_BASE_URL` when no listener has a TCP port.
    """
    for description in listen:
        kind, positional, keywords = endpoint_arguments(description)
        port = keywords.get("port", positional[0] if positional else "")
        if kind in ("tcp", "tcp6", "ssl") and port.isdigit():
            scheme = "https" if kind == "ssl" else "http"
            return f"{scheme}://{_url_host(keywords.get('interface', ''), kind)}:{port}"
    return FALLBACK_BASE_URL


def _url_host(interface: str, kind: str) -> str:
    """The host to write in a URL for a listener on *interface* (``""``: every address)."""
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        if interface:
            return interface  # a host name, e.g. localhost
        return "[::1]" if kind == "tcp6" else "127.0.0.1"
    if address.is_unspecified:
        return "[::1]" if address.version == 6 and kind == "tcp6" else "127.0.0.1"
    return f"[{address}]" if address.version == 6 else str(address)


def media_root(settings: Settings, announce: bool = True) -> Path:
    """The media root: the configured one, or the demo library (generated the first time).

    :param announce: log a few commands to try the demo library (once per
        host: the supervisor does, its workers do not).
    """
    if settings.media_dir is not None:
        return settings.media_dir
    from streamsrv.demo import ensure_demo_library  # PyAV and numpy: only when there is a demo to make

    demo = settings.data_dir / "demo"
    tracks = ensure_demo_library(demo)
    if not announce:
        return demo
    base = base_url(settings.listen)
    log.info("serving the generated demo library ({count} tracks); try:", count=len(tracks))
    for track in tracks[:3]:
        rel = track.relative_to(demo).as_posix()
        log.info("  curl -r 1000-1999 -o /dev/null -D - {base}/stream/{url}", base=base, url=quote(rel))
    return demo


def announce_dev_credentials(settings: Settings, root: Path, clock: Any) -> None:
    """Print a ready token and signed URL for trying a development server (one with generated secrets).

    Printed to stderr, not logged: the log redacts credentials (and may be
    shipped elsewhere) and stdout carries JSON logs, while these are meant
    to be read and copied by a person.

    :param root: the media root (the signed URL names its first track).
    """
    material = signing_material(settings)
    if material.dev is None:
        return
    issuer = make_issuer(settings, material, clock)
    url_keys = material.url_keys
    base = base_url(settings.listen)
    token = issuer.issue(sub="dev-admin", roles=["admin"], ttl_s=DEV_TOKEN_TTL_S)
    lines = [
        "streamsrv development credentials (generated, kept in the data dir; never used in production):",
        f"  admin token, valid 7 days:  curl -H 'Authorization: Bearer {token}' {base}/health/detailed",
    ]
    if settings.demo_ui:
        # In the fragment: a browser never sends it to the server (nor to its logs).
        lines.append(f"  player, open in a browser:  {base}/demo/#token={token}")
    track = next((p for p in sorted(root.rglob("*")) if audio_format_for(p) is not None), None)
    if track is not None:
        path = "/stream/" + track.relative_to(root).as_posix()
        url = sign_url(base, path, keys=url_keys, expires=int(clock.seconds()) + DEV_URL_TTL_S)
        lines.append(f"  signed URL, valid 24 h:     curl -o /dev/null -D - '{url}'")
    print("\n".join(lines), file=sys.stderr, flush=True)
