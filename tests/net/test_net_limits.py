"""Connection admission bookkeeping (``mailtls.net.limits``) without sockets."""

from __future__ import annotations

from mailtls.net.limits import ConnectionLimiter


def test_an_ipv6_prefix_counts_as_one_address() -> None:
    """An IPv6 client picks addresses from its /64: the per-address limit counts the prefix
    (as the run bindings do), else it would not limit anyone on IPv6."""
    limiter = ConnectionLimiter(per_ip=2, total=100, ipv6_prefix=64)
    assert limiter.admit("2001:db8:1:2::1") is None
    assert limiter.admit("2001:db8:1:2::2") is None
    assert limiter.admit("2001:db8:1:2:ffff::3") == "per_ip_limit"
    assert limiter.admit("2001:db8:1:3::1") is None  # another /64
    limiter.release("2001:db8:1:2::1")
    assert limiter.admit("2001:db8:1:2::9") is None
    for _ in range(2):
        assert limiter.admit("192.0.2.7") is None
    assert limiter.admit("192.0.2.7") == "per_ip_limit"
    assert limiter.admit("192.0.2.8") is None


def test_exempt_networks_are_matched_on_the_real_address() -> None:
    limiter = ConnectionLimiter(per_ip=1, total=100, exempt=["2001:db8:1:2::5/128"])
    assert limiter.admit("2001:db8:1:2::5") is None
    assert limiter.admit("2001:db8:1:2::5") is None  # exempt
    assert limiter.admit("2001:db8:1:2::6") == "per_ip_limit"  # same /64, not exempt
    assert limiter.total == 2
