"""Dovecot checks per protocol and filter context, including the false-positive traps."""

from __future__ import annotations

from audit_helpers import (
    FIXTURES,
    by_id,
    dovecot_contexts,
    dovecot_file,
    dovecot_findings,
    dovecot_text,
)

from mailtls.audit.checks_dovecot import DovecotCheck
from mailtls.findings import Severity

D23 = FIXTURES / "dovecot23"
D24 = FIXTURES / "dovecot24"
CLEAR = DovecotCheck.CLEARTEXT_AUTH.value
SSL_NO = DovecotCheck.SSL_DISABLED.value
OPTIONAL = DovecotCheck.TLS_OPTIONAL.value
MECHS = DovecotCheck.MECHS_BEFORE_TLS.value
TRUSTED = DovecotCheck.TRUSTED_PUBLIC.value
MINPROTO = DovecotCheck.WEAK_MIN_PROTOCOL.value
VERSION = DovecotCheck.WRONG_VERSION_SETTING.value
NO_CERT = DovecotCheck.NO_CERTIFICATE.value


def test_ssl_required_makes_the_cleartext_flag_moot() -> None:
    findings = dovecot_findings(dovecot_file(D23 / "secure" / "dovecot.conf"))
    assert findings == []
    cfg = dovecot_text("ssl = required\nssl_cert = <c\ndisable_plaintext_auth = no\n")
    assert by_id(dovecot_findings(cfg), CLEAR) == []


def test_cleartext_auth_before_starttls_is_high_per_protocol() -> None:
    findings = dovecot_findings(dovecot_file(D23 / "cleartext" / "dovecot.conf"))
    clear = {f.service: f for f in by_id(findings, CLEAR)}
    assert set(clear) == {"imap", "pop3"}
    assert clear["imap"].severity is Severity.HIGH
    assert clear["imap"].port == 143 and clear["pop3"].port == 110
    assert clear["imap"].reason.startswith("Accepts cleartext credentials on port 143")
    assert clear["imap"].line == 6 and clear["imap"].setting == "disable_plaintext_auth"
    assert "disable_plaintext_auth = yes" in clear["imap"].fix
    mechs = by_id(findings, MECHS)
    assert mechs and "cram-md5" in mechs[0].reason


def test_ssl_no_with_cleartext_is_two_findings() -> None:
    """TLS off everywhere, and cleartext logins allowed: two settings to change, two findings."""
    findings = dovecot_findings(dovecot_file(D23 / "ssl_no" / "dovecot.conf"))
    assert [(f.id, f.severity, f.service, f.setting, f.line) for f in findings] == [
        (SSL_NO, Severity.HIGH, "imap", "ssl", 3),
        (CLEAR, Severity.CRITICAL, "imap", "disable_plaintext_auth", 4),
    ]
    assert "only in cleartext" in findings[1].reason
    # ssl = no with cleartext refused: TLS off is still a finding, credentials are not
    cfg = dovecot_text("protocols = imap\nssl = no\ndisable_plaintext_auth = yes\n")
    assert [f.id for f in dovecot_findings(cfg)] == [SSL_NO]


def test_default_23_config_with_a_certificate_is_only_informational() -> None:
    findings = dovecot_findings(dovecot_text("protocols = imap\nssl_cert = <c\n"))
    assert [(f.id, f.severity) for f in findings] == [(OPTIONAL, Severity.INFO)]
    assert "same host" in findings[0].reason


def test_remote_filter_gets_its_own_context_and_finding() -> None:
    cfg = dovecot_file(D23 / "remote_filter" / "dovecot.conf")
    labels = [c.label for c in dovecot_contexts(cfg)]
    assert labels == [
        "imap",
        "imap (remote 192.168.0.0/16)",
        "pop3",
        "pop3 (remote 192.168.0.0/16)",
    ]
    findings = dovecot_findings(cfg)
    clear = by_id(findings, CLEAR)
    assert [f.service for f in clear] == ["imap (remote 192.168.0.0/16)"]
    assert clear[0].line == 9
    # pop3 has ssl = required in its protocol block: the remote exception does not matter there
    minproto = by_id(findings, MINPROTO)
    assert [f.service for f in minproto] == ["imap (remote 192.168.0.0/16)"]


def test_disabled_and_implicit_listeners() -> None:
    cfg = dovecot_file(D23 / "listeners" / "dovecot.conf")
    findings = dovecot_findings(cfg)
    clear = by_id(findings, CLEAR)
    # imap's plaintext listener has port = 0; only pop3 on 110 remains plaintext
    assert [(f.service, f.port) for f in clear] == [("pop3", 110)]
    imap = next(c for c in dovecot_contexts(cfg) if c.label == "imap")
    ports = {(lis.name, lis.port, lis.implicit_tls) for lis in imap.listeners}
    assert ports == {("imap", 0, False), ("imaps", 993, True)}
    trusted = by_id(findings, TRUSTED)
    assert len(trusted) == 1 and "203.0.113.0/24" in trusted[0].reason
    assert trusted[0].severity is Severity.MEDIUM
    assert len(by_id(findings, MINPROTO)) == 1


def test_trusted_everything_is_high() -> None:
    cfg = dovecot_text("protocols = imap\nssl_cert = <c\nlogin_trusted_networks = 0.0.0.0/0\n")
    assert by_id(dovecot_findings(cfg), TRUSTED)[0].severity is Severity.HIGH


def test_loopback_listen_downgrades_to_info() -> None:
    findings = dovecot_findings(dovecot_file(D23 / "loopback" / "dovecot.conf"))
    clear = by_id(findings, CLEAR)
    assert clear and clear[0].severity is Severity.INFO
    assert "loopback" in clear[0].reason


def test_secure_24_config_has_no_findings() -> None:
    cfg = dovecot_file(D24 / "secure" / "dovecot.conf")
    assert [c.version for c in dovecot_contexts(cfg)] == ["2.4", "2.4"]
    assert dovecot_findings(cfg) == []


def test_24_cleartext_is_inverted_and_ssl_server_block_counts() -> None:
    cfg = dovecot_file(D24 / "cleartext" / "dovecot.conf")
    findings = dovecot_findings(cfg)
    clear = by_id(findings, CLEAR)
    assert {f.service for f in clear} == {"imap", "pop3"}
    assert clear[0].setting == "auth_allow_cleartext"
    assert "auth_allow_cleartext = no" in clear[0].fix
    assert by_id(findings, NO_CERT) == []


def test_23_names_are_configuration_errors_in_24() -> None:
    findings = dovecot_findings(dovecot_file(D24 / "renamed" / "dovecot.conf"))
    renamed = {f.setting: f for f in by_id(findings, VERSION)}
    assert set(renamed) == {"ssl_cert", "ssl_key", "disable_plaintext_auth"}
    assert "ssl_server_cert_file" in renamed["ssl_cert"].reason
    assert renamed["ssl_key"].effective_value == "(not shown)"


def test_24_names_in_a_23_config_are_errors_too() -> None:
    cfg = dovecot_text("ssl_cert = <c\nauth_allow_cleartext = yes\n")
    assert [f.setting for f in by_id(dovecot_findings(cfg, "2.3"), VERSION)] == [
        "auth_allow_cleartext"
    ]


def test_missing_certificate() -> None:
    findings = dovecot_findings(dovecot_text("protocols = imap\n"))
    assert [f.severity for f in by_id(findings, NO_CERT)] == [Severity.MEDIUM]
