"""The attack flow: the connection lifecycle every core shares, written once (sans-IO).

Rules of this file:
- ``AttackFlow.handle`` is the only ``handle`` of the SMTP, IMAP and POP3 cores. It owns the
  phases of a connection (``Phase``) and everything that does not depend on the protocol: the
  test-case policy's questions, STARTTLS hygiene, discarding pipelined bytes, the handshake and
  ClientHello waits, the t2/t4 disruption, the SASL outcome, the error and auth-failure budgets
  and the timers. A core supplies its wording (``Wording`` and the ``_..._reply`` hooks), its
  reader (``_read``: bytes -> commands of its table) and its sub-modes (SASL, IDLE, DATA).
- Commands of one event are collected in one ``Outbox`` (``self._out``): consecutive replies
  become one ``Send``, every ``Record`` precedes the reply it explains.
- The flow never decides an attack: it asks ``ctx.policy`` (``mailtls.testcases``). Refusing a
  STARTTLS that was not advertised is the flow's rule for every test case.

Imports only ``mailtls.observations``, ``mailtls.testcases`` and sibling modules (``base``,
``common``). Must not import a core (``smtp``, ``imap``, ``pop3``), ``asyncio``, sockets,
``mailtls.net``, ``mailtls.store`` or ``mailtls.web``.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Final

from mailtls.observations import (
    AuthAttempted,
    CommandReceived,
    Observation,
    PipelinedAfterStarttls,
    ProtocolError,
    ResponseInjected,
    SessionKicked,
    StarttlsAccepted,
    StarttlsDisrupted,
    StarttlsRefused,
    StarttlsRequested,
    TlsHandshakeFailed,
    TlsStarted,
)
from mailtls.protocols.base import (
    AuthDecision,
    ClientHelloReceived,
    Close,
    Closed,
    Command,
    Connected,
    DataReceived,
    Event,
    Kicked,
    LineBuffer,
    LineTooLong,
    ReadClientHello,
    Send,
    SendRaw,
    SessionContext,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
    decode,
    truncate,
)
from mailtls.protocols.common import (
    CANCELLED,
    FAILURE,
    MALFORMED,
    SUCCESS,
    Disrupted,
    Outbox,
    SaslFlow,
    SecretScanner,
    mechanism_label,
    mechanisms,
    redacted_line,
    set_timer,
)
from mailtls.protocols.sasl import RECOGNISED
from mailtls.testcases import AfterTls, PlaintextLogin, StarttlsAction, TestCase


class Phase(enum.Enum):
    """Where a connection is in the attack flow (a core's own states live inside ``READING``)."""

    NEW = "new"  # before Connected
    READING = "reading"  # the core reads commands (or its sub-modes: SASL, IDLE, DATA)
    HANDSHAKE = "handshake"  # StartTls issued: bytes go to TLS
    CLIENT_HELLO = "client_hello"  # t2: ReadClientHello issued
    DISRUPTED = "disrupted"  # t2/t4: no replies, what arrives is recorded
    CLOSED = "closed"


class StarttlsReply(enum.Enum):
    """The STARTTLS answers a core phrases; the value is ``StarttlsRefused.reason``."""

    GO_AHEAD = "go_ahead"
    TEMPORARY = "testcase"  # t3's refusal
    NOT_ADVERTISED = "not_advertised"
    ALREADY_TLS = "already_tls"
    SYNTAX = "syntax"


class AuthReply(enum.Enum):
    FAILED = "failed"
    CANCELLED = "cancelled"
    MALFORMED = "malformed"
    TLS_REQUIRED = "tls_required"  # starttls_required: no login before TLS


@dataclass(frozen=True, slots=True)
class Wording:
    """A core's fixed lines of the flow (wire form, CRLF included)."""

    tls_unavailable: bytes  # t2's answer to the ClientHello, t4's line outside TLS
    too_many_errors: bytes
    too_many_auth_failures: bytes


def reply_text(reply: bytes) -> str:
    """A reply as stored in observations: its last line, without CRLF."""
    return decode(reply.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1])


def printable(text: str) -> str:
    """A server-side string (a kick reason) fit for a reply line: no control characters."""
    return truncate("".join(c if c.isprintable() else " " for c in text))


def scan(scanner: SecretScanner, data: bytes) -> list[Observation]:
    """What a scanner finds in bytes that end there (a partial last line counts)."""
    return scanner.feed(data) + scanner.finish() if data else scanner.finish()


class AttackFlow(ABC):
    """One connection's lifecycle; a core subclasses it and fills in the hooks below."""

    PROTOCOL: ClassVar[str]  # "smtp" | "imap" | "pop3"
    WORDING: ClassVar[Wording]

    __slots__ = (
        "_auth_failures",
        "_ctx",
        "_policy",
        "_disrupt_next",
        "_disrupted",
        "_errors",
        "_flow",
        "_held",
        "_limits",
        "_lines",
        "_out",
        "_silence",
        "_tls",
        "phase",
    )

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._policy: TestCase = ctx.policy.serving(self.PROTOCOL)  # the baseline where n/a
        self._limits = ctx.limits
        self.phase = Phase.NEW
        self._tls = False
        self._lines = LineBuffer(ctx.limits.line_bytes)
        self._out = Outbox()
        self._silence = False  # t3: the refusal is the last thing that happened
        self._disrupt_next = False  # t4: the next command inside TLS is disrupted
        self._disrupted: Disrupted | None = None
        self._held = b""  # bytes that arrived while a ClientHello was being read (bounded)
        self._errors = 0
        self._auth_failures = 0
        self._flow: SaslFlow | None = None  # the SASL exchange in progress

    # --- the protocol's part -------------------------------------------------------------

    @abstractmethod
    def _greeting(self) -> bytes: ...

    @abstractmethod
    def _read(self, data: bytes) -> None:
        """Feed received bytes to the protocol's reader and handle its commands."""

    @abstractmethod
    def _arm_timer(self) -> None:
        """The reading timer after ``_read`` (idle after a reply, line/literal deadlines)."""

    @abstractmethod
    def _starttls_reply(self, kind: StarttlsReply, tag: str) -> bytes: ...

    @abstractmethod
    def _timeout_reply(self) -> bytes: ...

    @abstractmethod
    def _kicked_reply(self, reason: str) -> bytes: ...

    @abstractmethod
    def _scanner(self, tls: bool, outcome: str, before: SecretScanner | None) -> SecretScanner:
        """A reader of bytes that get no reply; ``before``: the scanner of the bytes before
        (a username sent there carries over)."""

    @abstractmethod
    def _data_verb(self, data: bytes) -> str:
        """``DataAfterDisruption.verb`` of a plaintext chunk (never a secret)."""

    @abstractmethod
    def _challenge(self, data: bytes) -> bytes:
        """A SASL continuation carrying the raw challenge ``data``."""

    @abstractmethod
    def _auth_reply(self, kind: AuthReply) -> bytes: ...

    @abstractmethod
    def _forged_answer(self, tag: str) -> bytes:
        """``inject``: the answer to the client's first command inside TLS, forged in the
        plaintext after the go-ahead (it offers only PLAIN, which the real server does not)."""

    @abstractmethod
    def _logged_in(self, decision: AuthDecision | None) -> None:
        """Authentication succeeded: change state and reply."""

    def _sasl_mode(self, active: bool) -> None:
        """Enter (``True``) or leave the core's SASL sub-mode (next lines are responses)."""
        return None

    def _forget_pre_tls(self) -> None:
        """TLS is up: drop every pre-TLS state (HELO, capabilities, USER...)."""
        return None

    def _may_starttls(self) -> bool:
        """Whether the core's state allows STARTTLS (not after login)."""
        return True

    def _discard_input(self) -> bytes:
        """Take every unread byte (the core's reader forgets its partial command too)."""
        return self._lines.take_rest()

    def _interrupted(self) -> None:
        """Timeout, kick or peer gone, before the flow ends the connection."""
        return None

    # --- events --------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        phase = self.phase
        if phase is Phase.CLOSED:
            return []
        if phase is Phase.DISRUPTED and self._disrupted is not None:
            commands = self._disrupted.handle(event)
            if commands and isinstance(commands[-1], Close):
                self.phase = Phase.CLOSED
            return commands
        self._out = Outbox()
        _EVENTS[type(event)](self, event)
        return self._out.finish()

    def _on_connected(self, event: Event) -> None:
        assert isinstance(event, Connected)
        if self.phase is not Phase.NEW:
            return
        self.phase = Phase.READING
        if event.tls is not None:  # implicit TLS: the shell leaves TlsStarted to the core
            self._tls = True
            self._out.record(TlsStarted(event.tls.version, event.tls.cipher, True))
            self._disrupt_next = self._disrupts_after_tls()
        self._out.reply(self._greeting())
        self._out.add(set_timer(self._limits.idle_seconds))

    def _on_data(self, event: Event) -> None:
        assert isinstance(event, DataReceived)
        if self.phase is Phase.CLIENT_HELLO:
            room = self._limits.line_bytes - len(self._held)
            if room > 0:
                self._held += event.data[:room]
            return
        if self.phase is not Phase.READING or not event.data:
            return
        self._silence = False
        self._read(event.data)
        if self.phase is Phase.READING:
            if self._silence:
                self._out.add(set_timer(self._limits.silence_after_refusal))
            else:
                self._arm_timer()

    def _on_tls_established(self, event: Event) -> None:
        assert isinstance(event, TlsEstablished)
        if self.phase is not Phase.HANDSHAKE:
            return
        self.phase = Phase.READING
        self._tls = True
        self._lines = LineBuffer(self._limits.line_bytes)
        self._auth_failures = 0
        self._forget_pre_tls()
        self._out.record(TlsStarted(event.info.version, event.info.cipher, False))
        self._disrupt_next = self._disrupts_after_tls()
        self._out.add(set_timer(self._limits.idle_seconds))

    def _on_tls_failed(self, event: Event) -> None:
        assert isinstance(event, TlsFailed)
        if self.phase is not Phase.HANDSHAKE:
            return
        self._out.record(TlsHandshakeFailed(printable(event.reason)))
        # A client that gives up on TLS may go on in plaintext on this connection (fetchmail
        # "trying to continue" after a failed upgrade): record its first bytes, then close,
        # as after t2. The shell reads the connection raw from now on.
        self._tls = False
        self._enter_disrupted(None, close_on_data=True)

    def _on_client_hello(self, event: Event) -> None:
        """t2: the ClientHello was read and never answered; a cleartext line replaces it."""
        assert isinstance(event, ClientHelloReceived)
        if self.phase is not Phase.CLIENT_HELLO:
            return
        line = self.WORDING.tls_unavailable
        self._out.record(
            StarttlsDisrupted("handshake", event.nbytes, event.looks_like_tls, reply_text(line))
        )
        self._out.reply(line)
        disrupted = self._enter_disrupted(None, close_on_data=True)
        if self._held:
            held, self._held = self._held, b""
            self._add_disrupted(disrupted.data(held))

    def _on_timeout(self, event: Event) -> None:
        self._interrupted()
        self._end_flow()
        if self.phase is Phase.READING and not self._silence:
            self._out.reply(self._timeout_reply())
        self._close()

    def _on_closed(self, event: Event) -> None:
        self._interrupted()
        self._end_flow()
        self.phase = Phase.CLOSED

    def _on_kicked(self, event: Event) -> None:
        assert isinstance(event, Kicked)
        self._interrupted()
        self._end_flow()
        reason = printable(event.reason)
        self._out.record(SessionKicked(reason))
        if self.phase is Phase.READING:
            self._out.reply(self._kicked_reply(reason))
        self._close()

    # --- STARTTLS ------------------------------------------------------------------------

    def _starttls_offered(self) -> bool:
        """STARTTLS is advertised (and so allowed) now."""
        return self._policy.offer_starttls() and not self._tls and self._may_starttls()

    def _starttls(self, has_argument: bool, tag: str = "") -> None:
        """A STARTTLS/STLS command (already in the transcript), for every test case."""
        advertised = self._starttls_offered()
        self._out.record(StarttlsRequested(advertised))
        if not advertised:
            kind = StarttlsReply.ALREADY_TLS if self._tls else StarttlsReply.NOT_ADVERTISED
            self._refuse_starttls(kind, tag)
            return
        if has_argument:
            self._refuse_starttls(StarttlsReply.SYNTAX, tag)
            return
        action = self._policy.on_starttls()
        if action is StarttlsAction.REFUSE:
            reply = self._starttls_reply(StarttlsReply.TEMPORARY, tag)
            self._out.record(StarttlsRefused(StarttlsReply.TEMPORARY.value, reply_text(reply)))
            self._out.reply(reply)
            self._silence = True
            return
        rest = self._discard_input()
        if rest:  # dropped (command injection); credentials in them went out in the clear
            self._out.record(PipelinedAfterStarttls(len(rest)))
            self._record_all(scan(self._scanner(self._tls, "refused", None), rest))
        self._out.record(StarttlsAccepted())
        go_ahead = self._starttls_reply(StarttlsReply.GO_AHEAD, tag)
        if self._policy.inject_response():
            forged = self._forged_answer(tag)
            self._out.record(ResponseInjected(len(forged)))
            go_ahead += forged  # one write: the forged bytes arrive with the go-ahead
        self._out.reply(go_ahead)
        if action is StarttlsAction.BREAK_HANDSHAKE:
            self._out.add(ReadClientHello())
            self.phase = Phase.CLIENT_HELLO
        else:
            self._out.add(StartTls())
            self.phase = Phase.HANDSHAKE
        # a backstop only: the shell's handshake deadline (tls.handshake_seconds) ends first
        self._out.add(set_timer(self._limits.line_seconds))

    def _refuse_starttls(self, kind: StarttlsReply, tag: str) -> None:
        reply = self._starttls_reply(kind, tag)
        self._out.record(StarttlsRefused(kind.value, reply_text(reply)))
        self._error(None, reply)

    # --- t2/t4 disruption ----------------------------------------------------------------

    def _disrupts_after_tls(self) -> bool:
        return self._policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND

    def _command_starts(self) -> bool:
        """A core calls this before each command it read: the t3 silence is over; ``True``
        when the t4 disruption takes this command (the core then calls
        ``_disrupt_session``)."""
        self._silence = False
        return self._disrupt_next

    def _disrupt_session(
        self, shown: str | None, inside: SecretScanner, found: Iterable[Observation]
    ) -> None:
        """t4: the first command inside TLS (``shown`` in the transcript, ``found`` its
        secrets, read by ``inside``) gets the cleartext line outside TLS. What was pipelined
        behind it arrived inside TLS too; ``SendRaw`` abandons the TLS session, so later bytes
        arrive as raw TCP."""
        self._disrupt_next = False
        if shown is not None:
            self._out.record(CommandReceived(truncate(shown), True))
        self._record_all(found)
        self._record_all(scan(inside, self._discard_input()))
        line = self.WORDING.tls_unavailable
        self._out.record(StarttlsDisrupted("session", 0, True, reply_text(line)))
        self._out.add(SendRaw(line))
        self._tls = False
        self._enter_disrupted(inside, close_on_data=False)

    def _enter_disrupted(self, before: SecretScanner | None, close_on_data: bool) -> Disrupted:
        scanner = self._scanner(False, "disrupted", before)
        self._disrupted = Disrupted(scanner, self._data_verb, close_on_data)
        self.phase = Phase.DISRUPTED
        self._out.add(set_timer(self._limits.disrupted_seconds))
        return self._disrupted

    def _add_disrupted(self, commands: list[Command]) -> None:
        for command in commands:
            self._out.add(command)
        if commands and isinstance(commands[-1], Close):
            self.phase = Phase.CLOSED

    # --- SASL ----------------------------------------------------------------------------

    def _offered_mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms advertised now; ``inject`` leaves PLAIN out inside TLS, so a PLAIN
        login there shows that the client used the forged answer."""
        offered = mechanisms(self._tls)
        if self._tls and self._policy.inject_response():
            return tuple(m for m in offered if m != "PLAIN")
        return offered

    def _login_refused(self) -> bool:
        """``starttls_required``: a login before TLS is refused (the core's AUTH/LOGIN asks)."""
        return not self._tls and self._policy.plaintext_login() is PlaintextLogin.REFUSE

    def _refuse_login(self, mechanism: str, initial: str | None) -> None:
        """Refuse a SASL exchange before TLS: recorded (its initial response may have carried
        the secret: in the clear), answered with the core's TLS-required line."""
        self._record_refused(mechanism, initial)
        self._error(None, self._auth_reply(AuthReply.TLS_REQUIRED))

    def _new_flow(self, mechanism: str) -> SaslFlow:
        ctx = self._ctx
        return SaslFlow(mechanism, self._tls, ctx.authenticator, ctx.hostname)

    def _begin_sasl(self, mechanism: str, initial: str | None) -> None:
        """An allowed mechanism (``common.mechanism_allowed``): run its exchange."""
        flow = self._new_flow(mechanism)
        self._sasl_result(flow, flow.start(initial))

    def _record_refused(self, mechanism: str, initial: str | None) -> None:
        """A refused AUTH still ends in one ``AuthAttempted``: its initial response may have
        carried a secret (in the clear, before TLS)."""
        if mechanism in RECOGNISED:
            flow = self._new_flow(mechanism)
            flow.start(initial)
            self._record_all(flow.records("refused"))
            return
        self._out.record(self._attempt(mechanism_label(mechanism), None, False, "refused"))

    def _sasl_line(self, item: bytes | LineTooLong) -> None:
        """A line inside a SASL exchange: recorded redacted, answered by the flow."""
        flow = self._flow
        assert flow is not None
        if isinstance(item, LineTooLong):
            self._out.record(CommandReceived(redacted_line(item.nbytes), self._tls))
            self._sasl_result(flow, flow.fail_line())
            return
        text = decode(item)
        shown = "*" if text.strip() == "*" else redacted_line(len(item))
        self._out.record(CommandReceived(shown, self._tls))
        self._sasl_result(flow, flow.respond(text))

    def _sasl_result(self, flow: SaslFlow, result: bytes | str) -> None:
        if isinstance(result, bytes):
            self._flow = flow
            self._sasl_mode(True)
            self._out.reply(self._challenge(result))
            return
        self._finish_flow(flow, FAILURE if result == MALFORMED else result)
        if result == SUCCESS:
            self._logged_in(flow.decision)
        elif result == FAILURE:
            self._auth_failed()
        elif result == CANCELLED:
            self._out.reply(self._auth_reply(AuthReply.CANCELLED))
        else:
            self._error("sasl_malformed", self._auth_reply(AuthReply.MALFORMED))

    def _finish_flow(self, flow: SaslFlow, outcome: str) -> None:
        self._flow = None
        self._sasl_mode(False)
        self._record_all(flow.records(outcome))

    def _end_flow(self) -> None:
        """An exchange cut short (timeout, kick, peer gone) still gets its ``AuthAttempted``."""
        if self._flow is not None:
            self._finish_flow(self._flow, CANCELLED)

    # --- authentication outcome and budgets ----------------------------------------------

    def _attempt(
        self, mechanism: str, decision: AuthDecision | None, secret_sent: bool, outcome: str
    ) -> AuthAttempted:
        tls = self._tls
        display, code = (decision.display, decision.code) if decision else ("", None)
        proof = decision is not None and decision.proof
        return AuthAttempted(
            mechanism, display, code, tls, secret_sent, secret_sent and not tls, outcome, proof
        )

    def _auth_failed(self) -> None:
        """The failure reply after ``limits.auth_fail_delay``; past the budget, close."""
        self._auth_failures += 1
        self._out.add(Send(self._auth_reply(AuthReply.FAILED), self._limits.auth_fail_delay))
        if self._auth_failures >= self._limits.max_auth_failures:
            self._give_up("too_many_auth_failures", self.WORDING.too_many_auth_failures)

    def _error(self, reason: str | None, reply: bytes) -> None:
        """A negative reply counted against ``limits.max_errors`` (``reason``: record it as a
        ``ProtocolError``); past the budget, a final line and ``Close``."""
        if reason is not None:
            self._out.record(ProtocolError(reason, reply_text(reply)))
        self._out.reply(reply)
        self._errors += 1
        if self._errors >= self._limits.max_errors:
            self._give_up("too_many_errors", self.WORDING.too_many_errors)

    def _give_up(self, reason: str, reply: bytes) -> None:
        self._out.record(ProtocolError(reason, reply_text(reply)))
        self._out.reply(reply)
        self._close()

    def _close(self) -> None:
        self._out.add(Close())
        self.phase = Phase.CLOSED

    def _record_all(self, observations: Iterable[Observation]) -> None:
        for observation in observations:
            self._out.record(observation)


_EVENTS: Final[dict[type, Callable[[AttackFlow, Event], None]]] = {
    Connected: AttackFlow._on_connected,
    DataReceived: AttackFlow._on_data,
    TlsEstablished: AttackFlow._on_tls_established,
    TlsFailed: AttackFlow._on_tls_failed,
    ClientHelloReceived: AttackFlow._on_client_hello,
    Timeout: AttackFlow._on_timeout,
    Closed: AttackFlow._on_closed,
    Kicked: AttackFlow._on_kicked,
}
