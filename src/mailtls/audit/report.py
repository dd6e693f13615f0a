"""Run every check over what ``collect`` gathered and shape the result for the three formats.

``audit(collected)`` -> ``AuditResult`` (findings, effective per-service settings, notes);
``render`` writes text, JSON or SARIF using ``mailtls.findings``. Only TLS- and auth-relevant
settings appear in the effective view, so no secret from a config file is ever printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.padding import Padding

from mailtls import __version__
from mailtls.audit import checks_dovecot, checks_postfix
from mailtls.audit.collect import Collected
from mailtls.audit.dovecot_effective import context_summary, contexts, detect_version
from mailtls.audit.effective import service_summary, smtp_services
from mailtls.findings import COLOUR, Finding, Severity, sort_findings, to_json, to_sarif
from mailtls.termsafe import escape_markup, escape_terminal

FORMATS = ("text", "json", "sarif")


@dataclass(frozen=True)
class AuditResult:
    findings: tuple[Finding, ...]
    effective: dict[str, Any]
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    audited: int = 0


def audit(collected: Collected, dovecot_version: str | None = None) -> AuditResult:
    findings: list[Finding] = []
    notes = list(collected.notes)
    postfix_view: list[dict[str, Any]] = []
    audited = 0
    for inst in collected.postfix:
        services = smtp_services(inst)
        audited += 1
        findings.extend(checks_postfix.run_checks(services))
        postfix_view.append(
            {
                "instance": inst.name or "postfix",
                "main_cf": inst.main.source,
                "master_cf": inst.master.source,
                "services": [service_summary(s) for s in services],
            }
        )
    dovecot_view: dict[str, Any] | None = None
    if collected.dovecot is not None:
        audited += 1
        version = detect_version(collected.dovecot, dovecot_version)
        ctxs = contexts(collected.dovecot, version)
        dovecot_findings, loads = checks_dovecot.audit_config(collected.dovecot, version)
        findings.extend(dovecot_findings)
        if not loads:
            # Dovecot does not start with this file: its settings protect or expose nothing
            notes.append(
                f"Dovecot {version} refuses this configuration ({len(dovecot_findings)} unknown"
                " setting(s)); its TLS and authentication settings were not audited"
            )
        dovecot_view = {
            "config": collected.dovecot.source,
            "version": version,
            "loads": loads,
            "files": list(collected.dovecot.files),
            "contexts": [context_summary(c) for c in ctxs],
        }
    effective = {"postfix": postfix_view, "dovecot": dovecot_view}
    return AuditResult(tuple(findings), effective, tuple(notes), tuple(collected.sources), audited)


def render(result: AuditResult, fmt: str, out: TextIO, err: TextIO) -> None:
    if fmt == "json":
        out.write(
            to_json(
                list(result.findings),
                effective=result.effective,
                notes=list(result.notes),
                sources=list(result.sources),
            )
            + "\n"
        )
        return
    if fmt == "sarif":
        out.write(to_sarif(list(result.findings), "mailtls audit", __version__) + "\n")
        for note in result.notes:
            err.write(f"mailtls audit: note: {escape_terminal(note)}\n")
        return
    console = Console(file=out, highlight=False)
    render_text_report(result, console)


def _body(console: Console, markup: str) -> None:
    console.print(Padding(markup, (0, 0, 0, 11), expand=False))


def render_text_report(result: AuditResult, console: Console) -> None:
    """Grouped by service, worst first, coloured by severity; every value escaped."""
    esc = escape_markup
    if result.sources:
        console.print("[dim]audited: " + esc("; ".join(result.sources)) + "[/dim]")
    groups: dict[str, list[Finding]] = {}
    for f in sort_findings(result.findings):
        groups.setdefault(f.service or "(global)", []).append(f)
    for service, items in groups.items():
        port = next((f.port for f in items if f.port), None)
        head = esc(service) + (f"  [dim](port {port})[/dim]" if port else "")
        console.print()
        console.print(f"[bold]{head}[/bold]")
        for f in items:
            # the one-line fix first: it is what the reader came for
            colour = COLOUR[f.severity]
            console.print(
                f"  [{colour}]{str(f.severity).upper():8}[/] [green]fix:[/green] {esc(f.fix)}",
                soft_wrap=True,  # one line, however long: the terminal wraps it, not us
            )
            label = esc(f.id)
            if f.setting:
                where = f"  ({esc(f.file or '')}{':' + str(f.line) if f.line else ''})"
                value = esc(f.effective_value or "")
                label += f": {esc(f.setting)} = {value}[dim]{where}[/dim]"
            _body(console, label)
            _body(console, esc(f.reason))
            if f.confirmed_live is True:
                _body(console, "[bold red]confirmed live:[/bold red] the server does this")
            elif f.confirmed_live is False:
                _body(console, "[dim]not seen live on this port[/dim]")
            for line in f.evidence:
                _body(console, f"[dim]> {esc(line)}[/dim]")
            if f.doc:
                _body(console, f"[dim]see {esc(f.doc)}[/dim]")
    console.print()
    if not result.findings:
        console.print("[green]mailtls audit: no findings.[/green]")
    else:
        counts = {s: 0 for s in Severity}
        for f in result.findings:
            counts[f.severity] += 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), reverse=True) if n)
        console.print(f"[bold]{len(result.findings)} finding(s):[/bold] {summary}")
    for note in result.notes:
        console.print("[dim]note: " + esc(note) + "[/dim]")
