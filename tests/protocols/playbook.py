"""One transcript helper for the three cores (mitmproxy's Playbook is the model).

``Session(protocol, testcase)`` drives a real core with events; ``session.expect(event, [...])``
asserts the WHOLE ordered command list the core returned for that event, so an extra or a
missing command (a timer, a record) fails the test. Every returned command is checked for the
canary secret. ``DIALECTS`` holds each protocol's wording of the lines the attack flow uses, so a
test written once runs for SMTP, IMAP and POP3 and drift between them fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocols_kit import USER, authenticator, b64

from mailtls.protocols import smtp_replies as R
from mailtls.protocols.base import (
    Command,
    Connected,
    Core,
    DataReceived,
    Event,
    Limits,
    PortRole,
    Record,
    Send,
    SendRaw,
    SessionContext,
    TlsInfo,
)
from mailtls.protocols.imap import ImapCore
from mailtls.protocols.pop3 import Pop3Core
from mailtls.protocols.smtp import SmtpCore
from mailtls.testcases import TESTCASES

CANARY = "Canary-Pa55w0rd-xyzzy"
PLAIN = b64(f"\0{USER}\0{CANARY}")
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
LIMITS = Limits()
HOSTNAME = "mail.mailtls.test"


@dataclass(frozen=True)
class Dialect:
    """A protocol's lines, wire form (CRLF included)."""

    name: str
    factory: Callable[[SessionContext], Core]
    role: PortRole
    prelude: bytes  # what a client says before STARTTLS (SMTP: EHLO), b"" when nothing
    starttls: bytes
    noop: bytes
    go_ahead: bytes
    temporary: bytes  # t3's refusal
    not_advertised: bytes
    unavailable: bytes  # t2's answer to the ClientHello, t4's line outside TLS
    login: bytes  # a login whose secret is the canary, in one line
    bad_login: bytes  # a login for an unknown user
    auth_failed: bytes
    too_many_auth_failures: bytes
    timeout: bytes
    login_mechanism: str  # AuthAttempted.mechanism of ``login``
    login_verb: str  # DataAfterDisruption.verb of ``login``
    login_shown: str  # the transcript form of ``login``


DIALECTS = {
    "smtp": Dialect(
        "smtp",
        SmtpCore,
        PortRole.SUBMISSION,
        b"EHLO client.example\r\n",
        b"STARTTLS\r\n",
        b"NOOP\r\n",
        R.S220_READY_TLS,
        R.S454_TLS_NA,
        R.S502_STARTTLS_NOT_OFFERED,
        R.S454_TLS_NA,
        f"AUTH PLAIN {PLAIN}\r\n".encode(),
        f"AUTH PLAIN {b64(chr(0) + 'nobody' + chr(0) + CANARY)}\r\n".encode(),
        R.S535_AUTH_INVALID,
        R.S421_TOO_MANY_ERRORS,
        R.timeout(HOSTNAME),
        "PLAIN",
        "AUTH",
        f"AUTH PLAIN <redacted, {len(PLAIN)} bytes>",
    ),
    "imap": Dialect(
        "imap",
        ImapCore,
        PortRole.IMAP,
        b"",
        b"a1 STARTTLS\r\n",
        b"a2 NOOP\r\n",
        b"a1 OK Begin TLS negotiation now\r\n",
        b"a1 NO [UNAVAILABLE] TLS not available due to temporary reason\r\n",
        b"a1 BAD STARTTLS not available\r\n",
        b"* BAD TLS not available due to temporary reason\r\n",
        f"a3 LOGIN {USER} {CANARY}\r\n".encode(),
        f"a3 LOGIN nobody {CANARY}\r\n".encode(),
        b"a3 NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
        b"* BYE Too many authentication failures\r\n",
        b"* BYE Autologout; idle for too long\r\n",
        "IMAP-LOGIN",
        "LOGIN",
        f"a3 LOGIN {USER} <redacted, {len(CANARY)} bytes>",
    ),
    "pop3": Dialect(
        "pop3",
        Pop3Core,
        PortRole.POP3,
        b"",
        b"STLS\r\n",
        b"CAPA\r\n",
        b"+OK Begin TLS negotiation\r\n",
        b"-ERR TLS not available due to temporary reason\r\n",
        b"-ERR STLS not advertised\r\n",
        b"-ERR TLS not available due to temporary reason\r\n",
        f"AUTH PLAIN {PLAIN}\r\n".encode(),
        f"AUTH PLAIN {b64(chr(0) + 'nobody' + chr(0) + CANARY)}\r\n".encode(),
        b"-ERR [AUTH] Authentication failed\r\n",
        b"-ERR Too many errors, closing connection\r\n",
        b"-ERR Disconnected for inactivity\r\n",
        "PLAIN",
        "AUTH",
        f"AUTH PLAIN <redacted, {len(PLAIN)} bytes>",
    ),
}
PROTOCOLS = sorted(DIALECTS)


class Session:
    """One core of ``protocol`` under ``testcase``; ``expect`` asserts whole exchanges."""

    def __init__(
        self, protocol: str, testcase: str = "baseline", *, implicit: bool = False, **limits: float
    ) -> None:
        self.dialect = DIALECTS[protocol]
        self.core = self.dialect.factory(
            SessionContext(
                policy=TESTCASES[testcase],
                role=self.dialect.role,
                hostname=HOSTNAME,
                domain="mailtls.test",
                authenticator=authenticator,
                implicit_tls=implicit,
                limits=Limits(**limits),  # type: ignore[arg-type]
            )
        )
        self.history: list[Command] = []

    def event(self, event: Event) -> list[Command]:
        commands = self.core.handle(event)
        for cmd in commands:
            shown = repr(cmd.observation) if isinstance(cmd, Record) else repr(cmd)
            if isinstance(cmd, Send | SendRaw):
                shown += cmd.data.decode("utf-8", "replace")
            assert CANARY not in shown and PLAIN not in shown, f"secret leaked in {cmd!r}"
        self.history += commands
        return commands

    def data(self, data: bytes) -> list[Command]:
        return self.event(DataReceived(data))

    def expect(self, event: Event | bytes, commands: list[Command]) -> None:
        """Feed ``event`` (bytes: ``DataReceived``) and assert the whole command list."""
        got = self.event(DataReceived(event) if isinstance(event, bytes) else event)
        assert got == commands

    def ready(self, tls: TlsInfo | None = None) -> None:
        """Greeting and prelude (SMTP EHLO), without asserting them."""
        self.event(Connected(tls))
        if self.dialect.prelude:
            self.data(self.dialect.prelude)


def records(commands: list[Command]) -> list[object]:
    return [c.observation for c in commands if isinstance(c, Record)]
