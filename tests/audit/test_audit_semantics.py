"""Postfix and Dovecot semantics an admin relies on, one fixture each, audited twice: from the
files and from the real ``postconf -n/-M/-P`` / ``doveconf -n`` output committed next to them
(``captures.py``). Both ways must report the same exposures, on the line that sets them."""

from __future__ import annotations

from pathlib import Path

from audit_helpers import FIXTURES

from mailtls.audit.collect import Request, collect
from mailtls.audit.report import audit
from mailtls.findings import Finding, Severity

PF = FIXTURES / "postfix"
D23 = FIXTURES / "dovecot23"
D24 = FIXTURES / "dovecot24"
AUTH = "postfix-auth-before-tls"
NO_TLS = "postfix-tls-not-offered"
NO_CERT = "postfix-tls-no-certificate"
P465 = "postfix-465-without-wrappermode"
OPTIONAL = "postfix-submission-tls-optional"
PROTOCOLS = "postfix-weak-tls-protocols"
CLEAR = "dovecot-cleartext-auth-before-tls"
MINPROTO = "dovecot-weak-min-protocol"
TRUSTED = "dovecot-trusted-networks-public"
VERSION = "dovecot-setting-not-valid-in-version"


def from_files(fixture: Path) -> list[Finding]:
    if (fixture / "dovecot.conf").exists():
        req = Request(dovecot_config=str(fixture / "dovecot.conf"))
    else:
        req = Request(postfix_dir=str(fixture))
    return list(audit(collect(req)).findings)


def from_captures(fixture: Path) -> list[Finding]:
    if (fixture / "doveconf-n.txt").exists():
        req = Request(doveconf_n=str(fixture / "doveconf-n.txt"))
    else:
        req = Request(
            postconf_n=str(fixture / "postconf-n.txt"),
            postconf_m=str(fixture / "postconf-M.txt"),
            postconf_p=str(fixture / "postconf-P.txt"),
        )
    return list(audit(collect(req)).findings)


def both(fixture: Path) -> tuple[list[Finding], list[Finding]]:
    files, captures = from_files(fixture), from_captures(fixture)

    def key(f: Finding) -> tuple[str, str | None, int | None, Severity, str | None]:
        return (f.id, f.service, f.port, f.severity, f.setting)

    assert sorted(map(key, files)) == sorted(map(key, captures))
    return files, captures


def one(findings: list[Finding], check_id: str, service: str) -> Finding:
    found = [f for f in findings if f.id == check_id and f.service == service]
    assert len(found) == 1, [(f.id, f.service) for f in findings]
    return found[0]


def ids_at_or_above(findings: list[Finding], service: str, level: Severity) -> list[str]:
    return sorted(f.id for f in findings if f.service == service and f.severity >= level)


def capture_line(fixture: Path, name: str, finding: Finding) -> str:
    assert finding.file is not None and finding.file.endswith(name) and finding.line
    return (fixture / name).read_text().splitlines()[finding.line - 1]


# --- Postfix ------------------------------------------------------------------------------------


def test_runtime_captures_apply_postconf_p_overrides_per_service() -> None:
    fixture = PF / "captures_overrides"
    _, captured = both(fixture)
    legacy = one(captured, AUTH, "2526/inet")
    assert legacy.severity is Severity.HIGH
    assert capture_line(fixture, "postconf-P.txt", legacy) == "2526/inet/smtpd_tls_auth_only = no"
    # encrypt implies tls_auth_only: the -P "smtpd_tls_auth_only = no" exposes nothing there
    assert ids_at_or_above(captured, "submission/inet", Severity.LOW) == []
    weak = one(captured, PROTOCOLS, "smtps/inet")
    assert capture_line(fixture, "postconf-P.txt", weak).endswith("mandatory_protocols = >=TLSv1")


def test_submission_with_tls_may_is_its_own_finding() -> None:
    fixture = PF / "submission_may"
    files, _ = both(fixture)
    optional = one(files, OPTIONAL, "submission/inet")
    assert optional.setting == "smtpd_tls_security_level" and optional.line == 4
    assert "RFC 8314" in optional.reason
    assert ids_at_or_above(files, "submission/inet", Severity.LOW) == [OPTIONAL]
    # AUTH before STARTTLS and optional STARTTLS: two settings to change, two findings
    assert ids_at_or_above(files, "2587/inet", Severity.LOW) == [AUTH, OPTIONAL]
    auth = one(files, AUTH, "2587/inet")
    assert auth.setting == "smtpd_tls_auth_only" and auth.line == 11
    assert ids_at_or_above(files, "smtp/inet", Severity.LOW) == []


def test_global_sasl_enables_auth_on_port_25_with_the_same_severity() -> None:
    files, _ = both(PF / "mx_sasl_global")
    mx = one(files, AUTH, "smtp/inet")
    assert mx.port == 25
    assert mx.setting == "smtpd_sasl_auth_enable" and mx.line == 10
    submission = one(from_files(PF / "submission_may"), AUTH, "2587/inet")
    assert mx.severity is submission.severity is Severity.HIGH
    # opportunistic TLS on the MX is correct, not "TLS optional on port 25"
    assert ids_at_or_above(files, "smtp/inet", Severity.LOW) == [AUTH]


def test_legacy_switches_decide_only_while_the_level_is_unset() -> None:
    files, _ = both(PF / "legacy_override")
    assert ids_at_or_above(files, "submission/inet", Severity.LOW) == []  # enforce = encrypt
    assert ids_at_or_above(files, "2587/inet", Severity.LOW) == [AUTH, OPTIONAL]
    plain = one(files, AUTH, "2588/inet")
    assert plain.severity is Severity.CRITICAL and "only in cleartext" in plain.reason
    assert one(files, NO_TLS, "2588/inet").severity is Severity.HIGH
    assert ids_at_or_above(files, "smtp/inet", Severity.LOW) == []  # smtpd_use_tls = yes: may


def test_no_certificate_means_no_starttls_and_no_false_auth_claim() -> None:
    files, _ = both(PF / "no_cert_auth")
    sub = one(files, AUTH, "submission/inet")
    assert sub.severity is Severity.CRITICAL
    assert "no server certificate" in sub.reason
    # smtpd_tls_auth_only = yes keeps AUTH off when TLS never starts: no credential exposure
    assert ids_at_or_above(files, "2525/inet", Severity.LOW) == [NO_CERT]
    assert one(files, NO_CERT, "2525/inet").severity is Severity.HIGH
    assert one(files, NO_CERT, "smtp/inet").severity is Severity.MEDIUM
    # TLS never runs: its protocol versions and ciphers are not findings
    assert [f for f in files if f.id == PROTOCOLS] == []


def test_encrypt_services_use_the_mandatory_protocols() -> None:
    files, _ = both(PF / "mandatory_protocols")
    weak = one(files, PROTOCOLS, "submission/inet")
    assert weak.setting == "smtpd_tls_mandatory_protocols"
    assert weak.effective_value == ">=TLSv1 (built-in default)"
    assert ids_at_or_above(files, "submissions/inet", Severity.INFO) == []
    assert ids_at_or_above(files, "smtp/inet", Severity.INFO) == []


def test_duplicate_master_cf_entries_report_the_one_postfix_runs() -> None:
    fixture = PF / "duplicate_entries"
    files, captured = both(fixture)
    # the first submission entry (no TLS, AUTH) is superseded by the last (encrypt)
    assert ids_at_or_above(files, "submission/inet", Severity.LOW) == []
    # the first smtps entry has wrapper mode, the one Postfix runs has not
    p465 = one(files, P465, "smtps/inet")
    assert (p465.file or "").endswith("master.cf") and p465.line == 18
    in_capture = one(captured, P465, "smtps/inet")
    assert capture_line(fixture, "postconf-M.txt", in_capture).startswith("smtps ")
    assert "wrappermode" not in capture_line(fixture, "postconf-M.txt", in_capture)


def test_internal_mynetworks_relay_is_at_most_low() -> None:
    files, _ = both(PF / "internal_relay")
    internal = [f for f in files if f.service == "2025/inet"]
    assert [f.id for f in internal] == [NO_TLS]
    assert internal[0].severity is Severity.LOW and "mynetworks" in internal[0].reason
    assert [f for f in files if f.id == AUTH] == []


# --- Dovecot ------------------------------------------------------------------------------------


def test_local_loopback_block_is_not_a_network_exposure_remote_block_is() -> None:
    fixture = D23 / "scoped_blocks"
    files, captured = both(fixture)
    office = one(files, CLEAR, "imap (remote 192.168.0.0/16)")
    assert office.severity is Severity.HIGH and office.line == 16
    assert "remote 192.168.0.0/16" in (office.service or "")
    webmail = [f for f in files if "local 127.0.0.1" in (f.service or "")]
    assert webmail and all(f.severity is Severity.INFO for f in webmail)
    assert [f for f in files if f.severity >= Severity.LOW and f is not office] == []
    captured_office = one(captured, CLEAR, "imap (remote 192.168.0.0/16)")
    assert capture_line(fixture, "doveconf-n.txt", captured_office).strip() == (
        "disable_plaintext_auth = no"
    )


def test_effective_value_after_includes_is_reported_where_it_was_set() -> None:
    fixture = D23 / "include_lowering"
    files, captured = both(fixture)
    weak = one(files, MINPROTO, "imap")
    assert (weak.file or "").endswith("conf.d/99-legacy-clients.conf") and weak.line == 2
    assert weak.effective_value == "TLSv1"
    line = capture_line(fixture, "doveconf-n.txt", one(captured, MINPROTO, "imap"))
    assert line == "ssl_min_protocol = TLSv1"


def test_private_trusted_networks_are_the_intended_use() -> None:
    files, _ = both(D23 / "trusted_private")
    assert [f for f in files if f.severity > Severity.INFO] == []


def test_trusting_every_address_is_a_finding() -> None:
    files, _ = both(D23 / "trusted_everyone")
    trusted = [f for f in files if f.id == TRUSTED]
    assert len(trusted) == 1 and trusted[0].severity is Severity.HIGH
    assert "0.0.0.0/0" in trusted[0].reason and trusted[0].line == 7


def test_24_config_with_23_names_does_not_load_and_nothing_else_is_read() -> None:
    findings = from_files(D24 / "renamed_nested")
    assert {f.id for f in findings} == {VERSION}
    by_name = {f.setting: f for f in findings}
    assert set(by_name) == {"ssl_cert", "ssl_key", "disable_plaintext_auth"}
    assert [by_name[n].line for n in ("ssl_cert", "ssl_key", "disable_plaintext_auth")] == [
        14,
        15,
        18,
    ]
    assert "ssl_server_cert_file" in by_name["ssl_cert"].reason
    assert "auth_allow_cleartext" in by_name["disable_plaintext_auth"].fix
    assert all("will not start" in f.reason for f in findings)


def test_24_captures_are_audited_like_the_files() -> None:
    """The hand-written 2.4 ``doveconf -n`` expectations (see dovecot24/README.md), audited as
    runtime captures, give what auditing the 2.4 files gives."""
    for name in ("secure", "cleartext"):
        fixture = D24 / name
        capture = Request(doveconf_n=str(fixture / "expected-doveconf-n.txt"))
        result = audit(collect(capture))
        assert result.effective["dovecot"]["version"] == "2.4"
        key = [(f.id, f.service, f.severity, f.setting) for f in from_files(fixture)]
        assert [(f.id, f.service, f.severity, f.setting) for f in result.findings] == key
