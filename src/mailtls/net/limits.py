"""Connection admission and what an address may cost: per-address and total connection limits,
accept rate, refusal records, the per-address budget of records and journal bytes.

Pure bookkeeping (the caller passes the clock), no sockets. ``admit`` answers ``None`` (accepted:
the caller must ``release`` the address when the connection ends) or the refusal reason that
``ConnectionRefused`` records. Addresses in the exempt networks (monitoring, a lab's load
generator) skip the per-address limit but still count towards the total, and have no budget.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mailtls.runs.binding import address_key

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; ``rate <= 0`` means unlimited."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._last = 0.0

    def take(self, now: float) -> bool:
        if self._rate <= 0:
            return True
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def networks(exempt: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(net, strict=False) for net in exempt)


def in_networks(ip: str, nets: tuple[Network, ...]) -> bool:
    if not nets:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in nets)


def limit_key(ip: str, ipv6_prefix: int) -> str:
    """An IPv4 address itself (no parsing on the common path), an IPv6 one by its prefix."""
    if ":" not in ip:
        return ip
    return address_key(ip, ipv6_prefix) or ip


class AddressBudget:
    """Records and journal bytes that connections from one address (an IPv6 prefix) may cost per
    fixed window of ``window`` seconds (0 bounds: unlimited). ``charge`` adds to the window and,
    from the moment a bound is passed until the window ends, answers (what, its bound, whether
    this is the first answer of the window), else None. At most ``max_addresses`` windows are
    kept: past that, ended ones go first, then the oldest.
    """

    __slots__ = ("_exempt", "_max", "_v6_prefix", "_windows", "bytes", "records", "window")

    def __init__(
        self,
        records: int,
        nbytes: int,
        window: float,
        exempt: Iterable[str] = (),
        ipv6_prefix: int = 64,
        max_addresses: int = 65536,
    ) -> None:
        self.records = records
        self.bytes = nbytes
        self.window = window
        self._exempt = networks(exempt)
        self._v6_prefix = ipv6_prefix
        self._max = max_addresses
        self._windows: dict[str, _Window] = {}

    def _current(self, ip: str, now: float) -> _Window | None:
        key = limit_key(ip, self._v6_prefix)
        found = self._windows.get(key)
        if found is not None and now - found.start < self.window:
            return found
        if found is not None:
            del self._windows[key]
        return None

    def over(self, ip: str, now: float) -> str | None:
        found = self._current(ip, now)
        return None if found is None else found.passed

    def charge(
        self, ip: str, records: int, nbytes: int, now: float
    ) -> tuple[str, int, bool] | None:
        found = self._current(ip, now)
        if found is None:
            if not (self.records or self.bytes) or in_networks(ip, self._exempt):
                return None
            if len(self._windows) >= self._max:
                self._evict(now)
            found = self._windows[limit_key(ip, self._v6_prefix)] = _Window(now)
        found.records += records
        found.bytes += nbytes
        if found.passed is None:
            if self.records and found.records > self.records:
                found.passed = "records"
            elif self.bytes and found.bytes > self.bytes:
                found.passed = "bytes"
        if found.passed is None:
            return None
        first, found.announced = not found.announced, True
        return found.passed, self.records if found.passed == "records" else self.bytes, first

    def _evict(self, now: float) -> None:
        ended = [k for k, w in self._windows.items() if now - w.start >= self.window]
        for key in ended:
            del self._windows[key]
        while len(self._windows) >= self._max:
            del self._windows[next(iter(self._windows))]


class _Window:
    __slots__ = ("announced", "bytes", "passed", "records", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.records = 0
        self.bytes = 0
        self.passed: str | None = None
        self.announced = False


class ConnectionLimiter:
    """Counts open connections per client address (an IPv6 address by its prefix, like the run
    bindings: a client picks addresses from its /64) and in total."""

    __slots__ = ("_exempt", "_per_ip", "_total", "_v6_prefix", "by_ip", "total")

    def __init__(
        self, per_ip: int, total: int, exempt: Iterable[str] = (), ipv6_prefix: int = 64
    ) -> None:
        self._per_ip = per_ip
        self._total = total
        self._v6_prefix = ipv6_prefix
        self._exempt = networks(exempt)
        self.by_ip: dict[str, int] = {}
        self.total = 0

    def _is_exempt(self, ip: str) -> bool:
        return in_networks(ip, self._exempt)

    def _key(self, ip: str) -> str:
        return limit_key(ip, self._v6_prefix)

    def admit(self, ip: str) -> str | None:
        if self._total > 0 and self.total >= self._total:
            return "global_limit"
        key = self._key(ip)
        count = self.by_ip.get(key, 0)
        if self._per_ip > 0 and count >= self._per_ip and not self._is_exempt(ip):
            return "per_ip_limit"
        self.by_ip[key] = count + 1
        self.total += 1
        return None

    def release(self, ip: str) -> None:
        key = self._key(ip)
        count = self.by_ip.get(key, 0) - 1
        if count > 0:
            self.by_ip[key] = count
        else:
            self.by_ip.pop(key, None)
        self.total = max(0, self.total - 1)


class RefusalThrottle:
    """At most ``per_second`` refusal records per second: a flood must not flood the journal."""

    __slots__ = ("_bucket", "suppressed")

    def __init__(self, per_second: float = 50.0) -> None:
        self._bucket = TokenBucket(per_second, per_second)
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if self._bucket.take(now):
            return True
        self.suppressed += 1
        return False
