"""Effective Dovecot settings per protocol, per ``local``/``remote`` filter, and per listener.

A ``Context`` is what one kind of connection sees: protocol ``imap`` alone, or ``imap`` for
clients matching ``remote 192.168.0.0/16`` (filters nest). Values resolve from the version's
defaults, then root assignments in file order, then matching ``protocol`` blocks, then matching
``local``/``remote``/``local_name`` blocks (more specific wins). Listeners come from the login
services (defaults: imap 143, imaps 993, pop3 110, pop3s 995, submission 587, sieve 4190),
``port = 0`` disables one, listener ``ssl = yes`` is implicit TLS. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from mailtls.audit.dovecot import Assign, DovecotConfig
from mailtls.audit.model import Origin

FILTER_KINDS = ("protocol", "local", "remote", "local_name")
LOGIN_SERVICES: Mapping[str, str] = {
    "imap": "imap-login",
    "pop3": "pop3-login",
    "submission": "submission-login",
    "sieve": "managesieve-login",
}
DEFAULT_LISTENERS: Mapping[str, tuple[tuple[str, int, bool], ...]] = {
    "imap-login": (("imap", 143, False), ("imaps", 993, True)),
    "pop3-login": (("pop3", 110, False), ("pop3s", 995, True)),
    "submission-login": (("submission", 587, False),),
    "managesieve-login": (("sieve", 4190, False),),
}
COMMON_DEFAULTS: Mapping[str, str] = {
    "ssl": "yes",
    "ssl_min_protocol": "TLSv1.2",
    "auth_mechanisms": "plain",
    "login_trusted_networks": "",
    "listen": "*, ::",
    "protocols": "imap pop3 lmtp",
}
DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "2.3": {**COMMON_DEFAULTS, "disable_plaintext_auth": "yes", "ssl_cert": ""},
    "2.4": {**COMMON_DEFAULTS, "auth_allow_cleartext": "no", "ssl_server_cert_file": ""},
}
RELEVANT: Mapping[str, tuple[str, ...]] = {
    "2.3": (
        "ssl",
        "disable_plaintext_auth",
        "ssl_min_protocol",
        "auth_mechanisms",
        "login_trusted_networks",
        "ssl_cert",
        "listen",
    ),
    "2.4": (
        "ssl",
        "auth_allow_cleartext",
        "ssl_min_protocol",
        "auth_mechanisms",
        "login_trusted_networks",
        "ssl_server_cert_file",
        "listen",
    ),
}


def detect_version(config: DovecotConfig, forced: str | None = None) -> str:
    """``2.4`` when the config says so (``dovecot_config_version``, doveconf header), else 2.3."""
    if forced:
        return forced
    if config.version_hint and config.version_hint.startswith("2.4"):
        return "2.4"
    if any(a.key == "dovecot_config_version" for a in config.assigns):
        return "2.4"
    return "2.3"


def normalise_key(a: Assign, version: str) -> str:
    """2.4 also writes settings as ``ssl_server { cert_file = ... }``: flatten that form."""
    if version == "2.4" and a.path and a.path[-1] == ("ssl_server", ""):
        return "ssl_server_" + a.key
    return a.key


@dataclass(frozen=True)
class Value:
    key: str
    value: str
    origin: Origin | None
    filters: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "file": self.origin.file if self.origin else None,
            "line": self.origin.line if self.origin else None,
            "filter": " ".join(f"{k} {n}".strip() for k, n in self.filters) or None,
        }


@dataclass(frozen=True)
class Listener:
    service: str
    name: str
    port: int
    implicit_tls: bool
    address: str
    origin: Origin | None

    @property
    def enabled(self) -> bool:
        return self.port != 0


@dataclass(frozen=True)
class Context:
    """One protocol, optionally narrowed by local/remote filters, with its effective values."""

    protocol: str
    filters: tuple[tuple[str, str], ...]
    values: Mapping[str, Value]
    listeners: tuple[Listener, ...]
    version: str
    source: str

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k} {n}" for k, n in self.filters)
        return f"{self.protocol} ({extra})" if extra else self.protocol

    def get(self, key: str) -> Value:
        return self.values.get(key) or Value(key, "", None)


def _filter_path(a: Assign) -> tuple[tuple[str, str], ...] | None:
    """The filter sections around an assignment, or None when a non-filter section encloses it.
    A 2.4 ``ssl_server { }`` block is only a way of writing names, not a filter."""
    path = a.path[:-1] if a.path and a.path[-1] == ("ssl_server", "") else a.path
    if any(kind not in FILTER_KINDS for kind, _ in path):
        return None
    return path


def _protocol_matches(name: str, protocol: str) -> bool:
    names = name.split()
    positive = [n for n in names if not n.startswith("!")]
    negative = [n[1:] for n in names if n.startswith("!")]
    if protocol in negative:
        return False
    return protocol in positive if positive else bool(negative)


def _rank(path: tuple[tuple[str, str], ...]) -> int:
    """Specificity: protocol filters < address/name filters < both."""
    has_proto = any(k == "protocol" for k, _ in path)
    has_addr = any(k != "protocol" for k, _ in path)
    return (2 if has_addr else 0) + (1 if has_proto else 0)


def _values(
    config: DovecotConfig,
    version: str,
    protocol: str | None,
    addr_filters: tuple[tuple[str, str], ...],
) -> dict[str, Value]:
    values = {k: Value(k, v, None) for k, v in DEFAULTS[version].items()}
    candidates: list[tuple[int, int, Assign, tuple[tuple[str, str], ...]]] = []
    for index, a in enumerate(config.assigns):
        path = _filter_path(a)
        if path is None:
            continue
        protos = [n for k, n in path if k == "protocol"]
        addrs = tuple((k, n) for k, n in path if k != "protocol")
        if protos and (protocol is None or not all(_protocol_matches(p, protocol) for p in protos)):
            continue
        if addrs and addrs != addr_filters[: len(addrs)]:
            continue
        candidates.append((_rank(path), index, a, path))
    for _, _, a, path in sorted(candidates, key=lambda c: (c[0], c[1])):
        key = normalise_key(a, version)
        values[key] = Value(key, a.value, a.origin, path)
    return values


def listeners(config: DovecotConfig, service: str) -> tuple[Listener, ...]:
    found: dict[str, dict[str, tuple[str, Origin | None]]] = {}
    for name, port, implicit in DEFAULT_LISTENERS.get(service, ()):
        found[name] = {"port": (str(port), None), "ssl": ("yes" if implicit else "no", None)}
    for a in config.assigns:
        if len(a.path) < 2 or a.path[0] != ("service", service):
            continue
        kind, name = a.path[1]
        if kind != "inet_listener" or len(a.path) != 2:
            continue
        found.setdefault(name, {"port": ("0", a.origin), "ssl": ("no", None)})
        found[name][a.key] = (a.value, a.origin)
    out: list[Listener] = []
    for name, attrs in found.items():
        port_text, port_origin = attrs["port"]
        ssl_value, _ = attrs["ssl"]
        address = attrs.get("address", ("", None))[0]
        port = int(port_text) if port_text.strip().isdigit() else 0
        out.append(Listener(service, name, port, ssl_value.lower() == "yes", address, port_origin))
    return tuple(out)


def enabled_protocols(config: DovecotConfig, version: str) -> list[str]:
    value = _values(config, version, None, ())["protocols"].value
    seen: list[str] = []
    for name in value.replace(",", " ").split():
        if name in LOGIN_SERVICES and name not in seen:
            seen.append(name)
    return seen


def address_filters(config: DovecotConfig) -> list[tuple[tuple[str, str], ...]]:
    """Every distinct chain of local/remote/local_name filters that holds an assignment."""
    chains: list[tuple[tuple[str, str], ...]] = []
    for a in config.assigns:
        path = _filter_path(a)
        if path is None:
            continue
        addrs = tuple((k, n) for k, n in path if k != "protocol")
        if addrs and addrs not in chains:
            chains.append(addrs)
    return chains


def contexts(config: DovecotConfig, version: str) -> list[Context]:
    """One context per enabled protocol, plus one per address filter that changes a setting."""
    out: list[Context] = []
    relevant = RELEVANT[version]
    for protocol in enabled_protocols(config, version):
        lis = listeners(config, LOGIN_SERVICES[protocol])
        base = _values(config, version, protocol, ())
        out.append(Context(protocol, (), base, lis, version, config.source))
        for chain in address_filters(config):
            narrowed = _values(config, version, protocol, chain)
            if any(narrowed[k].value != base[k].value for k in relevant if k in narrowed):
                out.append(Context(protocol, chain, narrowed, lis, version, config.source))
    return out


def is_loopback(address: str) -> bool:
    """True when every address in a Dovecot ``listen``/``address`` value is loopback."""
    items = [i.strip().strip("[]") for i in address.replace(",", " ").split() if i.strip()]
    if not items:
        return False
    for item in items:
        if item == "localhost":
            continue
        try:
            if not ipaddress.ip_address(item).is_loopback:
                return False
        except ValueError:
            return False
    return True


def context_summary(ctx: Context) -> dict[str, object]:
    return {
        "service": ctx.label,
        "version": ctx.version,
        "settings": {k: ctx.get(k).to_dict() for k in RELEVANT[ctx.version]},
        "listeners": [
            {
                "name": f"{lis.service}/{lis.name}",
                "port": lis.port,
                "implicit_tls": lis.implicit_tls,
                "enabled": lis.enabled,
                "address": lis.address or None,
            }
            for lis in ctx.listeners
        ],
    }
