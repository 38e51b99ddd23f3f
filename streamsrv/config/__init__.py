# -*- test-case-name: tests.test_config -*-
"""Settings for the daemon, from ``STREAMSRV_*`` variables and an optional env file.

:func:`load_settings` merges four layers — the command line, the process
environment, an env file and the profile's defaults, in that order of
precedence — validates every value, and returns one frozen :class:`Settings`
or raises :class:`ConfigError` naming *every* problem at once, each prefixed
with its variable's name.  :func:`redacted` gives the effective configuration
for display with every secret replaced.  The parts: :mod:`~streamsrv.config.settings`
(the variables and the :class:`Settings` value), :mod:`~streamsrv.config.loading`
(the layers), :mod:`~streamsrv.config.values` (one value's parsers),
:mod:`~streamsrv.config.envfile`, :mod:`~streamsrv.config.rules` (production
and cross-variable checks, warnings) and :mod:`~streamsrv.config.redaction`.
This package must never bind a port, start a reactor, open a connection or
write a file: it only reads the env file and stats paths.  It must never put a
secret's value into an error message, a warning or :func:`redacted`'s output.
"""

from streamsrv.config.loading import load_settings
from streamsrv.config.redaction import REDACTED, redacted
from streamsrv.config.rules import config_warnings
from streamsrv.config.settings import (
    ENDPOINT_TYPES,
    EXAMPLE_SECRETS,
    HLS_LADDER_DEFAULT,
    HLS_LADDER_KBPS,
    HLS_LADDER_MAX_RUNGS,
    KNOWN_VARIABLES,
    LOG_FORMATS,
    LOG_LEVELS,
    MIN_SECRET_BYTES,
    PREFIX,
    PROFILES,
    ConfigError,
    RateLimit,
    Settings,
)

__all__ = [
    "ENDPOINT_TYPES",
    "EXAMPLE_SECRETS",
    "HLS_LADDER_DEFAULT",
    "HLS_LADDER_KBPS",
    "HLS_LADDER_MAX_RUNGS",
    "KNOWN_VARIABLES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MIN_SECRET_BYTES",
    "PREFIX",
    "PROFILES",
    "REDACTED",
    "ConfigError",
    "RateLimit",
    "Settings",
    "config_warnings",
    "load_settings",
    "redacted",
]
