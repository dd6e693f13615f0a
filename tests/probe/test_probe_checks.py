"""Findings from per-port facts (pure), audit confirmation and the report formats."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import pytest

from mailtls.findings import Finding, Severity
from mailtls.probe.checks import findings_for, host_notes
from mailtls.probe.classify import AuthOutcome, Caps
from mailtls.probe.dialogue import DummyCredentials, LoginResult
from mailtls.probe.injection import InjectionResult
from mailtls.probe.report import confirm_audit, render
from mailtls.probe.session import PortResult, ProbeResult, TlsResult
from mailtls.probe.targets import target
from mailtls.probe.tlscheck import CertFacts

OFFERED = Caps(starttls=True, mechanisms=("PLAIN", "LOGIN"))
HIDDEN = Caps(starttls=True)
GOOD_CERT = CertFacts("mail", "CA", ("mail.example.org",), "2027-01-01T00:00:00+00:00", 200, True)
TLS_OK = TlsResult("starttls", True, "TLSv1.3", "TLS_AES_256_GCM_SHA384", cert=GOOD_CERT,
                   legacy={"TLSv1": "refused", "TLSv1.1": "not tested"})  # fmt: skip


def port(kind: str, number: int, **kw: Any) -> PortResult:
    base = PortResult(
        target(kind, number),
        "192.0.2.1",
        "ok",
        banner="220 mail",
        caps_before=OFFERED,
        tls=TLS_OK,
        injection=InjectionResult(tested=True),
        login=LoginResult("AUTH PLAIN", AuthOutcome.REFUSED_BEFORE_TLS, "530 5.7.0", 0.0),
    )
    return replace(base, **kw)


def login(outcome: AuthOutcome, seconds: float = 0.1) -> LoginResult:
    return LoginResult("AUTH PLAIN", outcome, "535 5.7.8 nope", seconds)


def ids(r: PortResult) -> dict[str, Severity]:
    return {f.id: f.severity for f in findings_for(r, "mail.example.org")}


@pytest.mark.parametrize(
    ("kind", "number", "caps", "outcome", "expected"),
    [
        ("submission", 587, OFFERED, AuthOutcome.PROCESSED, Severity.HIGH),
        ("submission", 587, OFFERED, AuthOutcome.ACCEPTED, Severity.HIGH),
        ("smtp", 25, OFFERED, AuthOutcome.PROCESSED, Severity.MEDIUM),
        ("imap", 143, OFFERED, AuthOutcome.PROCESSED, Severity.HIGH),
        ("pop3", 110, Caps(mechanisms=("PLAIN",)), AuthOutcome.PROCESSED, Severity.CRITICAL),
        ("smtp", 25, Caps(mechanisms=("PLAIN",)), AuthOutcome.PROCESSED, Severity.HIGH),
    ],
)
def test_auth_before_tls_severity(
    kind: str, number: int, caps: Caps, outcome: AuthOutcome, expected: Severity
) -> None:
    found = ids(port(kind, number, caps_before=caps, login=login(outcome)))
    assert found["probe-auth-before-tls"] is expected


def test_refused_login_is_no_finding_and_unclassified_is_info() -> None:
    assert ids(port("imap", 143, login=login(AuthOutcome.REFUSED_BEFORE_TLS))) == {}
    unclassified = ids(port("imap", 143, login=login(AuthOutcome.UNCLASSIFIED)))
    assert unclassified == {"probe-login-reply-unclassified": Severity.INFO}
    # --no-login-attempt: what is advertised decides, at a lower severity
    assert ids(port("imap", 143, login=None)) == {"probe-auth-offered-before-tls": Severity.MEDIUM}
    disabled = Caps(starttls=True, login_disabled=True)
    assert ids(port("imap", 143, login=None, caps_before=disabled)) == {}


def test_slow_failure_says_so_in_evidence() -> None:
    r = port("imap", 143, login=login(AuthOutcome.PROCESSED, seconds=4.2))
    (f,) = findings_for(r, "mail.example.org")
    assert any("after 4.2 s: a delayed failure" in e for e in f.evidence)
    assert not any("password" in e and "redacted" not in e for e in f.evidence)


def test_submission_tls_optional_is_its_own_finding() -> None:
    """One finding per setting to change, as the audit reports it: TLS optional on submission
    stands beside AUTH before TLS."""
    refused = login(AuthOutcome.REFUSED_BEFORE_TLS)
    r = port("submission", 587, caps_before=HIDDEN, login=refused, tls_required=False)
    assert ids(r) == {"probe-submission-tls-optional": Severity.LOW}
    exposed = port(
        "submission", 587, caps_before=HIDDEN, login=login(AuthOutcome.PROCESSED),
        tls_required=False,
    )  # fmt: skip
    assert "probe-submission-tls-optional" in ids(exposed) and len(ids(exposed)) == 2
    assert ids(port("submission", 587, caps_before=HIDDEN, login=refused, tls_required=True)) == {}
    assert ids(port("smtp", 25, caps_before=HIDDEN, login=refused, tls_required=False)) == {}


def test_tls_and_certificate_findings() -> None:
    bad_cert = CertFacts("x", "x", ("other.example",), "2020-01-01T00:00:00+00:00", -5, False)
    tls = TlsResult(
        "implicit", True, "TLSv1", "AES", verify_error="certificate has expired", cert=bad_cert,
        legacy={"TLSv1": "accepted", "TLSv1.1": "accepted"},
    )  # fmt: skip
    found = ids(port("imaps", 993, caps_before=None, tls=tls, injection=None))
    assert found == {
        "probe-certificate-untrusted": Severity.MEDIUM,
        "probe-certificate-hostname-mismatch": Severity.MEDIUM,
        "probe-certificate-expired": Severity.HIGH,
        "probe-legacy-tls-accepted": Severity.LOW,
    }
    soon = TlsResult("implicit", True, cert=CertFacts("x", "x", (), "soon", 3, True))
    assert ids(port("imaps", 993, tls=soon)) == {"probe-certificate-expiring": Severity.LOW}
    failed = TlsResult("starttls", False, error="TLS handshake failed: x", starttls_reply="220 go")
    assert ids(port("smtp", 25, tls=failed)) == {"probe-starttls-failed": Severity.MEDIUM}


def test_injection_findings() -> None:
    both = InjectionResult(tested=True, vulnerable=True, plaintext_reply=True, evidence=("S: x",))
    assert ids(port("imap", 143, injection=both)) == {
        "probe-starttls-command-injection": Severity.HIGH,
        "probe-starttls-pipelined-answered-in-plaintext": Severity.LOW,
    }
    aborted = InjectionResult(tested=True, aborted=True)
    assert ids(port("pop3", 110, injection=aborted)) == {}


def test_unreachable_port_is_info_only() -> None:
    r = PortResult(target("imaps", 993), "192.0.2.1", "timeout", error="no answer within 10 s")
    assert ids(r) == {"probe-port-unreachable": Severity.INFO}


def test_source_equals_target_note() -> None:
    same = PortResult(target("imap", 143), "127.0.0.1", "ok", source_is_target=True)
    assert host_notes([same]) and "127.0.0.1" in host_notes([same])[0]
    assert host_notes([port("imap", 143)]) == []


def test_confirm_audit() -> None:
    r = port("submission", 587, login=login(AuthOutcome.PROCESSED))
    result = ProbeResult("mail", ("192.0.2.1",), (r,), tuple(findings_for(r, "mail")))

    def audit(id_: str, number: int) -> Finding:
        return Finding(id_, Severity.HIGH, "cleartext-credentials", "r", "f", port=number)

    confirmed = confirm_audit(
        [audit("postfix-auth-before-tls", 587), audit("postfix-tls-not-offered", 587),
         audit("postfix-auth-before-tls", 2587), audit("dovecot-no-certificate", 587)],
        result,
    )  # fmt: skip
    assert [f.confirmed_live for f in confirmed] == [True, False, None, None]


def test_render_formats_escape_and_never_show_the_password() -> None:
    creds = DummyCredentials("mailtls-probe-1234", "s3cret-dummy-password")
    assert "s3cret" not in repr(creds)
    evil = port("smtp", 25, banner="220 \x1b[2J[red]x[/red]", login=login(AuthOutcome.PROCESSED),
                transcript=("S: 220 \\x1b[2J[red]x[/red]",))  # fmt: skip
    result = ProbeResult("mail", ("192.0.2.1",), (evil,), tuple(findings_for(evil, "mail")))
    for fmt in ("text", "json", "sarif"):
        out, err = io.StringIO(), io.StringIO()
        render(result, fmt, out, err)
        assert "\x1b" not in out.getvalue()
        if fmt != "text":
            json.loads(out.getvalue())
    text = io.StringIO()
    render(result, "text", text, io.StringIO())
    assert "probe-auth-before-tls" in text.getvalue() and "fix:" in text.getvalue()
