"""The finding model shared by ``mailtls audit`` and ``mailtls probe``, and its three formats.

A finding is a typed, frozen fact about a server: what is exposed, where it comes from (a file and
line for the auditor, transcript lines for the prober), why it matters and the exact fix. Checks
produce findings; presentation (text, JSON, SARIF) is separate and lives here so both tools render
alike. Exit codes: 0 nothing at or above ``--fail-on``, 1 such findings, 2 usage error, 3 could not
run.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from mailtls.termsafe import escape_markup

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_CANNOT_RUN = 3


class Severity(enum.IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r} (choose from {names})") from None

    def __str__(self) -> str:
        return self.name.lower()


_SARIF_LEVEL = {
    Severity.INFO: "note",
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}
_COLOUR = {
    Severity.INFO: "dim",
    Severity.LOW: "cyan",
    Severity.MEDIUM: "yellow",
    Severity.HIGH: "red",
    Severity.CRITICAL: "bold red",
}
COLOUR = _COLOUR  # rich style per severity, for the tools' own text renderers


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    category: str
    reason: str
    fix: str
    setting: str | None = None
    effective_value: str | None = None
    service: str | None = None
    port: int | None = None
    file: str | None = None
    line: int | None = None
    doc: str | None = None
    evidence: tuple[str, ...] = ()
    confirmed_live: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # what is exposed, as the auditor's severity table names it (docs/audit.md); None for probe
    exposure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = str(self.severity)
        data["evidence"] = list(self.evidence)
        return data


def worst(findings: Iterable[Finding]) -> Severity | None:
    sev = [f.severity for f in findings]
    return max(sev) if sev else None


def exit_code(findings: Iterable[Finding], fail_on: Severity) -> int:
    w = worst(findings)
    return EXIT_FINDINGS if w is not None and w >= fail_on else EXIT_OK


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(
        findings, key=lambda f: (f.service or "", -int(f.severity), f.id, f.file or "", f.line or 0)
    )


def to_json(findings: Sequence[Finding], **extra: Any) -> str:
    doc: dict[str, Any] = {"findings": [f.to_dict() for f in sort_findings(findings)]}
    doc.update(extra)
    return json.dumps(doc, indent=2, sort_keys=False, default=str)


def to_sarif(findings: Sequence[Finding], tool_name: str, tool_version: str) -> str:
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for f in sort_findings(findings):
        rules.setdefault(
            f.id,
            {
                "id": f.id,
                "name": f.id,
                "shortDescription": {"text": f.category},
                "helpUri": f.doc or "https://github.com/mailtls/mailtls",
                "properties": {"category": f.category},
            },
        )
        result: dict[str, Any] = {
            "ruleId": f.id,
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f.reason} Fix: {f.fix}"},
            "properties": {
                "severity": str(f.severity),
                "service": f.service,
                "port": f.port,
                "setting": f.setting,
                "effective_value": f.effective_value,
                "evidence": list(f.evidence),
                "exposure": f.exposure,
            },
        }
        if f.file:
            region = {"startLine": f.line} if f.line else {}
            location: dict[str, Any] = {"artifactLocation": {"uri": f.file}}
            if region:
                location["region"] = region
            result["locations"] = [{"physicalLocation": location}]
        results.append(result)
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": tool_name,
                        "version": tool_version,
                        "informationUri": "https://github.com/mailtls/mailtls",
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2)


def render_text(findings: Sequence[Finding], console: Console, title: str) -> None:
    """Human output: grouped by service, coloured by severity. Every value is escaped."""
    if not findings:
        console.print(f"[green]{escape_markup(title)}: no findings.[/green]")
        return
    by_service: dict[str, list[Finding]] = {}
    for f in sort_findings(findings):
        by_service.setdefault(f.service or "(global)", []).append(f)
    console.print(f"[bold]{escape_markup(title)}[/bold]")
    for service, items in by_service.items():
        table = Table(title=escape_markup(service), show_lines=True, expand=False)
        table.add_column("severity")
        table.add_column("finding")
        table.add_column("where")
        table.add_column("fix")
        for f in items:
            where = ""
            if f.file:
                where = f.file + (f":{f.line}" if f.line else "")
            elif f.port:
                where = f"port {f.port}"
            # escape each piece on its own: a newline we add must stay a line break
            parts = [escape_markup(f.reason)]
            if f.setting:
                parts.insert(0, escape_markup(f"{f.setting} = {f.effective_value or ''}"))
            parts += [escape_markup(f"  > {e}") for e in f.evidence]
            sev = str(f.severity)
            table.add_row(
                f"[{_COLOUR[f.severity]}]{sev}[/]",
                "\n".join(parts),
                escape_markup(where),
                escape_markup(f.fix),
            )
        console.print(table)
    counts: dict[str, int] = {}
    for f in findings:
        counts[str(f.severity)] = counts.get(str(f.severity), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0]))
    console.print(f"{len(findings)} finding(s): {summary}")
