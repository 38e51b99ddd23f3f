"""What every ``streamsrv`` sub-command shares: its exit statuses and an argument parser that raises.

A sub-command's module (``streamsrv scan``, ``streamsrv mint-token``...)
parses its own arguments with :class:`RaisingParser`, whose errors raise
:class:`UsageError` instead of printing and calling ``sys.exit``, so the
command prints them to the stream it was given and returns
:data:`EXIT_USAGE`.  :func:`parse_arguments` does the usual dance around it.  This module must
never exit nor import anything of streamsrv (it is the floor the command
modules stand on), and prints only to the streams it is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Final, NoReturn, TextIO

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "RaisingParser", "UsageError", "parse_arguments"]

#: Exit status: success.
EXIT_OK: Final = 0
#: Exit status: the configuration (or the task's input) is invalid.
EXIT_INVALID: Final = 1
#: Exit status: the command line itself is wrong (argparse's convention).
EXIT_USAGE: Final = 2


class UsageError(Exception):
    """The command line is wrong; the message says how (argparse's wording)."""


class RaisingParser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str], *, out: TextIO, err: TextIO
) -> argparse.Namespace | int:
    """
    Parse a sub-command's arguments, or say why not.

    :param parser: A :class:`RaisingParser`; a ``help`` flag of its own, if
        it has one, asks for its help.
    :param argv: The arguments after the sub-command's name.
    :param out: Where the help goes.
    :param err: Where the usage line and the error go.
    :return: The parsed arguments; or the exit status to stop with:
        :data:`EXIT_USAGE` after printing the usage and the error, or
        :data:`EXIT_OK` after printing the help.
    """
    try:
        args = parser.parse_args(list(argv))
    except UsageError as e:
        parser.print_usage(err)
        print(f"{parser.prog}: error: {e}", file=err)
        return EXIT_USAGE
    if getattr(args, "help", False):
        parser.print_help(out)
        return EXIT_OK
    return args
