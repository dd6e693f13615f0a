"""Connection admission: per-address and total connection limits, accept rate, refusal records.

Pure bookkeeping (the caller passes the clock), no sockets. ``admit`` answers ``None`` (accepted:
the caller must ``release`` the address when the connection ends) or the refusal reason that
``ConnectionRefused`` records. Addresses in the exempt networks (monitoring, a lab's load
generator) skip the per-address limit but still count towards the total.
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
        self._exempt: tuple[Network, ...] = tuple(
            ipaddress.ip_network(net, strict=False) for net in exempt
        )
        self.by_ip: dict[str, int] = {}
        self.total = 0

    def _is_exempt(self, ip: str) -> bool:
        if not self._exempt:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._exempt)

    def _key(self, ip: str) -> str:
        if ":" not in ip:  # IPv4: the address itself (no parsing on the common path)
            return ip
        return address_key(ip, self._v6_prefix) or ip

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
