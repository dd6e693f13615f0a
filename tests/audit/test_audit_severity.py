"""The severity rules: docs/audit.md shows exactly the table the code applies, and the same
exposure at the same reach has one severity on every service of every fixture and layout."""

from __future__ import annotations

import re
from pathlib import Path

from audit_helpers import FIXTURES
from layouts import layouts, request

from mailtls.audit.collect import Request, collect
from mailtls.audit.report import audit
from mailtls.audit.severity import CAP, SEVERITY, Exposure, Reach, severity
from mailtls.findings import Finding, Severity

DOC = Path(__file__).parents[2] / "docs" / "audit.md"


def doc_table(first_column: str) -> dict[str, str]:
    """The ``name -> severity`` rows of the docs table whose first header is ``first_column``."""
    text = DOC.read_text()
    start = text.index(f"| {first_column} | ")
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[2:]:
        m = re.match(r"\| `([a-z0-9-]+)` \| (\w+) \|", line)
        if m is None:
            break
        rows[m.group(1)] = m.group(2)
    return rows


def test_docs_show_the_table_the_code_applies() -> None:
    assert doc_table("exposure") == {e.value: str(s) for e, s in SEVERITY.items()}
    assert doc_table("reach") == {r.value: str(s) for r, s in CAP.items()}
    assert set(SEVERITY) == set(Exposure)


def test_reach_caps_the_exposure() -> None:
    assert severity(Exposure.CREDENTIALS_CLEARTEXT_ONLY) is Severity.CRITICAL
    assert severity(Exposure.CREDENTIALS_CLEARTEXT_ONLY, Reach.INTERNAL) is Severity.LOW
    assert severity(Exposure.CREDENTIALS_BEFORE_TLS, Reach.LOOPBACK) is Severity.INFO
    assert severity(Exposure.OLD_TLS_OPPORTUNISTIC_RELAY, Reach.INTERNAL) is Severity.INFO


def every_finding() -> list[Finding]:
    found: list[Finding] = []
    for fixture in sorted((FIXTURES / "postfix").iterdir()):
        found += audit(collect(Request(postfix_dir=str(fixture)))).findings
    for fixture in sorted((FIXTURES / "dovecot23").iterdir()) + sorted(
        (FIXTURES / "dovecot24").iterdir()
    ):
        if fixture.is_dir():
            req = Request(dovecot_config=str(fixture / "dovecot.conf"))
            found += audit(collect(req)).findings
    for layout in layouts():
        found += audit(collect(request(layout, "files"))).findings
    return found


def test_same_exposure_same_severity_on_every_service() -> None:
    findings = every_finding()
    assert findings and all(f.exposure is not None for f in findings)
    seen: dict[tuple[str | None, str], set[tuple[Severity, str | None]]] = {}
    for f in findings:
        seen.setdefault((f.exposure, f.extra["reach"]), set()).add((f.severity, f.id))
    for (exposure, reach), pairs in seen.items():
        assert len({sev for sev, _ in pairs}) == 1, (exposure, reach, pairs)
        assert {sev for sev, _ in pairs} == {severity(Exposure(exposure), Reach(reach))}, exposure
    # AUTH before STARTTLS is the same exposure on the MX, on submission and on IMAP/POP3
    ids = {i for sev, i in seen[(Exposure.CREDENTIALS_BEFORE_TLS.value, "public")]}
    assert {"postfix-auth-before-tls", "dovecot-cleartext-auth-before-tls"} <= ids
