"""`mailtls audit --probe HOST`: the configuration view plus the live view in one report.

The live side is a real `mailtls serve` (its baseline servers accept logins before TLS), so the
combined report must carry the probe's cleartext-login findings next to the audit's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ServeInstance

FIXTURES = Path(__file__).parent / "fixtures" / "postfix"


def _audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailtls", "audit", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_audit_with_probe_adds_live_findings(serve: ServeInstance) -> None:
    ports = f"submission:{serve.ports['smtp_submission']},imap:{serve.ports['imap']}"
    proc = _audit(
        "--postfix-dir",
        str(FIXTURES / "insecure"),
        "--probe",
        "127.0.0.1",
        "--probe-ports",
        ports,
        "--probe-timeout",
        "8",
        "--cafile",
        str(serve.ca),
        "--format",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    live_ports = {
        f["port"]
        for f in doc["findings"]
        if f["port"] in (serve.ports["smtp_submission"], serve.ports["imap"])
    }
    assert live_ports == {serve.ports["smtp_submission"], serve.ports["imap"]}
    assert any(f["confirmed_live"] is True for f in doc["findings"])
    text = _audit(
        "--postfix-dir",
        str(FIXTURES / "insecure"),
        "--probe",
        "127.0.0.1",
        "--probe-ports",
        ports,
        "--probe-timeout",
        "8",
        "--cafile",
        str(serve.ca),
    )
    assert "live probe of 127.0.0.1" in " ".join(text.stdout.split())


def test_audit_probe_bad_input_is_one_line() -> None:
    proc = _audit("--postfix-dir", str(FIXTURES / "secure"), "--probe", "no-such-host.invalid")
    assert proc.returncode == 2
    assert "cannot probe" in proc.stderr and "Traceback" not in proc.stderr
    proc = _audit(
        "--postfix-dir",
        str(FIXTURES / "secure"),
        "--probe",
        "127.0.0.1",
        "--probe-ports",
        "bogus:xx",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
