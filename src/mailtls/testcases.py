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

and, for the cases beyond T1–T4:

- ``plaintext_login()``: ALLOW a login before TLS, or REFUSE it as a careful server behind a
  stripping attacker does (``starttls_required``: IMAP ``LOGINDISABLED``, SMTP ``530``);
- ``preauth()``: greet IMAP clients with ``* PREAUTH`` (authenticated in the clear, so STARTTLS
  is no longer allowed);
- ``inject_response()``: follow the STARTTLS go-ahead, in the same plaintext segment, with a
  forged answer to the client's first command inside TLS (``inject``);
- ``certificate()``: the certificate the TLS handshake presents (STARTTLS and implicit TLS):
  ``valid``, or one an attacker could present (``cert_selfsigned``, ``cert_expired``,
  ``cert_wronghost``, ``cert_unknown_ca``; files from ``net.attack_certs``);
- ``tls_fallback()``: answer the client's first ClientHello of the step with a TLS alert, as a
  middlebox would, and serve its later attempts with the highest version they offer, down to
  TLS 1.0 (the shell keeps the per-step attempts; ``net.connection``).

``protocols`` names the protocols a case applies to; elsewhere the honest baseline is served
(``serving(protocol)``). ``cleartext_finding`` names, per protocol, the finding a secret sent in
the clear under the case is reported as (besides ``plaintext_auth``).

Each subclass overrides only what differs from the honest ``Baseline``. Refusing a STARTTLS that
was not advertised is the cores' rule, not a policy's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

ALL_PROTOCOLS: Final = frozenset({"smtp", "imap", "pop3"})
VALID_CERTIFICATE: Final = "valid"


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


class PlaintextLogin(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"


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
    protocols: ClassVar[frozenset[str]] = ALL_PROTOCOLS
    cleartext_finding: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def offer_starttls(self) -> bool:
        return True

    def on_starttls(self) -> StarttlsAction:
        return StarttlsAction.PROCEED

    def after_tls(self) -> AfterTls:
        return AfterTls.CONTINUE

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.ACCEPT

    def plaintext_login(self) -> PlaintextLogin:
        return PlaintextLogin.ALLOW

    def preauth(self) -> bool:
        return False

    def inject_response(self) -> bool:
        return False

    def certificate(self) -> str:
        return VALID_CERTIFICATE

    def tls_fallback(self) -> bool:
        return False

    def serving(self, protocol: str) -> TestCase:
        """The policy a connection of ``protocol`` gets in a step of this case: the baseline
        for a mail protocol the case does not apply to."""
        return BASELINE if protocol in ALL_PROTOCOLS - self.protocols else self

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


class StarttlsRequired(TestCase):
    """The stripping attacker in front of a careful server (NDSS 2025: only 9 of 29 clients
    honour ``LOGINDISABLED``; 11 of 29 push SMTP credentials before the ``530``)."""

    __slots__ = ()
    name = "starttls_required"
    summary = "STARTTLS stripped in front of a server that refuses logins without TLS"
    protocols = frozenset({"smtp", "imap"})  # POP3 has no standard equivalent
    cleartext_finding = MappingProxyType(
        {"smtp": "credentials_before_530", "imap": "ignored_logindisabled"}
    )

    def offer_starttls(self) -> bool:
        return False

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.BLOCK

    def plaintext_login(self) -> PlaintextLogin:
        return PlaintextLogin.REFUSE


class Preauth(TestCase):
    """EAST (USENIX Security 2021), P_1-P_5: a ``PREAUTH`` greeting keeps a client in
    plaintext, where the attacker reads and writes its mail."""

    __slots__ = ()
    name = "preauth"
    summary = "IMAP greeting PREAUTH: authenticated in the clear, STARTTLS no longer allowed"
    protocols = frozenset({"imap"})

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.BLOCK

    def preauth(self) -> bool:
        return True


class InjectResponse(TestCase):
    """EAST (USENIX Security 2021): 17 of 28 clients accept STARTTLS response injection."""

    __slots__ = ()
    name = "inject"
    summary = "STARTTLS go-ahead followed by a forged answer to the first command inside TLS"

    def inject_response(self) -> bool:
        return True

    def implicit_tls(self) -> ImplicitTls:
        return ImplicitTls.BLOCK


class BadCertificate(TestCase):
    """NDSS 2025: 19 of 49 clients accept at least one bad certificate. TLS is offered honestly
    (STARTTLS and implicit TLS); a secret sent inside that TLS session is the attacker's."""

    __slots__ = ()
    kind: ClassVar[str]

    def certificate(self) -> str:
        return self.kind


class SelfSignedCertificate(BadCertificate):
    __slots__ = ()
    name = "cert_selfsigned"
    summary = "TLS offered honestly, with a self-signed certificate"
    kind = "selfsigned"


class ExpiredCertificate(BadCertificate):
    __slots__ = ()
    name = "cert_expired"
    summary = "TLS offered honestly, with an expired certificate from the test CA"
    kind = "expired"


class WrongHostCertificate(BadCertificate):
    __slots__ = ()
    name = "cert_wronghost"
    summary = "TLS offered honestly, with a test-CA certificate for another host name"
    kind = "wronghost"


class UnknownCaCertificate(BadCertificate):
    __slots__ = ()
    name = "cert_unknown_ca"
    summary = "TLS offered honestly, with a certificate from a CA nobody trusts"
    kind = "unknown_ca"


class TlsFallback(TestCase):
    """NDSS 2025: a TLS-version downgrade answers the first ClientHello with an alert and
    watches what the client offers next. STARTTLS and implicit TLS are offered honestly."""

    __slots__ = ()
    name = "tls_fallback"
    summary = "first ClientHello answered with an alert; retries served down to TLS 1.0"

    def tls_fallback(self) -> bool:
        return True


TESTCASES: dict[str, TestCase] = {
    tc.name: tc
    for tc in (
        TestCase(),
        StripStarttls(),
        BreakHandshake(),
        RefuseStarttls(),
        DisruptSession(),
        StarttlsRequired(),
        Preauth(),
        InjectResponse(),
        SelfSignedCertificate(),
        ExpiredCertificate(),
        WrongHostCertificate(),
        UnknownCaCertificate(),
        TlsFallback(),
    )
}
STANDARD: Final = ("baseline", "t1", "t2", "t3", "t4")  # the guided run's nine steps use these
MORE: Final = tuple(name for name in TESTCASES if name not in STANDARD)  # the optional tests
BASELINE = TESTCASES["baseline"]
SCENARIOS = ("immediate", "two_phase")


def get(name: str) -> TestCase:
    try:
        return TESTCASES[name]
    except KeyError:
        raise ValueError(
            f"unknown test case {name!r} (choose from {', '.join(TESTCASES)})"
        ) from None
