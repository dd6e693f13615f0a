"""``mailtls audit``: argument parsing and exit codes; the work happens in collect/report.

Exit codes (``mailtls.findings``): 0 nothing at or above ``--fail-on``, 1 such findings,
2 usage error, 3 the audit could not run. Errors are one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from mailtls.audit.collect import Request, collect
from mailtls.audit.model import AuditError
from mailtls.audit.report import FORMATS, AuditResult, audit, render
from mailtls.findings import EXIT_CANNOT_RUN, EXIT_USAGE, Severity, exit_code
from mailtls.termsafe import escape_terminal

EPILOG = """\
With no source option the local system is audited (/etc/postfix, /etc/dovecot/dovecot.conf).
When any source option is given, only what was named is audited.
Exit status: 0 nothing at or above --fail-on, 1 findings at or above it, 2 usage error,
3 the audit could not run.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="audit Postfix and Dovecot configuration for plaintext auth and optional TLS",
        description="Find every Postfix and Dovecot setting that lets credentials or mail travel"
        " without TLS, with the effective value, where it comes from and how to fix it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("sources")
    src.add_argument(
        "--postfix-dir", metavar="DIR", help="Postfix config directory (main.cf, master.cf)"
    )
    src.add_argument("--dovecot-config", metavar="FILE", help="dovecot.conf (includes followed)")
    src.add_argument("--postconf-n", metavar="FILE", help="captured `postconf -n` output")
    src.add_argument(
        "--postconf-M", metavar="FILE", dest="postconf_m", help="captured `postconf -M` output"
    )
    src.add_argument(
        "--postconf-P",
        metavar="FILE",
        dest="postconf_p",
        help="captured `postconf -P` output (needs --postconf-M)",
    )
    src.add_argument("--doveconf-n", metavar="FILE", help="captured `doveconf -n` output")
    src.add_argument(
        "--runtime",
        action="store_true",
        help="ask postconf/doveconf for the configuration instead of parsing the files"
        " (local system, or with --postfix-dir)",
    )
    p.add_argument(
        "--dovecot-version",
        choices=("2.3", "2.4"),
        help="Dovecot version to assume (default: detected from the config)",
    )
    live = p.add_argument_group("live check")
    live.add_argument(
        "--probe",
        metavar="HOST",
        help="also probe HOST live (see `mailtls probe`); findings seen in the configuration"
        " and confirmed on the wire say so",
    )
    live.add_argument(
        "--probe-ports",
        metavar="LIST",
        help="ports for --probe, e.g. 25,587,143 or submission:2587 (default: the 7 mail ports)",
    )
    live.add_argument(
        "--probe-timeout", type=float, default=10.0, metavar="S", help="per-port time bound"
    )
    live.add_argument("--cafile", help="CA bundle to verify the probed certificates with")
    live.add_argument(
        "--no-login-attempt", action="store_true", help="--probe sends no dummy login"
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="output format")
    p.add_argument(
        "--fail-on",
        default="medium",
        metavar="SEVERITY",
        help="exit 1 when a finding is at or above this severity"
        " (info, low, medium, high, critical; default medium)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        fail_on = Severity.parse(args.fail_on)
    except ValueError as exc:
        print(f"mailtls audit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.postconf_p and not args.postconf_m:
        print("mailtls audit: error: --postconf-P needs --postconf-M", file=sys.stderr)
        return EXIT_USAGE
    req = Request(
        postfix_dir=args.postfix_dir,
        dovecot_config=args.dovecot_config,
        postconf_n=args.postconf_n,
        postconf_m=args.postconf_m,
        postconf_p=args.postconf_p,
        doveconf_n=args.doveconf_n,
        runtime=args.runtime,
        dovecot_version=args.dovecot_version,
    )
    try:
        collected = collect(req)
        result = audit(collected, args.dovecot_version)
    except AuditError as exc:
        print(f"mailtls audit: cannot audit: {escape_terminal(str(exc))}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if result.audited == 0:
        for note in result.notes:
            print(f"mailtls audit: {escape_terminal(note)}", file=sys.stderr)
        print("mailtls audit: cannot audit: nothing could be read", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.probe:
        try:
            result = with_probe(result, args)
        except AuditError as exc:
            print(f"mailtls audit: {escape_terminal(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
    render(result, args.format, sys.stdout, sys.stderr)
    return exit_code(result.findings, fail_on)


def with_probe(result: AuditResult, args: argparse.Namespace) -> AuditResult:
    """Add the live view: audit findings get ``confirmed_live``, probe findings are appended."""
    from mailtls.probe import probe_host
    from mailtls.probe.conn import ProbeFailure
    from mailtls.probe.report import confirm_audit

    ports = (
        [p.strip() for p in args.probe_ports.split(",") if p.strip()] if args.probe_ports else None
    )
    try:
        live = probe_host(
            args.probe,
            ports=ports,
            timeout=args.probe_timeout,
            cafile=args.cafile,
            login_attempt=not args.no_login_attempt,
        )
    except ProbeFailure as exc:
        raise AuditError(f"cannot probe {args.probe}: {exc.message}") from None
    except ValueError as exc:
        raise AuditError(f"bad --probe-ports: {exc}") from None
    findings = tuple(confirm_audit(result.findings, live)) + tuple(live.findings)
    notes = result.notes + tuple(f"probe: {n}" for n in live.notes)
    sources = (*result.sources, f"live probe of {args.probe}")
    return replace(result, findings=findings, notes=notes, sources=sources)
