"""Present a ``ProbeResult``: a per-port summary and the findings, in text, JSON or SARIF.

The finding formats come from ``mailtls.findings`` (shared with ``mailtls audit``); the text
layout follows the auditor's. Every server-supplied string is escaped before it reaches rich.
``confirm_audit`` marks audit findings that the probe confirmed (or not) on the same port, for
``mailtls audit --probe``. No I/O beyond the streams handed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from typing import Any, TextIO

from rich.console import Console
from rich.padding import Padding
from rich.table import Table

from mailtls import __version__
from mailtls.findings import Finding, Severity, sort_findings, to_json, to_sarif
from mailtls.probe.checks import caps_summary
from mailtls.probe.session import PortResult, ProbeResult
from mailtls.termsafe import escape_markup

FORMATS = ("text", "json", "sarif")
_COLOUR = {
    Severity.INFO: "dim",
    Severity.LOW: "cyan",
    Severity.MEDIUM: "yellow",
    Severity.HIGH: "red",
    Severity.CRITICAL: "bold red",
}
# audit finding id -> probe finding ids that confirm it on the same port
AUDIT_EQUIVALENTS: dict[str, frozenset[str]] = {
    "postfix-auth-before-tls": frozenset({"probe-auth-before-tls"}),
    "dovecot-cleartext-auth-before-tls": frozenset({"probe-auth-before-tls"}),
    "dovecot-ssl-disabled": frozenset({"probe-tls-not-offered"}),
    "postfix-tls-not-offered": frozenset({"probe-tls-not-offered"}),
    "postfix-tls-no-certificate": frozenset({"probe-tls-not-offered", "probe-starttls-failed"}),
    "postfix-465-without-wrappermode": frozenset({"probe-implicit-tls-failed"}),
    "postfix-submission-tls-optional": frozenset({"probe-submission-tls-optional"}),
    "postfix-weak-tls-protocols": frozenset({"probe-legacy-tls-accepted"}),
    "dovecot-weak-min-protocol": frozenset({"probe-legacy-tls-accepted"}),
}


def confirm_audit(audit: Iterable[Finding], probe: ProbeResult) -> list[Finding]:
    """Audit findings with ``confirmed_live`` set where the probe reached the same port:
    True when a matching probe finding exists there, False when it does not."""
    reached = {p.target.port for p in probe.ports if p.status == "ok"}
    seen = {(f.port, f.id) for f in probe.findings}
    out: list[Finding] = []
    for f in audit:
        wanted = AUDIT_EQUIVALENTS.get(f.id)
        if wanted is None or f.port not in reached:
            out.append(f)
            continue
        confirmed = any((f.port, pid) in seen for pid in wanted)
        out.append(replace(f, confirmed_live=confirmed))
    return out


def port_dict(p: PortResult) -> dict[str, Any]:
    data: dict[str, Any] = {
        "port": p.target.port,
        "service": p.target.name,
        "protocol": p.target.protocol,
        "implicit_tls": p.target.implicit_tls,
        "address": p.address,
        "status": p.status,
        "error": p.error,
        "banner": p.banner,
        "capabilities_before_tls": asdict(p.caps_before) if p.caps_before else None,
        "login_before_tls": None,
        "tls_required": p.tls_required,
        "tls": None,
        "injection": asdict(p.injection) if p.injection else None,
        "source_is_target": p.source_is_target,
        "notes": list(p.notes),
        "transcript": list(p.transcript),
    }
    if p.login:
        data["login_before_tls"] = {**asdict(p.login), "outcome": p.login.outcome.value}
    if p.tls:
        data["tls"] = asdict(p.tls)
    return data


def render(result: ProbeResult, fmt: str, out: TextIO, err: TextIO) -> None:
    findings = list(result.findings)
    if fmt == "json":
        doc = to_json(
            findings,
            host=result.host,
            addresses=list(result.addresses),
            ports=[port_dict(p) for p in result.ports],
            notes=list(result.notes),
        )
        out.write(doc + "\n")
        return
    if fmt == "sarif":
        out.write(to_sarif(findings, "mailtls probe", __version__) + "\n")
        for note in result.notes:
            err.write(f"mailtls probe: {note}\n")
        return
    render_text(result, Console(file=out, highlight=False))


def _summary_row(p: PortResult) -> list[str]:
    esc = escape_markup
    if p.status != "ok":
        return [str(p.target.port), p.target.name, esc(p.address), esc(p.error or p.status)]
    parts: list[str] = []
    if not p.target.implicit_tls:
        word = "STLS" if p.target.protocol == "pop3" else "STARTTLS"
        parts.append(caps_summary(p.caps_before, word))
        if p.login:
            parts.append(f"dummy login: {p.login.outcome.value}")
    if p.tls:
        if p.tls.established:
            parts.append(f"{p.tls.version} {p.tls.cipher}")
        else:
            parts.append(f"TLS failed: {p.tls.error}")
    if p.injection and p.injection.tested:
        verdict = "VULNERABLE" if p.injection.vulnerable else "not vulnerable"
        if p.injection.aborted:
            verdict += " (the server aborts TLS after pipelined input)"
        parts.append("injection: " + verdict)
    parts += [f"note: {n}" for n in p.notes]
    return [str(p.target.port), p.target.name, esc(p.address), esc("; ".join(parts))]


def _body(console: Console, markup: str) -> None:
    console.print(Padding(markup, (0, 0, 0, 11), expand=False))


def render_text(result: ProbeResult, console: Console) -> None:
    esc = escape_markup
    console.print(
        f"[bold]mailtls probe {esc(result.host)}[/bold]"
        f" [dim]({esc(', '.join(result.addresses))})[/dim]"
    )
    table = Table(show_lines=False, expand=False)
    for col in ("port", "service", "address", "what the probe saw"):
        table.add_column(col)
    for p in result.ports:
        table.add_row(*_summary_row(p))
    console.print(table)
    _render_findings(result.findings, console)
    for note in result.notes:
        console.print("[yellow]" + esc(note) + "[/yellow]")


def _render_findings(findings: Sequence[Finding], console: Console) -> None:
    esc = escape_markup
    shown = [f for f in findings if f.severity > Severity.INFO or f.id != "probe-port-unreachable"]
    groups: dict[str, list[Finding]] = {}
    for f in sort_findings(shown):
        groups.setdefault(f.service or "(global)", []).append(f)
    for service, items in groups.items():
        console.print()
        console.print(f"[bold]{esc(service)}[/bold]")
        for f in items:
            console.print(f"  [{_COLOUR[f.severity]}]{str(f.severity).upper():8}[/] {esc(f.id)}")
            _body(console, esc(f.reason))
            for line in f.evidence:
                _body(console, "[dim]> " + esc(line) + "[/dim]")
            _body(console, f"[green]fix:[/green] {esc(f.fix)}")
    console.print()
    if not shown:
        console.print("[green]mailtls probe: no findings.[/green]")
        return
    counts = {s: 0 for s in Severity}
    for f in shown:
        counts[f.severity] += 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), reverse=True) if n)
    console.print(f"[bold]{len(shown)} finding(s):[/bold] {summary}")
