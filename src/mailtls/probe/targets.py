"""Which ports to probe and what each one speaks: ``--ports 25,587,imap:1143,imaps:1993``.

A bare number is a well-known mail port, or (``split_ports``) a port whose protocol ``detect``
reads from its greeting; a protocol name in front says it outright (``smtp`` = MX role,
``submission``, ``smtps``/``submissions`` = implicit TLS submission, ``imap``, ``imaps``,
``pop3``, ``pop3s``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORTS = "25,587,465,143,993,110,995"
# `mailtls serve` with no settings (tests check this against mailtls.settings.Ports)
SERVE_DEFAULT_PORTS = (
    "smtp:2525,submission:2587,smtps:2465,imap:2143,imaps:2993,pop3:2110,pop3s:2995"
)


@dataclass(frozen=True)
class Target:
    port: int
    protocol: str  # smtp | imap | pop3
    implicit_tls: bool
    role: str  # mx | submission | mailbox

    @property
    def name(self) -> str:
        for name, kind in KINDS.items():
            if kind == (self.protocol, self.implicit_tls, self.role):
                return name
        return self.protocol

    @property
    def is_mx(self) -> bool:
        return self.role == "mx"


KINDS: dict[str, tuple[str, bool, str]] = {
    "smtp": ("smtp", False, "mx"),
    "submission": ("smtp", False, "submission"),
    "smtps": ("smtp", True, "submission"),
    "submissions": ("smtp", True, "submission"),
    "imap": ("imap", False, "mailbox"),
    "imaps": ("imap", True, "mailbox"),
    "pop3": ("pop3", False, "mailbox"),
    "pop3s": ("pop3", True, "mailbox"),
}
WELL_KNOWN: dict[int, str] = {
    25: "smtp",
    587: "submission",
    465: "smtps",
    143: "imap",
    993: "imaps",
    110: "pop3",
    995: "pop3s",
}


def target(kind: str, port: int) -> Target:
    protocol, implicit, role = KINDS[kind]
    return Target(port, protocol, implicit, role)


def parse_one(item: str) -> Target:
    text = item.strip().lower()
    kind, sep, number = text.rpartition(":")
    if not sep:
        kind, number = "", text
    elif not kind:
        raise ValueError(f"no protocol before ':' in {item.strip()!r}")
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"not a port: {item.strip()!r}")
    port = int(number)
    if not kind:
        if port not in WELL_KNOWN:
            raise ValueError(
                f"port {port} is not a well-known mail port: say what it speaks,"
                f" for example submission:{port} (one of {', '.join(KINDS)})"
            )
        kind = WELL_KNOWN[port]
    if kind not in KINDS:
        raise ValueError(f"unknown protocol {kind!r} (choose from {', '.join(KINDS)})")
    return target(kind, port)


def split_ports(spec: str) -> tuple[list[Target], list[int]]:
    """Like ``parse_ports``, but bare numbers that are not well-known mail ports come back
    apart (in order, once each) for ``detect`` instead of being refused."""
    known: list[Target | str] = []
    unknown: list[int] = []
    for item in (p.strip() for p in spec.split(",") if p.strip()):
        if item.isdigit() and 0 < int(item) < 65536 and int(item) not in WELL_KNOWN:
            if int(item) not in unknown:
                unknown.append(int(item))
        else:
            known.append(item)
    if not known and unknown:
        return [], unknown
    targets = normalise(known)
    return targets, [p for p in unknown if all(t.port != p for t in targets)]


def parse_ports(spec: str) -> list[Target]:
    """``25,587,imap:1143`` -> targets, in order, without duplicates."""
    return normalise(p for p in spec.split(",") if p.strip())


def normalise(items: Iterable[Target | int | str]) -> list[Target]:
    out: list[Target] = []
    for item in items:
        t = item if isinstance(item, Target) else parse_one(str(item))
        if all(o.port != t.port for o in out):
            out.append(t)
    if not out:
        raise ValueError("no port to probe")
    return out
