"""Pure checks: one ``PortResult`` in, ``Finding``s out (a registry keyed by ``ProbeCheck``).

Severities follow ``mailtls audit`` so that a finding seen in the configuration and confirmed
live reads the same: credentials accepted before TLS are ``high`` (``medium`` on port 25, where
opportunistic TLS is correct; ``critical`` when STARTTLS is not even offered), TLS missing on a
port is ``high`` (``medium`` on 25), a submission port that lets a session go on without TLS is
``low``, TLS 1.0/1.1 still accepted is ``low`` (``info`` on 25). No I/O; imports only the
session's result types, ``classify``, ``targets`` and ``mailtls.findings``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from mailtls.findings import Finding, Severity
from mailtls.probe.classify import AuthOutcome, Caps

if TYPE_CHECKING:
    from mailtls.probe.session import PortResult

DOC = "https://github.com/mailtls/mailtls/blob/main/docs/probe.md#"
SLOW_REPLY = 1.0
_OUTCOME_TEXT = {
    AuthOutcome.PROCESSED: "checked like any login (and failed as a wrong password)",
    AuthOutcome.ACCEPTED: "accepted",
}


class ProbeCheck(enum.Enum):
    AUTH_BEFORE_TLS = "probe-auth-before-tls"
    AUTH_OFFERED_BEFORE_TLS = "probe-auth-offered-before-tls"
    LOGIN_UNCLASSIFIED = "probe-login-reply-unclassified"
    TLS_NOT_OFFERED = "probe-tls-not-offered"
    STARTTLS_FAILED = "probe-starttls-failed"
    SUBMISSION_TLS_OPTIONAL = "probe-submission-tls-optional"
    IMPLICIT_TLS_FAILED = "probe-implicit-tls-failed"
    CERT_UNTRUSTED = "probe-certificate-untrusted"
    CERT_HOSTNAME = "probe-certificate-hostname-mismatch"
    CERT_EXPIRED = "probe-certificate-expired"
    CERT_EXPIRING = "probe-certificate-expiring"
    LEGACY_TLS = "probe-legacy-tls-accepted"
    STARTTLS_INJECTION = "probe-starttls-command-injection"
    STARTTLS_PLAINTEXT_ANSWER = "probe-starttls-pipelined-answered-in-plaintext"
    PORT_UNREACHABLE = "probe-port-unreachable"


CATEGORY = {
    ProbeCheck.AUTH_BEFORE_TLS: "cleartext-credentials",
    ProbeCheck.AUTH_OFFERED_BEFORE_TLS: "cleartext-credentials",
    ProbeCheck.LOGIN_UNCLASSIFIED: "cleartext-credentials",
    ProbeCheck.TLS_NOT_OFFERED: "tls-optional",
    ProbeCheck.STARTTLS_FAILED: "tls-optional",
    ProbeCheck.SUBMISSION_TLS_OPTIONAL: "tls-optional",
    ProbeCheck.IMPLICIT_TLS_FAILED: "tls-optional",
    ProbeCheck.CERT_UNTRUSTED: "certificate",
    ProbeCheck.CERT_HOSTNAME: "certificate",
    ProbeCheck.CERT_EXPIRED: "certificate",
    ProbeCheck.CERT_EXPIRING: "certificate",
    ProbeCheck.LEGACY_TLS: "tls-quality",
    ProbeCheck.STARTTLS_INJECTION: "starttls-injection",
    ProbeCheck.STARTTLS_PLAINTEXT_ANSWER: "starttls-injection",
    ProbeCheck.PORT_UNREACHABLE: "reachability",
}


def service_label(r: PortResult) -> str:
    return f"{r.target.name} {r.where}"


def _finding(
    check: ProbeCheck,
    r: PortResult,
    severity: Severity,
    reason: str,
    fix: str,
    evidence: Sequence[str] = (),
    **extra: object,
) -> Finding:
    return Finding(
        id=check.value,
        severity=severity,
        category=CATEGORY[check],
        reason=reason,
        fix=fix,
        service=service_label(r),
        port=r.target.port,
        doc=DOC + check.value,
        evidence=tuple(evidence),
        confirmed_live=True,
        extra={"address": r.address, "protocol": r.target.protocol, **extra},
    )


def caps_summary(caps: Caps | None, starttls_word: str) -> str:
    if caps is None:
        return "capabilities unknown"
    parts = [f"{starttls_word} {'offered' if caps.starttls else 'not offered'}"]
    parts.append("AUTH " + (" ".join(caps.mechanisms) if caps.mechanisms else "not advertised"))
    if caps.login_disabled:
        parts.append("LOGINDISABLED")
    return ", ".join(parts)


def _starttls_word(r: PortResult) -> str:
    return "STLS" if r.target.protocol == "pop3" else "STARTTLS"


def _login_fix(r: PortResult) -> str:
    if r.target.protocol == "smtp":
        return (
            "Refuse AUTH until STARTTLS. Postfix: smtpd_tls_auth_only = yes in main.cf, or on the"
            " submission service in master.cf: -o smtpd_tls_security_level=encrypt"
            " (better still: implicit TLS on port 465)."
        )
    return (
        "Refuse cleartext logins. Dovecot 2.3: disable_plaintext_auth = yes (2.4:"
        " auth_allow_cleartext = no), or ssl = required; offer implicit TLS on"
        f" {'993' if r.target.protocol == 'imap' else '995'}."
    )


def check_auth_before_tls(r: PortResult) -> Iterable[Finding]:
    login = r.login
    if login is None or r.target.implicit_tls:
        return
    before = "before TLS: " + caps_summary(r.caps_before, _starttls_word(r))
    delay = ""
    if login.seconds >= SLOW_REPLY:
        delay = f" (after {login.seconds:.1f} s"
        if login.outcome is AuthOutcome.PROCESSED:
            delay += ": a delayed failure, as servers delay failed logins"
        delay += ")"
    evidence = [
        before,
        f"C: {login.mechanism} with a fake user and a random password (redacted)",
        f"S: {login.reply}{delay}",
    ]
    if login.outcome is AuthOutcome.UNCLASSIFIED:
        yield _finding(
            ProbeCheck.LOGIN_UNCLASSIFIED,
            r,
            Severity.INFO,
            "The server's answer to a dummy login before TLS is not one the probe knows; read it"
            " to decide whether it took the credentials: " + login.reply,
            _login_fix(r),
            evidence,
            outcome=login.outcome.value,
        )
        return
    if not login.outcome.exposes_credentials:
        return
    offered = r.caps_before is not None and r.caps_before.starttls
    if offered:
        sev = Severity.MEDIUM if r.target.is_mx else Severity.HIGH
        reason = (
            f"Accepts cleartext credentials on port {r.target.port}: a dummy login before"
            f" {_starttls_word(r)} was {_OUTCOME_TEXT[login.outcome]}, so a client that skips"
            " or loses STARTTLS sends the password unencrypted."
        )
    else:
        sev = Severity.HIGH if r.target.is_mx else Severity.CRITICAL
        reason = (
            f"Accepts credentials only in cleartext on port {r.target.port}: a dummy login was"
            f" {_OUTCOME_TEXT[login.outcome]} and {_starttls_word(r)} is not offered."
        )
    yield _finding(
        ProbeCheck.AUTH_BEFORE_TLS,
        r,
        sev,
        reason,
        _login_fix(r),
        evidence,
        outcome=login.outcome.value,
        mechanism=login.mechanism,
        seconds=login.seconds,
    )


def check_auth_offered(r: PortResult) -> Iterable[Finding]:
    caps = r.caps_before
    if r.login is not None or caps is None or r.target.implicit_tls or r.status != "ok":
        return
    if not caps.plaintext_mechanisms or caps.login_disabled:
        return
    sev = Severity.LOW if r.target.is_mx else Severity.MEDIUM
    reason = (
        f"Advertises {' '.join(caps.plaintext_mechanisms)} before TLS on port {r.target.port}"
        " (no dummy login was sent: --no-login-attempt), so it probably accepts cleartext"
        " credentials."
    )
    evidence = ["before TLS: " + caps_summary(caps, _starttls_word(r))]
    yield _finding(ProbeCheck.AUTH_OFFERED_BEFORE_TLS, r, sev, reason, _login_fix(r), evidence)


def check_tls_not_offered(r: PortResult) -> Iterable[Finding]:
    if r.target.implicit_tls or r.status != "ok" or r.caps_before is None:
        return
    if r.caps_before.starttls:
        return
    word = _starttls_word(r)
    if r.target.is_mx:
        sev = Severity.MEDIUM
        reason = f"{word} is not offered on port 25: mail from other servers arrives in cleartext."
    else:
        sev = Severity.HIGH
        reason = f"{word} is not offered on port {r.target.port}: the session stays in cleartext."
    evidence = ["before TLS: " + caps_summary(r.caps_before, word)]
    fix = "Enable TLS with a certificate (Postfix: smtpd_tls_security_level = may/encrypt;"
    fix += " Dovecot: ssl = yes/required)."
    yield _finding(ProbeCheck.TLS_NOT_OFFERED, r, sev, reason, fix, evidence)


def check_starttls_failed(r: PortResult) -> Iterable[Finding]:
    tls = r.tls
    if r.target.implicit_tls or tls is None or tls.established:
        return
    sev = Severity.MEDIUM if r.target.is_mx else Severity.HIGH
    word = _starttls_word(r)
    reason = (
        f"{word} is advertised on port {r.target.port} but TLS could not be established"
        f" ({tls.error}): clients fall back to cleartext or fail."
    )
    evidence = [f"S: {tls.starttls_reply}"] if tls.starttls_reply else []
    fix = "Check the server's TLS configuration and certificate (its log says why)."
    yield _finding(ProbeCheck.STARTTLS_FAILED, r, sev, reason, fix, evidence, error=tls.error)


def check_submission_tls_optional(r: PortResult) -> Iterable[Finding]:
    if r.target.role != "submission" or r.target.implicit_tls or r.tls_required is not False:
        return
    if r.caps_before is None or not r.caps_before.starttls:
        return
    # its own finding beside AUTH before TLS (the audit's too): one setting to change each
    before = (
        "credentials are refused before STARTTLS, but"
        if r.login is None or not r.login.outcome.exposes_credentials
        else "besides credentials,"
    )
    reason = (
        f"TLS is optional on port {r.target.port}: {before}"
        " MAIL FROM is accepted in cleartext, so a client that skips STARTTLS submits mail"
        " unencrypted. RFC 8314 asks submission services to require TLS."
    )
    fix = "Postfix: -o smtpd_tls_security_level=encrypt on the submission service in master.cf."
    yield _finding(
        ProbeCheck.SUBMISSION_TLS_OPTIONAL,
        r,
        Severity.LOW,
        reason,
        fix,
        ["C: MAIL FROM:<> before STARTTLS", "S: accepted (not 530)"],
    )


def check_implicit_tls_failed(r: PortResult) -> Iterable[Finding]:
    tls = r.tls
    if not r.target.implicit_tls or r.status != "ok" or tls is None or tls.established:
        return
    plaintext = "wrong version number" in (tls.error or "").lower().replace("_", " ")
    reason = f"Port {r.target.port} is an implicit-TLS port, but the TLS handshake failed"
    reason += " (the server speaks plaintext there)." if plaintext else f" ({tls.error})."
    fix = "Configure implicit TLS there (Postfix: -o smtpd_tls_wrappermode=yes; Dovecot:"
    fix += " inet_listener with ssl = yes) or close the port."
    yield _finding(ProbeCheck.IMPLICIT_TLS_FAILED, r, Severity.HIGH, reason, fix, error=tls.error)


def check_certificate(r: PortResult) -> Iterable[Finding]:
    tls = r.tls
    if tls is None or not tls.established:
        return
    cert = tls.cert
    names = ", ".join(cert.names) if cert else ""
    ev = [f"certificate: {cert.subject}, issuer {cert.issuer}, names {names}"] if cert else []
    if tls.verify_error:
        yield _finding(
            ProbeCheck.CERT_UNTRUSTED,
            r,
            Severity.MEDIUM,
            f"The certificate chain does not verify ({tls.verify_error}): clients that check"
            " certificates fail, clients that do not can be fooled by any certificate.",
            "Serve the full chain of a certificate from a public CA (or pass --cafile for a"
            " private CA).",
            ev,
        )
    if cert is None:
        return
    if not cert.hostname_ok:
        yield _finding(
            ProbeCheck.CERT_HOSTNAME,
            r,
            Severity.MEDIUM,
            f"The certificate does not name the host that was probed ({names or 'no names'}).",
            "Issue the certificate for the name clients use (a SAN entry for it).",
            ev,
        )
    if cert.expired:
        yield _finding(
            ProbeCheck.CERT_EXPIRED,
            r,
            Severity.HIGH,
            f"The certificate expired on {cert.not_after}.",
            "Renew the certificate and reload the server.",
            ev,
        )
    elif cert.days_left < 14:
        yield _finding(
            ProbeCheck.CERT_EXPIRING,
            r,
            Severity.LOW,
            f"The certificate expires in {cert.days_left} day(s) ({cert.not_after}).",
            "Renew the certificate (automate it) and reload the server.",
            ev,
        )


def check_legacy_tls(r: PortResult) -> Iterable[Finding]:
    tls = r.tls
    if tls is None or not tls.established:
        return
    accepted = [v for v, state in tls.legacy.items() if state == "accepted"]
    if not accepted:
        return
    sev = Severity.INFO if r.target.is_mx else Severity.LOW
    reason = (
        f"{', '.join(accepted)} still accepted on port {r.target.port}; current guidance"
        " (RFC 8996, RFC 8314) is TLS 1.2 or newer."
    )
    fix = "Postfix: smtpd_tls_protocols = >=TLSv1.2 (and _mandatory_); Dovecot:"
    fix += " ssl_min_protocol = TLSv1.2."
    yield _finding(ProbeCheck.LEGACY_TLS, r, sev, reason, fix, [f"handshake with {accepted[0]}"])


def check_injection(r: PortResult) -> Iterable[Finding]:
    inj = r.injection
    if inj is None or not inj.tested:
        return
    fix = (
        "Upgrade the server software: after answering STARTTLS it must discard everything the"
        " client sent before the handshake (CVE-2011-0411 class)."
    )
    if inj.vulnerable:
        yield _finding(
            ProbeCheck.STARTTLS_INJECTION,
            r,
            Severity.HIGH,
            "STARTTLS command injection: a command pipelined after STARTTLS in cleartext was"
            " executed inside the TLS session, so an attacker on the path can inject commands"
            " (for example to capture a client's credentials or mail).",
            fix,
            inj.evidence,
        )
    if inj.plaintext_reply:
        yield _finding(
            ProbeCheck.STARTTLS_PLAINTEXT_ANSWER,
            r,
            Severity.LOW,
            "The server answered a command pipelined after STARTTLS in cleartext, before the"
            " TLS handshake: it processes input it should have discarded.",
            fix,
            inj.evidence,
        )


def check_unreachable(r: PortResult) -> Iterable[Finding]:
    if r.status == "ok":
        return
    yield _finding(
        ProbeCheck.PORT_UNREACHABLE,
        r,
        Severity.INFO,
        f"Not probed: {r.error} ({r.status}).",
        "Nothing to fix if the service is not meant to run there.",
        status=r.status,
    )


CheckFn = Callable[["PortResult"], Iterable[Finding]]
REGISTRY: Mapping[ProbeCheck, CheckFn] = {
    ProbeCheck.PORT_UNREACHABLE: check_unreachable,
    ProbeCheck.AUTH_BEFORE_TLS: check_auth_before_tls,
    ProbeCheck.AUTH_OFFERED_BEFORE_TLS: check_auth_offered,
    ProbeCheck.TLS_NOT_OFFERED: check_tls_not_offered,
    ProbeCheck.STARTTLS_FAILED: check_starttls_failed,
    ProbeCheck.SUBMISSION_TLS_OPTIONAL: check_submission_tls_optional,
    ProbeCheck.IMPLICIT_TLS_FAILED: check_implicit_tls_failed,
    ProbeCheck.CERT_UNTRUSTED: check_certificate,
    ProbeCheck.LEGACY_TLS: check_legacy_tls,
    ProbeCheck.STARTTLS_INJECTION: check_injection,
}


def findings_for(r: PortResult, host: str) -> list[Finding]:
    del host  # the certificate facts already carry the host name check
    out: list[Finding] = []
    for check in REGISTRY.values():
        out.extend(check(r))
    return out


def host_notes(results: Iterable[PortResult]) -> list[str]:
    notes: list[str] = []
    same = sorted({r.address for r in results if r.source_is_target})
    if same:
        notes.append(
            f"warning: the probe's source address equals the target ({', '.join(same)}):"
            " Dovecot (and other servers) treat such connections as secured and may allow"
            " cleartext logins they would refuse from elsewhere; probe from another host."
        )
    return notes
