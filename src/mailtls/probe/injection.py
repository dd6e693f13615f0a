"""STARTTLS command injection (the CVE-2011-0411 class), tested on a live connection.

The probe sends the STARTTLS command and a harmless second command (SMTP ``NOOP``, IMAP tagged
``NOOP``, POP3 ``CAPA``) in one write. A correct server discards what was pipelined after
STARTTLS; a vulnerable one keeps it and answers it inside TLS before the client has said anything
there. A server that hands the pipelined bytes to TLS and so aborts the handshake (Dovecot 2.3)
is not injectable (``aborted``); the session then repeats STARTTLS without a second command to
learn about TLS itself. An answer in plaintext before the handshake is a separate, lesser
finding (the server processed a command it should have dropped, but outside the encrypted
session). Imports only ``conn`` and ``dialogue``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from mailtls.probe.conn import Conn, ProbeFailure, show
from mailtls.probe.dialogue import Dialogue, StarttlsReply

PLAINTEXT_WAIT = 0.3


@dataclass(frozen=True)
class InjectionResult:
    tested: bool
    vulnerable: bool = False
    plaintext_reply: bool = False
    aborted: bool = False
    evidence: tuple[str, ...] = ()


def _lines(prefix: str, data: bytes) -> list[str]:
    return [prefix + show(line) for line in data.splitlines()[:5]]


def starttls_with_injection(
    conn: Conn,
    dialogue: Dialogue,
    ctx: ssl.SSLContext,
    server_hostname: str | None,
    wait: float,
) -> tuple[StarttlsReply, InjectionResult]:
    """STARTTLS + injected command, handshake, then listen for an unasked answer.

    Raises what ``Conn.upgrade`` raises (``ProbeFailure``, ``ssl.SSLCertVerificationError``)."""
    reply = dialogue.starttls(conn, inject=True)
    if not reply.accepted:
        return reply, InjectionResult(tested=False)
    evidence = [
        f"C: {dialogue.starttls_command} and a second command sent in one TCP segment",
        f"S: {show(reply.reply.encode())}",
    ]
    early = conn.pending(PLAINTEXT_WAIT) if conn.readable_now(PLAINTEXT_WAIT) else b""
    evidence += _lines("S (plaintext, before the handshake): ", early)
    try:
        conn.upgrade(ctx, server_hostname)
    except ProbeFailure as exc:
        if exc.kind not in ("tls", "closed"):
            raise
        # Some servers (Dovecot 2.3) feed the pipelined bytes to TLS and abort the handshake:
        # not injectable; the session tries again without the second command.
        evidence.append(f"-- the handshake failed after the pipelined command: {exc.message}")
        aborted = InjectionResult(
            tested=True, plaintext_reply=bool(early.strip()), aborted=True, evidence=tuple(evidence)
        )
        return reply, aborted
    late = conn.pending(wait)
    evidence += _lines("S (inside TLS, before the client spoke): ", late)
    result = InjectionResult(
        tested=True,
        vulnerable=bool(late.strip()),
        plaintext_reply=bool(early.strip()),
        evidence=tuple(evidence),
    )
    return reply, result
