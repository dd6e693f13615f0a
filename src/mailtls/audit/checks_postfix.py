"""Postfix checks: a registry of pure functions, one effective SMTP service in, findings out.

Each check looks at one ``SmtpService`` (see ``effective``) and states what a client or attacker
can really do on that port. Port 25 with opportunistic TLS is correct (RFC 3207 forbids mandatory
TLS on a public MX) and is not flagged; AUTH there without ``smtpd_tls_auth_only`` is. A check
names the exposure; ``severity.severity`` decides the severity from it and from the service's
reach (loopback-only: ``info``; restricted to a private ``mynetworks``: at most ``low``). Imports
only the effective view, the severity table and ``mailtls.findings``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mailtls.audit.effective import Effective, SmtpService, is_yes, tls_level
from mailtls.audit.severity import Exposure, Reach, severity
from mailtls.findings import Finding

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
    certificate: Effective | None

    @property
    def port(self) -> int | None:
        return self.service.port

    @property
    def is_mx(self) -> bool:
        return self.service.port == 25

    @property
    def where(self) -> str:
        return f"port {self.port}" if self.port else f"service {self.service.listener.service}"

    @property
    def tls_wanted(self) -> bool:
        return self.wrapper or self.level in ("may", "encrypt")

    @property
    def tls_runs(self) -> bool:
        """TLS can really start: wanted, and a certificate is configured (else smtpd logs
        "No server certs available. TLS won't be enabled" and goes on without it)."""
        return self.tls_wanted and self.certificate is not None

    @property
    def starttls_offered(self) -> bool:
        return self.tls_runs and not self.wrapper

    @property
    def reach(self) -> Reach:
        if self.service.loopback_only:
            return Reach.LOOPBACK
        return Reach.INTERNAL if self.service.internal else Reach.PUBLIC


def view_of(service: SmtpService) -> View:
    level = tls_level(service)
    wrapper = is_yes(service.get("smtpd_tls_wrappermode").value)
    auth_only = level.level == "encrypt" or is_yes(service.get("smtpd_tls_auth_only").value)
    certificate = next(
        (found for found in map(service.get, CERT_PARAMS) if found.value.strip()), None
    )
    return View(
        service=service,
        level=level.level,
        level_from=level.decided_by,
        wrapper=wrapper,
        auth_only=auth_only,
        sasl=is_yes(service.get("smtpd_sasl_auth_enable").value),
        enforced=wrapper or level.level == "encrypt",
        certificate=certificate,
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
    exposure: Exposure,
    category: str,
    setting: Effective,
    reason: str,
    fix: str,
    at_main: bool = False,
) -> Finding:
    svc = v.service
    reach = v.reach
    if reach is Reach.LOOPBACK:
        reason += (
            " This service listens on loopback only, so only clients on this host"
            " (for example webmail) are affected."
        )
    elif reach is Reach.INTERNAL:
        reason += (
            " Only clients in mynetworks (private address space) get past"
            " smtpd_client_restrictions here, so this is an internal service."
        )
    label = svc.label + (f" ({svc.via})" if svc.via else "")
    if svc.instance.name:
        label = f"{svc.instance.name}: {label}"
    # a built-in default has no line: point at the place to write the fix instead
    origin = setting.origin or (None if v.is_mx or at_main else svc.entry.origin)
    return Finding(
        id=check.value,
        severity=severity(exposure, reach),
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
        extra={"scope": setting.scope, "reach": reach.value},
        exposure=exposure.value,
    )


def _auth_setting(v: View) -> Effective:
    """The line that lets AUTH in before TLS: an explicit ``smtpd_tls_auth_only = no``, else the
    ``smtpd_sasl_auth_enable = yes`` that turned SASL on (main.cf SASL reaches port 25 too)."""
    auth_only = v.service.get("smtpd_tls_auth_only")
    sasl = v.service.get("smtpd_sasl_auth_enable")
    return auth_only if auth_only.origin is not None or sasl.origin is None else sasl


def check_auth_before_tls(v: View) -> Iterable[Finding]:
    if not v.sasl or v.wrapper or v.auth_only:
        return
    if not v.starttls_offered:
        why = (
            "STARTTLS is not offered"
            if v.level == "none"
            else "no server certificate is configured, so Postfix does not offer STARTTLS"
        )
        reason = (
            f"Accepts credentials only in cleartext on {v.where}: SASL AUTH is enabled and"
            f" {why}, so every login sends the password unencrypted."
        )
        if v.level == "none":
            setting = v.level_from
            fix = _fix(v, "smtpd_tls_security_level", "may" if v.is_mx else "encrypt")
        else:
            setting = _auth_setting(v)
            fix = (
                "In main.cf: smtpd_tls_chain_files = <key>, <certificate chain>"
                f"   (and refuse AUTH without TLS: {_fix(v, 'smtpd_tls_auth_only', 'yes')})"
            )
        yield _finding(
            PostfixCheck.AUTH_BEFORE_TLS,
            v,
            Exposure.CREDENTIALS_CLEARTEXT_ONLY,
            CATEGORY_AUTH,
            setting,
            reason,
            fix,
        )
        return
    reason = (
        f"Accepts cleartext credentials on {v.where}: AUTH is offered before STARTTLS"
        " (smtpd_tls_auth_only = no). The server cannot stop a client that skips STARTTLS,"
        " but it can refuse AUTH until TLS is up."
    )
    if v.is_mx:
        reason += (
            " SASL is enabled for this port-25 service too (main.cf settings apply to every"
            " smtpd unless master.cf overrides them). Opportunistic TLS on port 25 itself is"
            " correct (RFC 3207) and is not flagged."
        )
    fix = _fix(v, "smtpd_tls_auth_only", "yes")
    if v.is_mx:
        entry = v.service.entry
        fix += (
            f"   (or no AUTH on the MX: -o smtpd_sasl_auth_enable=no under the"
            f" '{entry.service} {entry.type}' entry in master.cf)"
        )
    else:
        fix += "   (or require TLS there: -o smtpd_tls_security_level=encrypt)"
    yield _finding(
        PostfixCheck.AUTH_BEFORE_TLS,
        v,
        Exposure.CREDENTIALS_BEFORE_TLS,
        CATEGORY_AUTH,
        _auth_setting(v),
        reason,
        fix,
    )


def _no_tls_exposure(v: View) -> Exposure:
    return Exposure.RELAY_TLS_NOT_OFFERED if v.is_mx else Exposure.CLIENT_TLS_NOT_OFFERED


def check_tls_not_offered(v: View) -> Iterable[Finding]:
    if v.wrapper or v.level != "none":
        return
    if v.is_mx:
        target = "may"
        reason = "STARTTLS is not offered on port 25: mail from other servers arrives in cleartext."
    else:
        target = "encrypt"
        reason = f"TLS is not offered on {v.where}: mail submitted there travels in cleartext."
    yield _finding(
        PostfixCheck.TLS_NOT_OFFERED,
        v,
        _no_tls_exposure(v),
        CATEGORY_TLS,
        v.level_from,
        reason,
        _fix(v, "smtpd_tls_security_level", target) + " (and configure a certificate)",
    )


def check_no_certificate(v: View) -> Iterable[Finding]:
    if not v.tls_wanted or v.certificate is not None:
        return
    setting = v.service.get("smtpd_tls_chain_files")
    if v.enforced:
        exposure = Exposure.SERVICE_FAILS
        reason = (
            f"No server certificate is configured, so TLS cannot start on {v.where} and every"
            " session fails (nothing travels in cleartext, but the service is unusable)."
        )
    else:
        exposure = _no_tls_exposure(v)
        reason = (
            f"No server certificate is configured: Postfix silently disables TLS"
            f' ("No server certs available. TLS won\'t be enabled"), so STARTTLS is not'
            f" offered on {v.where} and sessions stay in cleartext."
        )
    fix = "In main.cf: smtpd_tls_chain_files = /etc/ssl/private/mail-key.pem, " + (
        "/etc/ssl/certs/mail-fullchain.pem   (key first, then certificate chain)"
    )
    yield _finding(
        PostfixCheck.NO_CERTIFICATE, v, exposure, CATEGORY_TLS, setting, reason, fix, at_main=True
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
        PostfixCheck.IMPLICIT_PORT_PLAINTEXT,
        v,
        Exposure.PLAINTEXT_ON_IMPLICIT_TLS_PORT,
        CATEGORY_TLS,
        setting,
        reason,
        fix,
    )


def check_submission_tls_optional(v: View) -> Iterable[Finding]:
    if v.is_mx or v.port == 465 or not v.starttls_offered or v.level != "may":
        return
    reason = (
        f"STARTTLS is optional on {v.where} (smtpd_tls_security_level = may): a client that"
        " skips STARTTLS, or is stripped of it, talks SMTP in cleartext. RFC 8314 (section 3.3)"
        " asks submission services to require TLS."
    )
    fix = _fix(v, "smtpd_tls_security_level", "encrypt")
    yield _finding(
        PostfixCheck.SUBMISSION_TLS_OPTIONAL,
        v,
        Exposure.CLIENT_TLS_OPTIONAL,
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
        Exposure.MANDATORY_TLS_ON_MX,
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
    if not v.tls_runs:
        return
    # smtpd uses the mandatory list when TLS is enforced (encrypt, wrapper mode)
    name = "smtpd_tls_mandatory_protocols" if v.enforced else "smtpd_tls_protocols"
    setting = v.service.get(name)
    allowed = allowed_protocols(setting.value)
    weak = [p for p in PROTOCOL_ORDER[:4] if p in allowed]
    if not weak:
        return
    opportunistic_mx = v.is_mx and not v.enforced
    if any(p.startswith("SSL") for p in weak):
        exposure = Exposure.OLD_TLS_ALLOWED if opportunistic_mx else Exposure.SSLV3_ALLOWED
    elif opportunistic_mx:
        exposure = Exposure.OLD_TLS_OPPORTUNISTIC_RELAY
    else:
        exposure = Exposure.OLD_TLS_ALLOWED
    reason = (
        f"{name} leaves {', '.join(weak)} enabled; current guidance (RFC 8996, RFC 8314) is"
        " TLS 1.2 or newer. OpenSSL 3 at its default security level already refuses TLS 1.0/1.1,"
        " so the real exposure depends on the system's OpenSSL policy."
    )
    if opportunistic_mx:
        reason += " On port 25 opportunistic TLS with old versions still beats cleartext."
    fix = _fix(v, name, ">=TLSv1.2", prefer_main=True)
    yield _finding(
        PostfixCheck.WEAK_PROTOCOLS, v, exposure, CATEGORY_QUALITY, setting, reason, fix, True
    )


def check_weak_ciphers(v: View) -> Iterable[Finding]:
    if not v.tls_runs:
        return
    name = "smtpd_tls_mandatory_ciphers" if v.enforced else "smtpd_tls_ciphers"
    setting = v.service.get(name)
    grade = setting.value.strip().lower()
    if grade not in WEAK_GRADES:
        return
    exposure = (
        Exposure.WEAK_CIPHERS_OPPORTUNISTIC_RELAY
        if v.is_mx and not v.enforced
        else Exposure.WEAK_CIPHERS
    )
    reason = f"{name} = {grade} admits export-grade, low-grade or unauthenticated ciphers."
    fix = _fix(v, name, "medium", prefer_main=True)
    yield _finding(
        PostfixCheck.WEAK_CIPHERS, v, exposure, CATEGORY_QUALITY, setting, reason, fix, True
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
