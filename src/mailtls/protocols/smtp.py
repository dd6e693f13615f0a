"""The SMTP server core (sans-IO): greeting, EHLO/HELO, STARTTLS, AUTH, MAIL/RCPT/DATA, ...

Shape: ``SmtpCore.handle(event)`` dispatches the event by type; ``DataReceived`` is split into
lines by ``LineBuffer`` and each command line goes through the verb table ``_COMMANDS`` (verb ->
handler). A DATA body is read by ``DataBody``, which ends only at ``CRLF.CRLF`` (a bare LF
``.`` LF is body, not an end: SMTP smuggling). Replies of a pipelined batch are joined into one
``Send``; every ``Record`` precedes the reply it explains. Attack behaviour comes from
``ctx.policy`` (``mailtls.testcases``); everything shared with IMAP and POP3 lives in
``protocols.common``. See ``docs/protocol-cores.md`` for the contract.

Must not import ``imap``, ``pop3``, ``asyncio``, sockets, ``mailtls.net``/``store``/``web``.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from typing import Final

from mailtls.observations import (
    AuthAttempted,
    CapabilitiesSent,
    ClientIdentified,
    CommandReceived,
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
from mailtls.protocols import smtp_replies as R
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
    PortRole,
    ReadClientHello,
    Send,
    SendRaw,
    SessionContext,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
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
    ascii_number,
    input_timer,
    mechanism_allowed,
    mechanism_label,
    mechanisms,
    redacted_line,
    set_timer,
)
from mailtls.protocols.sasl import RECOGNISED, redacted
from mailtls.testcases import AfterTls, StarttlsAction

MAX_RECIPIENTS: Final = 100
# Verbs of other protocols and old SMTP extensions that are shown by name in the transcript
# (their arguments redacted); any other unknown line is shown only by its length, because a
# stray base64 password line must never reach a transcript.
FOREIGN_VERBS: Final = frozenset(
    {"BDAT", "ETRN", "TURN", "ATRN", "XCLIENT", "XFORWARD", "LHLO", "SEND", "SOML", "SAML",
     "VERB", "ONEX", "CAPA", "STLS", "USER", "PASS", "APOP", "LOGIN", "CAPABILITY", "GET",
     "POST", "HEAD", "CONNECT", "PUT", "OPTIONS"}
)  # fmt: skip


class State(enum.Enum):
    COMMAND = "command"
    AUTH = "auth"  # a SASL exchange awaits the client's next line
    DATA = "data"  # reading a message body
    TLS_HANDSHAKE = "tls_handshake"  # StartTls issued, awaiting TlsEstablished/TlsFailed
    CLIENT_HELLO = "client_hello"  # t2: ReadClientHello issued, awaiting ClientHelloReceived
    DISRUPTED = "disrupted"
    CLOSED = "closed"


class DataBody:
    """A DATA body reader: counts the unstuffed bytes, keeps at most 4 bytes, stores nothing.

    The body ends only at ``CRLF . CRLF`` (the CRLF that ended the DATA line counts as the
    first one). ``\\n.\\n``, ``\\r.\\n`` and ``\\n.\\r\\n`` are body bytes. A line starting with
    ``.`` loses that dot (dot-unstuffing), which only matters for the count.
    """

    __slots__ = ("_bol", "_tail", "deadline_armed", "line_open", "nbytes")

    END: Final = b"\r\n.\r\n"

    def __init__(self) -> None:
        self._bol = True  # the next byte starts a line (right after the DATA line's CRLF)
        self._tail = b""  # up to 4 unconsumed bytes that may start the terminator
        self.nbytes = 0
        self.line_open = False  # the last byte fed did not end a line
        self.deadline_armed = False  # the open line's absolute deadline is running

    def feed(self, data: bytes) -> bytes | None:
        """Consume body bytes; return the bytes after the terminator once it is seen."""
        if data:
            self.line_open = not data.endswith(b"\n")
        prefix = 2 if self._bol else 0
        buf = (b"\r\n" if self._bol else b"") + self._tail + data
        end = buf.find(self.END)
        if end >= 0:
            self.nbytes += end + 2 - prefix - buf.count(b"\r\n.", 0, end)
            self._tail = b""
            return buf[end + 5 :]
        cut = len(buf) - 4
        if cut <= prefix:
            self._tail = buf[prefix:]
            return None
        self.nbytes += cut - prefix - buf.count(b"\r\n.", 0, cut + 2)
        self._tail = buf[cut:]
        self._bol = False
        return None


def _split_auth(arg: str) -> tuple[str, str | None]:
    """``AUTH`` arguments -> (upper-cased mechanism, initial response or None)."""
    mech, _, initial = arg.strip().partition(" ")
    initial = initial.strip()
    return mech.upper(), (initial or None)


def _auth_transcript(mech: str, initial: str | None) -> str:
    """``AUTH PLAIN <redacted, 24 bytes>``; unregistered mechanism names become ``UNKNOWN``."""
    label = mechanism_label(mech) if mech else ""
    if initial:
        return redacted("AUTH", label, len(initial))
    return f"AUTH {label}".rstrip()


def _path(arg: str, prefix: str) -> tuple[str, list[str]] | None:
    """``FROM:<addr> params`` / ``TO:<addr> params`` -> (address, params), None if malformed."""
    arg = arg.strip()
    if arg[: len(prefix)].upper() != prefix:
        return None
    rest = arg[len(prefix) :].lstrip()
    if rest.startswith("<"):
        close = rest.find(">")
        if close < 0:
            return None
        return rest[1:close], rest[close + 1 :].split()
    words = rest.split()
    if not words:
        return None
    return words[0], words[1:]


class AuthLineScanner:
    """Finds secrets in SMTP lines the server will never answer (pipelined after STARTTLS, or
    after a disruption): ``AUTH <mech> <initial>`` and the SASL lines that follow it."""

    __slots__ = ("_ctx", "_flow", "_outcome", "_tls")

    def __init__(self, ctx: SessionContext, tls: bool, outcome: str) -> None:
        self._ctx = ctx
        self._tls = tls
        self._outcome = outcome
        self._flow: SaslFlow | None = None

    def line(self, line: bytes) -> list[Observation]:
        text = line.decode("utf-8", "replace")
        if self._flow is not None:
            if isinstance(self._flow.respond(text), bytes):
                return []
            return self._conclude()
        verb, _, arg = text.partition(" ")
        if verb.upper() != "AUTH":
            return []
        mech, initial = _split_auth(arg)
        if mech not in RECOGNISED:
            return []
        self._flow = SaslFlow(mech, self._tls, self._ctx.authenticator, self._ctx.hostname)
        if isinstance(self._flow.start(initial), bytes):
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

    def scan(self, data: bytes) -> list[Observation]:
        """Every line of a byte string (a partial last line included), then ``finish``."""
        found: list[Observation] = []
        for raw in data.split(b"\n"):
            if raw:
                found += self.line(raw.rstrip(b"\r"))
        return found + self.finish()


Handler = Callable[["SmtpCore", str], None]


class SmtpCore:
    """One SMTP connection, server side. ``handle(event)`` -> commands for the shell."""

    __slots__ = (
        "_auth",
        "_auth_failures",
        "_body",
        "_ctx",
        "_disrupt_next",
        "_disrupted",
        "_domain_suffix",
        "_errors",
        "_flow",
        "_greeted",
        "_held",
        "_limits",
        "_lines",
        "_mail",
        "_out",
        "_rcpts",
        "_rejected",
        "_silence",
        "_tls",
        "state",
    )

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._limits = ctx.limits
        self._domain_suffix = "@" + ctx.domain.lower()
        self._lines = LineBuffer(ctx.limits.line_bytes)
        self.state = State.COMMAND
        self._tls = False
        self._greeted = False  # HELO/EHLO seen (in the current TLS epoch)
        self._auth: AuthDecision | None = None
        self._flow: SaslFlow | None = None
        self._mail = False
        self._rcpts = 0
        self._rejected = 0
        self._body: DataBody | None = None
        self._errors = 0
        self._auth_failures = 0
        self._disrupt_next = False  # t4: the next command line inside TLS is disrupted
        self._disrupted: Disrupted | None = None
        self._held = b""  # bytes that arrived while a ClientHello was being read
        self._silence = False  # t3: the last thing that happened is the refusal
        self._out = Outbox()

    # --- events ---------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if self.state is State.CLOSED:
            return []
        if self.state is State.DISRUPTED and self._disrupted is not None:
            commands = self._disrupted.handle(event)
            if commands and isinstance(commands[-1], Close):
                self.state = State.CLOSED
            return commands
        self._out = Outbox()
        _EVENTS[type(event)](self, event)
        return self._out.finish()

    def _on_connected(self, event: Event) -> None:
        assert isinstance(event, Connected)
        if event.tls is not None:  # implicit TLS: the shell leaves TlsStarted to the core
            self._tls = True
            self._out.record(TlsStarted(event.tls.version, event.tls.cipher, True))
            self._disrupt_next = self._ctx.policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND
        self._out.reply(R.greeting(self._ctx.hostname))
        self._out.add(set_timer(self._limits.idle_seconds))

    def _on_data(self, event: Event) -> None:
        assert isinstance(event, DataReceived)
        if self.state is State.CLIENT_HELLO:
            room = self._limits.line_bytes - len(self._held)
            if room > 0:
                self._held += event.data[:room]
            return
        if self.state is State.TLS_HANDSHAKE:
            return
        self._silence = False
        partial_before = self._lines.pending > 0
        completed = self._pump(event.data)
        if self.state is State.DATA and self._body is not None:
            # a body line gets the same absolute deadline as a command line (no slow trickle)
            body = self._body
            if not body.line_open:
                body.deadline_armed = False
                self._out.add(set_timer(self._limits.idle_seconds))
            elif not body.deadline_armed:
                body.deadline_armed = True
                self._out.add(set_timer(self._limits.line_seconds))
        elif self._reading_lines():
            if self._silence:
                self._out.add(set_timer(self._limits.silence_after_refusal))
                return
            timer = input_timer(self._limits, completed, partial_before, self._lines.pending > 0)
            if timer is not None:
                self._out.add(timer)

    def _on_tls_established(self, event: Event) -> None:
        assert isinstance(event, TlsEstablished)
        if self.state is not State.TLS_HANDSHAKE:
            return
        self._tls = True
        self._greeted = False
        self._auth = None
        self._reset_transaction()
        self.state = State.COMMAND
        self._out.record(TlsStarted(event.info.version, event.info.cipher, False))
        self._disrupt_next = self._ctx.policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND
        self._out.add(set_timer(self._limits.idle_seconds))

    def _on_tls_failed(self, event: Event) -> None:
        assert isinstance(event, TlsFailed)
        if self.state is not State.TLS_HANDSHAKE:
            return
        self._out.record(TlsHandshakeFailed(truncate(event.reason)))
        self._close()

    def _on_client_hello(self, event: Event) -> None:
        assert isinstance(event, ClientHelloReceived)
        if self.state is not State.CLIENT_HELLO:
            return
        reply = R.S454_TLS_NA
        self._out.record(
            StarttlsDisrupted("handshake", event.nbytes, event.looks_like_tls, R.text(reply))
        )
        self._out.reply(reply)
        self._out.add(set_timer(self._limits.disrupted_seconds))
        disrupted = self._enter_disrupted()
        if self._held:
            held, self._held = self._held, b""
            for command in disrupted.data(held):
                self._out.add(command)

    def _on_timeout(self, event: Event) -> None:
        self._end_flow(CANCELLED)
        if self._silence or self.state in (State.TLS_HANDSHAKE, State.CLIENT_HELLO):
            self._close()
            return
        self._out.reply(R.timeout(self._ctx.hostname))
        self._close()

    def _on_closed(self, event: Event) -> None:
        self._end_flow(CANCELLED)
        self.state = State.CLOSED

    def _on_kicked(self, event: Event) -> None:
        assert isinstance(event, Kicked)
        self._end_flow(CANCELLED)
        self._out.record(SessionKicked(truncate(event.reason)))
        if self.state not in (State.TLS_HANDSHAKE, State.CLIENT_HELLO):
            self._out.reply(R.S421_KICKED)
        self._close()

    # --- input ----------------------------------------------------------------------------

    def _pump(self, data: bytes) -> bool:
        """Consume received bytes in the current state; True when at least one line was read."""
        completed = False
        if self.state is State.DATA:
            rest = self._feed_body(data)
            if rest is None:
                return False
            completed = True
            data = rest
        self._lines.feed(data)
        while self._reading_lines():
            line = self._lines.next_line()
            if line is None:
                break
            completed = True
            self._silence = False
            if self._disrupt_next:  # never in AUTH: the first line of a fresh TLS session
                self._disrupt_session(line)
            elif isinstance(line, LineTooLong):
                self._line_too_long(line)
            elif self.state is State.AUTH:
                self._sasl_line(line)
            else:
                self._command(line)
            if self.state is State.DATA:
                rest = self._feed_body(self._lines.take_rest())
                if rest is None:
                    break
                self._lines.feed(rest)
        return completed

    def _reading_lines(self) -> bool:
        """In a state that reads command or SASL lines (identity tests: enum hashing is slow)."""
        state = self.state
        return state is State.COMMAND or state is State.AUTH

    def _command(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = _COMMANDS.get(verb)
        bad_character = verb != "AUTH" and (b"\x00" in line or b"\r" in line)
        if handler is None or bad_character:
            self._out.record(CommandReceived(self._transcript(verb, text, arg), self._tls))
            if bad_character:
                self._error(R.S500_BAD_CHAR, "bad_character")
            else:
                self._error(R.S500_UNKNOWN, "unknown_command")
            return
        if verb != "AUTH":  # AUTH records its own, redacted, line
            self._out.record(CommandReceived(truncate(text), self._tls))
        handler(self, arg)

    def _transcript(self, verb: str, text: str, arg: str) -> str:
        """The redacted transcript form of a command line."""
        if verb == "AUTH":
            return _auth_transcript(*_split_auth(arg))
        if verb in _COMMANDS:
            return truncate(text)
        if verb in FOREIGN_VERBS:
            return redacted(verb, None, len(arg)) if arg else verb
        return f"<unrecognised, {len(text)} bytes>"

    def _line_too_long(self, line: LineTooLong) -> None:
        if self.state is State.AUTH and self._flow is not None:
            self._out.record(CommandReceived(redacted_line(line.nbytes), self._tls))
            self._finish_flow(self._flow, self._flow.fail_line())
        self._error(R.S500_LINE_TOO_LONG, "line_too_long")

    # --- errors and endings ---------------------------------------------------------------

    def _error(self, reply: bytes, reason: str | None) -> None:
        """A negative reply that counts toward ``limits.max_errors``."""
        if reason is not None:
            self._out.record(ProtocolError(reason, R.text(reply)))
        self._out.reply(reply)
        self._errors += 1
        if self._errors >= self._limits.max_errors:
            self._out.record(ProtocolError("too_many_errors", R.text(R.S421_TOO_MANY_ERRORS)))
            self._out.reply(R.S421_TOO_MANY_ERRORS)
            self._close()

    def _close(self) -> None:
        self._out.add(Close())
        self.state = State.CLOSED

    def _reset_transaction(self) -> None:
        self._mail = False
        self._rcpts = 0
        self._rejected = 0

    # --- HELO / EHLO / simple commands ----------------------------------------------------

    def _cmd_ehlo(self, arg: str) -> None:
        name = arg.strip()
        if not name:
            self._error(R.S501_SYNTAX_EHLO, "syntax")
            return
        self._out.record(ClientIdentified("ehlo", truncate(name)))
        self._greeted = True
        self._reset_transaction()
        mechs = mechanisms(self._tls)
        starttls = self._ctx.policy.offer_starttls() and not self._tls
        self._out.record(CapabilitiesSent(starttls, mechs, self._tls))
        self._out.reply(R.ehlo(self._ctx.hostname, self._limits.message_bytes, starttls, mechs))

    def _cmd_helo(self, arg: str) -> None:
        name = arg.strip()
        if not name:
            self._error(R.S501_SYNTAX_HELO, "syntax")
            return
        self._out.record(ClientIdentified("helo", truncate(name)))
        self._greeted = True
        self._reset_transaction()
        self._out.reply(R.helo(self._ctx.hostname))

    def _cmd_noop(self, arg: str) -> None:
        self._out.reply(R.S250_OK)

    def _cmd_rset(self, arg: str) -> None:
        if arg.strip():
            self._error(R.S501_SYNTAX_RSET, "syntax")
            return
        self._reset_transaction()
        self._out.reply(R.S250_OK)

    def _cmd_vrfy(self, arg: str) -> None:
        self._out.reply(R.S252_CANNOT_VRFY)

    def _cmd_expn(self, arg: str) -> None:
        self._error(R.S502_EXPN, None)

    def _cmd_help(self, arg: str) -> None:
        offered = self._ctx.policy.offer_starttls() and not self._tls
        self._out.reply(R.S214_HELP_STARTTLS if offered else R.S214_HELP)

    def _cmd_quit(self, arg: str) -> None:
        self._out.reply(R.S221_BYE)
        self._close()

    # --- STARTTLS -------------------------------------------------------------------------

    def _cmd_starttls(self, arg: str) -> None:
        policy = self._ctx.policy
        advertised = policy.offer_starttls() and not self._tls
        self._out.record(StarttlsRequested(advertised))
        if not advertised:
            reason = "already_tls" if self._tls else "not_advertised"
            self._refuse_starttls(R.S502_STARTTLS_NOT_OFFERED, reason)
            return
        if arg.strip():
            self._refuse_starttls(R.S501_SYNTAX_STARTTLS, "syntax")
            return
        action = policy.on_starttls()
        if action is StarttlsAction.REFUSE:
            self._out.record(StarttlsRefused("testcase", R.text(R.S454_TLS_NA)))
            self._out.reply(R.S454_TLS_NA)
            self._silence = True
            return
        rest = self._lines.take_rest()
        if rest:
            self._out.record(PipelinedAfterStarttls(len(rest)))
            for observation in AuthLineScanner(self._ctx, self._tls, "refused").scan(rest):
                self._out.record(observation)
        self._out.record(StarttlsAccepted())
        self._out.reply(R.S220_READY_TLS)
        if action is StarttlsAction.BREAK_HANDSHAKE:
            self._out.add(ReadClientHello())
            self._out.add(set_timer(self._limits.disrupted_seconds))
            self.state = State.CLIENT_HELLO
        else:
            self._out.add(StartTls())
            self.state = State.TLS_HANDSHAKE

    def _refuse_starttls(self, reply: bytes, reason: str) -> None:
        self._out.record(StarttlsRefused(reason, R.text(reply)))
        self._error(reply, None)

    def _enter_disrupted(self) -> Disrupted:
        scanner = AuthLineScanner(self._ctx, self._tls, "disrupted")
        self._disrupted = Disrupted(self._tls, self._limits.line_bytes, scanner, _KNOWN_VERBS)
        self.state = State.DISRUPTED
        return self._disrupted

    def _disrupt_session(self, line: bytes | LineTooLong) -> None:
        """t4: the first command inside TLS gets a cleartext 454 outside TLS.

        The line and whatever was pipelined behind it arrived inside TLS (an AUTH there is a
        TLS auth); ``SendRaw`` abandons the TLS session, so later bytes arrive as raw TCP.
        An over-long first line is not shown (as in IMAP and POP3)."""
        self._disrupt_next = False
        if isinstance(line, LineTooLong):
            line = b""
        else:
            text = line.decode("utf-8", "replace")
            verb, _, arg = text.partition(" ")
            self._out.record(CommandReceived(self._transcript(verb.upper(), text, arg), True))
        scanner = AuthLineScanner(self._ctx, True, "disrupted")
        for observation in scanner.scan(line + b"\n" + self._lines.take_rest()):
            self._out.record(observation)
        reply = R.S454_TLS_NA
        self._out.record(StarttlsDisrupted("session", 0, True, R.text(reply)))
        self._out.add(SendRaw(reply))
        self._out.add(set_timer(self._limits.disrupted_seconds))
        self._tls = False
        self._enter_disrupted()

    # --- AUTH -----------------------------------------------------------------------------

    def _cmd_auth(self, arg: str) -> None:
        mech, initial = _split_auth(arg)
        self._out.record(CommandReceived(_auth_transcript(mech, initial), self._tls))
        if not mech:
            self._error(R.S501_SYNTAX_AUTH, "syntax")
            return
        refusal = self._auth_refusal(mech)
        if refusal is not None:
            self._record_refused(mech, initial)
            self._error(refusal, "auth_refused")
            return
        flow = SaslFlow(mech, self._tls, self._ctx.authenticator, self._ctx.hostname)
        self._sasl_result(flow, flow.start(initial))

    def _auth_refusal(self, mech: str) -> bytes | None:
        if not self._greeted:
            return R.S503_HELO_FIRST
        if self._auth is not None:
            return R.S503_ALREADY_AUTH
        if self._mail:
            return R.S503_MAIL_IN_PROGRESS
        if not mechanism_allowed(mech, self._tls):
            return R.S504_AUTH_MECHANISM
        return None

    def _record_refused(self, mech: str, initial: str | None) -> None:
        """A refused AUTH still ends in one ``AuthAttempted``: its initial response may have
        carried a secret (in the clear, before TLS)."""
        if mech in RECOGNISED:
            flow = SaslFlow(mech, self._tls, self._ctx.authenticator, self._ctx.hostname)
            flow.start(initial)
            for observation in flow.records("refused"):
                self._out.record(observation)
            return
        label = mechanism_label(mech)
        self._out.record(AuthAttempted(label, "", None, self._tls, False, False, "refused"))

    def _sasl_line(self, line: bytes) -> None:
        flow = self._flow
        assert flow is not None
        text = line.decode("utf-8", "replace")
        shown = "*" if text.strip() == "*" else redacted_line(len(line))
        self._out.record(CommandReceived(shown, self._tls))
        self._sasl_result(flow, flow.respond(text))

    def _sasl_result(self, flow: SaslFlow, result: bytes | str) -> None:
        if isinstance(result, bytes):
            self._flow = flow
            self.state = State.AUTH
            self._out.reply(R.challenge(base64.b64encode(result)))
            return
        self._finish_flow(flow, result)
        if result == SUCCESS:
            self._auth = flow.decision
            self._out.reply(R.S235_AUTH_SUCCESS)
        elif result == FAILURE:
            self._auth_failed()
        elif result == CANCELLED:
            self._out.reply(R.S501_AUTH_ABORTED)
        else:
            self._error(R.S501_AUTH_DECODE, "sasl_malformed")

    def _finish_flow(self, flow: SaslFlow, result: str) -> None:
        self._flow = None
        self.state = State.COMMAND
        outcome = FAILURE if result == MALFORMED else result
        for observation in flow.records(outcome):
            self._out.record(observation)

    def _end_flow(self, outcome: str) -> None:
        """An exchange cut short (timeout, kick, peer gone) still gets its ``AuthAttempted``."""
        if self._flow is not None:
            self._finish_flow(self._flow, outcome)

    def _auth_failed(self) -> None:
        self._auth_failures += 1
        self._out.add(Send(R.S535_AUTH_INVALID, self._limits.auth_fail_delay))
        if self._auth_failures >= self._limits.max_auth_failures:
            self._out.record(
                ProtocolError("too_many_auth_failures", R.text(R.S421_TOO_MANY_ERRORS))
            )
            self._out.reply(R.S421_TOO_MANY_ERRORS)
            self._close()

    # --- mail transaction -----------------------------------------------------------------

    def _cmd_mail(self, arg: str) -> None:
        if not self._greeted:
            self._error(R.S503_HELO_FIRST, "bad_sequence")
        elif self._ctx.role is PortRole.SUBMISSION and self._auth is None:
            self._error(R.S530_AUTH_REQUIRED, None)
        elif self._mail:
            self._error(R.S503_NESTED_MAIL, "bad_sequence")
        elif (parsed := _path(arg, "FROM:")) is None:
            self._error(R.S501_SYNTAX_MAIL, "syntax")
        elif (bad := self._mail_parameters(parsed[1])) is not None:
            self._error(bad, "mail_parameter")
        else:
            self._mail = True
            self._rcpts = self._rejected = 0
            self._out.reply(R.S250_SENDER_OK)

    def _mail_parameters(self, params: list[str]) -> bytes | None:
        for param in params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE":
                size = ascii_number(value)
                if size is None:
                    return R.S501_SYNTAX_MAIL
                if size > self._limits.message_bytes:
                    return R.S552_TOO_BIG
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return R.S501_SYNTAX_MAIL
            elif key != "AUTH":
                return R.S555_MAIL_PARAMETER
        return None

    def _cmd_rcpt(self, arg: str) -> None:
        if not self._mail:
            self._error(R.S503_NEED_MAIL, "bad_sequence")
        elif (parsed := _path(arg, "TO:")) is None:
            self._error(R.S501_SYNTAX_RCPT, "syntax")
        elif self._rcpts >= MAX_RECIPIENTS:
            self._out.reply(R.S452_TOO_MANY_RCPTS)
        elif (
            self._ctx.role is PortRole.MX
            and self._auth is None
            and not self._local_recipient(parsed[0])
        ):
            self._rejected += 1
            self._error(R.S550_RELAY_DENIED, None)
        else:
            self._rcpts += 1
            self._out.reply(R.S250_RCPT_OK)

    def _local_recipient(self, address: str) -> bool:
        """An address of our own domain, or the bare ``postmaster`` (RFC 5321 4.5.1)."""
        address = address.lower()
        return address.endswith(self._domain_suffix) or address == "postmaster"

    def _cmd_data(self, arg: str) -> None:
        if arg.strip():
            self._error(R.S501_SYNTAX_DATA, "syntax")
        elif not self._mail:
            self._error(R.S503_NEED_MAIL, "bad_sequence")
        elif not self._rcpts:
            if self._rejected:
                self._error(R.S554_NO_VALID_RCPTS, None)
            else:
                self._error(R.S503_NEED_RCPT, "bad_sequence")
        else:
            self._out.reply(R.S354_START_DATA)
            self._body = DataBody()
            self.state = State.DATA

    def _feed_body(self, data: bytes) -> bytes | None:
        """Feed the body; on its end reply and return the bytes after it (pipelined commands)."""
        body = self._body
        assert body is not None
        rest = body.feed(data)
        limit = self._limits.message_bytes
        if rest is None:
            if body.nbytes > 2 * limit:  # far over the bound: stop reading at all
                self._error(R.S552_TOO_BIG, "message_too_large")
                self._close()
            return None
        self._body = None
        self.state = State.COMMAND
        if body.nbytes > limit:
            self._error(R.S552_TOO_BIG, "message_too_large")
        else:
            self._out.record(MessageReceived(body.nbytes, self._rcpts, self._tls))
            self._out.reply(R.S250_MESSAGE_OK)
        self._reset_transaction()
        return rest


_COMMANDS: dict[str, Handler] = {
    "EHLO": SmtpCore._cmd_ehlo,
    "HELO": SmtpCore._cmd_helo,
    "STARTTLS": SmtpCore._cmd_starttls,
    "AUTH": SmtpCore._cmd_auth,
    "MAIL": SmtpCore._cmd_mail,
    "RCPT": SmtpCore._cmd_rcpt,
    "DATA": SmtpCore._cmd_data,
    "RSET": SmtpCore._cmd_rset,
    "NOOP": SmtpCore._cmd_noop,
    "QUIT": SmtpCore._cmd_quit,
    "VRFY": SmtpCore._cmd_vrfy,
    "EXPN": SmtpCore._cmd_expn,
    "HELP": SmtpCore._cmd_help,
}
_KNOWN_VERBS: Final = frozenset(_COMMANDS) | FOREIGN_VERBS

_EVENTS: dict[type, Callable[[SmtpCore, Event], None]] = {
    Connected: SmtpCore._on_connected,
    DataReceived: SmtpCore._on_data,
    TlsEstablished: SmtpCore._on_tls_established,
    TlsFailed: SmtpCore._on_tls_failed,
    ClientHelloReceived: SmtpCore._on_client_hello,
    Timeout: SmtpCore._on_timeout,
    Closed: SmtpCore._on_closed,
    Kicked: SmtpCore._on_kicked,
}
