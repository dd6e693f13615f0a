"""Dovecot checks: a registry of pure functions, one effective ``Context`` in, findings out.

``ssl = required`` refuses every login before TLS, which makes the cleartext flag moot;
``disable_plaintext_auth`` (2.3) / ``auth_allow_cleartext`` (2.4, inverted) decide whether
PLAIN/LOGIN work before STARTTLS. Dovecot counts a connection as secured when it comes from
``login_trusted_networks`` or when the client address equals the server address (webmail on the
same host), and then allows cleartext logins. A configuration Dovecot refuses (a 2.3 name under
2.4, or the reverse) gets only those findings (``audit_config``): nothing in it is in force. Each
check names an exposure; ``severity.severity`` decides the severity from it and the context's
reach (loopback listener, or a loopback ``local``/``remote`` block: ``info``). Imports only the
Dovecot views, ``networks``, ``severity``, the model and ``findings``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mailtls.audit.dovecot import Assign, DovecotConfig
from mailtls.audit.dovecot_effective import (
    Context,
    Listener,
    Value,
    contexts,
    is_loopback,
    normalise_key,
)
from mailtls.audit.networks import only_loopback, parse_network, public_entries
from mailtls.audit.severity import Exposure, Reach, severity
from mailtls.findings import Finding

DOC_23 = "https://doc.dovecot.org/2.3/settings/core/#core_setting-"
DOC_24 = "https://doc.dovecot.org/latest/core/summaries/settings.html#"
UPGRADE_DOC = "https://doc.dovecot.org/2.4.0/installation/upgrade/2.3-to-2.4.html"
NON_PLAINTEXT_MECHS = (
    "cram-md5",
    "digest-md5",
    "scram-sha-1",
    "scram-sha-256",
    "ntlm",
    "apop",
    "otp",
    "rpa",
    "gssapi",
)
WEAK_MIN = ("any", "sslv3", "tlsv1", "tlsv1.1")
# 2.3 name -> 2.4 name ("" when removed without a one-line replacement)
RENAMED_IN_24: Mapping[str, str] = {
    "disable_plaintext_auth": "auth_allow_cleartext",
    "ssl_cert": "ssl_server_cert_file",
    "ssl_key": "ssl_server_key_file",
    "ssl_key_password": "ssl_server_key_password",
    "ssl_ca": "ssl_server_ca_file",
    "ssl_dh": "ssl_server_dh_file",
    "ssl_alt_cert": "ssl_server_alt_cert_file",
    "ssl_alt_key": "ssl_server_alt_key_file",
    "ssl_prefer_server_ciphers": "ssl_server_prefer_ciphers",
    "ssl_cert_username_field": "ssl_server_cert_username_field",
    "ssl_verify_client_cert": "ssl_server_request_client_cert",
    "mail_location": "mail_driver + mail_path",
    "ssl_protocols": "ssl_min_protocol",
    "verbose_ssl": "log_debug = category=ssl",
}
ONLY_IN_24 = (
    "auth_allow_cleartext",
    "ssl_server_cert_file",
    "ssl_server_key_file",
    "ssl_server_ca_file",
    "dovecot_config_version",
    "dovecot_storage_version",
)


class DovecotCheck(enum.Enum):
    SSL_DISABLED = "dovecot-ssl-disabled"
    CLEARTEXT_AUTH = "dovecot-cleartext-auth-before-tls"
    TLS_OPTIONAL = "dovecot-tls-optional"
    MECHS_BEFORE_TLS = "dovecot-non-plaintext-mechanisms-before-tls"
    NO_CERTIFICATE = "dovecot-no-certificate"
    WEAK_MIN_PROTOCOL = "dovecot-weak-min-protocol"
    TRUSTED_PUBLIC = "dovecot-trusted-networks-public"
    WRONG_VERSION_SETTING = "dovecot-setting-not-valid-in-version"


def _doc(ctx_version: str, key: str) -> str:
    return (DOC_24 if ctx_version == "2.4" else DOC_23) + key


def _yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "y", "true", "1")


def cleartext_allowed(ctx: Context) -> Value:
    """The setting that decides whether PLAIN/LOGIN work without TLS, with its value."""
    return ctx.get("auth_allow_cleartext" if ctx.version == "2.4" else "disable_plaintext_auth")


def allows_cleartext(ctx: Context) -> bool:
    v = cleartext_allowed(ctx)
    return _yes(v.value) if ctx.version == "2.4" else not _yes(v.value)


def plaintext_listeners(ctx: Context) -> list[Listener]:
    return [lis for lis in ctx.listeners if lis.enabled and not lis.implicit_tls]


def _loopback(ctx: Context, lis: list[Listener]) -> bool:
    listen = ctx.get("listen").value
    return bool(lis) and all(is_loopback(x.address or listen) for x in lis)


def reach_of(ctx: Context, lis: list[Listener] | None) -> Reach:
    """Loopback when the listeners are bound to loopback only, or when the context is a
    ``local``/``remote`` block whose addresses are all loopback (this host's own clients)."""
    if lis and _loopback(ctx, lis):
        return Reach.LOOPBACK
    if any(kind in ("local", "remote") and only_loopback(name) for kind, name in ctx.filters):
        return Reach.LOOPBACK
    return Reach.PUBLIC


def _finding(
    check: DovecotCheck,
    ctx: Context,
    exposure: Exposure,
    category: str,
    value: Value,
    reason: str,
    fix: str,
    lis: list[Listener] | None = None,
) -> Finding:
    reach = reach_of(ctx, lis)
    if reach is Reach.LOOPBACK:
        reason += (
            " Only clients on this host can reach it (loopback listener or a loopback"
            " local/remote block)."
        )
    origin = value.origin
    scope = " ".join(f"{k} {n}" for k, n in ctx.filters) or None
    return Finding(
        id=check.value,
        severity=severity(exposure, reach),
        category=category,
        reason=reason,
        fix=fix,
        setting=value.key,
        effective_value=value.value + (" (built-in default)" if origin is None else ""),
        service=ctx.label,
        port=lis[0].port if lis else None,
        file=origin.file if origin else ctx.source,
        line=origin.line if origin else None,
        doc=_doc(ctx.version, value.key),
        extra={"dovecot_version": ctx.version, "scope": scope, "reach": reach.value},
        exposure=exposure.value,
    )


def _ports(lis: list[Listener]) -> str:
    return ", ".join(str(x.port) for x in lis)


def _where_fix(ctx: Context, line: str, value: Value) -> str:
    if value.origin is not None:
        return f"In {value.origin}: {line}"
    conf = "conf.d/10-ssl.conf" if line.startswith("ssl") else "conf.d/10-auth.conf"
    return f"In {conf} (or dovecot.conf): {line}"


def check_ssl_disabled(ctx: Context) -> Iterable[Finding]:
    ssl = ctx.get("ssl")
    lis = plaintext_listeners(ctx)
    if ssl.value.strip().lower() != "no" or not lis:
        return
    reason = (
        f"TLS is disabled (ssl = no) on port {_ports(lis)}: no STARTTLS, so sessions and mail"
        " travel unencrypted."
    )
    fix = _where_fix(ctx, "ssl = required", ssl) + " (and configure a certificate)"
    yield _finding(
        DovecotCheck.SSL_DISABLED,
        ctx,
        Exposure.CLIENT_TLS_NOT_OFFERED,
        "tls-disabled",
        ssl,
        reason,
        fix,
        lis,
    )


def check_cleartext_auth(ctx: Context) -> Iterable[Finding]:
    ssl = ctx.get("ssl").value.strip().lower()
    lis = plaintext_listeners(ctx)
    if ssl == "required" or not lis or not allows_cleartext(ctx):
        return
    setting = cleartext_allowed(ctx)
    line = "auth_allow_cleartext = no" if ctx.version == "2.4" else "disable_plaintext_auth = yes"
    if ssl == "no":
        exposure = Exposure.CREDENTIALS_CLEARTEXT_ONLY
        reason = (
            f"Accepts credentials only in cleartext on port {_ports(lis)}: PLAIN/LOGIN are"
            " allowed and TLS is off (ssl = no), so every login sends the password unencrypted."
        )
        fix = _where_fix(ctx, line, setting) + "  (once TLS is on: ssl = required)"
    else:
        exposure = Exposure.CREDENTIALS_BEFORE_TLS
        reason = (
            f"Accepts cleartext credentials on port {_ports(lis)}: PLAIN/LOGIN work before"
            " STARTTLS. The server cannot stop a client that skips STARTTLS, but it can refuse"
            " its login."
        )
        fix = _where_fix(ctx, line, setting) + "  (or: ssl = required)"
    yield _finding(
        DovecotCheck.CLEARTEXT_AUTH,
        ctx,
        exposure,
        "cleartext-credentials",
        setting,
        reason,
        fix,
        lis,
    )


def check_tls_optional(ctx: Context) -> Iterable[Finding]:
    ssl = ctx.get("ssl")
    lis = plaintext_listeners(ctx)
    if ssl.value.strip().lower() != "yes" or not lis or allows_cleartext(ctx):
        return
    reason = (
        f"TLS is optional on port {_ports(lis)}: PLAIN/LOGIN are refused before STARTTLS, but a"
        " connection from this server's own address, or from login_trusted_networks, counts as"
        " secured and may log in in cleartext (for example webmail on the same host)."
    )
    fix = _where_fix(ctx, "ssl = required", ssl) + (
        f"   or disable the plaintext listener: service {lis[0].service} {{ inet_listener"
        f" {lis[0].name} {{ port = 0 }} }}"
    )
    yield _finding(
        DovecotCheck.TLS_OPTIONAL,
        ctx,
        Exposure.LOGIN_BEFORE_TLS_SAME_HOST,
        "tls-optional",
        ssl,
        reason,
        fix,
        lis,
    )


def check_mechs_before_tls(ctx: Context) -> Iterable[Finding]:
    ssl = ctx.get("ssl").value.strip().lower()
    lis = plaintext_listeners(ctx)
    mechs = ctx.get("auth_mechanisms")
    weak = [m for m in mechs.value.lower().split() if m in NON_PLAINTEXT_MECHS]
    if ssl == "required" or not lis or not weak:
        return
    reason = (
        f"{', '.join(weak)} work before TLS on port {_ports(lis)} (only ssl = required stops"
        " them): the password is not sent in the clear, but the session and mail are."
    )
    fix = _where_fix(ctx, "ssl = required", ctx.get("ssl"))
    yield _finding(
        DovecotCheck.MECHS_BEFORE_TLS,
        ctx,
        Exposure.SESSION_BEFORE_TLS,
        "tls-optional",
        mechs,
        reason,
        fix,
        lis,
    )


def check_no_certificate(ctx: Context) -> Iterable[Finding]:
    if ctx.get("ssl").value.strip().lower() == "no" or ctx.filters:
        return
    key = "ssl_server_cert_file" if ctx.version == "2.4" else "ssl_cert"
    cert = ctx.get(key)
    if cert.value.strip():
        return
    reason = (
        f"ssl = {ctx.get('ssl').value} but {key} is not set: Dovecot refuses to start"
        " ('ssl enabled, but ssl_cert not set')."
    )
    line = (
        f"{key} = /etc/ssl/certs/mail-fullchain.pem"
        if ctx.version == "2.4"
        else f"{key} = </etc/ssl/certs/mail-fullchain.pem"
    )
    fix = f"In conf.d/10-ssl.conf: {line} (and the matching key setting)"
    yield _finding(
        DovecotCheck.NO_CERTIFICATE, ctx, Exposure.SERVICE_FAILS, "configuration", cert, reason, fix
    )


def check_weak_min_protocol(ctx: Context) -> Iterable[Finding]:
    if ctx.get("ssl").value.strip().lower() == "no":
        return
    value = ctx.get("ssl_min_protocol")
    minimum = value.value.strip().lower()
    if minimum not in WEAK_MIN:
        return
    exposure = Exposure.OLD_TLS_ALLOWED if minimum.startswith("tls") else Exposure.SSLV3_ALLOWED
    reason = (
        f"ssl_min_protocol = {value.value} admits protocol versions below TLS 1.2, against"
        " current guidance (RFC 8996, RFC 8314)."
    )
    fix = _where_fix(ctx, "ssl_min_protocol = TLSv1.2", value)
    yield _finding(
        DovecotCheck.WEAK_MIN_PROTOCOL,
        ctx,
        exposure,
        "tls-quality",
        value,
        reason,
        fix,
        plaintext_listeners(ctx) or [x for x in ctx.listeners if x.enabled],
    )


def check_trusted_public(ctx: Context) -> Iterable[Finding]:
    """Private proxy or container networks are the intended use and are not flagged."""
    value = ctx.get("login_trusted_networks")
    public = public_entries(value.value)
    if not public:
        return
    everyone = any((net := parse_network(p)) is not None and net.prefixlen <= 8 for p in public)
    reason = (
        f"login_trusted_networks covers public address space ({', '.join(public)}): Dovecot"
        " treats those connections as secured, so they may log in in cleartext even with"
        " ssl = required, and anyone on the path can read the password."
    )
    fix = _where_fix(ctx, "login_trusted_networks = <only your own proxies' addresses>", value)
    exposure = Exposure.CREDENTIALS_BEFORE_TLS if everyone else Exposure.TRUSTED_PUBLIC_NETWORK
    yield _finding(
        DovecotCheck.TRUSTED_PUBLIC, ctx, exposure, "cleartext-credentials", value, reason, fix
    )


ContextCheck = Callable[[Context], Iterable[Finding]]
REGISTRY: Mapping[DovecotCheck, ContextCheck] = {
    DovecotCheck.SSL_DISABLED: check_ssl_disabled,
    DovecotCheck.CLEARTEXT_AUTH: check_cleartext_auth,
    DovecotCheck.TLS_OPTIONAL: check_tls_optional,
    DovecotCheck.MECHS_BEFORE_TLS: check_mechs_before_tls,
    DovecotCheck.NO_CERTIFICATE: check_no_certificate,
    DovecotCheck.WEAK_MIN_PROTOCOL: check_weak_min_protocol,
    DovecotCheck.TRUSTED_PUBLIC: check_trusted_public,
}


def _version_error(a: Assign, key: str, version: str) -> tuple[str, str] | None:
    """(reason, fix) when ``key`` does not exist in ``version``, else None."""
    if version == "2.4" and key in RENAMED_IN_24:
        new = RENAMED_IN_24[key]
        reason = (
            f"{key} is a Dovecot 2.3 name: 2.4 replaced it with {new}, so doveconf fails to"
            " load this configuration and the service will not start. Its 2.3 value is not"
            " applied and is not audited as if it were."
        )
        fix = f"In {a.origin}: replace {key} with {new}" + (
            " (inverted meaning: disable_plaintext_auth = yes is auth_allow_cleartext = no)"
            if key == "disable_plaintext_auth"
            else ""
        )
        return reason, fix
    if version == "2.3" and key in ONLY_IN_24:
        reason = (
            f"{key} is a Dovecot 2.4 setting: 2.3 does not know it, so doveconf fails to load"
            " this configuration and the service will not start."
        )
        return reason, f"In {a.origin}: remove it, or use the 2.3 name"
    return None


def check_version_settings(config: DovecotConfig, version: str) -> list[Finding]:
    """Settings the detected Dovecot version does not know: the whole configuration fails to
    load (doveconf: "Unknown setting"), wherever the name appears (root, protocol or filter
    blocks; plugin blocks hold free-form names and are skipped)."""
    out: list[Finding] = []
    for a in config.assigns:
        if any(kind == "plugin" for kind, _ in a.path):
            continue
        key = normalise_key(a, version)
        error = _version_error(a, key, version)
        if error is None:
            continue
        reason, fix = error
        out.append(
            Finding(
                id=DovecotCheck.WRONG_VERSION_SETTING.value,
                severity=severity(Exposure.SERVICE_FAILS),
                category="configuration",
                reason=reason,
                fix=fix,
                setting=key,
                effective_value=a.value if "key" not in key else "(not shown)",
                service="dovecot (configuration)",
                file=a.origin.file,
                line=a.origin.line,
                doc=UPGRADE_DOC,
                extra={
                    "dovecot_version": version,
                    "replacement": RENAMED_IN_24.get(key) if version == "2.4" else None,
                    "loads": False,
                    "reach": Reach.PUBLIC.value,
                },
                exposure=Exposure.SERVICE_FAILS.value,
            )
        )
    return out


@dataclass(frozen=True)
class _Key:
    id: str
    file: str | None
    line: int | None
    setting: str | None


def audit_config(config: DovecotConfig, version: str) -> tuple[list[Finding], bool]:
    """All Dovecot findings and whether the configuration loads. A configuration that Dovecot
    refuses gets only its version errors: nothing in it is in force, so nothing else counts."""
    refused = check_version_settings(config, version)
    if refused:
        return refused, False
    return run_checks(contexts(config, version)), True


def run_checks(ctxs: Iterable[Context]) -> list[Finding]:
    """Run every context check; a finding caused by the same line in several contexts whose
    root value is shared is reported once per service label."""
    out: list[Finding] = []
    for ctx in ctxs:
        for check in REGISTRY.values():
            out.extend(check(ctx))
    return _merge_global(out)


def _merge_global(findings: list[Finding]) -> list[Finding]:
    """Config-wide checks (trusted networks, certificate, min protocol) fire once per config."""
    global_ids = {
        DovecotCheck.TRUSTED_PUBLIC.value,
        DovecotCheck.NO_CERTIFICATE.value,
        DovecotCheck.WEAK_MIN_PROTOCOL.value,
    }
    seen: set[_Key] = set()
    merged: list[Finding] = []
    for f in findings:
        if f.id in global_ids:
            key = _Key(f.id, f.file, f.line, f.setting)
            if key in seen:
                continue
            seen.add(key)
        merged.append(f)
    return merged
