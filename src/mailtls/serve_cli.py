"""``mailtls serve``: parse flags into settings and run the service."""

from __future__ import annotations

import argparse
from pathlib import Path

from mailtls.cli import UserError
from mailtls.settings import SettingsError, load


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the self-test mail servers and the web app",
        description=(
            "Run every mail listener (SMTP, IMAP, POP3) and the web/API server in one process. "
            "With no options: data under ./var, a generated test CA, unprivileged ports on "
            "127.0.0.1, web UI on http://127.0.0.1:8080."
        ),
    )
    p.add_argument("--config", type=Path, help="settings file (TOML)")
    p.add_argument("--data-dir", type=Path, help="where the journal, index and certificates live")
    p.add_argument("--listen", help="comma-separated addresses to listen on")
    p.add_argument("--hostname", help="server name used in greetings and certificates")
    p.add_argument("--domain", help="mail domain of the test accounts")
    p.add_argument("--http-port", type=int, help="port of the web app and API")
    p.add_argument("--event-loop", choices=["auto", "asyncio", "uvloop"])
    p.add_argument("--no-fsync", action="store_true", help="do not fdatasync the journal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {
        "data_dir": args.data_dir,
        "listen": args.listen,
        "hostname": args.hostname,
        "domain": args.domain,
        "event_loop": args.event_loop,
    }
    if args.http_port is not None:
        overrides["ports"] = {"http": args.http_port}
    if args.no_fsync:
        overrides["fsync"] = False
    try:
        settings = load(args.config, overrides=overrides)
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    from mailtls.serve import main

    return main(settings)
