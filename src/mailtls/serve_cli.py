"""``mailtls serve``: parse flags into settings, check the data folder, and run the service."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from mailtls.cli import CannotRun, UserError
from mailtls.settings import Settings, SettingsError, load

EPILOG = """\
Settings come from (lowest first) the defaults, --config, MAILTLS_* environment variables and
these flags. While it runs, serve logs one line per run event and a status line every minute
(connections, runs, events/s, refused); --quiet leaves only warnings and errors.
Signals: SIGTERM/SIGINT stop cleanly, SIGHUP reloads the TLS certificate.
Exit codes: 0 stopped cleanly, 2 bad settings, 3 could not start (port in use, data folder not
writable). docs/deploy.md shows a production setup.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the self-test mail servers and the web app",
        description=(
            "Run every mail listener (SMTP, IMAP, POP3) and the web/API server in one process. "
            "With no options: data under ./var, a generated test CA, unprivileged ports on "
            "127.0.0.1, web UI on http://127.0.0.1:8080."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML)")
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the journal, index and certificates live (default ./var)",
    )
    p.add_argument(
        "--listen", metavar="ADDRS", help="comma-separated addresses to listen on (127.0.0.1)"
    )
    p.add_argument("--hostname", help="server name used in greetings and certificates (localhost)")
    p.add_argument("--domain", help="mail domain of the test accounts (mailtls.test)")
    p.add_argument(
        "--http-port", type=int, metavar="PORT", help="port of the web app and API (8080)"
    )
    p.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        help="asyncio's own loop or uvloop (auto: uvloop when installed)",
    )
    p.add_argument("--no-fsync", action="store_true", help="do not fdatasync the journal")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no run events and no status line (warnings and errors only)",
    )
    p.set_defaults(func=run)


def check_data_dir(path: Path) -> None:
    """The data folder exists (or can be made) and takes a file: one line otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CannotRun(
            f"cannot use the data folder {path}: {exc.strerror or exc} "
            "(choose another with --data-dir or data_dir in the settings file)"
        ) from None


def settings_from(args: argparse.Namespace) -> Settings:
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
    if args.quiet:
        overrides["log"] = {"activity": False, "status_seconds": 0}
    try:
        return load(args.config, overrides=overrides)
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    check_data_dir(settings.data_dir)
    from mailtls.serve import main

    return main(settings)
