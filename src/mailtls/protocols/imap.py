"""IMAP4rev1 server core (sans-IO): one connection as a state machine (docs/protocol-cores.md).

Flow: ``DataReceived`` bytes go into a ``LineBuffer``; ``imap_parse.CommandReader`` assembles
commands (with literals), ``parse_command`` tokenises them, and ``COMMANDS`` (verb -> handler and
the IMAP states where it is legal) dispatches. Two sub-modes read bare lines instead of commands:
a SASL exchange (``+`` continuations) and IDLE (until ``DONE``). The test-case policy is asked
the contract's questions at STARTTLS and after TLS; the answers are phrased here in IMAP.

Every mailbox is empty (``imap_mailboxes``); APPEND bodies are counted and discarded. Secrets
(LOGIN passwords, SASL responses) are never kept: transcripts show ``<redacted, N bytes>``.

Must not import: ``asyncio``, ``socket``, ``ssl``, ``mailtls.net``, ``mailtls.store``,
``mailtls.web``, ``smtp``, ``pop3``.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Callable

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
from mailtls.protocols import imap_mailboxes as mb
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
    String,
    Token,
    astring,
    head,
    nstring,
    parse_command,
)
from mailtls.protocols.imap_parse import Command as ImapCommand
from mailtls.protocols.sasl import (
    PRE_TLS_MECHANISMS,
    TLS_MECHANISMS,
    Aborted,
    Challenge,
    Finished,
    SaslExchange,
    Step,
)
from mailtls.testcases import AfterTls, StarttlsAction

# --- capabilities and named replies ------------------------------------------------------------

BASE_CAPABILITIES = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS SPECIAL-USE"
AUTHENTICATED_CAPABILITIES = (
    "IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS SPECIAL-USE UNSELECT"
)
OAUTH_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})
LOGIN_MECHANISM = "IMAP-LOGIN"  # the LOGIN command (SASL LOGIN is "LOGIN")

TLS_NOT_AVAILABLE = "TLS not available due to temporary reason"
UNTAGGED_TLS_NOT_AVAILABLE = f"* BAD {TLS_NOT_AVAILABLE}"
STARTTLS_PROCEED = "OK Begin TLS negotiation now"
STARTTLS_REFUSED = f"NO [UNAVAILABLE] {TLS_NOT_AVAILABLE}"
STARTTLS_NOT_AVAILABLE = "BAD STARTTLS not available"
STARTTLS_SYNTAX = "BAD STARTTLS takes no arguments"
AUTH_FAILED = "NO [AUTHENTICATIONFAILED] Authentication failed"
AUTH_CANCELLED = "BAD Authentication cancelled"
AUTH_UNSUPPORTED = "NO Unsupported authentication mechanism"
BYE_TIMEOUT = "* BYE Autologout; idle for too long"
BYE_LOGOUT = "* BYE Logging out"
BYE_ERRORS = "* BYE Too many invalid commands"
BYE_AUTH_FAILURES = "* BYE Too many authentication failures"
BYE_LITERAL = "* BYE Literal too large"
CONTINUE_LITERAL = "+ Ready for literal"
CONTINUE_IDLE = "+ idling"
SYSTEM_FLAGS = r"\Answered \Flagged \Deleted \Seen \Draft"
STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE"}
)
MAX_ID_FIELDS = 30

_SEQUENCE_SET = re.compile(r"(?:[1-9]\d{0,9}|\*)(?::(?:[1-9]\d{0,9}|\*))?(?:,|\Z)")
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,40}\Z")
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


_READING = (Mode.COMMAND, Mode.SASL, Mode.IDLE)


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


def _clean(text: str, limit: int = 200) -> str:
    """Server-side text for a reply line: no control characters, bounded."""
    return truncate(_CONTROL.sub(" ", text), limit)


def _tls_alert(data: bytes) -> bool:
    return bool(data) and 0x14 <= data[0] <= 0x17


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
        self._mailboxes = mb.Mailboxes()
        self._selected: str | None = None
        self._read_only = False
        self._sasl: SaslExchange | None = None
        self._sasl_tag = ""
        self._sasl_user: str | None = None
        self._idle_tag = ""
        self._errors = 0
        self._auth_failures = 0
        self._line_timer = False  # the absolute deadline of a partial command is armed
        self._literal_timer = False  # the deadline of a big APPEND body is armed
        self._quiet_since_refusal = False  # t3: nothing received since STARTTLS was refused
        self._disrupt_pending = False  # t4: the first command inside TLS gets disrupted
        self._sniff_buf = LineBuffer(ctx.limits.line_bytes)  # plaintext after a disruption
        self._sniff_reader = CommandReader(ctx.limits)

    @property
    def state(self) -> State:
        return self._state

    @property
    def mode(self) -> Mode:
        return self._mode

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
                self._end_sasl_unfinished(turn)
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
        turn.send(UNTAGGED_TLS_NOT_AVAILABLE)
        turn.record(
            StarttlsDisrupted(
                "handshake", event.nbytes, event.looks_like_tls, UNTAGGED_TLS_NOT_AVAILABLE
            )
        )
        self._mode = Mode.DISRUPTED
        turn.add(SetTimer(self._limits.disrupted_seconds))

    def _on_timeout(self, turn: _Turn) -> None:
        if self._mode in _READING and not self._quiet_since_refusal:
            self._end_sasl_unfinished(turn)
            turn.send(BYE_TIMEOUT)
        self._close(turn)

    def _on_kicked(self, reason: str, turn: _Turn) -> None:
        self._end_sasl_unfinished(turn)
        turn.record(SessionKicked(_clean(reason)))
        if self._mode in _READING:
            turn.send(f"* BYE {_clean(reason) or 'Server shutting down'}")
        self._close(turn)

    def _close(self, turn: _Turn) -> None:
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
                if self._disrupt_pending:
                    turn.record(CommandReceived(self._partial_transcript(), True))
                    self._disrupt_session(turn)
                else:
                    turn.send(CONTINUE_LITERAL)
            case LiteralTooBig():
                self._on_literal_too_big(item, turn)
            case Overlong(tag=tag, nbytes=nbytes):
                if self._disrupt_pending:
                    self._disrupt_session(turn)
                    return
                self._bad(turn, tag, "line_too_long", f"Line too long ({nbytes} bytes)")

    def _on_literal_too_big(self, item: LiteralTooBig, turn: _Turn) -> None:
        text = self._redact_partial(item.partial)
        turn.record(CommandReceived(truncate(text), self._tls is not None))
        if self._disrupt_pending:
            self._disrupt_session(turn)
            return
        tag = item.tag or "*"
        if item.fatal:
            turn.record(ProtocolError("literal_too_big", BYE_LITERAL))
            turn.send(BYE_LITERAL)
            self._close(turn)
        elif item.verb == "APPEND" and item.synchronizing:
            turn.send(f"{tag} NO [TOOBIG] Message too large")
        else:
            self._bad(turn, item.tag, "literal_too_big", "[TOOBIG] Literal too large")

    def _partial_transcript(self) -> str:
        text = self._redact_partial(self._reader.partial())
        self._reader.abort()
        return truncate(text)

    def _redact_partial(self, text: str) -> str:
        tag, verb = head(text.encode())
        if verb in ("LOGIN", "AUTHENTICATE"):
            rest = text.split(" ", 2)[2] if text.count(" ") >= 2 else ""
            return f"{tag or '*'} {verb} <redacted, {len(rest)} bytes>"
        return text

    # --- commands ---------------------------------------------------------------------------

    def _on_command(self, raw: RawCommand, turn: _Turn) -> None:
        parsed = parse_command(raw)
        tls = self._tls is not None
        turn.record(CommandReceived(truncate(self._transcript(raw, parsed, turn)), tls))
        if self._disrupt_pending:
            if isinstance(parsed, ImapCommand):
                for obs in self._auth_without_reply(parsed, turn.login):
                    turn.record(obs)
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
            text = "Please log in first" if self._state is State.NOT_AUTHENTICATED else None
            if text is None:
                text = "No mailbox selected" if State.SELECTED in states else "Wrong state"
            self._bad(turn, parsed.tag, "bad_state", text)
            return
        handler(self, parsed, turn)

    def _transcript(self, raw: RawCommand, parsed: ImapCommand | BadCommand, turn: _Turn) -> str:
        """The redacted transcript line; for LOGIN, decides the username (once)."""
        line0 = raw.lines[0]
        words = line0.split(b" ")
        first = [w.upper() for w in words[:2]]
        tag = parsed.tag or "*"
        if isinstance(parsed, ImapCommand) and parsed.name == "LOGIN":
            user, password = self._login_args(parsed)
            if user is not None and password is not None:
                turn.login = self._ctx.authenticator(decode(user))
                return f"{tag} LOGIN {turn.login.display} <redacted, {len(password)} bytes>"
        if b"LOGIN" in first or b"AUTHENTICATE" in first:
            verb = "LOGIN" if b"LOGIN" in first else "AUTHENTICATE"
            if verb == "AUTHENTICATE" and len(words) >= 3 and first[1] == b"AUTHENTICATE":
                mech = decode(words[2])
                size = sum(len(w) for w in words[3:])
                if _MECHANISM.match(mech):
                    return f"{tag} AUTHENTICATE {mech}" + (
                        f" <redacted, {size} bytes>" if len(words) > 3 else ""
                    )
            rest = sum(len(line) for line in raw.lines) - len(b" ".join(words[:2]))
            rest += sum(lit.size for lit in raw.literals)
            return f"{tag} {verb} <redacted, {max(rest - 1, 0)} bytes>"
        if len(raw.lines) == 1 and _BASE64_BLOB.match(line0):
            return f"<redacted, {len(line0)} bytes>"  # a SASL response sent out of turn
        return raw.transcript()

    @staticmethod
    def _login_args(cmd: ImapCommand) -> tuple[bytes | None, bytes | None]:
        if len(cmd.args) != 2:
            return None, None
        return astring(cmd.args[0]), astring(cmd.args[1])

    def _bad(self, turn: _Turn, tag: str | None, reason: str, text: str) -> None:
        reply = f"{tag or '*'} BAD {text}"
        turn.record(ProtocolError(reason, reply))
        turn.send(reply)
        self._errors += 1
        if self._errors >= self._limits.max_errors:
            turn.send(BYE_ERRORS)
            self._close(turn)

    def _ok(self, turn: _Turn, tag: str, text: str) -> None:
        turn.send(f"{tag} OK {text}")

    # --- capabilities, STARTTLS -------------------------------------------------------------

    def _starttls_offered(self) -> bool:
        return (
            self._ctx.policy.offer_starttls()
            and self._tls is None
            and self._state is State.NOT_AUTHENTICATED
        )

    def _capabilities(self, turn: _Turn) -> str:
        """The capability list for the current state; records ``CapabilitiesSent``."""
        tls = self._tls is not None
        if self._state is not State.NOT_AUTHENTICATED:
            turn.record(CapabilitiesSent(False, (), tls))
            return AUTHENTICATED_CAPABILITIES
        starttls = self._starttls_offered()
        mechanisms = TLS_MECHANISMS if tls else PRE_TLS_MECHANISMS
        turn.record(CapabilitiesSent(starttls, mechanisms, tls))
        parts = [BASE_CAPABILITIES]
        if starttls:
            parts.append("STARTTLS")
        parts.extend(f"AUTH={m}" for m in mechanisms)
        return " ".join(parts)

    def _cmd_capability(self, cmd: ImapCommand, turn: _Turn) -> None:
        if cmd.args:
            self._bad(turn, cmd.tag, "syntax", "CAPABILITY takes no arguments")
            return
        turn.send(f"* CAPABILITY {self._capabilities(turn)}")
        self._ok(turn, cmd.tag, "Capability completed")

    def _cmd_starttls(self, cmd: ImapCommand, turn: _Turn) -> None:
        advertised = self._starttls_offered()
        turn.record(StarttlsRequested(advertised))
        if not advertised:
            reply = f"{cmd.tag} {STARTTLS_NOT_AVAILABLE}"
            reason = "already_tls" if self._tls is not None else "not_advertised"
            turn.record(StarttlsRefused(reason, reply))
            turn.send(reply)
            return
        if cmd.args:
            reply = f"{cmd.tag} {STARTTLS_SYNTAX}"
            turn.record(StarttlsRefused("syntax", reply))
            turn.send(reply)
            return
        action = self._ctx.policy.on_starttls()
        if action is StarttlsAction.REFUSE:
            reply = f"{cmd.tag} {STARTTLS_REFUSED}"
            turn.record(StarttlsRefused("testcase", reply))
            turn.send(reply)
            self._quiet_since_refusal = True
            return
        turn.send(f"{cmd.tag} {STARTTLS_PROCEED}")
        pipelined = len(self._buf.take_rest())
        if pipelined:
            turn.record(PipelinedAfterStarttls(pipelined))
        turn.record(StarttlsAccepted())
        if action is StarttlsAction.BREAK_HANDSHAKE:
            self._mode = Mode.AWAIT_HELLO
            turn.add(ReadClientHello())
        else:
            self._mode = Mode.AWAIT_TLS
            turn.add(StartTls())

    # --- disruption (t2, t4) ----------------------------------------------------------------

    def _disrupt_session(self, turn: _Turn) -> None:
        """t4: answer the first command inside TLS with a cleartext line outside TLS."""
        self._disrupt_pending = False
        self._buf.take_rest()
        self._reader.abort()
        turn.add(SendRaw((UNTAGGED_TLS_NOT_AVAILABLE + "\r\n").encode()))
        turn.record(StarttlsDisrupted("session", 0, True, UNTAGGED_TLS_NOT_AVAILABLE))
        self._mode = Mode.DISRUPTED
        turn.add(SetTimer(self._limits.disrupted_seconds))

    def _after_disruption(self, data: bytes, turn: _Turn) -> None:
        """No replies; record what arrives, and any secret a plaintext command carries."""
        alert = _tls_alert(data)
        verb = ""
        found: list[Observation] = []
        if not alert:
            tag, name = head(data.split(b"\n", 1)[0].rstrip(b"\r"))
            if tag is not None and name.isalpha() and len(name) <= 20:
                verb = name
            self._sniff_buf.feed(data)
            while (item := self._sniff_reader.next(self._sniff_buf)) is not None:
                if isinstance(item, Complete):
                    parsed = parse_command(item.raw)
                    if isinstance(parsed, ImapCommand):
                        found.extend(self._auth_without_reply(parsed, None))
        turn.record(DataAfterDisruption(len(data), alert, verb))
        for obs in found:
            turn.record(obs)

    def _auth_without_reply(
        self, cmd: ImapCommand, login: AuthDecision | None
    ) -> list[Observation]:
        """Observations for a LOGIN/AUTHENTICATE that will never be answered (disrupted)."""
        tls = self._tls is not None
        if cmd.name == "LOGIN":
            user, password = self._login_args(cmd)
            if user is None or password is None:
                return []
            decision = login or self._ctx.authenticator(decode(user))
            return [self._attempt(LOGIN_MECHANISM, decision, True, "disrupted")]
        if cmd.name != "AUTHENTICATE" or len(cmd.args) != 2:
            return []
        mechanism = astring(cmd.args[0])
        initial = astring(cmd.args[1])
        if mechanism is None or initial is None:
            return []
        mech = decode(mechanism).upper()
        if not _MECHANISM.match(mech):
            return []
        step = SaslExchange(mech, self._ctx.hostname).start(decode(initial))
        if isinstance(step, Finished):
            decision = self._ctx.authenticator(step.username)
            return [self._attempt(mech, decision, step.secret_sent, "disrupted")]
        if isinstance(step, Challenge) and step.username_so_far is not None:
            decision = self._ctx.authenticator(step.username_so_far)
            secret = mech in OAUTH_MECHANISMS
            observations: list[Observation] = []
            if not secret:
                observations.append(UsernameSent(decision.display, decision.code, tls))
            observations.append(self._attempt(mech, decision, secret, "disrupted"))
            return observations
        return []

    # --- authentication ---------------------------------------------------------------------

    def _attempt(
        self, mechanism: str, decision: AuthDecision | None, secret_sent: bool, outcome: str
    ) -> AuthAttempted:
        tls = self._tls is not None
        return AuthAttempted(
            mechanism=mechanism,
            username=decision.display if decision else "",
            code=decision.code if decision else None,
            tls=tls,
            secret_sent=secret_sent,
            secret_in_clear=secret_sent and not tls,
            outcome=outcome,
        )

    def _cmd_login(self, cmd: ImapCommand, turn: _Turn) -> None:
        decision = turn.login
        if decision is None:
            self._bad(turn, cmd.tag, "syntax", "LOGIN expects a user name and a password")
            return
        if self._state is not State.NOT_AUTHENTICATED:
            turn.record(self._attempt(LOGIN_MECHANISM, decision, True, "refused"))
            self._bad(turn, cmd.tag, "bad_state", "Already authenticated")
            return
        self._finish_auth(turn, cmd.tag, LOGIN_MECHANISM, decision, True, always_fail=False)

    def _finish_auth(
        self,
        turn: _Turn,
        tag: str,
        mechanism: str,
        decision: AuthDecision,
        secret_sent: bool,
        always_fail: bool,
    ) -> None:
        ok = decision.ok and not always_fail
        turn.record(self._attempt(mechanism, decision, secret_sent, "success" if ok else "failure"))
        if ok:
            self._state = State.AUTHENTICATED
            turn.send(f"{tag} OK [CAPABILITY {self._capabilities(turn)}] Logged in")
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
        mech = _clean(decode(mechanism), 40).upper()
        tls = self._tls is not None
        offered = TLS_MECHANISMS if tls else PRE_TLS_MECHANISMS
        if self._state is not State.NOT_AUTHENTICATED:
            turn.record(self._attempt(mech, None, False, "refused"))
            self._bad(turn, cmd.tag, "bad_state", "Already authenticated")
            return
        if mech not in offered and mech not in OAUTH_MECHANISMS:
            turn.record(self._attempt(mech, None, False, "refused"))
            turn.send(f"{cmd.tag} {AUTH_UNSUPPORTED}")
            return
        self._sasl = SaslExchange(mech, self._ctx.hostname)
        self._sasl_tag = cmd.tag
        self._sasl_user = None
        text = decode(initial) if initial is not None else None
        self._on_sasl_step(self._sasl.start(text), turn)

    def _on_sasl_line(self, line: bytes | LineTooLong, turn: _Turn) -> None:
        assert self._sasl is not None
        tls = self._tls is not None
        if isinstance(line, LineTooLong):
            turn.record(CommandReceived(f"<redacted, {line.nbytes} bytes>", tls))
            self._on_sasl_step(Aborted("malformed", self._sasl_user), turn)
            return
        shown = "*" if line.strip() == b"*" else f"<redacted, {len(line)} bytes>"
        turn.record(CommandReceived(shown, tls))
        self._on_sasl_step(self._sasl.respond(decode(line)), turn)

    def _on_sasl_step(self, step: Step, turn: _Turn) -> None:
        assert self._sasl is not None
        mech, tag = self._sasl.mechanism, self._sasl_tag
        if isinstance(step, Challenge):
            if step.username_so_far is not None:
                self._sasl_user = step.username_so_far
            self._mode = Mode.SASL
            turn.send("+ " + base64.b64encode(step.data).decode())
            return
        self._mode = Mode.COMMAND
        self._sasl = None
        if isinstance(step, Finished):
            decision = self._ctx.authenticator(step.username)
            self._finish_auth(turn, tag, mech, decision, step.secret_sent, step.always_fail)
            return
        user = step.username
        aborted = self._ctx.authenticator(user) if user is not None else None
        if step.reason == "cancelled":
            if aborted is not None:
                turn.record(UsernameSent(aborted.display, aborted.code, self._tls is not None))
            turn.record(self._attempt(mech, aborted, False, "cancelled"))
            turn.send(f"{tag} {AUTH_CANCELLED}")
            return
        turn.record(self._attempt(mech, aborted, False, "failure"))
        self._bad(turn, tag, "bad_sasl", "Invalid SASL response")

    def _end_sasl_unfinished(self, turn: _Turn) -> None:
        """The connection ends during an exchange: it ends as cancelled."""
        if self._mode is not Mode.SASL or self._sasl is None:
            return
        username = self._sasl_user
        decision = self._ctx.authenticator(username) if username is not None else None
        if decision is not None:
            turn.record(UsernameSent(decision.display, decision.code, self._tls is not None))
        turn.record(self._attempt(self._sasl.mechanism, decision, False, "cancelled"))
        self._sasl = None

    # --- any state --------------------------------------------------------------------------

    def _cmd_noop(self, cmd: ImapCommand, turn: _Turn) -> None:
        self._ok(turn, cmd.tag, f"{cmd.name.capitalize()} completed")

    def _cmd_logout(self, cmd: ImapCommand, turn: _Turn) -> None:
        turn.send(BYE_LOGOUT)
        self._ok(turn, cmd.tag, "Logout completed")
        self._close(turn)

    def _cmd_id(self, cmd: ImapCommand, turn: _Turn) -> None:
        arg = cmd.args[0] if len(cmd.args) == 1 else None
        if isinstance(arg, Group) and len(arg.items) % 2 == 0:
            fields: list[str] = []
            for key, value in zip(arg.items[::2], arg.items[1::2], strict=True):
                name = nstring(key)
                if name is not None and len(fields) < MAX_ID_FIELDS:
                    fields.append(f"{truncate(name, 30)}={truncate(nstring(value) or 'NIL', 100)}")
            if fields:
                turn.record(ClientIdentified("imap_id", truncate("; ".join(fields), 500)))
        elif not (isinstance(arg, Atom) and arg.upper() == "NIL"):
            self._bad(turn, cmd.tag, "syntax", "ID expects NIL or a list of fields")
            return
        turn.send('* ID ("name" "mailtls")')
        self._ok(turn, cmd.tag, "ID completed")

    # --- authenticated state ----------------------------------------------------------------

    def _cmd_namespace(self, cmd: ImapCommand, turn: _Turn) -> None:
        turn.send(f'* NAMESPACE (("" "{mb.DELIMITER}")) NIL NIL')
        self._ok(turn, cmd.tag, "Namespace completed")

    def _cmd_enable(self, cmd: ImapCommand, turn: _Turn) -> None:
        if not cmd.args or not all(isinstance(a, Atom) for a in cmd.args):
            self._bad(turn, cmd.tag, "syntax", "ENABLE expects capability names")
            return
        turn.send("* ENABLED")
        self._ok(turn, cmd.tag, "Enabled")

    def _mailbox(self, token: Token | None) -> str | None:
        raw = astring(token)
        return mb.valid_name(raw) if raw is not None else None

    def _cmd_select(self, cmd: ImapCommand, turn: _Turn) -> None:
        if not cmd.args or astring(cmd.args[0]) is None or len(cmd.args) > 2:
            self._bad(turn, cmd.tag, "syntax", f"{cmd.name} expects a mailbox name")
            return
        self._state, self._selected = State.AUTHENTICATED, None
        name = self._mailbox(cmd.args[0])
        if name is None or not self._mailboxes.exists(name):
            turn.send(f"{cmd.tag} NO [NONEXISTENT] Mailbox doesn't exist")
            return
        examine = cmd.name == "EXAMINE"
        permanent = "" if examine else SYSTEM_FLAGS + r" \*"
        turn.send("* 0 EXISTS")
        turn.send("* 0 RECENT")
        turn.send(f"* FLAGS ({SYSTEM_FLAGS})")
        turn.send(f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted")
        turn.send(f"* OK [UIDVALIDITY {mb.uidvalidity(name)}] UIDs valid")
        turn.send(f"* OK [UIDNEXT {self._mailboxes.uidnext(name)}] Predicted next UID")
        self._state, self._selected, self._read_only = State.SELECTED, name, examine
        code = "[READ-ONLY] Examine" if examine else "[READ-WRITE] Select"
        self._ok(turn, cmd.tag, f"{code} completed")

    def _cmd_create(self, cmd: ImapCommand, turn: _Turn) -> None:
        if len(cmd.args) != 1 or astring(cmd.args[0]) is None:
            self._bad(turn, cmd.tag, "syntax", "CREATE expects a mailbox name")
            return
        name = self._mailbox(cmd.args[0])
        error = self._mailboxes.create(name) if name else "[CANNOT] Invalid mailbox name"
        if error:
            turn.send(f"{cmd.tag} NO {error}")
        else:
            self._ok(turn, cmd.tag, "Create completed")

    def _cmd_delete(self, cmd: ImapCommand, turn: _Turn) -> None:
        if len(cmd.args) != 1 or astring(cmd.args[0]) is None:
            self._bad(turn, cmd.tag, "syntax", "DELETE expects a mailbox name")
            return
        name = self._mailbox(cmd.args[0])
        error = self._mailboxes.delete(name) if name else "[NONEXISTENT] Mailbox doesn't exist"
        if error:
            turn.send(f"{cmd.tag} NO {error}")
            return
        if name == self._selected:
            self._state, self._selected = State.AUTHENTICATED, None
        self._ok(turn, cmd.tag, "Delete completed")

    def _cmd_rename(self, cmd: ImapCommand, turn: _Turn) -> None:
        if len(cmd.args) != 2 or None in (astring(cmd.args[0]), astring(cmd.args[1])):
            self._bad(turn, cmd.tag, "syntax", "RENAME expects two mailbox names")
            return
        turn.send(f"{cmd.tag} NO [CANNOT] Renaming mailboxes is not supported")

    def _cmd_subscribe(self, cmd: ImapCommand, turn: _Turn) -> None:
        if len(cmd.args) != 1 or astring(cmd.args[0]) is None:
            self._bad(turn, cmd.tag, "syntax", f"{cmd.name} expects a mailbox name")
            return
        name = self._mailbox(cmd.args[0])
        if name is None:
            turn.send(f"{cmd.tag} NO [NONEXISTENT] Mailbox doesn't exist")
            return
        self._mailboxes.subscribe(name, on=cmd.name == "SUBSCRIBE")
        self._ok(turn, cmd.tag, f"{cmd.name.capitalize()} completed")

    def _cmd_list(self, cmd: ImapCommand, turn: _Turn) -> None:
        args = list(cmd.args)
        options: set[str] = set()
        first = args[0] if args else None
        if isinstance(first, Group) and cmd.name == "LIST":
            options = {t.upper() for t in first.items if isinstance(t, Atom)}
            del args[0]
        if len(args) > 2 and isinstance(args[2], Atom) and args[2].upper() == "RETURN":
            del args[2:4]  # LIST-EXTENDED return options: nothing more to return
        reference = astring(args[0]) if args else None
        pattern_tokens = (
            args[1].items if len(args) == 2 and isinstance(args[1], Group) else args[1:]
        )
        patterns = [astring(t) for t in pattern_tokens]
        if reference is None or len(args) != 2 or not patterns or None in patterns:
            self._bad(turn, cmd.tag, "syntax", f"{cmd.name} expects a reference and a pattern")
            return
        ref = decode(reference)
        texts = [decode(p) for p in patterns if p is not None]
        if texts == [""]:
            root = ref.split(mb.DELIMITER, 1)[0] + mb.DELIMITER if mb.DELIMITER in ref else ""
            turn.send(f'* {cmd.name} (\\Noselect) "{mb.DELIMITER}" {mb.quote(root)}')
        else:
            subscribed = cmd.name == "LSUB" or "SUBSCRIBED" in options
            special = "SPECIAL-USE" in options
            listing = self._mailboxes.listing(ref, texts, subscribed, special)
            for attrs, name in listing:
                if cmd.name == "LSUB":
                    attrs = [a for a in attrs if a == "\\NonExistent"]
                shown = " ".join(attrs).replace("\\NonExistent", "\\Noselect")
                turn.send(f'* {cmd.name} ({shown}) "{mb.DELIMITER}" {mb.quote(name)}')
        self._ok(turn, cmd.tag, f"{cmd.name} completed")

    def _cmd_status(self, cmd: ImapCommand, turn: _Turn) -> None:
        items = cmd.args[1] if len(cmd.args) == 2 else None
        if not isinstance(items, Group) or astring(cmd.args[0]) is None:
            self._bad(turn, cmd.tag, "syntax", "STATUS expects a mailbox and a list of items")
            return
        wanted = [t.upper() if isinstance(t, Atom) else "" for t in items.items]
        if not wanted or any(w not in STATUS_ITEMS for w in wanted):
            self._bad(turn, cmd.tag, "syntax", "Unknown STATUS item")
            return
        name = self._mailbox(cmd.args[0])
        if name is None or not self._mailboxes.exists(name):
            turn.send(f"{cmd.tag} NO [NONEXISTENT] Mailbox doesn't exist")
            return
        values = {"UIDNEXT": self._mailboxes.uidnext(name), "UIDVALIDITY": mb.uidvalidity(name)}
        shown = " ".join(f"{w} {values.get(w, 0)}" for w in dict.fromkeys(wanted))
        turn.send(f"* STATUS {mb.quote(name)} ({shown})")
        self._ok(turn, cmd.tag, "Status completed")

    def _cmd_append(self, cmd: ImapCommand, turn: _Turn) -> None:
        args = cmd.args
        message = args[-1] if len(args) >= 2 else None
        middle = args[1:-1]
        shapes_ok = len(middle) <= 2 and all(isinstance(t, Group | String) for t in middle)
        if not isinstance(message, String) or astring(args[0]) is None or not shapes_ok:
            self._bad(turn, cmd.tag, "syntax", "APPEND expects a mailbox and a message literal")
            return
        turn.record(MessageReceived(message.nbytes, 0, self._tls is not None))
        name = self._mailbox(args[0])
        if name is None or not self._mailboxes.exists(name):
            turn.send(f"{cmd.tag} NO [TRYCREATE] Mailbox doesn't exist")
            return
        uid = self._mailboxes.appended(name)
        self._ok(turn, cmd.tag, f"[APPENDUID {mb.uidvalidity(name)} {uid}] Append completed")

    def _cmd_idle(self, cmd: ImapCommand, turn: _Turn) -> None:
        if cmd.args:
            self._bad(turn, cmd.tag, "syntax", "IDLE takes no arguments")
            return
        self._idle_tag = cmd.tag
        self._mode = Mode.IDLE
        turn.send(CONTINUE_IDLE)

    def _on_idle_line(self, line: bytes | LineTooLong, turn: _Turn) -> None:
        self._mode = Mode.COMMAND
        tls = self._tls is not None
        if isinstance(line, bytes) and line.strip().upper() == b"DONE":
            turn.record(CommandReceived("DONE", tls))
            self._ok(turn, self._idle_tag, "Idle completed")
            return
        if isinstance(line, bytes):
            shown = f"<redacted, {len(line)} bytes>" if _BASE64_BLOB.match(line) else decode(line)
            turn.record(CommandReceived(truncate(shown), tls))
        self._bad(turn, self._idle_tag, "syntax", "Expected DONE")

    # --- selected state ---------------------------------------------------------------------

    def _cmd_close(self, cmd: ImapCommand, turn: _Turn) -> None:
        if cmd.args:
            self._bad(turn, cmd.tag, "syntax", f"{cmd.name} takes no arguments")
            return
        self._state, self._selected = State.AUTHENTICATED, None
        self._ok(turn, cmd.tag, f"{cmd.name.capitalize()} completed")

    def _cmd_expunge(self, cmd: ImapCommand, turn: _Turn, uid: bool = False) -> None:
        if len(cmd.args) != (1 if uid else 0) or (uid and not _sequence_set(cmd.args[0])):
            self._bad(turn, cmd.tag, "syntax", "Invalid EXPUNGE arguments")
            return
        if self._read_only:
            turn.send(f"{cmd.tag} NO [READ-ONLY] Mailbox is read-only")
            return
        self._ok(turn, cmd.tag, "Expunge completed")

    def _cmd_search(self, cmd: ImapCommand, turn: _Turn, uid: bool = False) -> None:
        if not cmd.args:
            self._bad(turn, cmd.tag, "syntax", "SEARCH expects search criteria")
            return
        turn.send("* SEARCH")
        self._ok(turn, cmd.tag, "Search completed")

    def _cmd_fetch(self, cmd: ImapCommand, turn: _Turn, uid: bool = False) -> None:
        if len(cmd.args) < 2 or not _sequence_set(cmd.args[0]):
            self._bad(turn, cmd.tag, "syntax", "FETCH expects a sequence set and items")
            return
        self._ok(turn, cmd.tag, "Fetch completed")

    def _cmd_store(self, cmd: ImapCommand, turn: _Turn, uid: bool = False) -> None:
        if len(cmd.args) < 3 or not _sequence_set(cmd.args[0]):
            self._bad(turn, cmd.tag, "syntax", "STORE expects a sequence set, an item and flags")
            return
        if self._read_only:
            turn.send(f"{cmd.tag} NO [READ-ONLY] Mailbox is read-only")
            return
        self._ok(turn, cmd.tag, "Store completed")

    def _cmd_copy(self, cmd: ImapCommand, turn: _Turn, uid: bool = False) -> None:
        if len(cmd.args) != 2 or not _sequence_set(cmd.args[0]) or astring(cmd.args[1]) is None:
            self._bad(turn, cmd.tag, "syntax", "COPY expects a sequence set and a mailbox")
            return
        name = self._mailbox(cmd.args[1])
        if name is None or not self._mailboxes.exists(name):
            turn.send(f"{cmd.tag} NO [TRYCREATE] Mailbox doesn't exist")
            return
        self._ok(turn, cmd.tag, "Copy completed")

    def _cmd_uid(self, cmd: ImapCommand, turn: _Turn) -> None:
        sub = cmd.args[0].upper() if cmd.args and isinstance(cmd.args[0], Atom) else ""
        handler = UID_COMMANDS.get(sub)
        if handler is None:
            self._bad(turn, cmd.tag, "syntax", "Unknown UID command")
            return
        handler(self, ImapCommand(cmd.tag, sub, cmd.args[1:]), turn, True)


def _sequence_set(token: Token) -> bool:
    if not isinstance(token, Atom) or len(token.value) > 1000:
        return False
    text, pos = token.value, 0
    while pos < len(text):
        match = _SEQUENCE_SET.match(text, pos)
        if match is None or match.end() == pos:
            return False
        pos = match.end()
    return bool(text) and not text.endswith(",")


Handler = Callable[[ImapCore, ImapCommand, _Turn], None]
UidHandler = Callable[[ImapCore, ImapCommand, _Turn, bool], None]

_ANY = frozenset(State)
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

COMMANDS: dict[str, tuple[Handler, frozenset[State]]] = {
    "CAPABILITY": (ImapCore._cmd_capability, _ANY),
    "NOOP": (ImapCore._cmd_noop, _ANY),
    "LOGOUT": (ImapCore._cmd_logout, _ANY),
    "ID": (ImapCore._cmd_id, _ANY),
    "STARTTLS": (ImapCore._cmd_starttls, _ANY),  # refused as not advertised after login
    "LOGIN": (ImapCore._cmd_login, _ANY),  # after login: refused, but the attempt is recorded
    "AUTHENTICATE": (ImapCore._cmd_authenticate, _ANY),
    "NAMESPACE": (ImapCore._cmd_namespace, _AUTH),
    "ENABLE": (ImapCore._cmd_enable, _AUTH),
    "SELECT": (ImapCore._cmd_select, _AUTH),
    "EXAMINE": (ImapCore._cmd_select, _AUTH),
    "CREATE": (ImapCore._cmd_create, _AUTH),
    "DELETE": (ImapCore._cmd_delete, _AUTH),
    "RENAME": (ImapCore._cmd_rename, _AUTH),
    "SUBSCRIBE": (ImapCore._cmd_subscribe, _AUTH),
    "UNSUBSCRIBE": (ImapCore._cmd_subscribe, _AUTH),
    "LIST": (ImapCore._cmd_list, _AUTH),
    "LSUB": (ImapCore._cmd_list, _AUTH),
    "STATUS": (ImapCore._cmd_status, _AUTH),
    "APPEND": (ImapCore._cmd_append, _AUTH),
    "IDLE": (ImapCore._cmd_idle, _AUTH),
    "CHECK": (ImapCore._cmd_noop, _SELECTED),
    "CLOSE": (ImapCore._cmd_close, _SELECTED),
    "UNSELECT": (ImapCore._cmd_close, _SELECTED),
    "EXPUNGE": (ImapCore._cmd_expunge, _SELECTED),
    "SEARCH": (ImapCore._cmd_search, _SELECTED),
    "FETCH": (ImapCore._cmd_fetch, _SELECTED),
    "STORE": (ImapCore._cmd_store, _SELECTED),
    "COPY": (ImapCore._cmd_copy, _SELECTED),
    "UID": (ImapCore._cmd_uid, _SELECTED),
}

UID_COMMANDS: dict[str, UidHandler] = {
    "FETCH": ImapCore._cmd_fetch,
    "SEARCH": ImapCore._cmd_search,
    "STORE": ImapCore._cmd_store,
    "COPY": ImapCore._cmd_copy,
    "EXPUNGE": ImapCore._cmd_expunge,
}
