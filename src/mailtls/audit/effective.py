"""Effective Postfix settings per SMTP service: built-in default < main.cf < master.cf ``-o``.

A ``SmtpService`` is one listening smtpd: an ``inet`` entry running ``smtpd``, or the
``smtpd pass`` entry behind a ``postscreen`` listener (postscreen hands port-25 sessions to it, so
its overrides are the ones that apply on port 25). ``SmtpService.get`` answers the effective value
of a parameter with ``$name`` expanded in that service's context and the definition that produced
it. ``tls_level`` folds the legacy ``smtpd_use_tls``/``smtpd_enforce_tls`` into the level. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailtls.audit.model import Origin, Setting
from mailtls.audit.networks import entries, only_non_public
from mailtls.audit.postfix_main import MainConfig, expand
from mailtls.audit.postfix_master import MasterConfig, MasterEntry

PORTS: Mapping[str, int] = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "submissions": 465,
    "urd": 465,
}
SCOPE_OVERRIDE = "master.cf -o"
SCOPE_MAIN = "main.cf"
SCOPE_DEFAULT = "default"


@dataclass(frozen=True)
class Effective:
    """The value a service really uses: raw text, expanded text, and where it was defined."""

    name: str
    raw: str
    value: str
    origin: Origin | None
    scope: str

    def to_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "raw": self.raw,
            "scope": self.scope,
            "file": self.origin.file if self.origin else None,
            "line": self.origin.line if self.origin else None,
        }


@dataclass(frozen=True)
class PostfixInstance:
    """One Postfix instance: its main.cf, master.cf and defaults table."""

    name: str
    main: MainConfig
    master: MasterConfig
    defaults: MainConfig

    def main_get(self, name: str) -> Effective:
        """A parameter in main.cf context (no service overrides)."""
        return _resolve(name, {}, self, None)


@dataclass(frozen=True)
class SmtpService:
    label: str
    listener: MasterEntry
    entry: MasterEntry
    port: int | None
    host: str | None
    instance: PostfixInstance
    via: str | None = None
    overrides: Mapping[str, Setting] = field(default_factory=dict)

    def get(self, name: str) -> Effective:
        return _resolve(name, self.overrides, self.instance, self.entry.service)

    @property
    def loopback_only(self) -> bool:
        """Reachable from this host only (service bound to loopback, or inet_interfaces)."""
        if self.host is not None:
            return _is_loopback(self.host)
        interfaces = self.instance.main_get("inet_interfaces").value
        items = [i for i in interfaces.replace(",", " ").split() if i]
        return bool(items) and all(_is_loopback(i) for i in items)

    @property
    def internal(self) -> bool:
        """Only clients in a private ``mynetworks`` get past ``smtpd_client_restrictions``
        (``permit_mynetworks, reject``): an internal relay, not a service for the Internet."""
        items = [i.lower() for i in entries(self.get("smtpd_client_restrictions").value)]
        if "permit_mynetworks" not in items or items[-1] != "reject":
            return False
        if any(i != "permit_mynetworks" and not i.startswith("reject") for i in items):
            return False
        nets = self.get("mynetworks").value
        if nets.strip():
            return only_non_public(nets)
        return self.get("mynetworks_style").value.strip().lower() == "host"


def _resolve(
    name: str, overrides: Mapping[str, Setting], inst: PostfixInstance, service: str | None
) -> Effective:
    def raw_of(key: str) -> Setting | None:
        return overrides.get(key) or inst.main.settings.get(key) or inst.defaults.settings.get(key)

    def lookup(key: str) -> str | None:
        if key == "service_name" and service is not None:
            return service  # master(8) sets it per service (syslog_name=postfix/$service_name)
        found = raw_of(key)
        return None if found is None else found.value

    setting = raw_of(name)
    if setting is None:
        return Effective(name, "", "", None, SCOPE_DEFAULT)
    if name in overrides:
        scope = SCOPE_OVERRIDE
    elif name in inst.main.settings:
        scope = SCOPE_MAIN
    else:
        scope = SCOPE_DEFAULT
    origin = setting.origin if scope != SCOPE_DEFAULT else None
    return Effective(name, setting.value, expand(setting.value, lookup), origin, scope)


def _is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "loopback-only"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_service(service: str) -> tuple[str | None, int | None]:
    """``[host:]port`` of an inet service name -> (host or None, port number or None)."""
    host: str | None = None
    port_text = service
    if service.startswith("["):
        close = service.find("]")
        if close > 0 and service[close + 1 : close + 2] == ":":
            host, port_text = service[1:close], service[close + 2 :]
    elif ":" in service:
        host, _, port_text = service.rpartition(":")
    if port_text.isdigit():
        return host, int(port_text)
    return host, PORTS.get(port_text)


def is_yes(value: str) -> bool:
    return value.strip().lower() == "yes"


def smtp_services(inst: PostfixInstance) -> list[SmtpService]:
    """Every smtpd that accepts connections on an inet socket, with its effective overrides."""
    services: list[SmtpService] = []
    for entry in inst.master.effective_entries():
        if entry.type != "inet":
            continue
        host, port = split_service(entry.service)
        if entry.command == "smtpd":
            services.append(
                SmtpService(entry.key, entry, entry, port, host, inst, None, entry.override_map())
            )
        elif entry.command == "postscreen":
            passer = inst.master.find("smtpd", "pass")
            if passer is None:
                continue
            services.append(
                SmtpService(
                    passer.key,
                    entry,
                    passer,
                    port,
                    host,
                    inst,
                    f"postscreen on {entry.key}",
                    passer.override_map(),
                )
            )
    return services


@dataclass(frozen=True)
class TlsLevel:
    """Effective ``smtpd_tls_security_level`` (none/may/encrypt) and what decided it."""

    level: str
    decided_by: Effective


def tls_level(service: SmtpService) -> TlsLevel:
    level = service.get("smtpd_tls_security_level")
    if level.value.strip():
        return TlsLevel(level.value.strip().lower(), level)
    enforce = service.get("smtpd_enforce_tls")
    if is_yes(enforce.value):
        return TlsLevel("encrypt", enforce)
    use = service.get("smtpd_use_tls")
    if is_yes(use.value):
        return TlsLevel("may", use)
    return TlsLevel("none", level if level.origin else use if use.origin else level)


RELEVANT = (
    "smtpd_tls_security_level",
    "smtpd_use_tls",
    "smtpd_enforce_tls",
    "smtpd_tls_wrappermode",
    "smtpd_tls_auth_only",
    "smtpd_sasl_auth_enable",
    "smtpd_tls_cert_file",
    "smtpd_tls_eccert_file",
    "smtpd_tls_dcert_file",
    "smtpd_tls_chain_files",
    "smtpd_tls_protocols",
    "smtpd_tls_mandatory_protocols",
    "smtpd_tls_ciphers",
    "smtpd_tls_mandatory_ciphers",
    "inet_interfaces",
    "smtpd_client_restrictions",
    "mynetworks",
)


def service_summary(service: SmtpService) -> dict[str, object]:
    """The effective, TLS-relevant settings of one service (for JSON output)."""
    return {
        "service": service.label,
        "listener": service.listener.key,
        "port": service.port,
        "via": service.via,
        "loopback_only": service.loopback_only,
        "internal": service.internal,
        "entry": str(service.entry.origin),
        "effective_tls_level": tls_level(service).level,
        "settings": {name: service.get(name).to_dict() for name in RELEVANT},
    }
