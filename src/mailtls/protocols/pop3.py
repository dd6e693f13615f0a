"""The POP3 core (RFC 1939, CAPA RFC 2449, STLS RFC 2595, SASL AUTH RFC 5034): sans-IO.

``Pop3Core(ctx).handle(event)`` returns the commands for one event, following
``docs/protocol-cores.md``. The maildrop is always empty: the server exists to see how a client
authenticates, not to deliver mail.

Shape of this file:
- replies are named constants (``ERR_TLS_TEMP``, ``OK_LOGGED_IN``, ...) without CRLF, the form
  stored in observations; ``line(text)`` gives the wire form;
- ``_VERBS`` is the command table: verb -> handler, the states where it is legal, and how the
  line appears in the transcript;
- states: ``NEW`` (before the greeting), ``AUTHORIZATION``, ``SASL`` (inside an AUTH exchange),
  ``TRANSACTION``, ``HANDSHAKE`` (after ``StartTls``), ``CLIENT_HELLO`` (t2, after
  ``ReadClientHello``), ``DISRUPTED`` (t2/t4: ``common.Disrupted`` records, nothing is
  answered), ``CLOSED``;
- ``CredentialScanner`` finds USER/PASS/AUTH credentials in lines that get no reply (pipelined
  after STLS, the t4 first command, the disrupted state).

Secrets (PASS arguments, SASL responses, APOP digests) are never kept nor recorded: the
transcript shows ``<redacted, N bytes>``. A line that is not a POP3 command may be a password
typed in the wrong place, so only a known verb of some protocol is ever shown from it.

Imports only ``mailtls.observations``, ``mailtls.testcases`` and sibling modules (``base``,
``common``, ``sasl``). Must not import ``asyncio``, ``socket``, ``ssl``, ``mailtls.net``,
``mailtls.store``, ``mailtls.web``, nor the other cores.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mailtls.observations import (
    AuthAttempted,
    CapabilitiesSent,
    CommandReceived,
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
    SUCCESS,
    Disrupted,
    SaslFlow,
    ascii_number,
    input_timer,
    mechanism_allowed,
    mechanism_label,
    mechanisms,
    redacted_line,
)
from mailtls.protocols.sasl import RECOGNISED
from mailtls.testcases import AfterTls, StarttlsAction

# --- replies (no CRLF: the form stored in observations) ---------------------------------------

OK_CAPA: Final = "+OK Capability list follows"
OK_BEGIN_TLS: Final = "+OK Begin TLS negotiation"
OK_USER: Final = "+OK"
OK_LOGGED_IN: Final = "+OK Logged in"
OK_MECHANISMS: Final = "+OK"
OK_STAT: Final = "+OK 0 0"
OK_LIST: Final = "+OK 0 messages (0 octets)"
OK_UIDL: Final = "+OK"
OK_NOOP: Final = "+OK"
OK_RSET: Final = "+OK"
OK_QUIT: Final = "+OK Logging out"

ERR_TLS_TEMP: Final = "-ERR TLS not available due to temporary reason"
ERR_STLS_NOT_ADVERTISED: Final = "-ERR STLS not advertised"
ERR_TLS_ACTIVE: Final = "-ERR TLS already active"
ERR_STLS_SYNTAX: Final = "-ERR STLS takes no argument"
ERR_AUTH_FAILED: Final = "-ERR [AUTH] Authentication failed"
ERR_AUTH_CANCELLED: Final = "-ERR Authentication cancelled"
ERR_AUTH_MALFORMED: Final = "-ERR Invalid SASL response"
ERR_AUTH_MECHANISM: Final = "-ERR Unsupported authentication mechanism"
ERR_AUTH_SYNTAX: Final = "-ERR Syntax: AUTH [mechanism [initial-response]]"
ERR_APOP: Final = "-ERR APOP not available"
ERR_USER_SYNTAX: Final = "-ERR Syntax: USER name"
ERR_PASS_SYNTAX: Final = "-ERR Syntax: PASS password"
ERR_NO_USER: Final = "-ERR No username given"
ERR_NO_SUCH_MESSAGE: Final = "-ERR no such message"
ERR_MESSAGE_NUMBER: Final = "-ERR Invalid message number"
ERR_TOP_SYNTAX: Final = "-ERR Syntax: TOP message lines"
ERR_UNKNOWN: Final = "-ERR Unknown command"
ERR_WRONG_STATE: Final = "-ERR Command not valid in this state"
ERR_BAD_CHARACTER: Final = "-ERR NUL character in command"
ERR_LINE_TOO_LONG: Final = "-ERR Line too long"
ERR_TOO_MANY_ERRORS: Final = "-ERR Too many errors, closing connection"
ERR_INACTIVITY: Final = "-ERR Disconnected for inactivity"
KICKED_PREFIX: Final = "-ERR [SYS/TEMP] "


def greeting(hostname: str) -> str:
    """No APOP timestamp: APOP is a separate test case."""
    return f"+OK {hostname} mailtls POP3 ready"


def kicked(reason: str) -> str:
    return KICKED_PREFIX + reason


USER_MECHANISM: Final = "USER"  # USER/PASS in AuthAttempted (its RFC 2449 CAPA name)
CAPABILITIES: Final = ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING")
IMPLEMENTATION: Final = "IMPLEMENTATION mailtls"

# verbs of other protocols shown by name when they reach this port (their arguments redacted)
FOREIGN_VERBS: Final = frozenset(
    {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "STARTTLS", "LAST", "XTND", "HELP", "CAPABILITY",
     "LOGIN", "LOGOUT", "AUTHENTICATE", "GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT"}
)  # fmt: skip
_NOBODY: Final = AuthDecision(ok=False, display="", code=None)


class State(enum.Enum):
    NEW = "new"
    AUTHORIZATION = "authorization"
    SASL = "sasl"
    TRANSACTION = "transaction"
    HANDSHAKE = "handshake"
    CLIENT_HELLO = "client_hello"
    DISRUPTED = "disrupted"
    CLOSED = "closed"


_READING: Final = frozenset({State.AUTHORIZATION, State.SASL, State.TRANSACTION})
_AUTH: Final = frozenset({State.AUTHORIZATION})
_TRANS: Final = frozenset({State.TRANSACTION})
_BOTH: Final = _AUTH | _TRANS


def line(text: str) -> bytes:
    """A reply line on the wire."""
    return text.encode("utf-8") + b"\r\n"


def multiline(first: str, items: list[str]) -> bytes:
    """A multi-line response (RFC 1939 §3): dot-stuffed items, then the ``.`` line."""
    body = b"".join(line("." + i if i.startswith(".") else i) for i in items)
    return line(first) + body + b".\r\n"


def _redacted(head: str, nbytes: int) -> str:
    return f"{head} {redacted_line(nbytes)}"


@dataclass(frozen=True, slots=True)
class _Line:
    """One command line: ``verb`` upper-cased, ``sent_verb`` as sent, ``arg`` everything after
    the first space (decoded), ``raw_arg`` its bytes (PASS arguments may contain spaces)."""

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


class CredentialScanner:
    """Finds credentials in POP3 lines that get no reply (pipelined after STLS, the t4 first
    command, the disrupted state): ``USER``, ``PASS``, ``AUTH <mech> <initial>`` and the SASL
    lines after it. Implements ``common.SecretScanner``; ``user`` carries a USER's name across
    (in memory only, for the ``PASS`` that follows)."""

    __slots__ = ("_ctx", "_flow", "_outcome", "_tls", "user")

    def __init__(
        self, ctx: SessionContext, tls: bool, outcome: str, user: str | None = None
    ) -> None:
        self._ctx = ctx
        self._tls = tls
        self._outcome = outcome
        self._flow: SaslFlow | None = None
        self.user = user

    def line(self, line: bytes) -> list[Observation]:
        if self._flow is not None:
            if isinstance(self._flow.respond(decode(line)), bytes):
                return []
            return self.finish()
        cmd = _Line.parse(line)
        if cmd.verb == "USER" and cmd.arg.strip():
            self.user = cmd.arg.strip()
            decision = self._ctx.authenticator(Credential(self.user))
            return [UsernameSent(decision.display, decision.code, self._tls)]
        if cmd.verb == "PASS" and cmd.raw_arg:
            user = self.user
            d = _NOBODY if user is None else self._ctx.authenticator(Credential(user, cmd.raw_arg))
            tls, outcome = self._tls, self._outcome
            return [
                AuthAttempted(
                    USER_MECHANISM, d.display, d.code, tls, True, not tls, outcome, d.proof
                )
            ]
        args = cmd.args
        if cmd.verb == "AUTH" and 1 <= len(args) <= 2 and args[0].upper() in RECOGNISED:
            ctx = self._ctx
            self._flow = SaslFlow(args[0].upper(), self._tls, ctx.authenticator, ctx.hostname)
            initial = args[1] if len(args) == 2 else None
            if isinstance(self._flow.start(initial), bytes):
                return []
            return self.finish()
        return []

    def finish(self) -> list[Observation]:
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
            if raw.rstrip(b"\r"):
                found += self.line(raw.rstrip(b"\r"))
        return found + self.finish()


class Pop3Core:
    """One POP3 connection, server side. See the module docstring."""

    __slots__ = (
        "_auth_failures",
        "_ctx",
        "_decided",
        "_disrupt_pending",
        "_disrupted",
        "_errors",
        "_flow",
        "_in_line",
        "_limits",
        "_lines",
        "_silence",
        "_state",
        "_tls",
        "_user",
    )

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._limits = ctx.limits
        self._state = State.NEW
        self._tls = False
        self._lines = LineBuffer(ctx.limits.line_bytes)
        self._in_line = False  # an incomplete line is buffered (its deadline is armed)
        self._silence = False  # t3: STLS was refused and the client has sent nothing since
        self._disrupt_pending = False  # t4: the next command inside TLS is disrupted
        self._disrupted: Disrupted | None = None
        self._errors = 0
        self._auth_failures = 0
        self._user: str | None = None  # the USER name (in memory), until PASS
        self._flow: SaslFlow | None = None  # the AUTH exchange in progress
        self._decided: tuple[str, AuthDecision] | None = None

    @property
    def state(self) -> State:
        return self._state

    # --- events --------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if self._state is State.DISRUPTED and self._disrupted is not None:
            if isinstance(event, DataReceived | Timeout | Closed | Kicked):
                commands = self._disrupted.handle(event)
                if Close() in commands:
                    self._state = State.CLOSED
                return commands
            return []
        match event:
            case Connected(tls=info):
                return self._on_connected(info)
            case DataReceived(data=data):
                return self._on_data(data)
            case TlsEstablished(info=info):
                return self._on_tls_established(info)
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
        greet = Send(line(greeting(self._ctx.hostname)))
        return [*out, greet, SetTimer(self._limits.idle_seconds)]

    def _on_data(self, data: bytes) -> list[Command]:
        if not data or self._state not in _READING:
            return []  # mid-handshake (the shell routes bytes to TLS), closed, or not greeted
        self._silence = False
        self._lines.feed(data)
        out: list[Command] = []
        completed = False
        while self._state in _READING and (item := self._lines.next_line()) is not None:
            completed = True
            out += self._on_item(item)
        if self._state not in _READING:
            return out
        partial = not data.endswith(b"\n")
        if self._silence and not partial:
            out.append(SetTimer(self._limits.silence_after_refusal))
        else:
            self._silence = False
            timer = input_timer(self._limits, completed, self._in_line, partial)
            out += [timer] if timer is not None else []
        self._in_line = partial
        return out

    def _on_item(self, item: bytes | LineTooLong) -> list[Command]:
        self._silence = False
        if self._disrupt_pending:
            return self._disrupt_session(item)
        if isinstance(item, LineTooLong):
            return self._on_too_long(item)
        if self._state is State.SASL:
            return self._sasl_line(item)
        return self._command(_Line.parse(item))

    def _on_tls_established(self, info: TlsInfo) -> list[Command]:
        if self._state is not State.HANDSHAKE:
            return []
        self._tls = True
        self._state = State.AUTHORIZATION
        self._user = None  # forget all pre-TLS state
        self._lines = LineBuffer(self._limits.line_bytes)
        self._in_line = False
        self._disrupt_pending = self._disrupts_after_tls()
        return [
            Record(TlsStarted(info.version, info.cipher, implicit=False)),
            SetTimer(self._limits.idle_seconds),
        ]

    def _on_tls_failed(self, reason: str) -> list[Command]:
        if self._state is not State.HANDSHAKE:
            return []
        self._state = State.CLOSED
        return [Record(TlsHandshakeFailed(truncate(reason))), Close()]

    def _on_client_hello(self, nbytes: int, looks_like_tls: bool) -> list[Command]:
        """t2: the ClientHello was read and never answered; a cleartext error replaces it."""
        if self._state is not State.CLIENT_HELLO:
            return []
        self._enter_disrupted(CredentialScanner(self._ctx, False, "disrupted", self._user))
        return [
            Record(StarttlsDisrupted("handshake", nbytes, looks_like_tls, ERR_TLS_TEMP)),
            Send(line(ERR_TLS_TEMP)),
            SetTimer(self._limits.disrupted_seconds),
        ]

    def _on_timeout(self) -> list[Command]:
        state = self._state
        if state is State.CLOSED:
            return []
        if state not in _READING or self._silence:
            self._state = State.CLOSED
            return [Close()]  # mid-handshake, or t3 silence: no reply
        out = self._end_flow(CANCELLED)
        self._state = State.CLOSED
        return [*out, Send(line(ERR_INACTIVITY)), Close()]

    def _on_closed(self) -> list[Command]:
        out = self._end_flow(CANCELLED)
        self._state = State.CLOSED
        return out

    def _on_kicked(self, reason: str) -> list[Command]:
        state = self._state
        if state is State.CLOSED:
            return []
        reason = truncate("".join(c if c.isprintable() else " " for c in reason))
        out = [*self._end_flow(CANCELLED), Record(SessionKicked(reason))]
        self._state = State.CLOSED
        if state in _READING:
            out.append(Send(line(kicked(reason))))
        return [*out, Close()]

    # --- commands ------------------------------------------------------------------------

    def _command(self, cmd: _Line) -> list[Command]:
        spec = _VERBS.get(cmd.verb)
        if spec is None:
            record = Record(CommandReceived(self._opaque(cmd), self._tls))
            return [record, *self._error("unknown_command", ERR_UNKNOWN)]
        record = Record(CommandReceived(truncate(spec.transcript(self, cmd)), self._tls))
        if b"\x00" in cmd.raw and not spec.opaque_arg:
            return [record, *self._error("bad_character", ERR_BAD_CHARACTER)]
        if self._state not in spec.states:
            return [record, *self._error("wrong_state", ERR_WRONG_STATE)]
        return [record, *spec.run(self, cmd)]

    def _capa(self, cmd: _Line) -> list[Command]:
        offered = self._starttls_advertised()
        mechs: tuple[str, ...] = ()
        items: list[str] = []
        if self._state is State.AUTHORIZATION:
            mechs = mechanisms(self._tls)
            items += ["USER", "SASL " + " ".join(mechs), *(["STLS"] if offered else [])]
        items += [*CAPABILITIES, IMPLEMENTATION]
        sent = CapabilitiesSent(starttls_offered=offered, auth_mechanisms=mechs, tls=self._tls)
        return [Record(sent), Send(multiline(OK_CAPA, items))]

    def _stls(self, cmd: _Line) -> list[Command]:
        advertised = self._starttls_advertised()
        out: list[Command] = [Record(StarttlsRequested(advertised=advertised))]
        if not advertised:
            if self._tls:
                return [*out, *self._refuse_starttls("already_tls", ERR_TLS_ACTIVE)]
            return [*out, *self._refuse_starttls("not_advertised", ERR_STLS_NOT_ADVERTISED)]
        if cmd.arg.strip():
            return [*out, *self._refuse_starttls("syntax", ERR_STLS_SYNTAX)]
        action = self._ctx.policy.on_starttls()
        if action is StarttlsAction.REFUSE:
            self._silence = True
            refused = StarttlsRefused("testcase", ERR_TLS_TEMP)
            return [*out, Record(refused), Send(line(ERR_TLS_TEMP))]
        out += self._discard_pipelined()
        out += [Record(StarttlsAccepted()), Send(line(OK_BEGIN_TLS))]
        if action is StarttlsAction.BREAK_HANDSHAKE:
            self._state = State.CLIENT_HELLO
            out.append(ReadClientHello())
        else:
            self._state = State.HANDSHAKE
            out.append(StartTls())
        return [*out, SetTimer(self._limits.line_seconds)]  # backstop: the shell has a deadline

    def _refuse_starttls(self, reason: str, reply: str) -> list[Command]:
        return [Record(StarttlsRefused(reason, reply)), *self._error_reply(reply)]

    def _discard_pipelined(self) -> list[Command]:
        """Bytes sent after STLS, before the handshake, are dropped (command injection); any
        credentials in them went out in the clear and are recorded as refused."""
        rest = self._lines.take_rest()
        self._in_line = False
        if not rest:
            return []
        scanner = CredentialScanner(self._ctx, self._tls, "refused", self._user)
        found = [Record(o) for o in scanner.scan(rest)]
        return [Record(PipelinedAfterStarttls(len(rest))), *found]

    def _user_cmd(self, cmd: _Line) -> list[Command]:
        name = cmd.arg.strip()
        if not name:
            return self._error("syntax", ERR_USER_SYNTAX)
        self._user = name
        decision = self._decide(name)
        sent = UsernameSent(decision.display, decision.code, self._tls)
        return [Record(sent), Send(line(OK_USER))]

    def _pass(self, cmd: _Line) -> list[Command]:
        if not cmd.raw_arg:
            return self._error("syntax", ERR_PASS_SYNTAX)
        name, self._user = self._user, None
        if name is None:
            attempt = self._attempt(USER_MECHANISM, _NOBODY, True, "refused")
            return [Record(attempt), *self._error("bad_sequence", ERR_NO_USER)]
        decision = self._ctx.authenticator(Credential(name, password=cmd.raw_arg))
        ok = decision.ok
        attempt = self._attempt(USER_MECHANISM, decision, True, SUCCESS if ok else FAILURE)
        return [Record(attempt), *(self._logged_in() if ok else self._auth_failed())]

    def _apop(self, cmd: _Line) -> list[Command]:
        args = cmd.args
        decision = self._decide(args[0]) if args else _NOBODY
        attempt = self._attempt("APOP", decision, len(args) > 1, "refused")
        return [Record(attempt), *self._error_reply(ERR_APOP)]

    def _auth(self, cmd: _Line) -> list[Command]:
        args = cmd.args
        if not args:
            return [Send(multiline(OK_MECHANISMS, list(mechanisms(self._tls))))]
        if len(args) > 2:
            return self._error("syntax", ERR_AUTH_SYNTAX)
        mech = args[0].upper()
        initial = args[1] if len(args) > 1 else None
        ctx = self._ctx
        if not mechanism_allowed(mech, self._tls):
            if mech in RECOGNISED:  # CRAM-MD5 before TLS: an initial response is still seen
                flow = SaslFlow(mech, self._tls, ctx.authenticator, ctx.hostname)
                flow.start(initial)
                refused = [Record(o) for o in flow.records("refused")]
            else:
                attempt = self._attempt(mechanism_label(mech), _NOBODY, False, "refused")
                refused = [Record(attempt)]
            return [*refused, *self._error("auth_refused", ERR_AUTH_MECHANISM)]
        flow = SaslFlow(mech, self._tls, ctx.authenticator, ctx.hostname)
        return self._sasl_result(flow, flow.start(initial))

    def _stat(self, cmd: _Line) -> list[Command]:
        return [Send(line(OK_STAT))]

    def _list(self, cmd: _Line) -> list[Command]:
        return self._no_message(cmd.args, 1) if cmd.args else [Send(multiline(OK_LIST, []))]

    def _uidl(self, cmd: _Line) -> list[Command]:
        return self._no_message(cmd.args, 1) if cmd.args else [Send(multiline(OK_UIDL, []))]

    def _retr(self, cmd: _Line) -> list[Command]:  # RETR and DELE
        return self._no_message(cmd.args, 1)

    def _top(self, cmd: _Line) -> list[Command]:
        args = cmd.args
        if len(args) != 2 or ascii_number(args[1]) is None:
            return self._error("syntax", ERR_TOP_SYNTAX)
        return self._no_message(args, 2)

    def _noop(self, cmd: _Line) -> list[Command]:
        return [Send(line(OK_NOOP))]

    def _rset(self, cmd: _Line) -> list[Command]:
        return [Send(line(OK_RSET))]

    def _quit(self, cmd: _Line) -> list[Command]:
        # In TRANSACTION state this enters UPDATE: nothing was marked deleted, nothing to do.
        self._state = State.CLOSED
        return [Send(line(OK_QUIT)), Close()]

    def _no_message(self, args: list[str], count: int) -> list[Command]:
        """The maildrop is empty: a well-formed message number names no message."""
        number = ascii_number(args[0]) if len(args) == count else None
        if number is None or number < 1:
            return self._error("syntax", ERR_MESSAGE_NUMBER)
        return [Send(line(ERR_NO_SUCH_MESSAGE))]

    # --- SASL ----------------------------------------------------------------------------

    def _sasl_line(self, raw: bytes) -> list[Command]:
        flow = self._flow
        assert flow is not None
        text = decode(raw)
        shown = "*" if text.strip() == "*" else redacted_line(len(raw))
        record = Record(CommandReceived(shown, self._tls))
        return [record, *self._sasl_result(flow, flow.respond(text))]

    def _sasl_result(self, flow: SaslFlow, result: bytes | str) -> list[Command]:
        if isinstance(result, bytes):
            self._flow = flow
            self._state = State.SASL
            return [Send(b"+ " + base64.b64encode(result) + b"\r\n")]
        out = self._finish_flow(flow, result)
        if result == SUCCESS:
            return [*out, *self._logged_in()]
        if result == FAILURE:
            return [*out, *self._auth_failed()]
        if result == CANCELLED:
            return [*out, Send(line(ERR_AUTH_CANCELLED))]
        return [*out, *self._error("sasl_malformed", ERR_AUTH_MALFORMED)]

    def _finish_flow(self, flow: SaslFlow, result: str) -> list[Command]:
        self._flow = None
        if self._state is State.SASL:
            self._state = State.AUTHORIZATION
        outcome = FAILURE if result == MALFORMED else result
        return [Record(o) for o in flow.records(outcome)]

    def _end_flow(self, outcome: str) -> list[Command]:
        """An exchange cut short (timeout, kick, peer gone) still gets its ``AuthAttempted``."""
        return self._finish_flow(self._flow, outcome) if self._flow is not None else []

    # --- authentication outcome ----------------------------------------------------------

    def _logged_in(self) -> list[Command]:
        self._state = State.TRANSACTION
        return [Send(line(OK_LOGGED_IN))]

    def _auth_failed(self) -> list[Command]:
        self._state = State.AUTHORIZATION
        self._auth_failures += 1
        out: list[Command] = [Send(line(ERR_AUTH_FAILED), delay=self._limits.auth_fail_delay)]
        if self._auth_failures >= self._limits.max_auth_failures:
            self._state = State.CLOSED
            final = ProtocolError("too_many_auth_failures", ERR_TOO_MANY_ERRORS)
            out += [Record(final), Send(line(ERR_TOO_MANY_ERRORS)), Close()]
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
            proof=decision.proof,
        )

    def _decide(self, username: str) -> AuthDecision:
        """Ask the authenticator once per username (transcript and handler both need it)."""
        if self._decided is not None and self._decided[0] == username:
            return self._decided[1]
        decision = self._ctx.authenticator(Credential(username))
        self._decided = (username, decision)
        return decision

    # --- t2/t4 disruption ----------------------------------------------------------------

    def _disrupt_session(self, item: bytes | LineTooLong) -> list[Command]:
        """t4: record the first command inside TLS, answer it in cleartext outside TLS."""
        self._disrupt_pending = False
        inside = CredentialScanner(self._ctx, True, "disrupted", self._user)
        out: list[Command] = []
        if isinstance(item, bytes):
            cmd = _Line.parse(item)
            spec = _VERBS.get(cmd.verb)
            shown = truncate(spec.transcript(self, cmd)) if spec else self._opaque(cmd)
            out.append(Record(CommandReceived(shown, self._tls)))
            out += [Record(o) for o in inside.line(item)]
        # lines pipelined behind it were sent inside TLS as well
        out += [Record(o) for o in inside.scan(self._lines.take_rest())]
        # The shell abandons the TLS session with the raw write: what arrives next is raw TCP.
        self._tls = False
        self._enter_disrupted(CredentialScanner(self._ctx, False, "disrupted", inside.user))
        return [
            *out,
            Record(StarttlsDisrupted("session", 0, True, ERR_TLS_TEMP)),
            SendRaw(line(ERR_TLS_TEMP)),
            SetTimer(self._limits.disrupted_seconds),
        ]

    def _enter_disrupted(self, scanner: CredentialScanner) -> None:
        known = frozenset(_VERBS) | FOREIGN_VERBS
        self._disrupted = Disrupted(self._tls, self._limits.line_bytes, scanner, known)
        self._state = State.DISRUPTED

    # --- helpers -------------------------------------------------------------------------

    def _on_too_long(self, item: LineTooLong) -> list[Command]:
        out: list[Command] = []
        if self._state is State.SASL and self._flow is not None:
            out.append(Record(CommandReceived(redacted_line(item.nbytes), self._tls)))
            out += self._finish_flow(self._flow, self._flow.fail_line())
        return [*out, *self._error("line_too_long", ERR_LINE_TOO_LONG)]

    def _error(self, reason: str, reply: str) -> list[Command]:
        return [Record(ProtocolError(reason, reply)), *self._error_reply(reply)]

    def _error_reply(self, reply: str) -> list[Command]:
        """A negative reply counted against ``limits.max_errors``; past it, a final line and
        ``Close``."""
        self._errors += 1
        out: list[Command] = [Send(line(reply))]
        if self._errors >= self._limits.max_errors:
            self._state = State.CLOSED
            final = ProtocolError("too_many_errors", ERR_TOO_MANY_ERRORS)
            out += [Record(final), Send(line(ERR_TOO_MANY_ERRORS)), Close()]
        return out

    def _opaque(self, cmd: _Line) -> str:
        """Transcript of a line that is not a POP3 command: never what may be a secret."""
        if cmd.verb in FOREIGN_VERBS:
            return _redacted(cmd.sent_verb, len(cmd.raw_arg)) if cmd.raw_arg else cmd.sent_verb
        return f"<unrecognised, {len(cmd.raw)} bytes>"

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
        digest = cmd.raw_arg.strip().partition(b" ")[2]
        return _redacted(head, len(digest)) if digest else head

    def _show_auth(self, cmd: _Line) -> str:
        args = cmd.args
        if not args:
            return cmd.sent_verb
        head = f"{cmd.sent_verb} {mechanism_label(args[0].upper())}"
        initial = cmd.raw_arg.strip().partition(b" ")[2]
        return _redacted(head, len(initial)) if initial else head


@dataclass(frozen=True, slots=True)
class _Verb:
    """One row of the command table."""

    run: Callable[[Pop3Core, _Line], list[Command]]
    states: frozenset[State]
    transcript: Callable[[Pop3Core, _Line], str] = Pop3Core._show_plain
    opaque_arg: bool = False  # the argument may hold any byte, NUL included (a secret)


_VERBS: Final[dict[str, _Verb]] = {
    "CAPA": _Verb(Pop3Core._capa, _BOTH),
    "STLS": _Verb(Pop3Core._stls, _BOTH),
    "USER": _Verb(Pop3Core._user_cmd, _AUTH, Pop3Core._show_user),
    "PASS": _Verb(Pop3Core._pass, _AUTH, Pop3Core._show_secret, opaque_arg=True),
    "APOP": _Verb(Pop3Core._apop, _AUTH, Pop3Core._show_apop, opaque_arg=True),
    "AUTH": _Verb(Pop3Core._auth, _AUTH, Pop3Core._show_auth, opaque_arg=True),
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
