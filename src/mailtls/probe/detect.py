"""What a port that is not a well-known mail port speaks, read from its greeting.

``greeting_kind`` is pure (the first line in, a protocol out); ``detect`` connects once through
``conn``: a greeting within ``GREETING_WAIT`` seconds is a plaintext port (SMTP ``220``, IMAP
``* OK``/``* PREAUTH``, POP3 ``+OK``); silence means the server waits for a TLS handshake, so
the greeting is read again inside TLS (an implicit-TLS port). Plain SMTP is probed as
``submission`` (the greeting cannot tell an MX from a submission port; ``smtp:PORT`` says MX).
``listening`` tells which ports accept a connection at all (for the hint after every port was
refused). Sockets and TLS only through ``conn`` and ``tlscheck``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailtls.probe.conn import Conn, Deadline, ProbeFailure, show
from mailtls.probe.targets import Target, target
from mailtls.probe.tlscheck import lenient_context

GREETING_WAIT = 3.0  # seconds a plaintext server has to greet before we try TLS
PLAIN = {"smtp": "submission", "imap": "imap", "pop3": "pop3"}
IMPLICIT = {"smtp": "smtps", "imap": "imaps", "pop3": "pop3s"}


def greeting_kind(line: bytes) -> str | None:
    """``smtp``, ``imap`` or ``pop3`` for a server's first line; None when it is none of them."""
    text = line.lstrip()
    if text[:4] in (b"220 ", b"220-") or text.rstrip(b"\r\n") == b"220":
        return "smtp"
    upper = text.upper()
    if upper.startswith((b"* OK", b"* PREAUTH")):
        return "imap"
    if upper.startswith(b"+OK"):
        return "pop3"
    return None


@dataclass(frozen=True)
class Detected:
    target: Target
    greeting: str  # the first line, escaped and shortened for the terminal


def detect(family: int, address: str, port: int, timeout: float) -> Detected:
    """Connect to ``address:port`` and tell what it speaks; ``ProbeFailure`` when it cannot."""
    deadline = Deadline.after(GREETING_WAIT + 3 * timeout)
    conn = Conn.open((address, port), family, deadline, timeout)
    try:
        wait = min(GREETING_WAIT, timeout)
        implicit = not conn.readable_now(wait)
        if implicit:
            try:
                conn.upgrade(lenient_context(), None)
            except ProbeFailure as exc:
                raise ProbeFailure(
                    "protocol",
                    f"no greeting within {wait:g} s, and no TLS handshake either ({exc.message})",
                ) from None
        line = conn.read_line()
    finally:
        conn.close()
    kind = greeting_kind(line)
    if kind is None:
        where = "inside TLS" if implicit else "in its greeting"
        raise ProbeFailure(
            "protocol",
            f"port {port} sent {show(line)[:60]!r} {where}: not SMTP, IMAP or POP3",
        )
    name = (IMPLICIT if implicit else PLAIN)[kind]
    return Detected(target(name, port), show(line)[:80])


def listening(family: int, address: str, ports: Iterable[int], timeout: float) -> list[int]:
    """The ports among ``ports`` that accept a TCP connection within ``timeout``."""
    found = []
    for port in ports:
        try:
            conn = Conn.open((address, port), family, Deadline.after(timeout), timeout)
        except ProbeFailure:
            continue
        conn.close()
        found.append(port)
    return found
