"""The POP3 core (RFC 1939, CAPA RFC 2449, STLS RFC 2595, SASL AUTH RFC 5034): sans-IO.

``Pop3Core(ctx).handle(event)`` returns the commands for one event, following
``docs/protocol-cores.md``. The maildrop is always empty: the server exists to see how a client
authenticates, not to deliver mail.

Shape of this file:
- replies are named constants (``ERR_TLS_TEMP``, ``OK_LOGGED_IN``, ...), without CRLF, as they
  are stored in observations;
- ``_VERBS`` is the command table: verb -> (handler, states where it is legal, transcript form);
- states: ``NEW`` (before the greeting), ``AUTHORIZATION``, ``SASL`` (inside an AUTH exchange),
  ``TRANSACTION``, ``HANDSHAKE`` (after ``StartTls``), ``CLIENT_HELLO`` (t2, after
  ``ReadClientHello``), ``DISRUPTED`` (t2/t4: no replies, only records), ``CLOSED``.

Secrets (PASS arguments, SASL responses, APOP digests) are never kept nor recorded: the
transcript shows ``<redacted, N bytes>``. A line that is not a known command may be a password
typed in the wrong place, so only a known verb of some protocol is ever shown from it.

Must not import: ``asyncio``, ``socket``, ``ssl``, ``mailtls.net``, ``mailtls.store``,
``mailtls.web``, nor the other cores.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from dataclasses import dataclass

from mailtls.observations import (
    AuthAttempted,
    CapabilitiesSent,
    CommandReceived,
    DataAfterDisruption,
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
from mailtls.protocols.sasl import (
    PRE_TLS_MECHANISMS,
    RECOGNISED,
    TLS_MECHANISMS,
    Challenge,
    Finished,
    SaslExchange,
    Step,
)
from mailtls.testcases import AfterTls, StarttlsAction

# --- replies (no CRLF: the form stored in observations) ---------------------------------------

OK_CAPA = "+OK Capability list follows"
OK_BEGIN_TLS = "+OK Begin TLS negotiation"
OK_USER = "+OK"
OK_LOGGED_IN = "+OK Logged in"
OK_MECHANISMS = "+OK"
OK_STAT = "+OK 0 0"
OK_LIST = "+OK 0 messages (0 octets)"
OK_UIDL = "+OK"
OK_NOOP = "+OK"
OK_RSET = "+OK"
OK_QUIT = "+OK Logging out"

ERR_TLS_TEMP = "-ERR TLS not available due to temporary reason"
ERR_STLS_NOT_ADVERTISED = "-ERR STLS not advertised"
ERR_TLS_ACTIVE = "-ERR TLS already active"
ERR_STLS_SYNTAX = "-ERR STLS takes no argument"
ERR_AUTH_FAILED = "-ERR [AUTH] Authentication failed"
ERR_AUTH_CANCELLED = "-ERR Authentication cancelled"
ERR_AUTH_MALFORMED = "-ERR Invalid SASL response"
ERR_AUTH_MECHANISM = "-ERR Unsupported authentication mechanism"
ERR_AUTH_SYNTAX = "-ERR Syntax: AUTH [mechanism [initial-response]]"
ERR_APOP = "-ERR APOP not available"
ERR_USER_SYNTAX = "-ERR Syntax: USER name"
ERR_PASS_SYNTAX = "-ERR Syntax: PASS password"
ERR_NO_USER = "-ERR No username given"
ERR_NO_SUCH_MESSAGE = "-ERR no such message"
ERR_MESSAGE_NUMBER = "-ERR Invalid message number"
ERR_TOP_SYNTAX = "-ERR Syntax: TOP message lines"
ERR_UNKNOWN = "-ERR Unknown command"
ERR_WRONG_STATE = "-ERR Command not valid in this state"
ERR_BAD_CHARACTER = "-ERR NUL character in command"
ERR_LINE_TOO_LONG = "-ERR Line too long"
ERR_TOO_MANY_ERRORS = "-ERR Too many errors, closing connection"
ERR_INACTIVITY = "-ERR Disconnected for inactivity"
KICKED_PREFIX = "-ERR [SYS/TEMP] "

USER_MECHANISM = "USER"  # the mechanism name of USER/PASS in AuthAttempted (RFC 2449 CAPA name)

# SASL responses (initial response counted) after which the secret-carrying message was sent
_SECRET_AT = {"PLAIN": 1, "LOGIN": 2, "CRAM-MD5": 1, "XOAUTH2": 1, "OAUTHBEARER": 1}
_OAUTH = frozenset({"XOAUTH2", "OAUTHBEARER"})
_KNOWN_MECHANISMS = RECOGNISED | {
    "ANONYMOUS",
    "DIGEST-MD5",
    "EXTERNAL",
    "GSSAPI",
    "NTLM",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
}
# verbs of other protocols that may be shown when they reach this port (args stay redacted)
_FOREIGN_VERBS = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "STARTTLS", "LAST", "XTND", "HELP", "GET", "POST"}
    | {"HEAD", "PUT", "OPTIONS", "CONNECT", "CAPABILITY", "LOGIN", "LOGOUT", "AUTHENTICATE"}
)
_TLS_RECORD_TYPES = frozenset(range(0x14, 0x18))  # change_cipher_spec .. application_data
_NOBODY = AuthDecision(ok=False, display="", code=None)


class State(enum.Enum):
    NEW = "new"
    AUTHORIZATION = "authorization"
    SASL = "sasl"
    TRANSACTION = "transaction"
    HANDSHAKE = "handshake"
    CLIENT_HELLO = "client_hello"
    DISRUPTED = "disrupted"
    CLOSED = "closed"


_READING = frozenset({State.AUTHORIZATION, State.SASL, State.TRANSACTION})
_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS


def line(text: str) -> bytes:
    """A reply line on the wire."""
    return text.encode("utf-8") + b"\r\n"


def _multiline(first: str, items: list[str]) -> bytes:
    body = b"".join(line("." + i if i.startswith(".") else i) for i in items)
    return line(first) + body + b".\r\n"


def _redacted(head: str, nbytes: int) -> str:
    return f"{head} <redacted, {nbytes} bytes>" if head else f"<redacted, {nbytes} bytes>"


def _mechanism_label(mechanism: str) -> str:
    """A client-supplied mechanism name is shown only when it is a real SASL mechanism."""
    return mechanism if mechanism in _KNOWN_MECHANISMS else "UNKNOWN"


def _looks_like_tls(data: bytes) -> bool:
    return bool(data) and data[0] in _TLS_RECORD_TYPES


@dataclass(frozen=True, slots=True)
class _Line:
    """One parsed command line: ``verb`` upper-cased, ``sent_verb`` as sent, ``arg`` after the
    first space (decoded), ``raw_arg`` its bytes."""

    verb: str
    sent_verb: str
    arg: str
    raw_arg: bytes
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> _Line:
        head, _, raw_arg = raw.partition(b" ")
        sent = decode(head)
        return cls(sent.upper(), sent, decode(raw_arg), raw_arg, raw)

    @property
    def args(self) -> list[str]:
        return self.arg.split()


def _safe_verb(raw: bytes) -> str:
    """The verb of a plaintext line if it is a known command of some protocol, else ``""``."""
    verb = _Line.parse(raw.split(b"\n", 1)[0].rstrip(b"\r")).verb
    return verb if verb in _VERBS or verb in _FOREIGN_VERBS else ""


class Pop3Core:
    """One POP3 connection. See the module docstring and ``docs/protocol-cores.md``."""

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._limits = ctx.limits
        self._state = State.NEW
        self._tls = False
        self._buf = LineBuffer(ctx.limits.line_bytes)
        self._in_line = False  # bytes of an incomplete line arrived (its deadline is armed)
        self._silence = False  # t3: STLS was refused and the client has sent nothing since
        self._disrupt_pending = False  # t4: the next command inside TLS gets the cleartext line
        self._errors = 0
        self._auth_failures = 0
        self._user: AuthDecision | None = None  # after USER, until PASS
        self._sasl: SaslExchange | None = None
        self._sasl_responses = 0
        self._sasl_user: AuthDecision | None = None
        self._last_decision: tuple[str, AuthDecision] | None = None

    @property
    def state(self) -> State:
        return self._state

    # --- events --------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        match event:
            case Connected(tls=info):
                return self._on_connected(info)
            case DataReceived(data=data):
                return self._on_data(data)
            case TlsEstablished(info=info):
                return self._on_tls_established(info.version, info.cipher)
            case TlsFailed(reason=reason):
                return self._on_tls_failed(reason)
            case ClientHelloReceived(nbytes=nbytes, looks_like_tls=looks):
                return self._on_client_hello(nbytes, looks)
            case Timeout():
                return self._on_timeout()
            case Closed():
                return self._on_closed()
            case Kicked(reason=reason):
                return self._on_kicked(reason)
        return []

    def _on_connected(self, info: TlsInfo | None) -> list[Command]:
        if self._state is not State.NEW:
            return []
        out: list[Command] = []
        if info is not None:  # implicit TLS: the handshake is done
            self._tls = True
            out.append(Record(TlsStarted(info.version, info.cipher, implicit=True)))
            self._disrupt_pending = self._disrupts_after_tls()
        self._state = State.AUTHORIZATION
        greeting = f"+OK {self._ctx.hostname} mailtls POP3 ready"
        return [*out, Send(line(greeting)), SetTimer(self._limits.idle_seconds)]

    def _on_data(self, data: bytes) -> list[Command]:
        if not data:
            return []
        if self._state is State.DISRUPTED:
            return self._after_disruption(data)
        if self._state not in _READING:
            return []  # shell bug or a race with close: nothing to answer
        self._silence = False
        self._buf.feed(data)
        out: list[Command] = []
        completed = False
        while self._state in _READING:
            item = self._buf.next_line()
            if item is None:
                break
            completed = True
            out += self._on_item(item)
        if self._state in _READING:
            out += self._timer(completed, partial=not data.endswith(b"\n"))
        return out

    def _timer(self, completed: bool, partial: bool) -> list[Command]:
        """Idle timer after replies; an absolute deadline from the first byte of a partial line;
        the t3 silence bound when the last thing that happened was the refusal."""
        started = partial and (completed or not self._in_line)
        self._in_line = partial
        if started:
            self._silence = False
            return [SetTimer(self._limits.line_seconds)]
        if self._silence:
            return [SetTimer(self._limits.silence_after_refusal)]
        if completed:
            return [SetTimer(self._limits.idle_seconds)]
        return []

    def _on_item(self, item: bytes | LineTooLong) -> list[Command]:
        self._silence = False
        if self._disrupt_pending:
            return self._disrupt_session(item)
        if isinstance(item, LineTooLong):
            return self._on_too_long(item)
        if self._state is State.SASL:
            return self._sasl_line(item)
        return self._command(_Line.parse(item))

    def _on_tls_established(self, version: str, cipher: str) -> list[Command]:
        if self._state is not State.HANDSHAKE:
            return []
        self._tls = True
        self._state = State.AUTHORIZATION
        self._user = None  # forget all pre-TLS state
        self._buf = LineBuffer(self._limits.line_bytes)
        self._in_line = False
        self._disrupt_pending = self._disrupts_after_tls()
        return [
            Record(TlsStarted(version, cipher, implicit=False)),
            SetTimer(self._limits.idle_seconds),
        ]

    def _on_tls_failed(self, reason: str) -> list[Command]:
        if self._state is not State.HANDSHAKE:
            return []
        self._state = State.CLOSED
        return [Record(TlsHandshakeFailed(truncate(reason))), Close()]

    def _on_client_hello(self, nbytes: int, looks_like_tls: bool) -> list[Command]:
        if self._state is not State.CLIENT_HELLO:
            return []
        self._state = State.DISRUPTED
        disrupted = StarttlsDisrupted("handshake", nbytes, looks_like_tls, ERR_TLS_TEMP)
        return [
            Record(disrupted),
            Send(line(ERR_TLS_TEMP)),
            SetTimer(self._limits.disrupted_seconds),
        ]

    def _on_timeout(self) -> list[Command]:
        state = self._state
        if state is State.CLOSED:
            return []
        if state not in _READING or self._silence:
            self._state = State.CLOSED
            return [Close()]  # disrupted, mid-handshake, or t3 silence: no reply
        out = self._abandon_sasl()
        self._state = State.CLOSED
        return [*out, Send(line(ERR_INACTIVITY)), Close()]

    def _on_closed(self) -> list[Command]:
        out = self._abandon_sasl()
        self._state = State.CLOSED
        return out

    def _on_kicked(self, reason: str) -> list[Command]:
        state = self._state
        if state is State.CLOSED:
            return []
        reason = truncate("".join(c if c.isprintable() else " " for c in reason))
        out: list[Command] = [*self._abandon_sasl(), Record(SessionKicked(reason))]
        self._state = State.CLOSED
        if state in _READING:
            out.append(Send(line(KICKED_PREFIX + reason)))
        return [*out, Close()]

    # --- commands ------------------------------------------------------------------------

    def _command(self, cmd: _Line) -> list[Command]:
        spec = _VERBS.get(cmd.verb)
        if spec is None:
            record = Record(CommandReceived(self._opaque(cmd), self._tls))
            return [record, *self._error("unknown_command", ERR_UNKNOWN)]
        record = Record(CommandReceived(truncate(spec.transcript(self, cmd)), self._tls))
        if b"\x00" in cmd.raw and not spec.secret:
            return [record, *self._error("nul_byte", ERR_BAD_CHARACTER)]
        if self._state not in spec.states:
            return [record, *self._error("wrong_state", ERR_WRONG_STATE)]
        return [record, *spec.run(self, cmd)]

    def _capa(self, cmd: _Line) -> list[Command]:
        offered = self._starttls_advertised()
        mechanisms: tuple[str, ...] = ()
        items: list[str] = []
        if self._state is State.AUTHORIZATION:
            mechanisms = self._mechanisms()
            items += ["USER", "SASL " + " ".join(mechanisms)]
            if offered:
                items.append("STLS")
        items += ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        items.append("IMPLEMENTATION mailtls")
        sent = CapabilitiesSent(starttls_offered=offered, auth_mechanisms=mechanisms, tls=self._tls)
        return [Record(sent), Send(_multiline(OK_CAPA, items))]

    def _stls(self, cmd: _Line) -> list[Command]:
        advertised = self._starttls_advertised()
        out: list[Command] = [Record(StarttlsRequested(advertised=advertised))]
        if not advertised:
            reason, reply = (
                ("already_tls", ERR_TLS_ACTIVE)
                if self._tls
                else ("not_advertised", ERR_STLS_NOT_ADVERTISED)
            )
            return [*out, Record(StarttlsRefused(reason, reply)), *self._error_reply(reply)]
        if cmd.arg.strip():
            refused = StarttlsRefused("syntax", ERR_STLS_SYNTAX)
            return [*out, Record(refused), *self._error_reply(ERR_STLS_SYNTAX)]
        action = self._ctx.policy.on_starttls()
        if action is StarttlsAction.REFUSE:
            self._silence = True
            refused = StarttlsRefused("testcase", ERR_TLS_TEMP)
            return [*out, Record(refused), Send(line(ERR_TLS_TEMP))]
        out += [Record(StarttlsAccepted()), Send(line(OK_BEGIN_TLS))]
        pipelined = self._buf.take_rest()
        self._in_line = False
        if pipelined:
            out.append(Record(PipelinedAfterStarttls(len(pipelined))))
        if action is StarttlsAction.BREAK_HANDSHAKE:
            self._state = State.CLIENT_HELLO
            out.append(ReadClientHello())
        else:
            self._state = State.HANDSHAKE
            out.append(StartTls())
        return [*out, SetTimer(self._limits.line_seconds)]  # backstop; the shell has a deadline

    def _user_cmd(self, cmd: _Line) -> list[Command]:
        name = cmd.arg.strip()
        if not name:
            return self._error("syntax", ERR_USER_SYNTAX)
        decision = self._decide(name)
        self._user = decision
        sent = UsernameSent(decision.display, decision.code, self._tls)
        return [Record(sent), Send(line(OK_USER))]

    def _pass(self, cmd: _Line) -> list[Command]:
        if not cmd.raw_arg:
            return self._error("syntax", ERR_PASS_SYNTAX)
        decision, self._user = self._user, None
        if decision is None:
            attempt = self._attempt(USER_MECHANISM, _NOBODY, True, "refused")
            return [Record(attempt), *self._error("no_user", ERR_NO_USER)]
        return self._finish_auth(USER_MECHANISM, decision, secret_sent=True)

    def _apop(self, cmd: _Line) -> list[Command]:
        args = cmd.args
        decision = self._decide(args[0]) if args else _NOBODY
        attempt = self._attempt("APOP", decision, len(args) > 1, "refused")
        return [Record(attempt), *self._error_reply(ERR_APOP)]

    def _auth(self, cmd: _Line) -> list[Command]:
        args = cmd.args
        if not args:
            return [Send(_multiline(OK_MECHANISMS, list(self._mechanisms())))]
        if len(args) > 2:
            return self._error("syntax", ERR_AUTH_SYNTAX)
        mechanism = args[0].upper()
        initial = args[1] if len(args) > 1 else None
        if mechanism not in self._mechanisms() and mechanism not in _OAUTH:
            attempt = self._attempt(_mechanism_label(mechanism), _NOBODY, False, "refused")
            return [Record(attempt), *self._error_reply(ERR_AUTH_MECHANISM)]
        self._state = State.SASL
        self._sasl = SaslExchange(mechanism, self._ctx.hostname)
        self._sasl_responses = 0 if initial is None else 1
        self._sasl_user = None
        return self._sasl_step(self._sasl.start(initial))

    def _stat(self, cmd: _Line) -> list[Command]:
        return [Send(line(OK_STAT))]

    def _list(self, cmd: _Line) -> list[Command]:
        if not cmd.args:
            return [Send(_multiline(OK_LIST, []))]
        return self._no_message(cmd.args, 1)

    def _uidl(self, cmd: _Line) -> list[Command]:
        if not cmd.args:
            return [Send(_multiline(OK_UIDL, []))]
        return self._no_message(cmd.args, 1)

    def _retr(self, cmd: _Line) -> list[Command]:
        return self._no_message(cmd.args, 1)

    def _top(self, cmd: _Line) -> list[Command]:
        args = cmd.args
        if len(args) != 2 or not args[1].isdigit():
            return self._error("syntax", ERR_TOP_SYNTAX)
        return self._no_message(args, 2)

    def _noop(self, cmd: _Line) -> list[Command]:
        return [Send(line(OK_NOOP))]

    def _rset(self, cmd: _Line) -> list[Command]:
        return [Send(line(OK_RSET))]

    def _quit(self, cmd: _Line) -> list[Command]:
        # In TRANSACTION state this is the UPDATE state: nothing was marked deleted.
        self._state = State.CLOSED
        return [Send(line(OK_QUIT)), Close()]

    def _no_message(self, args: list[str], count: int) -> list[Command]:
        """The maildrop is empty: a well-formed message number names no message."""
        if len(args) != count or not args[0].isdigit() or int(args[0]) < 1:
            return self._error("syntax", ERR_MESSAGE_NUMBER)
        return [Send(line(ERR_NO_SUCH_MESSAGE))]

    # --- SASL ----------------------------------------------------------------------------

    def _sasl_line(self, raw: bytes) -> list[Command]:
        text = decode(raw).strip()
        shown = "*" if text == "*" else _redacted("", len(raw.strip()))
        out: list[Command] = [Record(CommandReceived(shown, self._tls))]
        assert self._sasl is not None
        if text != "*":
            self._sasl_responses += 1
        return [*out, *self._sasl_step(self._sasl.respond(text))]

    def _sasl_step(self, step: Step) -> list[Command]:
        exchange = self._sasl
        assert exchange is not None
        mechanism = exchange.mechanism
        if isinstance(step, Challenge):
            if step.username_so_far is not None:
                self._sasl_user = self._decide(step.username_so_far)
            return [Send(b"+ " + base64.b64encode(step.data) + b"\r\n")]
        if isinstance(step, Finished):
            self._end_sasl()
            decision = self._decide(step.username)
            return self._finish_auth(mechanism, decision, step.secret_sent, step.always_fail)
        if step.reason == "cancelled":
            out = self._sasl_records("cancelled")
            self._end_sasl()
            return [*out, Send(line(ERR_AUTH_CANCELLED))]
        out = self._sasl_records("failure")
        self._end_sasl()
        return [*out, *self._error("sasl_malformed", ERR_AUTH_MALFORMED)]

    def _sasl_records(self, outcome: str) -> list[Command]:
        """The records that end an unfinished exchange (cancel, malformed, close, timeout)."""
        exchange = self._sasl
        assert exchange is not None
        mechanism = exchange.mechanism
        secret_sent = self._sasl_responses >= _SECRET_AT.get(mechanism, 1)
        decision = self._sasl_user or _NOBODY
        out: list[Command] = []
        if self._sasl_user is not None and not secret_sent:
            out.append(Record(UsernameSent(decision.display, decision.code, self._tls)))
        out.append(Record(self._attempt(mechanism, decision, secret_sent, outcome)))
        return out

    def _end_sasl(self) -> None:
        self._sasl = None
        self._sasl_user = None
        self._sasl_responses = 0
        if self._state is State.SASL:
            self._state = State.AUTHORIZATION

    def _abandon_sasl(self) -> list[Command]:
        if self._state is not State.SASL or self._sasl is None:
            return []
        out = self._sasl_records("cancelled")
        self._end_sasl()
        return out

    # --- authentication outcome ----------------------------------------------------------

    def _finish_auth(
        self, mechanism: str, decision: AuthDecision, secret_sent: bool, always_fail: bool = False
    ) -> list[Command]:
        ok = decision.ok and not always_fail
        attempt = self._attempt(mechanism, decision, secret_sent, "success" if ok else "failure")
        if ok:
            self._state = State.TRANSACTION
            return [Record(attempt), Send(line(OK_LOGGED_IN))]
        self._state = State.AUTHORIZATION
        self._auth_failures += 1
        out: list[Command] = [
            Record(attempt),
            Send(line(ERR_AUTH_FAILED), delay=self._limits.auth_fail_delay),
        ]
        if self._auth_failures >= self._limits.max_auth_failures:
            self._state = State.CLOSED
            out.append(Close())
        return out

    def _attempt(
        self, mechanism: str, decision: AuthDecision, secret_sent: bool, outcome: str
    ) -> AuthAttempted:
        return AuthAttempted(
            mechanism=mechanism,
            username=decision.display,
            code=decision.code,
            tls=self._tls,
            secret_sent=secret_sent,
            secret_in_clear=secret_sent and not self._tls,
            outcome=outcome,
        )

    def _decide(self, username: str) -> AuthDecision:
        """Ask the authenticator once per username (transcript and handler both need it)."""
        last = self._last_decision
        if last is not None and last[0] == username:
            return last[1]
        decision = self._ctx.authenticator(username)
        self._last_decision = (username, decision)
        return decision

    # --- t2/t4 disruption ----------------------------------------------------------------

    def _disrupt_session(self, item: bytes | LineTooLong) -> list[Command]:
        """t4: record the first command inside TLS, answer it outside TLS in cleartext."""
        self._disrupt_pending = False
        out: list[Command] = []
        if isinstance(item, bytes):
            cmd = _Line.parse(item)
            spec = _VERBS.get(cmd.verb)
            shown = truncate(spec.transcript(self, cmd)) if spec else self._opaque(cmd)
            out.append(Record(CommandReceived(shown, self._tls)))
            out += self._secret_records(item)
        out += self._disrupted_lines()  # pipelined behind it, still inside TLS
        self._state = State.DISRUPTED
        self._tls = False  # the shell abandons the TLS session with the raw write
        return [
            *out,
            Record(StarttlsDisrupted("session", 0, True, ERR_TLS_TEMP)),
            SendRaw(line(ERR_TLS_TEMP)),
            SetTimer(self._limits.disrupted_seconds),
        ]

    def _after_disruption(self, data: bytes) -> list[Command]:
        """No replies: record each chunk, and the credentials plaintext lines carry."""
        tls_like = _looks_like_tls(data)
        verb = "" if tls_like else _safe_verb(data)
        out: list[Command] = [Record(DataAfterDisruption(len(data), tls_like, verb))]
        if not tls_like:
            self._buf.feed(data)
            out += self._disrupted_lines()
        return out

    def _disrupted_lines(self) -> list[Command]:
        out: list[Command] = []
        while (item := self._buf.next_line()) is not None:
            if isinstance(item, bytes):
                out += self._secret_records(item)
        return out

    def _secret_records(self, raw: bytes) -> list[Command]:
        """Credentials in a line that gets no reply (t4 first command, disrupted state)."""
        cmd = _Line.parse(raw)
        if cmd.verb == "USER" and cmd.arg.strip():
            self._user = decision = self._decide(cmd.arg.strip())
            return [Record(UsernameSent(decision.display, decision.code, self._tls))]
        if cmd.verb == "PASS" and cmd.raw_arg:
            decision = self._user or _NOBODY
            return [Record(self._attempt(USER_MECHANISM, decision, True, "disrupted"))]
        if cmd.verb == "AUTH" and len(cmd.args) == 2:
            return self._initial_response_records(cmd.args[0].upper(), cmd.args[1])
        return []

    def _initial_response_records(self, mechanism: str, initial: str) -> list[Command]:
        if mechanism not in RECOGNISED:
            return []
        step = SaslExchange(mechanism, self._ctx.hostname).start(initial)
        username = step.username_so_far if isinstance(step, Challenge) else step.username
        decision = self._decide(username) if username else _NOBODY
        if _SECRET_AT[mechanism] <= 1:
            return [Record(self._attempt(mechanism, decision, True, "disrupted"))]
        if username:
            return [Record(UsernameSent(decision.display, decision.code, self._tls))]
        return []

    # --- helpers -------------------------------------------------------------------------

    def _on_too_long(self, item: LineTooLong) -> list[Command]:
        out: list[Command] = [Record(CommandReceived(_redacted("", item.nbytes), self._tls))]
        if self._state is State.SASL:
            self._sasl_responses += 1
            out += self._sasl_records("failure")
            self._end_sasl()
        return [*out, *self._error("line_too_long", ERR_LINE_TOO_LONG)]

    def _error(self, reason: str, reply: str) -> list[Command]:
        return [Record(ProtocolError(reason, reply)), *self._error_reply(reply)]

    def _error_reply(self, reply: str) -> list[Command]:
        """Send an error reply; past the error budget, a final line and ``Close``."""
        self._errors += 1
        out: list[Command] = [Send(line(reply))]
        if self._errors >= self._limits.max_errors:
            self._state = State.CLOSED
            final = ProtocolError("too_many_errors", ERR_TOO_MANY_ERRORS)
            out += [Record(final), Send(line(ERR_TOO_MANY_ERRORS)), Close()]
        return out

    def _opaque(self, cmd: _Line) -> str:
        """Transcript of a line that is not a POP3 command: never show what may be a secret."""
        if cmd.verb in _VERBS or cmd.verb in _FOREIGN_VERBS:
            return _redacted(cmd.sent_verb, len(cmd.raw_arg)) if cmd.raw_arg else cmd.sent_verb
        return _redacted("", len(cmd.raw))

    def _mechanisms(self) -> tuple[str, ...]:
        return TLS_MECHANISMS if self._tls else PRE_TLS_MECHANISMS

    def _starttls_advertised(self) -> bool:
        return (
            self._ctx.policy.offer_starttls()
            and not self._tls
            and self._state is State.AUTHORIZATION
        )

    def _disrupts_after_tls(self) -> bool:
        return self._ctx.policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND

    # --- transcript forms ----------------------------------------------------------------

    def _show_plain(self, cmd: _Line) -> str:
        return decode(cmd.raw)

    def _show_user(self, cmd: _Line) -> str:
        name = cmd.arg.strip()
        return f"{cmd.sent_verb} {self._decide(name).display}" if name else cmd.sent_verb

    def _show_secret(self, cmd: _Line) -> str:
        return _redacted(cmd.sent_verb, len(cmd.raw_arg)) if cmd.raw_arg else cmd.sent_verb

    def _show_apop(self, cmd: _Line) -> str:
        args = cmd.args
        if not args:
            return cmd.sent_verb
        head = f"{cmd.sent_verb} {self._decide(args[0]).display}"
        secret = cmd.raw_arg.lstrip().partition(b" ")[2]
        return _redacted(head, len(secret)) if secret else head

    def _show_auth(self, cmd: _Line) -> str:
        args = cmd.args
        if not args:
            return cmd.sent_verb
        head = f"{cmd.sent_verb} {_mechanism_label(args[0].upper())}"
        initial = cmd.raw_arg.lstrip().partition(b" ")[2].strip()
        return _redacted(head, len(initial)) if initial else head


@dataclass(frozen=True, slots=True)
class _Verb:
    """One row of the command table."""

    run: Callable[[Pop3Core, _Line], list[Command]]
    states: frozenset[State]
    transcript: Callable[[Pop3Core, _Line], str] = Pop3Core._show_plain
    secret: bool = False  # the argument is opaque (may hold any byte, NUL included)


_VERBS: dict[str, _Verb] = {
    "CAPA": _Verb(Pop3Core._capa, _BOTH),
    "STLS": _Verb(Pop3Core._stls, _BOTH),
    "USER": _Verb(Pop3Core._user_cmd, _AUTH, Pop3Core._show_user),
    "PASS": _Verb(Pop3Core._pass, _AUTH, Pop3Core._show_secret, secret=True),
    "APOP": _Verb(Pop3Core._apop, _AUTH, Pop3Core._show_apop, secret=True),
    "AUTH": _Verb(Pop3Core._auth, _AUTH, Pop3Core._show_auth, secret=True),
    "STAT": _Verb(Pop3Core._stat, _TRANS),
    "LIST": _Verb(Pop3Core._list, _TRANS),
    "UIDL": _Verb(Pop3Core._uidl, _TRANS),
    "RETR": _Verb(Pop3Core._retr, _TRANS),
    "DELE": _Verb(Pop3Core._retr, _TRANS),
    "TOP": _Verb(Pop3Core._top, _TRANS),
    "NOOP": _Verb(Pop3Core._noop, _TRANS),
    "RSET": _Verb(Pop3Core._rset, _TRANS),
    "QUIT": _Verb(Pop3Core._quit, _BOTH),
}
