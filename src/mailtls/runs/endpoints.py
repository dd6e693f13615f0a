"""Dedicated endpoints per run (DESIGN §6 source 1): which run a listening address and port is.

A run gets its own endpoints when it is created and gives them back when it closes (all steps
ended and the grace period over, deleted, or idle). Two modes, from ``Settings.endpoints``:
- **ports**: one port per listener kind the run may use (SMTP submission, SMTPS, IMAP, IMAPS,
  POP3, POP3S) from the pool ``port_first..port_last``, on the service's listen addresses;
- **address**: one address from ``prefix`` and the host name ``<label>.<zone>``, on the standard
  ports (where the deployment routes an IPv6 prefix to the host and delegates a DNS zone).

The pool is the fold of two run records, ``endpoints_assigned`` (the endpoints, host, address and
label) and ``endpoints_released``, so it comes back identical after a restart whatever the
settings then say; ``lookup`` maps the local address and port of an accepted connection to its
run in one dict access: exact, no TTL, no collisions.

Pure: no I/O, no clock reads; imports only the standard library and ``mailtls.settings``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailtls.settings import Settings

SOURCE_ENDPOINT = "endpoint"
MODE_PORTS = "ports"
MODE_ADDRESS = "address"
LABEL_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
LABEL_LENGTH = 8

# listener kind -> (protocol, security); the MX port is never per run (it is for servers)
KINDS: Mapping[str, tuple[str, str]] = {
    "smtp_submission": ("smtp", "starttls"),
    "smtp_tls": ("smtp", "tls"),
    "imap": ("imap", "starttls"),
    "imap_tls": ("imap", "tls"),
    "pop3": ("pop3", "starttls"),
    "pop3_tls": ("pop3", "tls"),
}


class PoolExhausted(Exception):
    """No endpoints are free for a new run: refuse it (503), never fall back to shared ports."""

    def __str__(self) -> str:
        return "all test endpoints are in use; try again in a few minutes"


class EndpointUnavailable(OSError):
    """The shell could not open ``endpoint`` (another program holds the port or address)."""

    def __init__(self, endpoint: Endpoint, reason: str) -> None:
        super().__init__(f"cannot listen on {endpoint.address or '*'}:{endpoint.port}: {reason}")
        self.endpoint = endpoint


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str  # a listener name of KINDS
    address: str  # "" = every listen address of the service
    port: int


@dataclass(frozen=True, slots=True)
class RunEndpoints:
    run_id: str
    host: str  # the name clients connect to
    address: str  # the run's own address ("" in port mode)
    label: str  # the first label of the run's host name ("" in port mode)
    endpoints: tuple[Endpoint, ...]

    def as_record(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "label": self.label,
            "endpoints": [{"kind": e.kind, "address": e.address, "port": e.port} for e in self],
        }

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def servers(self) -> dict[str, list[dict[str, Any]]]:
        """The account's server settings: protocol -> [{host, port, security}]."""
        out: dict[str, list[dict[str, Any]]] = {}
        for e in self.endpoints:
            protocol, security = KINDS[e.kind]
            out.setdefault(protocol, []).append(
                {"host": self.host, "port": e.port, "security": security}
            )
        return out


def from_record(record: Mapping[str, Any]) -> RunEndpoints:
    endpoints = tuple(
        Endpoint(str(e["kind"]), str(e["address"]), int(e["port"])) for e in record["endpoints"]
    )
    if any(e.kind not in KINDS for e in endpoints):
        raise ValueError("unknown endpoint kind")
    return RunEndpoints(
        run_id=str(record["run"]),
        host=str(record["host"]),
        address=str(record["address"]),
        label=str(record.get("label", "")),
        endpoints=endpoints,
    )


def normal_address(address: str) -> str:
    """The address as the pool keys it (IPv4-mapped IPv6 as IPv4, compressed IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def kinds_for(protocol: str | None, settings: Settings) -> tuple[str, ...]:
    """The listener kinds a run may use: sending always, receiving by its protocol (or both);
    kinds whose standard listener is switched off (port 0) are left out."""
    wanted = ("imap", "pop3") if protocol is None else (protocol,)
    return tuple(
        kind
        for kind, (proto, _) in KINDS.items()
        if (proto == "smtp" or proto in wanted) and getattr(settings.ports, kind)
    )


class EndpointPool:
    """Assignments of endpoints to runs, folded from run records; allocation and lookup."""

    def __init__(self, settings: Settings) -> None:
        conf = settings.endpoints
        self.enabled = conf.enabled
        self.mode = MODE_ADDRESS if conf.prefix and conf.zone else MODE_PORTS
        self.max_runs = conf.max_runs
        self.zone = conf.zone.strip(".").lower()
        self._hostname = settings.hostname
        self._ports = settings.ports
        self._first, self._last = conf.port_first, conf.port_last
        self._network = ipaddress.ip_network(conf.prefix, strict=False) if conf.prefix else None
        self._by_run: dict[str, RunEndpoints] = {}
        self._by_local: dict[tuple[str, int], tuple[str, str]] = {}  # (address, port) -> run
        self._by_label: dict[str, RunEndpoints] = {}
        self._taken_ports: set[int] = set()
        self._taken_addresses: set[str] = set()
        self._blocked: set[tuple[str, int]] = set()  # could not be opened (in use elsewhere)
        self._cursor = 0

    def __len__(self) -> int:
        return len(self._by_run)

    # --- queries -------------------------------------------------------------------------------

    def of(self, run_id: str) -> RunEndpoints | None:
        return self._by_run.get(run_id)

    def all(self) -> list[RunEndpoints]:
        return list(self._by_run.values())

    def lookup(self, local: tuple[str, int] | None) -> tuple[str, str] | None:
        """(run id, listener kind) of a connection accepted on ``local``, if it is a run's."""
        if local is None:
            return None
        address, port = local
        found = self._by_local.get(("", port))
        if found is None and self._network is not None:
            found = self._by_local.get((normal_address(address), port))
        return found

    def by_label(self, label: str) -> RunEndpoints | None:
        return self._by_label.get(label.lower())

    # --- allocation ----------------------------------------------------------------------------

    def plan(self, run_id: str, kinds: Sequence[str]) -> RunEndpoints:
        """Free endpoints for ``run_id`` (not yet taken: ``assign`` does that)."""
        if len(self._by_run) >= self.max_runs or not kinds:
            raise PoolExhausted
        if self._network is not None:
            address = self._free_address(kinds)
            label = "".join(secrets.choice(LABEL_ALPHABET) for _ in range(LABEL_LENGTH))
            while label in self._by_label:
                label = "".join(secrets.choice(LABEL_ALPHABET) for _ in range(LABEL_LENGTH))
            endpoints = tuple(Endpoint(k, address, getattr(self._ports, k)) for k in kinds)
            host = f"{label}.{self.zone}"
            return RunEndpoints(run_id, host, address, label, endpoints)
        ports = self._free_ports(len(kinds))
        endpoints = tuple(Endpoint(k, "", p) for k, p in zip(kinds, ports, strict=True))
        return RunEndpoints(run_id, self._hostname, "", "", endpoints)

    def block(self, endpoint: Endpoint) -> None:
        """``endpoint`` could not be opened (another program holds it): never plan it again."""
        self._blocked.add((endpoint.address, endpoint.port))

    def _free_ports(self, n: int) -> list[int]:
        size = self._last - self._first + 1
        out: list[int] = []
        for i in range(size):  # next fit from a moving cursor: a released port rests longest
            port = self._first + (self._cursor + i) % size
            if port in self._taken_ports or ("", port) in self._blocked:
                continue
            out.append(port)
            if len(out) == n:
                self._cursor = (port - self._first + 1) % size
                return out
        raise PoolExhausted

    def _free_address(self, kinds: Collection[str]) -> str:
        assert self._network is not None
        usable = min(self._network.num_addresses - 2, self.max_runs + len(self._blocked) + 1)
        for offset in range(1, usable + 1):
            address = str(self._network.network_address + offset)
            if address in self._taken_addresses:
                continue
            if any((address, getattr(self._ports, k)) in self._blocked for k in kinds):
                continue
            return address
        raise PoolExhausted

    # --- the fold ------------------------------------------------------------------------------

    def assign(self, endpoints: RunEndpoints) -> None:
        self.release(endpoints.run_id)
        self._by_run[endpoints.run_id] = endpoints
        for e in endpoints:
            self._by_local[(normal_address(e.address) if e.address else "", e.port)] = (
                endpoints.run_id,
                e.kind,
            )
            if not e.address:
                self._taken_ports.add(e.port)
        if endpoints.address:
            self._taken_addresses.add(normal_address(endpoints.address))
        if endpoints.label:
            self._by_label[endpoints.label.lower()] = endpoints

    def release(self, run_id: str) -> RunEndpoints | None:
        endpoints = self._by_run.pop(run_id, None)
        if endpoints is None:
            return None
        for e in endpoints:
            key = (normal_address(e.address) if e.address else "", e.port)
            if self._by_local.get(key, ("",))[0] == run_id:
                del self._by_local[key]
            if not e.address:
                self._taken_ports.discard(e.port)
        self._taken_addresses.discard(normal_address(endpoints.address))
        self._by_label.pop(endpoints.label.lower(), None)
        return endpoints
