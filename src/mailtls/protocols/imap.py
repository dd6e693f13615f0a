"""IMAP4rev1 server core (sans-IO): one connection as a state machine (docs/protocol-cores.md).

Flow: ``DataReceived`` bytes go into a ``LineBuffer``; ``imap_parse.CommandReader`` assembles
commands (with literals), ``parse_command`` tokenises them, and ``COMMANDS`` (verb -> handler and
the IMAP states where it is legal) dispatches. Connection-level commands (CAPABILITY, STARTTLS,
LOGIN, AUTHENTICATE, ID, IDLE, NOOP, LOGOUT) live here; the mailbox commands of the
authenticated and selected states run on ``imap_mailboxes.MailStore``. Two sub-modes read bare
lines instead of commands: a SASL exchange (``+`` continuations) and IDLE (until ``DONE``). The
test-case policy is asked the contract's questions at STARTTLS and after TLS; the answers are
phrased here in IMAP.

Secrets (LOGIN passwords, SASL responses) are never kept: transcripts show
``<redacted, N bytes>`` and usernames appear only as ``AuthDecision.display``.

Must not import: ``asyncio``, ``socket``, ``ssl``, ``mailtls.net``, ``mailtls.store``,
``mailtls.web``, ``smtp``, ``pop3``.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Callable
from typing import Final

from mailtls.observations import (
    AuthAttempted,
    CapabilitiesSent,
    ClientIdentified,
    CommandReceived,
    DataAfterDisruption,
    MessageReceived,
    Observation,
    PipelinedAfterStarttls,
    ProtocolError,
    SessionKicked,
    StarttlsAccepted,
    StarttlsDisrupted,
    StarttlsRefused,
    StarttlsRequested,
    TlsHandshakeFailed,
    TlsStarted,
    UsernameSent,
)
from mailtls.protocols.base import (
    AuthDecision,
    ClientHelloReceived,
    Close,
    Closed,
    Command,
    Connected,
    Credential,
    DataReceived,
    Event,
    Kicked,
    LineBuffer,
    LineTooLong,
    ReadClientHello,
    Record,
    Send,
    SendRaw,
    SessionContext,
    SetTimer,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
    TlsInfo,
    decode,
    truncate,
)
from mailtls.protocols.common import (
    CANCELLED,
    FAILURE,
    MALFORMED,
    MAX_DISRUPTED_BYTES,
    MAX_DISRUPTED_CHUNKS,
    SUCCESS,
    SaslFlow,
    looks_like_tls_record,
    mechanism_allowed,
    mechanism_label,
    mechanisms,
    redacted_line,
)
from mailtls.protocols.imap_mailboxes import (
    AUTHENTICATED_COMMANDS,
    SELECTED_COMMANDS,
    MailStore,
)
from mailtls.protocols.imap_parse import (
    Atom,
    BadCommand,
    CommandReader,
    Complete,
    Group,
    LiteralTooBig,
    LiteralWanted,
    Overlong,
    RawCommand,
    ReaderItem,
    astring,
    head,
    nstring,
    parse_command,
)
from mailtls.protocols.imap_parse import Command as ImapCommand
from mailtls.protocols.sasl import RECOGNISED
from mailtls.testcases import AfterTls, StarttlsAction

# --- capabilities and named replies ------------------------------------------------------------

BASE_CAPABILITIES: Final = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS SPECIAL-USE"
AUTHENTICATED_CAPABILITIES: Final = (
    "IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS SPECIAL-USE UNSELECT"
)
LOGIN_MECHANISM: Final = "IMAP-LOGIN"  # the LOGIN command in AuthAttempted (SASL's is "LOGIN")

TLS_NOT_AVAILABLE: Final = "TLS not available due to temporary reason"
UNTAGGED_TLS_NOT_AVAILABLE: Final = f"* BAD {TLS_NOT_AVAILABLE}"
STARTTLS_PROCEED: Final = "OK Begin TLS negotiation now"
STARTTLS_REFUSED: Final = f"NO [UNAVAILABLE] {TLS_NOT_AVAILABLE}"
STARTTLS_NOT_AVAILABLE: Final = "BAD STARTTLS not available"
STARTTLS_SYNTAX: Final = "BAD STARTTLS takes no arguments"
LOGGED_IN: Final = "Logged in"
AUTH_FAILED: Final = "NO [AUTHENTICATIONFAILED] Authentication failed"
AUTH_CANCELLED: Final = "BAD Authentication cancelled"
AUTH_UNSUPPORTED: Final = "NO Unsupported authentication mechanism"
BYE_TIMEOUT: Final = "* BYE Autologout; idle for too long"
BYE_LOGOUT: Final = "* BYE Logging out"
BYE_ERRORS: Final = "* BYE Too many invalid commands"
BYE_AUTH_FAILURES: Final = "* BYE Too many authentication failures"
BYE_LITERAL: Final = "* BYE Literal too large"
CONTINUE_LITERAL: Final = "+ Ready for literal"
CONTINUE_IDLE: Final = "+ idling"
SERVER_ID: Final = '* ID ("name" "mailtls")'
MAX_ID_FIELDS: Final = 30

_BASE64_BLOB = re.compile(rb"[A-Za-z0-9+/]{8,}={0,2}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"


class Mode(enum.Enum):
    """What the next client bytes are: commands, SASL responses, IDLE's DONE, or nothing."""

    COMMAND = "command"
    SASL = "sasl"
    IDLE = "idle"
    AWAIT_TLS = "await_tls"  # StartTls issued: bytes go to the handshake
    AWAIT_HELLO = "await_hello"  # t2: ReadClientHello issued
    DISRUPTED = "disrupted"  # t2/t4: no replies, record what arrives
    CLOSED = "closed"


_READING: Final = (Mode.COMMAND, Mode.SASL, Mode.IDLE)


def _clean(text: str, limit: int = 200) -> str:
    """Text for a reply line or an observation: no control characters, bounded."""
    return truncate(_CONTROL.sub(" ", text), limit)


def _verb(data: bytes) -> str:
    """``DataAfterDisruption.verb``: the IMAP command name of a plaintext chunk ("" if binary,
    "?" for other text, so that a stray secret is never copied into an observation)."""
    if not data or not 0x21 <= data[0] <= 0x7E:
        return ""
    words = data[:128].split(b"\n", 1)[0].split()
    for word in words[:2]:
        name = word.decode("ascii", "replace").upper()
        if name in COMMANDS:
            return name
    return "?"


class _Turn:
    """Commands produced while handling one event; consecutive replies share one ``Send``."""

    __slots__ = ("_pending", "commands", "login", "replied")

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self._pending: list[str] = []
        self.replied = False
        self.login: AuthDecision | None = None  # the LOGIN command's username, decided once

    def send(self, line: str, delay: float = 0.0) -> None:
        self.replied = True
        if delay:
            self.flush()
            self.commands.append(Send((line + "\r\n").encode(), delay))
        else:
            self._pending.append(line)

    def record(self, observation: Observation) -> None:
        self.add(Record(observation))

    def add(self, command: Command) -> None:
        self.flush()
        self.commands.append(command)

    def flush(self) -> None:
        if self._pending:
            self.commands.append(Send(("\r\n".join(self._pending) + "\r\n").encode()))
            self._pending.clear()

    def done(self) -> list[Command]:
        self.flush()
        return self.commands


class SecretScanner:
    """Finds credentials in IMAP commands that get no reply (pipelined after STARTTLS, the t4
    first command, plaintext after a disruption): LOGIN, and AUTHENTICATE with the SASL lines
    that follow it. Lines are reassembled into commands (literals included) as the core does."""

    __slots__ = ("_buf", "_ctx", "_flow", "_outcome", "_reader", "_tls")

    def __init__(self, ctx: SessionContext, tls: bool, outcome: str) -> None:
        self._ctx = ctx
        self._tls = tls
        self._outcome = outcome
        self._flow: SaslFlow | None = None
        self._buf = LineBuffer(ctx.limits.line_bytes)
        self._reader = CommandReader(ctx.limits)

    def scan(self, data: bytes, final: bool = True) -> list[Observation]:
        """Every command in a byte string; ``final``: the bytes end there (a partial last line
        counts as complete, an unfinished exchange is concluded)."""
        self._buf.feed(data + b"\r\n" if final and not data.endswith(b"\n") else data)
        found: list[Observation] = []
        while True:
            if self._flow is not None:
                line = self._buf.next_line()
                if line is None:
                    break
                if isinstance(line, bytes) and not isinstance(
                    self._flow.respond(decode(line)), bytes
                ):
                    found += self._conclude()
                continue
            item = self._reader.next(self._buf)
            if item is None:
                break
            if isinstance(item, Complete):
                parsed = parse_command(item.raw)
                if isinstance(parsed, ImapCommand):
                    found += self.command(parsed, None)
        return found + self.finish() if final else found

    def command(self, cmd: ImapCommand, login: AuthDecision | None) -> list[Observation]:
        if cmd.name == "LOGIN" and len(cmd.args) == 2:
            user, password = astring(cmd.args[0]), astring(cmd.args[1])
            if user is None or password is None:
                return []
            decision = login or self._ctx.authenticator(Credential(decode(user), password))
            tls, outcome = self._tls, self._outcome
            display, code, proof = decision.display, decision.code, decision.proof
            return [
                AuthAttempted(LOGIN_MECHANISM, display, code, tls, True, not tls, outcome, proof)
            ]
        if cmd.name != "AUTHENTICATE" or not 1 <= len(cmd.args) <= 2:
            return []
        mechanism = astring(cmd.args[0])
        mech = decode(mechanism).upper() if mechanism is not None else ""
        initial = astring(cmd.args[1]) if len(cmd.args) == 2 else None
        if mech not in RECOGNISED:
            return []
        self._flow = SaslFlow(mech, self._tls, self._ctx.authenticator, self._ctx.hostname)
        if isinstance(self._flow.start(decode(initial) if initial is not None else None), bytes):
            return []
        return self._conclude()

    def finish(self) -> list[Observation]:
        return self._conclude() if self._flow is not None else []

    def _conclude(self) -> list[Observation]:
        flow, self._flow = self._flow, None
        if flow is None:
            return []
        if flow.secret_sent:
            return flow.records(self._outcome)[:1]
        decision = flow.decision
        if decision is not None:
            return [UsernameSent(decision.display, decision.code, self._tls)]
        return []


class ImapCore:
    """One IMAP connection. ``handle(event)`` returns the commands for the shell, in order."""

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._limits = ctx.limits
        self._tls: TlsInfo | None = None
        self._state = State.NOT_AUTHENTICATED
        self._mode = Mode.COMMAND
        self._buf = LineBuffer(ctx.limits.line_bytes)
        self._reader = CommandReader(ctx.limits)
        self._store = MailStore()
        self._flow: SaslFlow | None = None
        self._flow_tag = ""
        self._idle_tag = ""
        self._errors = 0
        self._auth_failures = 0
        self._line_timer = False  # the absolute deadline of a partial command is armed
        self._literal_timer = False  # the deadline of a big APPEND body is armed
        self._quiet_since_refusal = False  # t3: nothing received since STARTTLS was refused
        self._disrupt_pending = False  # t4: the first command inside TLS gets disrupted
        self._sniffer: SecretScanner | None = None  # plaintext after a disruption
        self._disrupted_chunks = 0
        self._disrupted_bytes = 0

    @property
    def state(self) -> State:
        return self._state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def _is_tls(self) -> bool:
        return self._tls is not None

    # --- events ---------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if self._mode is Mode.CLOSED:
            return []
        turn = _Turn()
        match event:
            case DataReceived(data=data):
                self._on_data(data, turn)
            case Connected(tls=tls):
                self._on_connected(tls, turn)
            case TlsEstablished(info=info):
                self._on_tls_established(info, turn)
            case TlsFailed(reason=reason):
                turn.record(TlsHandshakeFailed(_clean(reason)))
                self._close(turn)
            case ClientHelloReceived():
                self._on_client_hello(event, turn)
            case Timeout():
                self._on_timeout(turn)
            case Closed():
                self._record_partial(turn)
                self._end_flow(turn)
                self._close(turn)
            case Kicked(reason=reason):
                self._on_kicked(reason, turn)
        return turn.done()

    def _on_connected(self, tls: TlsInfo | None, turn: _Turn) -> None:
        if tls is not None:
            self._tls = tls
            turn.record(TlsStarted(tls.version, tls.cipher, implicit=True))
            self._disrupt_pending = self._ctx.policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND
        caps = self._capabilities(turn)
        turn.send(f"* OK [CAPABILITY {caps}] {_clean(self._ctx.hostname, 100)} mailtls IMAP ready")
        turn.add(SetTimer(self._limits.idle_seconds))

    def _on_tls_established(self, info: TlsInfo, turn: _Turn) -> None:
        if self._mode is not Mode.AWAIT_TLS:
            return
        self._tls = info
        self._mode = Mode.COMMAND
        self._buf = LineBuffer(self._limits.line_bytes)  # forget everything from before TLS
        self._reader = CommandReader(self._limits)
        self._auth_failures = 0
        turn.record(TlsStarted(info.version, info.cipher, implicit=False))
        self._disrupt_pending = self._ctx.policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND
        turn.add(SetTimer(self._limits.idle_seconds))

    def _on_client_hello(self, event: ClientHelloReceived, turn: _Turn) -> None:
        if self._mode is not Mode.AWAIT_HELLO:
            return
        line = UNTAGGED_TLS_NOT_AVAILABLE
        turn.record(StarttlsDisrupted("handshake", event.nbytes, event.looks_like_tls, line))
        turn.send(line)
        self._enter_disrupted(turn)

    def _on_timeout(self, turn: _Turn) -> None:
        self._record_partial(turn)
        if self._mode in _READING and not self._quiet_since_refusal:
            self._end_flow(turn)
            turn.send(BYE_TIMEOUT)
        self._close(turn)

    def _on_kicked(self, reason: str, turn: _Turn) -> None:
        self._record_partial(turn)
        self._end_flow(turn)
        turn.record(SessionKicked(_clean(reason)))
        if self._mode in _READING:
            turn.send(f"* BYE {_clean(reason) or 'Server shutting down'}")
        self._close(turn)

    def _record_partial(self, turn: _Turn) -> None:
        """A command cut short while it waited for a literal still appears in the transcript."""
        if self._mode is Mode.COMMAND and self._reader.busy:
            text = _redact_partial(self._reader.partial())
            turn.record(CommandReceived(truncate(text), self._is_tls))
            self._reader.abort()

    def _close(self, turn: _Turn) -> None:
        if self._mode is Mode.DISRUPTED and self._sniffer is not None:
            for observation in self._sniffer.finish():
                turn.record(observation)
        turn.add(Close())
        self._mode = Mode.CLOSED

    # --- reading ----------------------------------------------------------------------------

    def _on_data(self, data: bytes, turn: _Turn) -> None:
        if self._mode in (Mode.DISRUPTED, Mode.AWAIT_HELLO):
            self._after_disruption(data, turn)
            return
        if self._mode not in _READING:
            return
        self._quiet_since_refusal = False
        self._buf.feed(data)
        while self._mode in _READING:
            if self._mode is Mode.COMMAND:
                item = self._reader.next(self._buf)
                if item is None:
                    break
                self._quiet_since_refusal = False
                self._on_item(item, turn)
            else:
                line = self._buf.next_line()
                if line is None:
                    break
                if self._mode is Mode.SASL:
                    self._on_sasl_line(line, turn)
                else:
                    self._on_idle_line(line, turn)
        self._arm_timer(turn)

    def _arm_timer(self, turn: _Turn) -> None:
        if self._mode not in _READING:
            return
        limits = self._limits
        if self._quiet_since_refusal:
            turn.add(SetTimer(limits.silence_after_refusal))
        elif self._reader.in_big_literal:
            if not self._literal_timer:
                turn.add(SetTimer(limits.idle_seconds))
                self._literal_timer = True
        elif self._buf.pending or self._reader.busy:
            if not self._line_timer or turn.replied:
                turn.add(SetTimer(limits.line_seconds))
                self._line_timer = True
        else:
            self._line_timer = self._literal_timer = False
            turn.add(SetTimer(limits.idle_seconds))

    def _on_item(self, item: ReaderItem, turn: _Turn) -> None:
        match item:
            case Complete(raw=raw):
                self._on_command(raw, turn)
            case LiteralWanted():
                if self._disrupt_pending:  # t4: no "+" inside TLS, the disruption instead
                    text = _redact_partial(self._reader.partial())
                    turn.record(CommandReceived(truncate(text), self._is_tls))
                    self._disrupt_session(turn)
                else:
                    turn.send(CONTINUE_LITERAL)
            case LiteralTooBig():
                self._on_literal_too_big(item, turn)
            case Overlong(tag=tag, nbytes=nbytes):
                if self._disrupt_pending:
                    self._disrupt_session(turn)
                else:
                    self._bad(turn, tag, "line_too_long", f"Line too long ({nbytes} bytes)")

    def _on_literal_too_big(self, item: LiteralTooBig, turn: _Turn) -> None:
        turn.record(CommandReceived(truncate(_redact_partial(item.partial)), self._is_tls))
        if self._disrupt_pending:
            self._disrupt_session(turn)
        elif item.fatal:
            turn.record(ProtocolError("literal_too_big", BYE_LITERAL))
            turn.send(BYE_LITERAL)
            self._close(turn)
        elif item.verb in COMMANDS and self._state not in COMMANDS[item.verb][1]:
            self._bad(turn, item.tag, "bad_state", "Please log in first")
        elif item.verb == "APPEND" and item.synchronizing:
            turn.send(f"{item.tag or '*'} NO [TOOBIG] Message too large")
        else:
            self._bad(turn, item.tag, "literal_too_big", "[TOOBIG] Literal too large")

    # --- commands ---------------------------------------------------------------------------

    def _on_command(self, raw: RawCommand, turn: _Turn) -> None:
        parsed = parse_command(raw)
        turn.record(CommandReceived(truncate(self._transcript(raw, parsed, turn)), self._is_tls))
        if self._disrupt_pending:
            if isinstance(parsed, ImapCommand):
                scanner = SecretScanner(self._ctx, self._is_tls, "disrupted")
                for observation in scanner.command(parsed, turn.login) + scanner.finish():
                    turn.record(observation)
            self._disrupt_session(turn)
            return
        if isinstance(parsed, BadCommand):
            self._bad(turn, parsed.tag, "syntax", f"Error in IMAP command: {parsed.reason}")
            return
        entry = COMMANDS.get(parsed.name)
        if entry is None:
            self._bad(turn, parsed.tag, "unknown_command", "Unknown command")
            return
        handler, states = entry
        if self._state not in states:
            if self._state is State.NOT_AUTHENTICATED:
                text = "Please log in first"
            else:
                text = "No mailbox selected" if State.SELECTED in states else "Wrong state"
            self._bad(turn, parsed.tag, "bad_state", text)
            return
        handler(self, parsed, turn)

    def _transcript(self, raw: RawCommand, parsed: ImapCommand | BadCommand, turn: _Turn) -> str:
        """The redacted transcript line; for LOGIN it also decides the username (once)."""
        if isinstance(parsed, ImapCommand) and parsed.name == "LOGIN" and len(parsed.args) == 2:
            user, password = astring(parsed.args[0]), astring(parsed.args[1])
            if user is not None and password is not None:
                turn.login = self._ctx.authenticator(Credential(decode(user), password))
                return f"{parsed.tag} LOGIN {turn.login.display} {redacted_line(len(password))}"
        words = raw.lines[0].rstrip(b" ").split(b" ")
        first = [w.upper() for w in words[:2]]
        untagged = bool(first) and first[0] in (b"LOGIN", b"AUTHENTICATE")
        tag = "*" if untagged else parsed.tag or "*"
        if b"AUTHENTICATE" in first:
            rest = words[first.index(b"AUTHENTICATE") + 1 :]
            shown = f"{tag} AUTHENTICATE"
            if rest:
                shown += " " + mechanism_label(decode(rest[0]).upper())
            initial = sum(lit.size for lit in raw.literals) or sum(len(w) for w in rest[1:])
            return shown + (" " + redacted_line(initial) if len(rest) > 1 else "")
        if b"LOGIN" in first:
            size = sum(len(line) for line in raw.lines) + sum(lit.size for lit in raw.literals)
            size -= len(b" ".join(words[: first.index(b"LOGIN") + 1])) + 1
            return f"{tag} LOGIN {redacted_line(max(size, 0))}"
        if len(raw.lines) == 1 and _BASE64_BLOB.match(raw.lines[0]):
            return redacted_line(len(raw.lines[0]))  # a SASL response sent out of turn
        if isinstance(parsed, BadCommand) and (parsed.tag is None or not parsed.name):
            # not a command at all: may be a password typed in the wrong place
            return f"<unrecognised, {sum(len(line) for line in raw.lines)} bytes>"
        if parsed.name not in COMMANDS:
            return _unknown_command(raw.transcript())
        return raw.transcript()

    def _bad(self, turn: _Turn, tag: str | None, reason: str, text: str) -> None:
        reply = f"{tag or '*'} BAD {text}"
        turn.record(ProtocolError(reason, reply))
        turn.send(reply)
        self._errors += 1
        if self._errors >= self._limits.max_errors:
            turn.send(BYE_ERRORS)
            self._close(turn)

    # --- capabilities, STARTTLS -------------------------------------------------------------

    def _starttls_offered(self) -> bool:
        return (
            self._ctx.policy.offer_starttls()
            and self._tls is None
            and self._state is State.NOT_AUTHENTICATED
        )

    def _capabilities(self, turn: _Turn) -> str:
        """The capability list for the current state; records ``CapabilitiesSent``."""
        if self._state is not State.NOT_AUTHENTICATED:
            turn.record(CapabilitiesSent(False, (), self._is_tls))
            return AUTHENTICATED_CAPABILITIES
        starttls = self._starttls_offered()
        offered = mechanisms(self._is_tls)
        turn.record(CapabilitiesSent(starttls, offered, self._is_tls))
        parts = [BASE_CAPABILITIES, *(["STARTTLS"] if starttls else [])]
        return " ".join([*parts, *(f"AUTH={m}" for m in offered)])

    def _cmd_capability(self, cmd: ImapCommand, turn: _Turn) -> None:
        if cmd.args:
            self._bad(turn, cmd.tag, "syntax", "CAPABILITY takes no arguments")
            return
        turn.send(f"* CAPABILITY {self._capabilities(turn)}")
        turn.send(f"{cmd.tag} OK Capability completed")

    def _cmd_starttls(self, cmd: ImapCommand, turn: _Turn) -> None:
        advertised = self._starttls_offered()
        turn.record(StarttlsRequested(advertised))
        if not advertised or cmd.args:
            text = STARTTLS_SYNTAX if advertised else STARTTLS_NOT_AVAILABLE
            reason = "syntax" if advertised else "already_tls" if self._tls else "not_advertised"
            turn.record(StarttlsRefused(reason, f"{cmd.tag} {text}"))
            turn.send(f"{cmd.tag} {text}")
            return
        action = self._ctx.policy.on_starttls()
        if action is StarttlsAction.REFUSE:
            reply = f"{cmd.tag} {STARTTLS_REFUSED}"
            turn.record(StarttlsRefused("testcase", reply))
            turn.send(reply)
            self._quiet_since_refusal = True
            return
        turn.send(f"{cmd.tag} {STARTTLS_PROCEED}")
        rest = self._buf.take_rest()
        if rest:  # dropped (command injection); credentials in them went out in the clear
            turn.record(PipelinedAfterStarttls(len(rest)))
            for observation in SecretScanner(self._ctx, self._is_tls, "refused").scan(rest):
                turn.record(observation)
        turn.record(StarttlsAccepted())
        if action is StarttlsAction.BREAK_HANDSHAKE:
            self._mode = Mode.AWAIT_HELLO
            turn.add(ReadClientHello())
            turn.add(SetTimer(self._limits.disrupted_seconds))
        else:
            self._mode = Mode.AWAIT_TLS
            turn.add(StartTls())
            turn.add(SetTimer(self._limits.line_seconds))  # backstop: the shell has a deadline

    # --- disruption (t2, t4) ----------------------------------------------------------------

    def _disrupt_session(self, turn: _Turn) -> None:
        """t4: answer the first command inside TLS with a cleartext line outside TLS."""
        self._disrupt_pending = False
        rest = self._buf.take_rest()
        self._reader.abort()
        if rest:  # pipelined behind the first command, inside TLS as well
            for observation in SecretScanner(self._ctx, self._is_tls, "disrupted").scan(rest):
                turn.record(observation)
        line = UNTAGGED_TLS_NOT_AVAILABLE
        turn.record(StarttlsDisrupted("session", 0, True, line))
        turn.add(SendRaw((line + "\r\n").encode()))
        # the shell abandons the TLS session with the raw line: what arrives next is raw TCP
        self._tls = None
        self._enter_disrupted(turn)

    def _enter_disrupted(self, turn: _Turn) -> None:
        self._mode = Mode.DISRUPTED
        self._sniffer = SecretScanner(self._ctx, self._is_tls, "disrupted")
        turn.add(SetTimer(self._limits.disrupted_seconds))

    def _after_disruption(self, data: bytes, turn: _Turn) -> None:
        """No replies; record what arrives, and any credentials a plaintext command carries."""
        if self._sniffer is None:  # data before the ClientHello was answered (t2)
            self._sniffer = SecretScanner(self._ctx, self._is_tls, "disrupted")
        alert = looks_like_tls_record(data)
        turn.record(DataAfterDisruption(len(data), alert, "" if alert else _verb(data)))
        if not alert:
            for observation in self._sniffer.scan(data, final=False):
                turn.record(observation)
        self._disrupted_chunks += 1
        self._disrupted_bytes += len(data)
        if (
            self._disrupted_chunks >= MAX_DISRUPTED_CHUNKS
            or self._disrupted_bytes >= MAX_DISRUPTED_BYTES
        ):
            self._close(turn)

    # --- authentication ---------------------------------------------------------------------

    def _attempt(
        self, mechanism: str, decision: AuthDecision | None, outcome: str
    ) -> AuthAttempted:
        """An attempt whose secret was sent (LOGIN) or, without a decision, not known (refused)."""
        tls = self._is_tls
        sent = decision is not None
        return AuthAttempted(
            mechanism,
            decision.display if decision else "",
            decision.code if decision else None,
            tls,
            sent,
            sent and not tls,
            outcome,
            decision is not None and decision.proof,
        )

    def _cmd_login(self, cmd: ImapCommand, turn: _Turn) -> None:
        decision = turn.login
        if decision is None:
            self._bad(turn, cmd.tag, "syntax", "LOGIN expects a user name and a password")
            return
        if self._state is not State.NOT_AUTHENTICATED:
            turn.record(self._attempt(LOGIN_MECHANISM, decision, "refused"))
            self._bad(turn, cmd.tag, "bad_state", "Already authenticated")
            return
        ok = decision.ok
        turn.record(self._attempt(LOGIN_MECHANISM, decision, SUCCESS if ok else FAILURE))
        self._auth_result(turn, cmd.tag, ok)

    def _auth_result(self, turn: _Turn, tag: str, ok: bool) -> None:
        if ok:
            self._state = State.AUTHENTICATED
            self._reader.allow_messages = True
            turn.send(f"{tag} OK [CAPABILITY {self._capabilities(turn)}] {LOGGED_IN}")
            return
        self._auth_failures += 1
        delay = self._limits.auth_fail_delay
        turn.send(f"{tag} {AUTH_FAILED}", delay=delay)
        if self._auth_failures >= self._limits.max_auth_failures:
            turn.send(BYE_AUTH_FAILURES, delay=delay)
            self._close(turn)

    def _cmd_authenticate(self, cmd: ImapCommand, turn: _Turn) -> None:
        args = cmd.args
        mechanism = astring(args[0]) if args else None
        initial = astring(args[1]) if len(args) == 2 else None
        if mechanism is None or len(args) > 2 or (len(args) == 2 and initial is None):
            self._bad(turn, cmd.tag, "syntax", "AUTHENTICATE expects a mechanism")
            return
        mech = decode(mechanism).upper()
        text = decode(initial) if initial is not None else None
        authenticated = self._state is not State.NOT_AUTHENTICATED
        if authenticated or not mechanism_allowed(mech, self._is_tls):
            self._record_refused(mech, text, turn)
            if authenticated:
                self._bad(turn, cmd.tag, "bad_state", "Already authenticated")
            else:
                turn.send(f"{cmd.tag} {AUTH_UNSUPPORTED}")
            return
        flow = SaslFlow(mech, self._is_tls, self._ctx.authenticator, self._ctx.hostname)
        self._flow_tag = cmd.tag
        self._sasl_result(flow, flow.start(text), turn)

    def _record_refused(self, mech: str, initial: str | None, turn: _Turn) -> None:
        """A refused AUTHENTICATE still ends in one ``AuthAttempted``: its initial response may
        have carried a secret."""
        if mech in RECOGNISED:
            flow = SaslFlow(mech, self._is_tls, self._ctx.authenticator, self._ctx.hostname)
            flow.start(initial)
            for observation in flow.records("refused"):
                turn.record(observation)
            return
        turn.record(self._attempt(mechanism_label(mech), None, "refused"))

    def _on_sasl_line(self, line: bytes | LineTooLong, turn: _Turn) -> None:
        flow = self._flow
        assert flow is not None
        if isinstance(line, LineTooLong):
            turn.record(CommandReceived(redacted_line(line.nbytes), self._is_tls))
            self._sasl_result(flow, flow.fail_line(), turn)
            return
        text = decode(line)
        shown = "*" if text.strip() == "*" else redacted_line(len(line))
        turn.record(CommandReceived(shown, self._is_tls))
        self._sasl_result(flow, flow.respond(text), turn)

    def _sasl_result(self, flow: SaslFlow, result: bytes | str, turn: _Turn) -> None:
        if isinstance(result, bytes):
            self._flow = flow
            self._mode = Mode.SASL
            turn.send("+ " + base64.b64encode(result).decode())
            return
        tag = self._flow_tag
        self._finish_flow(flow, FAILURE if result == MALFORMED else result, turn)
        if result in (SUCCESS, FAILURE):
            self._auth_result(turn, tag, result == SUCCESS)
        elif result == CANCELLED:
            turn.send(f"{tag} {AUTH_CANCELLED}")
        else:
            self._bad(turn, tag, "sasl_malformed", "Invalid SASL response")

    def _finish_flow(self, flow: SaslFlow, outcome: str, turn: _Turn) -> None:
        self._flow = None
        if self._mode is Mode.SASL:
            self._mode = Mode.COMMAND
        for observation in flow.records(outcome):
            turn.record(observation)

    def _end_flow(self, turn: _Turn) -> None:
        """An exchange cut short (timeout, kick, peer gone) still gets its ``AuthAttempted``."""
        if self._flow is not None:
            self._finish_flow(self._flow, CANCELLED, turn)

    # --- any state --------------------------------------------------------------------------

    def _cmd_noop(self, cmd: ImapCommand, turn: _Turn) -> None:
        turn.send(f"{cmd.tag} OK {cmd.name.capitalize()} completed")

    def _cmd_logout(self, cmd: ImapCommand, turn: _Turn) -> None:
        turn.send(BYE_LOGOUT)
        turn.send(f"{cmd.tag} OK Logout completed")
        self._close(turn)

    def _cmd_id(self, cmd: ImapCommand, turn: _Turn) -> None:
        arg = cmd.args[0] if len(cmd.args) == 1 else None
        if isinstance(arg, Group) and len(arg.items) % 2 == 0:
            fields: list[str] = []
            for key, value in zip(arg.items[::2], arg.items[1::2], strict=True):
                name = nstring(key)
                if name is not None and len(fields) < MAX_ID_FIELDS:
                    shown = nstring(value)
                    fields.append(f"{truncate(name, 30)}={truncate(shown or 'NIL', 100)}")
            if fields:
                turn.record(ClientIdentified("imap_id", truncate("; ".join(fields), 500)))
        elif not (isinstance(arg, Atom) and arg.upper() == "NIL"):
            self._bad(turn, cmd.tag, "syntax", "ID expects NIL or a list of fields")
            return
        turn.send(SERVER_ID)
        turn.send(f"{cmd.tag} OK ID completed")

    def _cmd_idle(self, cmd: ImapCommand, turn: _Turn) -> None:
        if cmd.args:
            self._bad(turn, cmd.tag, "syntax", "IDLE takes no arguments")
            return
        self._idle_tag = cmd.tag
        self._mode = Mode.IDLE
        turn.send(CONTINUE_IDLE)

    def _on_idle_line(self, line: bytes | LineTooLong, turn: _Turn) -> None:
        self._mode = Mode.COMMAND
        if isinstance(line, bytes) and line.strip().upper() == b"DONE":
            turn.record(CommandReceived("DONE", self._is_tls))
            turn.send(f"{self._idle_tag} OK Idle completed")
            return
        if isinstance(line, bytes):
            raw = RawCommand((line,), ())
            shown = self._transcript(raw, parse_command(raw), turn)
            turn.record(CommandReceived(truncate(shown), self._is_tls))
        self._bad(turn, self._idle_tag, "syntax", "Expected DONE")

    # --- authenticated and selected states --------------------------------------------------

    def _cmd_mailbox(self, cmd: ImapCommand, turn: _Turn) -> None:
        outcome = self._store.run(cmd)
        if outcome.message_bytes is not None:
            turn.record(MessageReceived(outcome.message_bytes, 0, self._is_tls))
        for line in outcome.untagged:
            turn.send(line)
        self._state = State.SELECTED if self._store.selected else State.AUTHENTICATED
        if outcome.status == "BAD":
            self._bad(turn, cmd.tag, "syntax", outcome.text)
        else:
            turn.send(f"{cmd.tag} {outcome.status} {outcome.text}")


def _redact_partial(text: str) -> str:
    """Transcript of an unfinished command: LOGIN/AUTHENTICATE arguments are never shown."""
    tag, verb = head(text.encode())
    if tag is None or not verb.isalpha():  # not a command: may be a password
        return f"<unrecognised, {len(text.encode())} bytes>"
    if verb in ("LOGIN", "AUTHENTICATE"):
        rest = text.split(" ", 2)[2] if text.count(" ") >= 2 else ""
        return f"{tag or '*'} {verb} {redacted_line(len(rest.encode()))}"
    if verb not in COMMANDS:
        return _unknown_command(text)
    return text


def _unknown_command(text: str) -> str:
    """``tag VERB <redacted, N bytes>``: the arguments of a command we do not know may be
    anything (garbage before a LOGIN turns it into an unknown command)."""
    tag, verb, *rest = text.split(" ", 2)
    shown = f"{tag} {verb.upper()}"
    return f"{shown} {redacted_line(len(rest[0].encode()))}" if rest and rest[0] else shown


Handler = Callable[[ImapCore, ImapCommand, _Turn], None]

_ANY: Final = frozenset(State)
_AUTH: Final = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED: Final = frozenset({State.SELECTED})

COMMANDS: Final[dict[str, tuple[Handler, frozenset[State]]]] = {
    "CAPABILITY": (ImapCore._cmd_capability, _ANY),
    "NOOP": (ImapCore._cmd_noop, _ANY),
    "LOGOUT": (ImapCore._cmd_logout, _ANY),
    "ID": (ImapCore._cmd_id, _ANY),
    "STARTTLS": (ImapCore._cmd_starttls, _ANY),  # after login: refused as not advertised
    "LOGIN": (ImapCore._cmd_login, _ANY),  # after login: refused, the attempt still recorded
    "AUTHENTICATE": (ImapCore._cmd_authenticate, _ANY),
    "IDLE": (ImapCore._cmd_idle, _AUTH),
    **{verb: (ImapCore._cmd_mailbox, _AUTH) for verb in AUTHENTICATED_COMMANDS},
    **{verb: (ImapCore._cmd_mailbox, _SELECTED) for verb in SELECTED_COMMANDS},
}
