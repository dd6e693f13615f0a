"""Address-space questions the checks ask of network lists (``mynetworks``,
``login_trusted_networks``, Dovecot ``local``/``remote`` blocks). Pure; imports only the stdlib.
"""

from __future__ import annotations

import ipaddress
import re

NON_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        # IPv4-mapped forms, as Postfix writes them ([::ffff:127.0.0.0]/104)
        "::ffff:10.0.0.0/104",
        "::ffff:172.16.0.0/108",
        "::ffff:192.168.0.0/112",
        "::ffff:100.64.0.0/106",
        "::ffff:127.0.0.0/104",
        "::ffff:169.254.0.0/112",
    )
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(item: str) -> Network | None:
    """``10.0.0.0/8``, ``192.0.2.1``, Postfix's ``[::1]/128``; None for names, maps, junk."""
    text = re.sub(r"^\[([^\]]+)\]", r"\1", item.strip())
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def is_non_public(net: Network) -> bool:
    """Inside private, shared (100.64/10), loopback or link-local space."""
    return any(
        net.version == block.version and net.subnet_of(block)  # type: ignore[arg-type]
        for block in NON_PUBLIC
    )


def entries(value: str) -> list[str]:
    return [i for i in re.split(r"[\s,]+", value.strip()) if i]


def public_entries(value: str) -> list[str]:
    """Entries that are networks reaching beyond non-public space (names and maps skipped)."""
    out: list[str] = []
    for item in entries(value):
        net = parse_network(item)
        if net is not None and not is_non_public(net):
            out.append(item)
    return out


def only_non_public(value: str) -> bool:
    """Every entry is a network in non-public space (and there is at least one)."""
    nets = [parse_network(i) for i in entries(value)]
    return bool(nets) and all(n is not None and is_non_public(n) for n in nets)


def only_loopback(value: str) -> bool:
    """Every entry is a loopback address or network (and there is at least one)."""
    nets = [parse_network(i) for i in entries(value)]
    return bool(nets) and all(n is not None and n.is_loopback for n in nets)
