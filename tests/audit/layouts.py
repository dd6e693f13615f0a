"""Score ``mailtls audit`` on the real-world-like layouts in ``fixtures/layouts/``.

Each layout holds ``postfix/`` (main.cf, master.cf and their ``postconf -n/-M/-P`` captures),
``dovecot/`` (dovecot.conf with includes and its ``doveconf -n`` capture, or a hand-written 2.4
expectation) and ``expected.toml``: what a careful admin expects to be told (``required``: id,
service, optionally setting, and the severity) and what may be said without being wrong
(``tolerated``: at most that severity). ``audit = "captures"`` audits the runtime output only.

A required finding is *found* when a finding with its id, service (and setting) has exactly its
severity. A *false alarm* is any finding at ``low`` or above that no required or tolerated entry
covers at that severity. Run as a script to print the table::

    PYTHONPATH=src python tests/audit/layouts.py
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mailtls.audit.collect import Request, collect
from mailtls.audit.report import audit
from mailtls.findings import Finding, Severity

LAYOUTS = Path(__file__).parent / "fixtures" / "layouts"


@dataclass(frozen=True)
class Expected:
    id: str
    service: str
    severity: Severity
    setting: str | None = None

    def covers(self, f: Finding) -> bool:
        return (
            f.id == self.id
            and f.service == self.service
            and (self.setting is None or f.setting == self.setting)
        )

    def __str__(self) -> str:
        setting = f" [{self.setting}]" if self.setting else ""
        return f"{self.severity} {self.id} on {self.service}{setting}"


@dataclass
class Score:
    layout: str
    required: list[Expected]
    missed: list[Expected] = field(default_factory=list)
    false_alarms: list[Finding] = field(default_factory=list)

    @property
    def found(self) -> int:
        return len(self.required) - len(self.missed)


def layouts() -> list[Path]:
    return sorted(p for p in LAYOUTS.iterdir() if (p / "expected.toml").exists())


def _entries(raw: list[dict[str, str]]) -> list[Expected]:
    return [
        Expected(e["id"], e["service"], Severity.parse(e["severity"]), e.get("setting"))
        for e in raw
    ]


def request(layout: Path, mode: str) -> Request:
    pf, dc = layout / "postfix", layout / "dovecot"
    if mode == "captures":
        return Request(
            postconf_n=str(pf / "postconf-n.txt"),
            postconf_m=str(pf / "postconf-M.txt"),
            postconf_p=str(pf / "postconf-P.txt"),
            doveconf_n=str(dc / "doveconf-n.txt"),
        )
    return Request(postfix_dir=str(pf), dovecot_config=str(dc / "dovecot.conf"))


def score(layout: Path) -> Score:
    spec = tomllib.loads((layout / "expected.toml").read_text())
    required, tolerated = _entries(spec["required"]), _entries(spec["tolerated"])
    findings = list(audit(collect(request(layout, spec["audit"]))).findings)
    result = Score(layout.name, required)
    for want in required:
        if not any(want.covers(f) and f.severity is want.severity for f in findings):
            result.missed.append(want)
    for f in findings:
        if f.severity < Severity.LOW:
            continue
        if not any(e.covers(f) and f.severity <= e.severity for e in required + tolerated):
            result.false_alarms.append(f)
    return result


def main() -> int:
    scores = [score(layout) for layout in layouts()]
    for s in scores:
        alarms = len(s.false_alarms)
        print(f"{s.layout:20} found {s.found:2}/{len(s.required):2}  false alarms {alarms}")
        for miss in s.missed:
            print(f"    missed: {miss}")
        for f in s.false_alarms:
            print(f"    false alarm: {f.severity} {f.id} on {f.service} [{f.setting}]")
    found = sum(s.found for s in scores)
    total = sum(len(s.required) for s in scores)
    alarms = sum(len(s.false_alarms) for s in scores)
    print(f"TOTAL: {found} of {total} required findings found, {alarms} false alarm(s)")
    return 0 if found == total and alarms == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
