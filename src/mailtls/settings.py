"""Settings of ``mailtls serve``: embedded defaults, a TOML file, environment variables, flags.

Precedence (lowest first): defaults < TOML file (``--config``) < ``MAILTLS_*`` environment
variables < command-line flags. Defaults need nothing: data under ``./var``, unprivileged ports
on 127.0.0.1, a generated test CA. A production file sets real ports, host names and certificates.

Environment variables map to keys by upper-casing and joining sections with ``__``:
``MAILTLS_DOMAIN``, ``MAILTLS_PORTS__SMTP_SUBMISSION=587``, ``MAILTLS_LIMITS__IDLE_SECONDS=60``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailtls.protocols.base import Limits
from mailtls.testcases import BlockStyle


class SettingsError(ValueError):
    """A bad settings file or value: shown to the user without a traceback."""


@dataclass(frozen=True)
class Ports:
    """Listener ports; 0 disables a listener."""

    smtp_mx: int = 2525  # STARTTLS, MX style (25 in production)
    smtp_submission: int = 2587  # STARTTLS, MAIL needs AUTH (587)
    smtp_tls: int = 2465  # implicit TLS submission (465)
    imap: int = 2143  # STARTTLS (143)
    imap_tls: int = 2993  # implicit (993)
    pop3: int = 2110  # STLS (110)
    pop3_tls: int = 2995  # implicit (995)
    http: int = 8080


@dataclass(frozen=True)
class Tls:
    cert_file: str = ""  # empty: generate a test CA + certificate under DATA_DIR/tls
    key_file: str = ""
    keep_ca_key: bool = False
    handshake_seconds: float = 10.0
    blocked_style: BlockStyle = BlockStyle.SILENCE
    blocked_seconds: float = 30.0


@dataclass(frozen=True)
class Binding:
    ttl_seconds: float = 1800.0  # how long a step start binds the visitor's address
    ipv6_prefix: int = 64
    grace_seconds: float = 60.0  # a finished step stays bound this long
    loop_connections: int = 5  # >= N connections within M seconds after a disruption -> loop
    loop_seconds: float = 60.0


@dataclass(frozen=True)
class Endpoints:
    """Dedicated endpoints per run (DESIGN §6 source 1; docs/binding.md).

    Port mode (the default): each run gets one port per listener kind from
    ``port_first..port_last`` on the service's listen addresses. Address mode (``prefix`` and
    ``zone`` set): each run gets an address from ``prefix`` and the host name
    ``<label>.<zone>`` on the standard ports. ``enabled = false`` falls back to address binding.
    """

    enabled: bool = True
    port_first: int = 20000  # below Linux's ephemeral range (32768-60999)
    port_last: int = 25999  # 6,000 ports: max_runs runs of six kinds
    max_runs: int = 1000  # runs holding endpoints at once (descriptors: see docs/binding.md)
    idle_seconds: float = 21600.0  # a run without any step activity this long gives them back
    prefix: str = ""  # e.g. "2001:db8:1:2::/64" routed to the host (AnyIP), or 127.0.10.0/24
    zone: str = ""  # e.g. "t.mailtls.example": the run's host name is <label>.<zone>
    freebind: bool = False  # IP_FREEBIND: bind run addresses not configured on an interface


@dataclass(frozen=True)
class Dns:
    """The authoritative DNS responder for ``endpoints.zone`` (off while ``port`` is 0)."""

    port: int = 0  # 53 in production (UDP and TCP)
    listen: tuple[str, ...] = ()  # empty: the service's listen addresses
    web_addresses: tuple[str, ...] = ()  # A/AAAA of autoconfig./autodiscover. (the web app)
    mail_addresses: tuple[str, ...] = ()  # A/AAAA of the zone's own name and its MX (shared)
    nameservers: tuple[str, ...] = ()  # NS names of the zone (default: ns.<zone>)
    ttl: int = 60
    queries_per_second: float = 20.0  # per client address (IPv6: per prefix)
    tcp_connections: int = 64


@dataclass(frozen=True)
class Connections:
    per_ip: int = 50
    total: int = 20000
    accept_rate: float = 0.0  # new connections per second per listener, 0 = unlimited
    exempt: tuple[str, ...] = ()  # networks exempt from the per-address limits (labs, load tests)
    fd_reserve: int = 256  # descriptors kept for the journal, index, certificates and threads


@dataclass(frozen=True)
class Log:
    """What ``serve`` logs while it works (``serve --quiet`` turns both off)."""

    activity: bool = True  # one line per run event (created, step started/armed/finished)
    status_seconds: float = 60.0  # a status line this often; 0 = never


@dataclass(frozen=True)
class RunCreation:
    """How many runs one address (an IPv6 prefix) may create: a token bucket. Networks in
    ``connections.exempt`` are not limited (a lab scripting a client matrix)."""

    rate_per_minute: float = 10.0  # refill
    burst: int = 20  # runs created at once before the refill rate applies


@dataclass(frozen=True)
class Web:
    """The HTTP side: read timeouts, connection caps, live streams."""

    header_seconds: float = 10.0  # a request's headers must arrive within this
    body_seconds: float = 30.0  # and its body within this after the headers
    idle_seconds: float = 30.0  # an idle keep-alive connection is closed after this
    per_ip: int = 32  # open HTTP connections per client address (IPv6: per prefix)
    total: int = 2048  # open HTTP connections in all (kept apart from the mail listeners')
    streams_per_run: int = 4  # live event streams (SSE) per run (more: 429)
    streams_total: int = 1000  # live event streams in all (more: 503)


@dataclass(frozen=True)
class Storage:
    """The data disk: a free-space floor, and the index queue."""

    min_free_mb: int = 256  # below this: unbound traffic is not recorded, new runs are refused
    check_seconds: float = 5.0  # how often free space is checked (and a low-space line logged)
    index_queue: int = 20000  # records queued for the index in memory (more wait in the journal)
    segment_mb: int = 16  # the journal is sealed into segments of this size (compaction rewrites
    # only the segments it changes, so it needs free space for one segment, not the journal)


@dataclass(frozen=True)
class Recording:
    """What one connection and one address may cost in records (observations) and journal bytes.

    A connection bound to no run (bots, scanners) is recorded compactly: its records are counted
    and summed into one ``connection_summary`` at its close (with a sample of its command lines);
    only a login naming a run is written when it happens, and one with a run's password makes
    the connection record fully from then on. Past a budget the connection gets the protocol's
    goodbye (SMTP 421, IMAP BYE, POP3 -ERR); an address past its budget is answered the same way
    on every unbound connection until the window ends. 0 disables a budget.
    """

    sample_lines: int = 8  # command lines kept in an unbound connection's summary
    unbound_records: int = 600  # observations per unbound connection (an EHLO is three)
    unbound_bytes: int = 65536  # journal bytes (estimated) per unbound connection
    bound_records: int = 20000  # observations per connection bound to a run
    bound_bytes: int = 8388608  # journal bytes (estimated) per connection bound to a run
    address_records: int = 6000  # observations of unbound connections per address per window
    address_bytes: int = 1048576  # journal bytes (estimated) of those per address per window
    address_window: float = 60.0  # seconds


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    listen: tuple[str, ...] = ("127.0.0.1",)
    hostname: str = "localhost"  # greeting name and the name clients connect to
    domain: str = "mailtls.test"  # test accounts are test-<CODE>@domain
    public_hostnames: tuple[str, ...] = ()  # extra certificate names (mail., imap., autoconfig.)
    base_url: str = ""  # public URL of the web app; empty: http://127.0.0.1:<http>
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For is trusted
    retention_days: int = 30
    fsync: bool = True  # group-committed fdatasync of the journal
    event_loop: str = "auto"  # "auto" (uvloop when installed), "asyncio", "uvloop"
    ports: Ports = field(default_factory=Ports)
    tls: Tls = field(default_factory=Tls)
    binding: Binding = field(default_factory=Binding)
    connections: Connections = field(default_factory=Connections)
    web: Web = field(default_factory=Web)
    storage: Storage = field(default_factory=Storage)
    recording: Recording = field(default_factory=Recording)
    endpoints: Endpoints = field(default_factory=Endpoints)
    dns: Dns = field(default_factory=Dns)
    limits: Limits = field(default_factory=Limits)
    run_creation: RunCreation = field(default_factory=RunCreation)
    log: Log = field(default_factory=Log)

    @property
    def http_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.listen[0]}:{self.ports.http}"


def _coerce(value: Any, target: Any, key: str) -> Any:
    """Convert a TOML/env value to the type of the default ``target``."""
    try:
        if isinstance(target, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(target, BlockStyle):
            return BlockStyle(str(value))
        if isinstance(target, int):
            return int(value)
        if isinstance(target, float):
            return float(value)
        if isinstance(target, Path):
            return Path(str(value))
        if isinstance(target, tuple):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"bad value for {key}: {value!r}") from None


def _merge(obj: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    changes: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise SettingsError(f"unknown setting {prefix}{key}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise SettingsError(f"{prefix}{key} must be a table")
            changes[name] = _merge(current, value, f"{prefix}{key}.")
        else:
            changes[name] = _coerce(value, current, prefix + key)
    return dataclasses.replace(obj, **changes)


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith("MAILTLS_") or key in ("MAILTLS_REQUIRE_SYSTEM",):
            continue
        path = key[len("MAILTLS_") :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    settings = Settings()
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_file}: {exc}") from None
        settings = _merge(settings, data)
    env = _env_values(os.environ if environ is None else environ)
    if env:
        settings = _merge(settings, env)
    if overrides:
        settings = _merge(settings, {k: v for k, v in overrides.items() if v is not None})
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    """Values the types alone do not bound (checked once, so none fails later in a listener)."""
    for key, nets in (
        ("trusted_proxies", settings.trusted_proxies),
        ("connections.exempt", settings.connections.exempt),
    ):
        for net in nets:
            try:
                ipaddress.ip_network(net.strip(), strict=False)
            except ValueError:
                raise SettingsError(f"bad value for {key}: {net!r} is not a network") from None
    for port in dataclasses.fields(settings.ports):
        value = getattr(settings.ports, port.name)
        if not 0 <= value <= 65535:
            raise SettingsError(f"bad value for ports.{port.name}: {value} (0-65535)")
    if settings.run_creation.rate_per_minute < 0 or settings.run_creation.burst < 1:
        raise SettingsError(
            "bad value for run_creation: rate_per_minute must be >= 0 and burst >= 1"
        )
    _validate_endpoints(settings)
    rec = settings.recording
    for f in dataclasses.fields(rec):
        if getattr(rec, f.name) < 0:
            raise SettingsError(f"bad value for recording.{f.name}: must be >= 0")
    if rec.address_window <= 0:
        raise SettingsError("bad value for recording.address_window: must be > 0")
    if not 0 <= settings.binding.ipv6_prefix <= 128:
        raise SettingsError(f"bad value for binding.ipv6_prefix: {settings.binding.ipv6_prefix}")


def _validate_endpoints(settings: Settings) -> None:
    ep, dns = settings.endpoints, settings.dns
    if not 1024 <= ep.port_first <= ep.port_last <= 65535:
        raise SettingsError(
            f"bad endpoints port range {ep.port_first}-{ep.port_last} (1024-65535, first <= last)"
        )
    standard = {getattr(settings.ports, f.name) for f in dataclasses.fields(settings.ports)}
    clash = sorted(p for p in standard if ep.port_first <= p <= ep.port_last)
    if ep.enabled and not ep.prefix and clash:
        raise SettingsError(f"the endpoints port range holds a standard port: {clash[0]}")
    if ep.max_runs < 1:
        raise SettingsError("endpoints.max_runs must be at least 1")
    if bool(ep.prefix) != bool(ep.zone):
        raise SettingsError("endpoints.prefix and endpoints.zone go together (both or neither)")
    if ep.prefix:
        try:
            ipaddress.ip_network(ep.prefix, strict=False)
        except ValueError:
            raise SettingsError(f"bad value for endpoints.prefix: {ep.prefix!r}") from None
    for address in (*dns.web_addresses, *dns.mail_addresses, *dns.listen):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SettingsError(f"bad address in [dns]: {address!r}") from None
    if not 0 <= dns.port <= 65535:
        raise SettingsError(f"bad value for dns.port: {dns.port}")
    if dns.port and not ep.zone:
        raise SettingsError("dns.port needs endpoints.zone (the zone it answers for)")
