"""The address binding table: keys, TTL, IPv6 prefixes, newest wins, collisions."""

from __future__ import annotations

import pytest

from mailtls.runs.binding import BindingTable, address_key


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        (" 192.0.2.7 ", 64, "192.0.2.7"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb:cccc:dddd:eeee", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::1", 56, "2001:db8:1::/56"),
        ("2001:DB8:1:2::1", 128, "2001:db8:1:2::1/128"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("::1", 64, "::/64"),
        ("not an address", 64, None),
        ("", 64, None),
        ("192.0.2.300", 64, None),
    ],
)
def test_address_key(address: str, prefix: int, key: str | None) -> None:
    assert address_key(address, prefix) == key


def test_binding_expires_after_its_ttl() -> None:
    table = BindingTable()
    table.bind("192.0.2.1", "A", 1, "address", now=100.0, expires=160.0)
    found = table.lookup("192.0.2.1", None, 159.9)
    assert found is not None and (found.run_id, found.step, found.source) == ("A", 1, "address")
    assert table.lookup("192.0.2.1", None, 160.0) is None
    assert len(table) == 0  # an expired entry is dropped when looked up


def test_ipv6_binds_the_whole_prefix() -> None:
    table = BindingTable(ipv6_prefix=64)
    table.bind("2001:db8:0:1::10", "A", 2, "address", 0.0, 100.0)
    assert table.lookup("2001:db8:0:1:dead:beef:0:1", None, 1.0) is not None
    assert table.lookup("2001:db8:0:2::10", None, 1.0) is None


def test_newest_binding_wins_and_another_runs_valid_binding_is_a_collision() -> None:
    table = BindingTable()
    assert table.bind("192.0.2.1", "A", 1, "address", 0.0, 100.0) is None
    replaced = table.bind("192.0.2.1", "B", 3, "login_address", 10.0, 110.0)
    assert replaced is not None and (replaced.run_id, replaced.step) == ("A", 1)
    found = table.lookup("192.0.2.1", None, 20.0)
    assert found is not None and (found.run_id, found.step) == ("B", 3)


def test_replacing_an_expired_or_own_binding_is_no_collision() -> None:
    table = BindingTable()
    table.bind("192.0.2.1", "A", 1, "address", 0.0, 10.0)
    assert table.bind("192.0.2.1", "B", 1, "address", 20.0, 100.0) is None  # A's had expired
    assert table.bind("192.0.2.1", "B", 2, "address", 30.0, 100.0) is None  # same run


def test_set_expiry_moves_every_binding_of_the_step() -> None:
    table = BindingTable()
    table.bind("192.0.2.1", "A", 1, "address", 0.0, 100.0)
    table.bind("2001:db8::1", "A", 1, "login_address", 0.0, 100.0)
    table.bind("192.0.2.2", "A", 2, "address", 0.0, 100.0)
    table.set_expiry("A", 1, 50.0, only_earlier=True)
    assert table.lookup("192.0.2.1", None, 60.0) is None
    assert table.lookup("2001:db8::2", None, 60.0) is None
    assert table.lookup("192.0.2.2", None, 60.0) is not None
    table.set_expiry("A", 2, 500.0, only_earlier=True)  # never extends
    assert table.lookup("192.0.2.2", None, 200.0) is None


def test_a_rebound_address_leaves_the_old_steps_index() -> None:
    table = BindingTable()
    table.bind("192.0.2.1", "A", 1, "address", 0.0, 100.0)
    table.bind("192.0.2.1", "A", 2, "address", 1.0, 100.0)
    table.set_expiry("A", 1, 5.0, only_earlier=True)  # must not touch step 2's binding
    found = table.lookup("192.0.2.1", None, 50.0)
    assert found is not None and found.step == 2


def test_drop_run_and_prune() -> None:
    table = BindingTable()
    table.bind("192.0.2.1", "A", 1, "address", 0.0, 100.0)
    table.bind("192.0.2.2", "A", 2, "address", 0.0, 10.0)
    table.bind("192.0.2.3", "B", 1, "address", 0.0, 10.0)
    table.drop_run("A")
    assert table.lookup("192.0.2.1", None, 1.0) is None
    assert table.prune(50.0) == 1
    assert len(table) == 0


def test_bind_refuses_a_non_address() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        BindingTable().bind("localhost", "A", 1, "address", 0.0, 1.0)


def test_lookups_do_not_scan() -> None:
    """Lookup cost must not grow with the number of bindings (one dict access)."""
    import time

    table = BindingTable()
    for i in range(20_000):
        table.bind(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"R{i}", 1, "address", 0, 1e9)
    start = time.perf_counter()
    for _ in range(20_000):
        table.lookup("10.0.1.2", None, 1.0)
    assert time.perf_counter() - start < 2.0  # a scan would take minutes
