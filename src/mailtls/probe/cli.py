"""``mailtls probe HOST``: argument parsing, exit codes and one-line errors (no tracebacks).

Exit codes (``mailtls.findings``): 0 nothing at or above ``--fail-on``, 1 such findings,
2 usage error, 3 the probe could not run (name does not resolve, no port answered).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from mailtls.findings import EXIT_CANNOT_RUN, EXIT_USAGE, Severity, exit_code
from mailtls.probe.conn import ProbeFailure
from mailtls.probe.report import FORMATS, render
from mailtls.probe.session import probe_host
from mailtls.probe.targets import (
    DEFAULT_PORTS,
    SERVE_DEFAULT_PORTS,
    Target,
    parse_ports,
    split_ports,
)

EPILOG = """\
Probe only servers you run or may test. A dummy login (a fake user mailtls-probe-<random> and a
random password) is sent once per plaintext port unless --no-login-attempt: failed-login
counters (fail2ban and the like) may notice one attempt per port.
Ports: a well-known number (25, 587, 465, 143, 993, 110, 995), PROTOCOL:PORT with PROTOCOL one
of smtp, submission, smtps, imap, imaps, pop3, pop3s (e.g. --ports submission:2587,imap:1143),
or any other number: what it speaks is read from its greeting (plain SMTP is probed as
submission; write smtp:PORT for an MX).
Exit status: 0 nothing at or above --fail-on, 1 findings at or above it, 2 usage error,
3 the probe could not run.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "probe",
        help="check a live mail server the way an attacker sees it",
        description="Connect to a mail server's ports and check whether it accepts credentials"
        " before TLS, whether TLS is offered and sound, and whether STARTTLS is open to command"
        " injection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("host", metavar="HOST", help="host name or address of the server")
    p.add_argument(
        "--ports",
        default=DEFAULT_PORTS,
        metavar="LIST",
        help=f"ports to probe (default {DEFAULT_PORTS})",
    )
    p.add_argument(
        "--timeout",
        default="10",
        metavar="S",
        help="seconds each network step may take (default 10)",
    )
    p.add_argument("--cafile", metavar="FILE", help="trust this CA file instead of the system's")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format")
    p.add_argument(
        "--fail-on",
        default="medium",
        metavar="SEVERITY",
        help="exit 1 when a finding is at or above this severity (default medium)",
    )
    p.add_argument(
        "--no-login-attempt",
        action="store_true",
        help="do not send the dummy login (only look at what is advertised)",
    )
    p.set_defaults(func=run)
    return p


def _error(message: str) -> None:
    print(f"mailtls probe: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        fail_on = Severity.parse(args.fail_on)
        targets, unknown = split_ports(args.ports)
        timeout = float(args.timeout)
    except ValueError as exc:
        _error(str(exc) if "could not convert" not in str(exc) else "--timeout wants seconds")
        return EXIT_USAGE
    if not math.isfinite(timeout) or not 0.1 <= timeout <= 300:
        _error("--timeout must be between 0.1 and 300 seconds")
        return EXIT_USAGE
    if args.cafile:
        try:
            with open(args.cafile, "rb"):
                pass
            from mailtls.probe.tlscheck import verifying_context

            verifying_context(args.cafile)
        except OSError as exc:
            _error(f"cannot read --cafile {args.cafile}: {exc.strerror or exc}")
            return EXIT_USAGE
        except ValueError as exc:
            _error(f"--cafile {args.cafile}: {exc}")
            return EXIT_USAGE
    if unknown:
        try:
            targets = targets + _detect_all(args.host, unknown, timeout)
        except ProbeFailure as exc:
            print(f"mailtls probe: cannot probe: {exc.message}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        if not targets:
            print("mailtls probe: cannot probe: no port could be recognised", file=sys.stderr)
            return EXIT_CANNOT_RUN
    try:
        result = probe_host(args.host, targets, timeout, args.cafile, not args.no_login_attempt)
    except ProbeFailure as exc:
        print(f"mailtls probe: cannot probe: {exc.message}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    render(result, args.format, sys.stdout, sys.stderr)
    if result.reachable == 0:
        print("mailtls probe: cannot probe: no port answered", file=sys.stderr)
        if args.ports == DEFAULT_PORTS:
            _hint_serve_defaults(args.host, timeout)
        return EXIT_CANNOT_RUN
    return exit_code(result.findings, fail_on)


def _detect_all(host: str, ports: list[int], timeout: float) -> list[Target]:
    """Read each unknown port's protocol from its greeting; say what was found (stderr)."""
    from mailtls.probe.conn import resolve
    from mailtls.probe.detect import detect

    family, address = resolve(host)[0]
    found: list[Target] = []
    for port in ports:
        try:
            seen = detect(family, address, port, timeout)
        except ProbeFailure as exc:
            print(
                f"mailtls probe: port {port}: cannot tell what it speaks: {exc.message}"
                f" (say it: e.g. imap:{port} or submission:{port})",
                file=sys.stderr,
            )
            continue
        print(
            f"mailtls probe: port {port} speaks {seen.target.name} (greeting: {seen.greeting});"
            f" probing it as {seen.target.name}:{port}",
            file=sys.stderr,
        )
        found.append(seen.target)
    return found


def _hint_serve_defaults(host: str, timeout: float, ports: str = SERVE_DEFAULT_PORTS) -> None:
    """Every standard port was refused: is this `mailtls serve` on its own default ports?"""
    from mailtls.probe.conn import resolve
    from mailtls.probe.detect import listening

    serve_ports = parse_ports(ports)
    try:
        family, address = resolve(host)[0]
    except ProbeFailure:
        return
    open_ports = set(listening(family, address, [t.port for t in serve_ports], min(timeout, 2.0)))
    if not open_ports:
        return
    spec = ",".join(f"{t.name}:{t.port}" for t in serve_ports if t.port in open_ports)
    print(
        f"mailtls probe: hint: ports {', '.join(str(p) for p in sorted(open_ports))} answer, as"
        f" `mailtls serve` does on its defaults; probe them with --ports {spec}",
        file=sys.stderr,
    )
