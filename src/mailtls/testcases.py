"""The simulated attacker: one immutable policy object per test case, shared by every protocol.

A core asks its policy four questions; the answers are protocol-neutral and each core phrases them
in its own protocol (SMTP ``454``, IMAP tagged ``NO`` / untagged ``* BAD``, POP3 ``-ERR``):

- ``offer_starttls()``: advertise STARTTLS/STLS before TLS?
- ``on_starttls()``: PROCEED with the handshake, REFUSE it (t3), or BREAK_HANDSHAKE (t2: read
  the ClientHello, answer in cleartext).
- ``after_tls()``: CONTINUE, or DISRUPT_FIRST_COMMAND (t4: answer the first command inside TLS
  with a cleartext line outside TLS).
- ``implicit_tls()``: ACCEPT connections on implicit-TLS ports, or BLOCK them (t1–t3) so that
  clients are pushed onto the STARTTLS ports.

Each subclass overrides only what differs from the honest ``Baseline``. Refusing a STARTTLS that
was not advertised is the cores' rule, not a policy's.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class StarttlsAction(enum.Enum):
    PROCEED = "proceed"
    REFUSE = "refuse"
    BREAK_HANDSHAKE = "break_handshake"


class AfterTls(enum.Enum):
    CONTINUE = "continue"
    DISRUPT_FIRST_COMMAND = "disrupt_first_command"


class ImplicitTls(enum.Enum):
    ACCEPT = "accept"
    BLOCK = "block"


class BlockStyle(enum.StrEnum):
    """How a blocked implicit-TLS port behaves; ``SILENCE`` is what an on-path attacker does."""

    SILENCE = "silence"  # accept, send nothing, close after a bound
    CLOSE = "close"  # close at once
    RESET = "reset"  # TCP reset
    HANDSHAKE_THEN_CLOSE = "handshake_then_close"


class TestCase:
    """The honest server (``baseline``)."""

    __slots__ = ()
    __test__ = False  # not a pytest class
    name: ClassVar[str] = "baseline"
    summary: ClassVar[str] = "honest server: STARTTLS offered and honoured"

    def offer_starttls(self) -> bool:
        return True

    def on_starttls(self) -> StarttlsAction:
        return StarttlsAction.PROCEED

    def after_tls(self) -> AfterTls:
        return AfterTls.CONTINUE

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.ACCEPT

    def __repr__(self) -> str:
        return f"<TestCase {self.name}>"


Baseline = TestCase


class StripStarttls(TestCase):
    __slots__ = ()
    name = "t1"
    summary = "STARTTLS stripped from the capabilities; implicit-TLS ports blocked"

    def offer_starttls(self) -> bool:
        return False

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.BLOCK


class BreakHandshake(TestCase):
    __slots__ = ()
    name = "t2"
    summary = "STARTTLS accepted, then the TLS handshake is answered in cleartext"

    def on_starttls(self) -> StarttlsAction:
        return StarttlsAction.BREAK_HANDSHAKE

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.BLOCK


class RefuseStarttls(TestCase):
    __slots__ = ()
    name = "t3"
    summary = "STARTTLS refused with a temporary error; session continues in plaintext"

    def on_starttls(self) -> StarttlsAction:
        return StarttlsAction.REFUSE

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.BLOCK


class DisruptSession(TestCase):
    __slots__ = ()
    name = "t4"
    summary = "TLS completes, then the first command inside TLS gets a cleartext error outside TLS"

    def after_tls(self) -> AfterTls:
        return AfterTls.DISRUPT_FIRST_COMMAND


TESTCASES: dict[str, TestCase] = {
    tc.name: tc
    for tc in (TestCase(), StripStarttls(), BreakHandshake(), RefuseStarttls(), DisruptSession())
}
BASELINE = TESTCASES["baseline"]
SCENARIOS = ("immediate", "two_phase")


def get(name: str) -> TestCase:
    try:
        return TESTCASES[name]
    except KeyError:
        raise ValueError(
            f"unknown test case {name!r} (choose from {', '.join(TESTCASES)})"
        ) from None
