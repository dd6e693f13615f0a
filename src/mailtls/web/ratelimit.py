"""Token buckets keyed by client address (bounded table, oldest entries evicted); addresses in
the exempt networks are never limited.

Thread-safe: the web app asks from its worker threads (sync endpoints) and its event loop.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        max_keys: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        exempt: Sequence[Network] = (),
    ) -> None:
        self._exempt = tuple(exempt)
        self._rate = rate_per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def exempted(self, address: str | None) -> bool:
        if not self._exempt or not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._exempt)

    def allow(self, key: str, address: str | None = None) -> bool:
        """Take a token from ``key``'s bucket; ``address`` (the real one, when ``key`` is a
        prefix) is checked against the exempt networks first."""
        if self.exempted(address):
            return True
        now = self._clock()
        with self._lock:  # a bucket taken out here must not look new to another thread
            tokens, last = self._buckets.pop(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        return allowed
