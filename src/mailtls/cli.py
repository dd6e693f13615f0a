"""The ``mailtls`` console script: one argparse dispatcher over the subcommands.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` which registers the
parser and sets ``func`` (``Callable[[argparse.Namespace], int]``). Modules are imported only when
needed so that ``mailtls audit`` does not pay for the web stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailtls",
        description="Find out whether email is exposed to STARTTLS downgrade attacks.",
    )
    from mailtls import __version__

    parser.add_argument("--version", action="version", version=f"mailtls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module_name in SUBCOMMANDS.items():
        if wanted != name:
            # a light placeholder: `mailtls --help` lists every command without importing it
            sub.add_parser(name, help=_HELP.get(name, ""), add_help=False)
            continue
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


_HELP = {
    "serve": "run the self-test mail servers and the web app",
    "run": "drive a self-test run through the JSON API (lab use)",
    "audit": "audit Postfix and Dovecot configuration for plaintext auth and optional TLS",
    "probe": "check a live mail server the way an attacker sees it",
    "census": "count Internet mail services that advertise plaintext auth (Shodan)",
    "export": "export the event journal (all, or one run) as JSONL",
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except UserError as exc:
        print(f"mailtls: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
