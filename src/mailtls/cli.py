"""The ``mailtls`` console script: one argparse dispatcher over the subcommands.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` which registers the
parser and sets ``func`` (``Callable[[argparse.Namespace], int]``). Modules are imported only when
needed so that ``mailtls audit`` does not pay for the web stack.

Exit codes are the same in every subcommand (``EXIT_CODES``, the README's table): a user's
mistake or a closed output pipe ends in one line (or none) and its code, never a traceback.
Options may come before or after the subcommand (``mailtls --json run show ID``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mailtls.findings import EXIT_CANNOT_RUN, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE

EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, what a shell shows for `yes | head`

# the README's table; census adds 4, 5 and 7 (docs/census.md)
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success: nothing found at or above --fail-on; every step safe",
    EXIT_FINDINGS: "findings at or above --fail-on (audit, probe); a step FAILed (run)",
    EXIT_USAGE: "usage error: a bad option, value, file name, run id or step",
    EXIT_CANNOT_RUN: "could not run: server unreachable, port in use, folder not writable, ...",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_PIPE_CLOSED: "the output was closed early (e.g. `| head`); output stops quietly",
}

# subcommand name -> module that implements it
SUBCOMMANDS: dict[str, str] = {
    "serve": "mailtls.serve_cli",
    "run": "mailtls.run_cli",
    "audit": "mailtls.audit.cli",
    "probe": "mailtls.probe.cli",
    "census": "mailtls.census.cli",
    "export": "mailtls.export_cli",
}


class UserError(Exception):
    """A mistake of the user's (bad flag value, missing file): printed without a traceback."""

    code = EXIT_USAGE


class CannotRun(UserError):
    """The command is right but cannot be carried out here (port taken, server unreachable)."""

    code = EXIT_CANNOT_RUN


_HELP = {
    "serve": "run the self-test mail servers and the web app",
    "run": "drive a self-test run through the JSON API (lab use)",
    "audit": "audit Postfix and Dovecot configuration for plaintext auth and optional TLS",
    "probe": "check a live mail server the way an attacker sees it",
    "census": "count Internet mail services that advertise plaintext auth (Shodan)",
    "export": "export the event journal (all, or one run) as JSONL",
}
EPILOG = "exit codes (every command):\n" + "\n".join(
    f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()
)


def reorder(argv: Sequence[str]) -> list[str]:
    """Options given before the subcommand move after it: ``mailtls --json run show ID`` is
    ``mailtls run --json show ID``. ``--version`` and ``-h`` stay where they are."""
    args = list(argv)
    at = next((i for i, a in enumerate(args) if a in SUBCOMMANDS), None)
    if not at:
        return args
    before = [a for a in args[:at] if a not in ("--version", "-h", "--help")]
    kept = [a for a in args[:at] if a in ("--version", "-h", "--help")]
    return [*kept, args[at], *before, *args[at + 1 :]]


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailtls",
        description="Find out whether email is exposed to STARTTLS downgrade attacks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from mailtls import __version__

    parser.add_argument("--version", action="version", version=f"mailtls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, module_name in SUBCOMMANDS.items():
        if wanted != name:
            # a light placeholder: `mailtls --help` lists every command without importing it
            sub.add_parser(name, help=_HELP.get(name, ""), add_help=False)
            continue
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def _innermost(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command that was given, for its own usage line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest or "", None)
            child = action.choices.get(name) if isinstance(name, str) else None
            if isinstance(child, argparse.ArgumentParser):
                return _innermost(child, args)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's last flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args_list = reorder(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args, extra = parser.parse_known_args(args_list)
    if extra:
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = int(func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except UserError as exc:
        print(f"mailtls: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE_CLOSED
    except OSError as exc:  # a file or folder the command needs (permissions, disk full)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"mailtls: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_CANNOT_RUN
