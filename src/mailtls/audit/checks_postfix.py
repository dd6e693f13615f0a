"""Postfix checks: a registry of pure functions, one effective SMTP service in, findings out.

Each check looks at one ``SmtpService`` (see ``effective``) and states what a client or attacker
can really do on that port. Port 25 with opportunistic TLS is correct (RFC 3207 forbids mandatory
TLS on a public MX) and is not flagged; AUTH there without ``smtpd_tls_auth_only`` is. A service
that only listens on loopback keeps its findings but at ``info`` severity. Imports only the
effective view, the model and ``mailtls.findings``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mailtls.audit.effective import Effective, SmtpService, is_yes, tls_level
from mailtls.findings import Finding, Severity

DOC = "https://www.postfix.org/postconf.5.html#"
TLS_README = "https://www.postfix.org/TLS_README.html"
CATEGORY_AUTH = "cleartext-credentials"
CATEGORY_TLS = "tls-optional"
CATEGORY_QUALITY = "tls-quality"
CATEGORY_CONFIG = "configuration"
CERT_PARAMS = (
    "smtpd_tls_chain_files",
    "smtpd_tls_cert_file",
    "smtpd_tls_eccert_file",
    "smtpd_tls_dcert_file",
)
PROTOCOL_ORDER = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
WEAK_GRADES = ("export", "low", "null")


class PostfixCheck(enum.Enum):
    AUTH_BEFORE_TLS = "postfix-auth-before-tls"
    TLS_NOT_OFFERED = "postfix-tls-not-offered"
    NO_CERTIFICATE = "postfix-tls-no-certificate"
    IMPLICIT_PORT_PLAINTEXT = "postfix-465-without-wrappermode"
    SUBMISSION_TLS_OPTIONAL = "postfix-submission-tls-optional"
    MANDATORY_TLS_ON_MX = "postfix-mandatory-tls-on-port-25"
    WEAK_PROTOCOLS = "postfix-weak-tls-protocols"
    WEAK_CIPHERS = "postfix-weak-tls-ciphers"


@dataclass(frozen=True)
class View:
    """What every check needs to know about a service, computed once."""

    service: SmtpService
    level: str
    level_from: Effective
    wrapper: bool
    auth_only: bool
    sasl: bool
    enforced: bool

    @property
    def port(self) -> int | None:
        return self.service.port

    @property
    def is_mx(self) -> bool:
        return self.service.port == 25

    @property
    def where(self) -> str:
        return f"port {self.port}" if self.port else f"service {self.service.listener.service}"


def view_of(service: SmtpService) -> View:
    level = tls_level(service)
    wrapper = is_yes(service.get("smtpd_tls_wrappermode").value)
    auth_only = level.level == "encrypt" or is_yes(service.get("smtpd_tls_auth_only").value)
    return View(
        service=service,
        level=level.level,
        level_from=level.decided_by,
        wrapper=wrapper,
        auth_only=auth_only,
        sasl=is_yes(service.get("smtpd_sasl_auth_enable").value),
        enforced=wrapper or level.level == "encrypt",
    )


def _fix(v: View, name: str, value: str, prefer_main: bool = False) -> str:
    """The exact line to write, and where."""
    current = v.service.get(name)
    entry = v.service.entry
    if current.scope == "master.cf -o" and current.origin:
        return (
            f"In {current.origin} (the {entry.key} entry), change the override to:"
            f" -o {name}={value}"
        )
    if prefer_main:
        where = f"In {current.origin}" if current.origin else "In main.cf"
        return f"{where}: {name} = {value}"
    if v.is_mx and v.service.via is None and entry.service in ("smtp", "25"):
        return f"In main.cf: {name} = {value}"
    if v.is_mx and v.service.via is not None:
        return f"In main.cf: {name} = {value}   (or under the {entry.key} entry in master.cf)"
    return (
        f"In master.cf, under the '{entry.service} {entry.type}' entry ({entry.origin}), "
        f"add the line:   -o {name}={value}"
    )


def _finding(
    check: PostfixCheck,
    v: View,
    severity: Severity,
    category: str,
    setting: Effective,
    reason: str,
    fix: str,
    at_main: bool = False,
) -> Finding:
    svc = v.service
    if svc.loopback_only and severity > Severity.INFO:
        severity = Severity.INFO
        reason += (
            " This service listens on loopback only, so only clients on this host"
            " (for example webmail) are affected."
        )
    label = svc.label + (f" ({svc.via})" if svc.via else "")
    if svc.instance.name:
        label = f"{svc.instance.name}: {label}"
    # a built-in default has no line: point at the place to write the fix instead
    origin = setting.origin or (None if v.is_mx or at_main else svc.entry.origin)
    return Finding(
        id=check.value,
        severity=severity,
        category=category,
        reason=reason,
        fix=fix,
        setting=setting.name,
        effective_value=setting.value + (" (built-in default)" if setting.origin is None else ""),
        service=label,
        port=v.port,
        file=origin.file if origin else svc.instance.main.source,
        line=origin.line if origin else None,
        doc=DOC + setting.name,
        extra={"scope": setting.scope},
    )


def check_auth_before_tls(v: View) -> Iterable[Finding]:
    if not v.sasl or v.wrapper or v.auth_only:
        return
    if v.level == "none":
        sev = Severity.HIGH if v.is_mx else Severity.CRITICAL
        reason = (
            f"Accepts credentials only in cleartext on {v.where}: SASL AUTH is enabled and"
            " STARTTLS is not offered, so every login sends the password unencrypted."
        )
        yield _finding(
            PostfixCheck.AUTH_BEFORE_TLS,
            v,
            sev,
            CATEGORY_AUTH,
            v.level_from,
            reason,
            _fix(v, "smtpd_tls_security_level", "may" if v.is_mx else "encrypt"),
        )
        return
    sev = Severity.MEDIUM if v.is_mx else Severity.HIGH
    reason = (
        f"Accepts cleartext credentials on {v.where}: AUTH is offered before STARTTLS"
        " (smtpd_tls_auth_only = no). The server cannot stop a client that skips STARTTLS,"
        " but it can refuse AUTH until TLS is up."
    )
    if v.is_mx:
        reason += " Opportunistic TLS on port 25 itself is correct (RFC 3207) and is not flagged."
    fix = _fix(v, "smtpd_tls_auth_only", "yes")
    if not v.is_mx:
        fix += f"  (or require TLS: {_fix(v, 'smtpd_tls_security_level', 'encrypt')})"
    setting = v.service.get("smtpd_tls_auth_only")
    yield _finding(PostfixCheck.AUTH_BEFORE_TLS, v, sev, CATEGORY_AUTH, setting, reason, fix)


def check_tls_not_offered(v: View) -> Iterable[Finding]:
    if v.wrapper or v.level != "none":
        return
    if v.is_mx:
        sev, target = Severity.MEDIUM, "may"
        reason = "STARTTLS is not offered on port 25: mail from other servers arrives in cleartext."
    else:
        sev, target = Severity.HIGH, "encrypt"
        reason = f"TLS is not offered on {v.where}: mail submitted there travels in cleartext."
    yield _finding(
        PostfixCheck.TLS_NOT_OFFERED,
        v,
        sev,
        CATEGORY_TLS,
        v.level_from,
        reason,
        _fix(v, "smtpd_tls_security_level", target) + " (and configure a certificate)",
    )


def _certificate(v: View) -> Effective | None:
    for name in CERT_PARAMS:
        found = v.service.get(name)
        if found.value.strip():
            return found
    return None


def check_no_certificate(v: View) -> Iterable[Finding]:
    if not (v.wrapper or v.level in ("may", "encrypt")) or _certificate(v) is not None:
        return
    setting = v.service.get("smtpd_tls_chain_files")
    if v.enforced:
        sev = Severity.MEDIUM
        reason = (
            f"No server certificate is configured, so TLS cannot start on {v.where} and every"
            " session fails (nothing travels in cleartext, but the service is unusable)."
        )
    else:
        sev = Severity.MEDIUM if v.is_mx else Severity.HIGH
        reason = (
            f"No server certificate is configured: Postfix silently disables TLS, so STARTTLS"
            f" is not offered on {v.where} and sessions stay in cleartext."
        )
    fix = "In main.cf: smtpd_tls_chain_files = /etc/ssl/private/mail-key.pem, " + (
        "/etc/ssl/certs/mail-fullchain.pem   (key first, then certificate chain)"
    )
    yield _finding(
        PostfixCheck.NO_CERTIFICATE, v, sev, CATEGORY_TLS, setting, reason, fix, at_main=True
    )


def check_implicit_port_plaintext(v: View) -> Iterable[Finding]:
    if v.port != 465 or v.wrapper:
        return
    reason = (
        "Port 465 is the implicit-TLS submission port (RFC 8314), but this smtpd speaks"
        " plaintext SMTP there (smtpd_tls_wrappermode = no): clients that expect TLS fail,"
        " and anything sent before STARTTLS is in cleartext."
    )
    setting = v.service.get("smtpd_tls_wrappermode")
    fix = _fix(v, "smtpd_tls_wrappermode", "yes")
    yield _finding(
        PostfixCheck.IMPLICIT_PORT_PLAINTEXT, v, Severity.HIGH, CATEGORY_TLS, setting, reason, fix
    )


def check_submission_tls_optional(v: View) -> Iterable[Finding]:
    if v.is_mx or v.wrapper or v.level != "may":
        return
    if v.sasl and not v.auth_only:
        return  # check_auth_before_tls says more
    reason = (
        f"TLS is optional on {v.where}: credentials are refused before STARTTLS, but a client"
        " that skips STARTTLS still talks in cleartext. RFC 8314 asks submission services to"
        " require TLS."
    )
    fix = _fix(v, "smtpd_tls_security_level", "encrypt")
    yield _finding(
        PostfixCheck.SUBMISSION_TLS_OPTIONAL,
        v,
        Severity.LOW,
        CATEGORY_TLS,
        v.level_from,
        reason,
        fix,
    )


def check_mandatory_tls_on_mx(v: View) -> Iterable[Finding]:
    if not v.is_mx or v.level != "encrypt" or v.wrapper:
        return
    reason = (
        "Port 25 requires TLS (smtpd_tls_security_level = encrypt): RFC 3207 forbids this on a"
        " publicly-referenced MX, and mail from servers without TLS is refused."
    )
    fix = _fix(v, "smtpd_tls_security_level", "may")
    yield _finding(
        PostfixCheck.MANDATORY_TLS_ON_MX,
        v,
        Severity.LOW,
        CATEGORY_CONFIG,
        v.level_from,
        reason,
        fix,
    )


def allowed_protocols(spec: str) -> set[str]:
    """Protocols a Postfix ``*_protocols`` value leaves enabled (``!X`` and ``>=X``/``<=X``)."""
    allowed = set(PROTOCOL_ORDER)
    include: set[str] = set()
    for item in re.split(r"[\s,:]+", spec.strip()):
        if not item:
            continue
        if item.startswith(">=") or item.startswith("<="):
            name = _proto(item[2:])
            if name is None:
                continue
            idx = PROTOCOL_ORDER.index(name)
            keep = PROTOCOL_ORDER[idx:] if item.startswith(">=") else PROTOCOL_ORDER[: idx + 1]
            allowed &= set(keep)
        elif item.startswith("!"):
            name = _proto(item[1:])
            if name is not None:
                allowed.discard(name)
        else:
            name = _proto(item)
            if name is not None:
                include.add(name)
    return allowed & include if include else allowed


def _proto(text: str) -> str | None:
    for name in PROTOCOL_ORDER:
        if name.lower() == text.lower():
            return name
    return None


def check_weak_protocols(v: View) -> Iterable[Finding]:
    if not (v.wrapper or v.level in ("may", "encrypt")):
        return
    name = "smtpd_tls_mandatory_protocols" if v.enforced else "smtpd_tls_protocols"
    setting = v.service.get(name)
    allowed = allowed_protocols(setting.value)
    weak = [p for p in PROTOCOL_ORDER[:4] if p in allowed]
    if not weak:
        return
    if any(p.startswith("SSL") for p in weak):
        sev = Severity.MEDIUM if v.enforced or not v.is_mx else Severity.LOW
    elif v.enforced or not v.is_mx:
        sev = Severity.LOW
    else:
        sev = Severity.INFO
    reason = (
        f"{name} leaves {', '.join(weak)} enabled; current guidance (RFC 8996, RFC 8314) is"
        " TLS 1.2 or newer. OpenSSL 3 at its default security level already refuses TLS 1.0/1.1,"
        " so the real exposure depends on the system's OpenSSL policy."
    )
    if v.is_mx and not v.enforced:
        reason += " On port 25 opportunistic TLS with old versions still beats cleartext."
    fix = _fix(v, name, ">=TLSv1.2", prefer_main=True)
    yield _finding(
        PostfixCheck.WEAK_PROTOCOLS, v, sev, CATEGORY_QUALITY, setting, reason, fix, at_main=True
    )


def check_weak_ciphers(v: View) -> Iterable[Finding]:
    if not (v.wrapper or v.level in ("may", "encrypt")):
        return
    name = "smtpd_tls_mandatory_ciphers" if v.enforced else "smtpd_tls_ciphers"
    setting = v.service.get(name)
    grade = setting.value.strip().lower()
    if grade not in WEAK_GRADES:
        return
    sev = Severity.MEDIUM if v.enforced or not v.is_mx else Severity.LOW
    reason = f"{name} = {grade} admits export-grade, low-grade or unauthenticated ciphers."
    fix = _fix(v, name, "medium", prefer_main=True)
    yield _finding(
        PostfixCheck.WEAK_CIPHERS, v, sev, CATEGORY_QUALITY, setting, reason, fix, at_main=True
    )


CheckFn = Callable[[View], Iterable[Finding]]
REGISTRY: Mapping[PostfixCheck, CheckFn] = {
    PostfixCheck.AUTH_BEFORE_TLS: check_auth_before_tls,
    PostfixCheck.TLS_NOT_OFFERED: check_tls_not_offered,
    PostfixCheck.NO_CERTIFICATE: check_no_certificate,
    PostfixCheck.IMPLICIT_PORT_PLAINTEXT: check_implicit_port_plaintext,
    PostfixCheck.SUBMISSION_TLS_OPTIONAL: check_submission_tls_optional,
    PostfixCheck.MANDATORY_TLS_ON_MX: check_mandatory_tls_on_mx,
    PostfixCheck.WEAK_PROTOCOLS: check_weak_protocols,
    PostfixCheck.WEAK_CIPHERS: check_weak_ciphers,
}


def run_checks(services: Iterable[SmtpService]) -> list[Finding]:
    findings: list[Finding] = []
    for service in services:
        v = view_of(service)
        for check in REGISTRY.values():
            findings.extend(check(v))
    return findings
