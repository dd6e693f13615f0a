"""The probe against ``mailtls serve``: its baseline servers accept logins before TLS.

The serve stack answers any unknown user with the protocol's authentication failure after a
short delay, before or after STARTTLS: the probe must say that credentials cross in cleartext
on every STARTTLS port, and find TLS sound on the implicit-TLS ports with the serve test CA.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ServeInstance
from mailtls.probe import probe_host
from mailtls.probe.classify import AuthOutcome
from mailtls.probe.targets import target

SERVE_PORTS = {
    "smtp_mx": "smtp",
    "smtp_submission": "submission",
    "smtp_tls": "smtps",
    "imap": "imap",
    "imap_tls": "imaps",
    "pop3": "pop3",
    "pop3_tls": "pop3s",
}


def test_probe_says_serve_accepts_login_before_tls(serve: ServeInstance) -> None:
    targets = [target(kind, serve.ports[name]) for name, kind in SERVE_PORTS.items()]
    result = probe_host("127.0.0.1", targets, 5.0, str(serve.ca), True)
    by_port = {p.target.port: p for p in result.ports}
    auth = {f.port for f in result.findings if f.id == "probe-auth-before-tls"}
    plaintext_ports = {serve.ports[n] for n in ("smtp_mx", "smtp_submission", "imap", "pop3")}
    assert auth == plaintext_ports
    for number in plaintext_ports:
        port = by_port[number]
        assert port.login is not None and port.login.outcome is AuthOutcome.PROCESSED
        assert port.injection is not None and port.injection.tested
        assert not port.injection.vulnerable
    for name in ("smtp_tls", "imap_tls", "pop3_tls"):
        port = by_port[serve.ports[name]]
        assert port.tls is not None and port.tls.established, port
        assert port.tls.verify_error is None
    severities = {f.port: f.severity for f in result.findings if f.id == "probe-auth-before-tls"}
    assert str(severities[serve.ports["smtp_mx"]]) == "medium"  # opportunistic MX role
    assert str(severities[serve.ports["imap"]]) == "high"
    # the probe runs on the server's own address: it says so
    assert any("source address equals the target" in n for n in result.notes)
    assert all(p.source_is_target for p in result.ports)


def test_cli_json_against_serve(serve: ServeInstance) -> None:
    spec = f"imap:{serve.ports['imap']},pop3s:{serve.ports['pop3_tls']}"
    extra = ["--cafile", str(serve.ca), "--format", "json", "--timeout", "5"]
    out = subprocess.run(
        [sys.executable, "-m", "mailtls", "probe", "127.0.0.1", "--ports", spec, *extra],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert {f["id"] for f in doc["findings"]} == {"probe-auth-before-tls"}
    assert [p["status"] for p in doc["ports"]] == ["ok", "ok"]
    assert doc["notes"] and "source address" in doc["notes"][0]
