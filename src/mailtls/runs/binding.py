"""The address binding table: which run and step a new connection from an address belongs to.

Key: an IPv4 address, or the IPv6 network of the configured prefix length (/64 by default), so
that a client's privacy addresses all map to one key; IPv4-mapped IPv6 addresses count as IPv4.
Value: the run, step, source (``address``: the web visitor's, ``login_address``: one the run's
account logged in from), when it was bound and when it expires. Newest binding wins; replacing
another run's still-valid binding is a collision, returned to the caller so that it can be
recorded for both runs. Lookups are one dict access.

``BindingSource`` is the seam for other ways to bind (a listener address or port of the run's own).
Pure data structure: no clock reads (time is passed in), no I/O, imports nothing of mailtls.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Protocol

SOURCE_ADDRESS = "address"
SOURCE_LOGIN = "login_address"


@dataclass(frozen=True, slots=True)
class AddressBinding:
    run_id: str
    step: int
    source: str
    bound_at: float
    expires: float


class BindingSource(Protocol):
    """Something that can tell, at accept time, which run/step a connection belongs to."""

    def lookup(
        self, client_ip: str, local: tuple[str, int] | None, now: float
    ) -> AddressBinding | None: ...


def address_key(address: str, ipv6_prefix: int = 64) -> str | None:
    """Normalised table key of ``address``; ``None`` when it is not an IP address."""
    text = address.strip()
    if "%" in text:  # IPv6 zone id (fe80::1%eth0)
        text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        prefix = min(max(ipv6_prefix, 0), 128)
        net = ipaddress.IPv6Network((ip, prefix), strict=False)
        return str(net)
    return str(ip)


class BindingTable:
    """Address (or IPv6 prefix) -> newest ``AddressBinding``, with an index by run and step."""

    __slots__ = ("_by_key", "_by_step", "ipv6_prefix")

    def __init__(self, ipv6_prefix: int = 64) -> None:
        self.ipv6_prefix = ipv6_prefix
        self._by_key: dict[str, AddressBinding] = {}
        self._by_step: dict[tuple[str, int], set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def key(self, address: str) -> str | None:
        return address_key(address, self.ipv6_prefix)

    def bind(
        self,
        address: str,
        run_id: str,
        step: int,
        source: str,
        now: float,
        expires: float,
    ) -> AddressBinding | None:
        """Bind ``address`` (newest wins); return another run's still-valid binding it replaced.

        Raises ``ValueError`` when ``address`` is not an IP address.
        """
        key = self.key(address)
        if key is None:
            raise ValueError(f"not an IP address: {address!r}")
        old = self._by_key.get(key)
        if old is not None:
            self._forget(key, old)
        new = AddressBinding(run_id, step, source, now, expires)
        self._by_key[key] = new
        self._by_step.setdefault((run_id, step), set()).add(key)
        if old is not None and old.run_id != run_id and old.expires > now:
            return old
        return None

    def lookup(
        self, client_ip: str, local: tuple[str, int] | None = None, now: float = 0.0
    ) -> AddressBinding | None:
        key = self.key(client_ip)
        if key is None:
            return None
        found = self._by_key.get(key)
        if found is None:
            return None
        if found.expires <= now:
            self._forget(key, found)
            del self._by_key[key]
            return None
        return found

    def bound_to(self, address: str, run_id: str, step: int, now: float) -> bool:
        found = self.lookup(address, None, now)
        return found is not None and found.run_id == run_id and found.step == step

    def set_expiry(self, run_id: str, step: int, expires: float, *, only_earlier: bool) -> None:
        """Move the expiry of every binding of (run, step); ``only_earlier`` never extends."""
        for key in self._by_step.get((run_id, step), ()):
            current = self._by_key[key]
            if only_earlier and current.expires <= expires:
                continue
            self._by_key[key] = replace(current, expires=expires)

    def drop_run(self, run_id: str) -> None:
        for run_step in [k for k in self._by_step if k[0] == run_id]:
            for key in self._by_step.pop(run_step):
                self._by_key.pop(key, None)

    def prune(self, now: float) -> int:
        """Drop expired bindings; returns how many."""
        expired = [k for k, b in self._by_key.items() if b.expires <= now]
        for key in expired:
            self._forget(key, self._by_key.pop(key))
        return len(expired)

    def _forget(self, key: str, binding: AddressBinding) -> None:
        keys = self._by_step.get((binding.run_id, binding.step))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_step[(binding.run_id, binding.step)]
