"""Postfix checks against fixture configs, including the false-positive traps."""

from __future__ import annotations

from audit_helpers import (
    FIXTURES,
    by_id,
    postfix,
    postfix_dir,
    postfix_findings,
    service,
)

from mailtls.audit.checks_postfix import PostfixCheck, allowed_protocols
from mailtls.audit.effective import tls_level
from mailtls.findings import Severity

PF = FIXTURES / "postfix"
AUTH = PostfixCheck.AUTH_BEFORE_TLS.value
NO_TLS = PostfixCheck.TLS_NOT_OFFERED.value
NO_CERT = PostfixCheck.NO_CERTIFICATE.value
P465 = PostfixCheck.IMPLICIT_PORT_PLAINTEXT.value
OPTIONAL = PostfixCheck.SUBMISSION_TLS_OPTIONAL.value
MX_ENCRYPT = PostfixCheck.MANDATORY_TLS_ON_MX.value
PROTOCOLS = PostfixCheck.WEAK_PROTOCOLS.value
CIPHERS = PostfixCheck.WEAK_CIPHERS.value


def test_secure_config_has_nothing_at_or_above_low() -> None:
    findings = postfix_findings(postfix_dir(PF / "secure"))
    assert [f for f in findings if f.severity >= Severity.LOW] == []


def test_insecure_config_reports_each_exposure_with_its_source() -> None:
    findings = postfix_findings(postfix_dir(PF / "insecure"))
    auth = {f.port: f for f in by_id(findings, AUTH)}
    assert auth[587].severity is Severity.HIGH
    assert "accepts cleartext credentials on port 587" in auth[587].reason.lower()
    # AUTH on the MX port without tls_auth_only: the same exposure, the same severity
    assert auth[25].severity is Severity.HIGH
    assert auth[587].setting == "smtpd_tls_auth_only"
    assert auth[587].effective_value == "no"
    assert (auth[587].file or "").endswith("insecure/main.cf") and auth[587].line == 6
    weak = next(f for f in by_id(findings, PROTOCOLS) if f.port == 587)
    assert weak.effective_value == ">=TLSv1 (built-in default)"
    # a default has no line of its own: the finding points where the fix goes
    assert (weak.file or "").endswith("insecure/main.cf") and weak.line is None
    p465 = by_id(findings, P465)
    assert [f.service for f in p465] == ["smtps/inet"]
    assert p465[0].severity is Severity.HIGH
    assert (p465[0].file or "").endswith("insecure/master.cf") and p465[0].line == 4
    # port 2525 (numeric service name) is a submission-like port too
    assert 2525 in auth
    # weak mandatory ciphers matter only where TLS is enforced: not here
    assert by_id(findings, CIPHERS) == []
    assert by_id(findings, NO_TLS) == []


def test_sasl_without_any_tls_is_critical_on_submission() -> None:
    inst = postfix(
        "smtpd_sasl_auth_enable = yes\n",
        "smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n",
    )
    findings = postfix_findings(inst)
    auth = {f.port: f for f in by_id(findings, AUTH)}
    assert auth[587].severity is Severity.CRITICAL
    assert "only in cleartext" in auth[587].reason
    assert auth[25].severity is Severity.CRITICAL
    assert {f.port for f in by_id(findings, NO_TLS)} == {25, 587}


def test_overrides_that_fix_an_insecure_main_cf_are_honoured() -> None:
    inst = postfix_dir(PF / "override_fix")
    findings = postfix_findings(inst)
    assert by_id(findings, AUTH) == []
    assert by_id(findings, NO_TLS) == []
    assert by_id(findings, P465) == []
    sub = service(inst, "submission/inet")
    level = tls_level(sub)
    assert level.level == "encrypt"
    assert level.decided_by.scope == "master.cf -o"
    assert level.decided_by.origin is not None and level.decided_by.origin.line == 6


def test_commented_out_lines_are_not_findings() -> None:
    inst = postfix_dir(PF / "commented")
    findings = postfix_findings(inst)
    assert [f for f in findings if f.severity >= Severity.LOW] == []
    smtp = service(inst, "smtp/inet")
    assert smtp.get("smtpd_sasl_auth_enable").value == "no"
    assert smtp.get("smtpd_banner").raw == "$myhostname ESMTP # this hash is part of the value"
    assert service(inst, "submission/inet").get("smtpd_sasl_auth_enable").value == "yes"


def test_encrypt_implies_auth_only() -> None:
    inst = postfix(
        "smtpd_tls_chain_files = k.pem\nsmtpd_sasl_auth_enable = yes\n"
        "smtpd_tls_security_level = encrypt\n",
        "submission inet n - y - - smtpd\n",
    )
    assert by_id(postfix_findings(inst), AUTH) == []


def test_legacy_switches_decide_when_the_level_is_empty() -> None:
    inst = postfix_dir(PF / "legacy")
    smtp, sub = service(inst, "smtp/inet"), service(inst, "submission/inet")
    assert tls_level(smtp).level == "may"
    assert tls_level(smtp).decided_by.name == "smtpd_use_tls"
    assert tls_level(sub).level == "encrypt"
    assert tls_level(sub).decided_by.name == "smtpd_enforce_tls"
    auth = by_id(postfix_findings(inst), AUTH)
    assert [f.port for f in auth] == [25]


def test_empty_level_without_legacy_switches_means_no_tls() -> None:
    findings = postfix_findings(postfix("smtpd_tls_security_level =\n"))
    assert [f.port for f in by_id(findings, NO_TLS)] == [25]
    assert by_id(findings, NO_TLS)[0].severity is Severity.MEDIUM


def test_wrappermode_makes_the_level_irrelevant() -> None:
    inst = postfix(
        "smtpd_tls_chain_files = k.pem\nsmtpd_tls_security_level = none\n"
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_mandatory_protocols = >=TLSv1.2\n",
        "smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes\n",
    )
    assert postfix_findings(inst) == []


def test_postscreen_hands_port_25_to_smtpd_pass_whose_overrides_apply() -> None:
    inst = postfix_dir(PF / "postscreen")
    svc = service(inst, "smtpd/pass")
    assert svc.port == 25
    assert svc.via == "postscreen on smtp/inet"
    auth = by_id(postfix_findings(inst), AUTH)
    assert [(f.service, f.port) for f in auth] == [("smtpd/pass (postscreen on smtp/inet)", 25)]


def test_missing_certificate_means_tls_silently_off() -> None:
    findings = postfix_findings(postfix_dir(PF / "no_cert"))
    cert = {f.port: f for f in by_id(findings, NO_CERT)}
    assert cert[25].severity is Severity.MEDIUM
    assert "silently disables TLS" in cert[25].reason
    # the loopback-only submission service is reported, but only as info
    assert cert[587].severity is Severity.INFO
    assert "loopback only" in cert[587].reason


def test_loopback_only_interfaces_downgrade_to_info() -> None:
    findings = postfix_findings(postfix_dir(PF / "loopback"))
    assert findings and all(f.severity is Severity.INFO for f in findings)


def test_mandatory_tls_on_port_25_is_low_and_opportunistic_is_not_flagged() -> None:
    base = "smtpd_tls_chain_files = k.pem\nsmtpd_tls_protocols = >=TLSv1.2\n"
    mand = base + "smtpd_tls_mandatory_protocols = >=TLSv1.2\n"
    assert postfix_findings(postfix(base + "smtpd_tls_security_level = may\n")) == []
    findings = postfix_findings(postfix(mand + "smtpd_tls_security_level = encrypt\n"))
    assert [(f.id, f.severity) for f in findings] == [(MX_ENCRYPT, Severity.LOW)]


def test_submission_with_optional_tls_is_low() -> None:
    inst = postfix(
        "smtpd_tls_chain_files = k.pem\nsmtpd_tls_security_level = may\n"
        "smtpd_tls_protocols = >=TLSv1.2\n",
        "submission inet n - y - - smtpd -o smtpd_sasl_auth_enable=yes"
        " -o smtpd_tls_auth_only=yes\n",
    )
    findings = postfix_findings(inst)
    assert [(f.id, f.severity) for f in findings] == [(OPTIONAL, Severity.LOW)]
    assert "-o smtpd_tls_security_level=encrypt" in findings[0].fix


def test_protocol_and_cipher_strength() -> None:
    assert allowed_protocols(">=TLSv1") == {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
    assert allowed_protocols("!SSLv2, !SSLv3") == {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
    assert allowed_protocols("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1") == {"TLSv1.2", "TLSv1.3"}
    assert allowed_protocols("TLSv1.2 TLSv1.3") == {"TLSv1.2", "TLSv1.3"}
    assert allowed_protocols(">=TLSv1.2 <=TLSv1.2") == {"TLSv1.2"}
    inst = postfix(
        "smtpd_tls_chain_files = k.pem\nsmtpd_tls_mandatory_protocols = !SSLv2\n"
        "smtpd_tls_mandatory_ciphers = export\n",
        "submissions inet n - y - - smtpd -o smtpd_tls_wrappermode=yes\n",
    )
    findings = postfix_findings(inst)
    assert by_id(findings, PROTOCOLS)[0].severity is Severity.MEDIUM  # SSLv3 left on
    assert by_id(findings, CIPHERS)[0].severity is Severity.MEDIUM


def test_fix_names_the_file_and_the_exact_line() -> None:
    findings = postfix_findings(postfix_dir(PF / "insecure"))
    sub = next(f for f in by_id(findings, AUTH) if f.port == 587)
    assert "-o smtpd_tls_auth_only=yes" in sub.fix
    assert "master.cf" in sub.fix
    mx = next(f for f in by_id(findings, AUTH) if f.port == 25)
    assert mx.fix.startswith("In main.cf: smtpd_tls_auth_only = yes ")
    assert "-o smtpd_sasl_auth_enable=no under the 'smtp inet' entry" in mx.fix
    assert sub.doc == "https://www.postfix.org/postconf.5.html#smtpd_tls_auth_only"


def test_multi_instance_label() -> None:
    inst = postfix("smtpd_sasl_auth_enable = yes\n", name="postfix-out")
    assert all(f.service and f.service.startswith("postfix-out: ") for f in postfix_findings(inst))
