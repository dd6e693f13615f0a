"""The probe against real Postfix 3.7 and Dovecot 2.3 (Debian packages), started by the tests.

Dovecot listens on 127.0.0.2 and Postfix on 127.0.0.3 (unprivileged ports, a test CA), probed
from 127.0.0.1, each in an insecure configuration (AUTH before TLS accepted, TLS optional, no
implicit-TLS listeners) and a secure one (``smtpd_tls_security_level = encrypt`` and
``smtpd_tls_auth_only``, ``ssl = required``, implicit TLS listeners, TLS >= 1.2). The probe must
report exactly the expected findings, and its verdicts must agree with ``mailtls audit`` run on
the same configuration files.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from probe_servers import (
    DOVECOT_ADDR,
    POSTFIX_ADDR,
    DovecotPorts,
    Pki,
    PostfixPorts,
    dovecot,
    make_pki,
    postfix,
    server_root,
)

from conftest import require_tool
from mailtls.findings import Finding, Severity
from mailtls.probe import ProbeResult, probe_host
from mailtls.probe.classify import AuthOutcome
from mailtls.probe.report import AUDIT_EQUIVALENTS, confirm_audit
from mailtls.probe.targets import Target, target
from mailtls.probe.tlscheck import can_offer

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


@dataclass(frozen=True)
class Stack:
    secure: bool
    pki: Pki
    dv: DovecotPorts
    dv_conf: Path
    pf: PostfixPorts
    pf_etc: Path

    def postfix_targets(self) -> list[Target]:
        return [target("submission", self.pf.submission), target("smtps", self.pf.smtps)]

    def dovecot_targets(self) -> list[Target]:
        return [
            target("imap", self.dv.imap),
            target("pop3", self.dv.pop3),
            target("imaps", self.dv.imaps),
            target("pop3s", self.dv.pop3s),
        ]


def _stack(secure: bool) -> Iterator[Stack]:
    require_tool("postfix")
    require_tool("dovecot")
    with server_root() as tmp:
        pki = make_pki(tmp / "pki", (DOVECOT_ADDR, POSTFIX_ADDR))
        with (
            dovecot(tmp / "dovecot", pki, secure) as (dv, conf),
            postfix(tmp / "postfix", pki, dv.auth_socket, secure) as (pf, etc),
        ):
            yield Stack(secure, pki, dv, conf, pf, etc)


# A fresh stack per test: Dovecot's auth penalty grows with each failed login from one address
# (up to 15 s), and Postfix then answers "454 4.7.0 Temporary authentication failure".
@pytest.fixture
def insecure() -> Iterator[Stack]:
    yield from _stack(secure=False)


@pytest.fixture
def secure() -> Iterator[Stack]:
    yield from _stack(secure=True)


def probe(stack: Stack, host: str, targets: list[Target], timeout: float = 5.0) -> ProbeResult:
    return probe_host(host, targets, timeout, str(stack.pki.ca), True)


def pairs(findings: tuple[Finding, ...] | list[Finding]) -> set[tuple[int | None, str]]:
    return {(f.port, f.id) for f in findings}


def audit_findings(stack: Stack) -> list[Finding]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailtls",
            "audit",
            "--postfix-dir",
            str(stack.pf_etc),
            "--dovecot-config",
            str(stack.dv_conf),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    return [
        Finding(
            **{**f, "severity": Severity.parse(f["severity"]), "evidence": tuple(f["evidence"])}
        )
        for f in json.loads(out.stdout)["findings"]
    ]


def assert_agrees_with_audit(stack: Stack, results: list[ProbeResult]) -> None:
    """Every comparable audit finding is confirmed live, and every comparable probe finding
    has an audit finding on the same port."""
    comparable = frozenset().union(*AUDIT_EQUIVALENTS.values())
    ports = {p.target.port for r in results for p in r.ports}
    audit = [f for f in audit_findings(stack) if f.id in AUDIT_EQUIVALENTS and f.port in ports]
    assert audit or all(not r.findings for r in results)
    probed: list[Finding] = []
    for result in results:
        audit = confirm_audit(audit, result)
        probed += [f for f in result.findings if f.id in comparable]
    for f in audit:
        assert f.confirmed_live is True, f"audit {f.id} on port {f.port} not seen live"
    for p in probed:
        assert any(p.id in AUDIT_EQUIVALENTS[a.id] and a.port == p.port for a in audit), (
            f"probe {p.id} on port {p.port} has no audit counterpart"
        )


def test_insecure_postfix(insecure: Stack) -> None:
    result = probe(insecure, POSTFIX_ADDR, insecure.postfix_targets())
    sub, smtps = insecure.pf.submission, insecure.pf.smtps
    expected = {(sub, "probe-auth-before-tls"), (sub, "probe-submission-tls-optional")}
    expected.add((smtps, "probe-port-unreachable"))
    if can_offer(ssl.TLSVersion.TLSv1):  # Postfix's own default admits TLS 1.0 and 1.1
        expected.add((sub, "probe-legacy-tls-accepted"))
    assert pairs(result.findings) == expected
    port = next(p for p in result.ports if p.target.port == sub)
    assert port.login is not None and port.login.outcome is AuthOutcome.PROCESSED
    assert port.login.reply.startswith("535 5.7.8")
    assert port.tls_required is False
    assert port.injection is not None and port.injection.tested
    assert not port.injection.vulnerable and not port.injection.plaintext_reply
    assert port.tls is not None and port.tls.verify_error is None
    assert port.tls.caps_after is not None and "PLAIN" in port.tls.caps_after.mechanisms
    auth = next(f for f in result.findings if f.id == "probe-auth-before-tls")
    assert auth.severity is Severity.HIGH and auth.confirmed_live
    unreachable = next(p for p in result.ports if p.target.port == smtps)
    assert unreachable.status == "refused" and "refused" in (unreachable.error or "")
    assert not result.notes  # 127.0.0.1 -> 127.0.0.3: source differs from target
    assert_agrees_with_audit(insecure, [result])


def test_insecure_dovecot(insecure: Stack) -> None:
    result = probe(insecure, DOVECOT_ADDR, insecure.dovecot_targets())
    dv = insecure.dv
    assert pairs(result.findings) == {
        (dv.imap, "probe-auth-before-tls"),
        (dv.pop3, "probe-auth-before-tls"),
        (dv.imaps, "probe-port-unreachable"),
        (dv.pop3s, "probe-port-unreachable"),
    }
    for number in (dv.imap, dv.pop3):
        port = next(p for p in result.ports if p.target.port == number)
        assert port.login is not None and port.login.outcome is AuthOutcome.PROCESSED
        assert port.injection is not None and not port.injection.vulnerable
        assert port.tls is not None and port.tls.established
        assert port.tls.legacy == {"TLSv1": "refused", "TLSv1.1": "refused"} or not can_offer(
            ssl.TLSVersion.TLSv1
        )
    assert_agrees_with_audit(insecure, [result])


def test_short_timeout_still_waits_for_dovecots_delayed_failure(insecure: Stack) -> None:
    """Each network step may take 0.5 s; Dovecot delays failed logins (auth_failure_delay)."""
    result = probe(insecure, DOVECOT_ADDR, [target("pop3", insecure.dv.pop3)], timeout=0.5)
    (port,) = result.ports
    assert port.login is not None and port.login.outcome is AuthOutcome.PROCESSED


def test_secure_postfix(secure: Stack) -> None:
    result = probe(secure, POSTFIX_ADDR, secure.postfix_targets())
    assert pairs(result.findings) == set()
    sub = next(p for p in result.ports if p.target.port == secure.pf.submission)
    assert sub.login is not None and sub.login.outcome is AuthOutcome.REFUSED_BEFORE_TLS
    assert sub.login.reply.startswith("530")
    assert sub.tls_required is True
    assert sub.caps_before is not None and not sub.caps_before.mechanisms  # auth_only hides AUTH
    assert sub.tls is not None and sub.tls.caps_after is not None
    assert "PLAIN" in sub.tls.caps_after.mechanisms  # AUTH appears after TLS
    smtps = next(p for p in result.ports if p.target.port == secure.pf.smtps)
    assert smtps.tls is not None and smtps.tls.established and smtps.banner.startswith("220")
    if can_offer(ssl.TLSVersion.TLSv1):
        assert smtps.tls.legacy == {"TLSv1": "refused", "TLSv1.1": "refused"}
    assert_agrees_with_audit(secure, [result])


def test_secure_dovecot(secure: Stack) -> None:
    result = probe(secure, DOVECOT_ADDR, secure.dovecot_targets())
    assert pairs(result.findings) == set()
    imap = next(p for p in result.ports if p.target.port == secure.dv.imap)
    assert imap.caps_before is not None and imap.caps_before.login_disabled
    assert imap.login is not None and imap.login.outcome is AuthOutcome.REFUSED_BEFORE_TLS
    assert "PRIVACYREQUIRED" in imap.login.reply
    pop3 = next(p for p in result.ports if p.target.port == secure.dv.pop3)
    assert pop3.login is not None and pop3.login.outcome is AuthOutcome.REFUSED_BEFORE_TLS
    assert "[AUTH]" in pop3.login.reply  # same code as a failed login: the text decided
    for number in (secure.dv.imaps, secure.dv.pop3s):
        port = next(p for p in result.ports if p.target.port == number)
        assert port.tls is not None and port.tls.established
        assert port.tls.cert is not None and port.tls.cert.hostname_ok
    assert_agrees_with_audit(secure, [result])


def test_cli_exit_codes(insecure: Stack, secure: Stack) -> None:
    def run(stack: Stack) -> subprocess.CompletedProcess[str]:
        spec = f"submission:{stack.pf.submission}"
        extra = ["--cafile", str(stack.pki.ca), "--timeout", "5"]
        return subprocess.run(
            [sys.executable, "-m", "mailtls", "probe", POSTFIX_ADDR, "--ports", spec, *extra],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    bad = run(insecure)
    assert bad.returncode == 1, bad.stderr + bad.stdout
    assert "probe-auth-before-tls" in bad.stdout and "535 5.7.8" in bad.stdout
    good = run(secure)
    assert good.returncode == 0, good.stderr + good.stdout
    assert "no findings" in good.stdout
