"""The POP3 core (RFC 1939, CAPA RFC 2449, STLS RFC 2595, SASL AUTH RFC 5034): sans-IO.

``Pop3Core(ctx).handle(event)`` returns the commands for one event, following
``docs/protocol-cores.md``. The maildrop is always empty: the server exists to see how a client
authenticates, not to deliver mail.

Shape of this file:
- replies are named constants (``ERR_TLS_TEMP``, ``OK_LOGGED_IN``, ...) without CRLF, the form
  stored in observations; ``line(text)`` gives the wire form;
- ``_VERBS`` is the command table: verb -> handler, the states where it is legal, and how the
  line appears in the transcript;
- the connection's lifecycle (STARTTLS, handshake, t2/t4 disruption, timers, budgets, SASL
  outcome) is ``flow.AttackFlow``'s; this file supplies its wording and the POP3 states
  ``AUTHORIZATION``, ``SASL`` (inside an AUTH exchange) and ``TRANSACTION``;
- ``CredentialScanner`` finds USER/PASS/AUTH credentials in lines that get no reply (pipelined
  after STLS, the t4 first command, the disrupted state).

Secrets (PASS arguments, SASL responses, APOP digests) are never kept nor recorded: the
transcript shows ``<redacted, N bytes>``. A line that is not a POP3 command may be a password
typed in the wrong place, so only a known verb of some protocol is ever shown from it.

Imports only ``mailtls.observations`` and sibling modules (``base``, ``common``, ``flow``,
``sasl``). Must not import ``asyncio``, ``socket``, ``ssl``, ``mailtls.net``,
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
    UsernameSent,
)
from mailtls.protocols.base import (
    AuthDecision,
    Credential,
    LineTooLong,
    SessionContext,
    decode,
    truncate,
)
from mailtls.protocols.common import (
    FAILURE,
    SUCCESS,
    LineScanner,
    SecretScanner,
    ascii_number,
    first_verb,
    input_timer,
    mechanism_allowed,
    mechanism_label,
    redacted_line,
)
from mailtls.protocols.flow import AttackFlow, AuthReply, Phase, StarttlsReply, Wording
from mailtls.protocols.sasl import RECOGNISED

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
ERR_TLS_REQUIRED: Final = "-ERR [AUTH] Plaintext authentication disallowed without TLS"
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
    """The POP3 states inside the flow's ``Phase.READING``."""

    AUTHORIZATION = "authorization"
    SASL = "sasl"
    TRANSACTION = "transaction"


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


class CredentialScanner(LineScanner):
    """Finds credentials in POP3 lines that get no reply (pipelined after STLS, the t4 first
    command, the disrupted state): ``USER``, ``PASS``, ``AUTH <mech> <initial>`` and the SASL
    lines after it. ``user`` carries a USER's name across (in memory only, for its ``PASS``)."""

    __slots__ = ("user",)

    def __init__(
        self, ctx: SessionContext, tls: bool, outcome: str, user: str | None = None
    ) -> None:
        super().__init__(ctx.authenticator, ctx.hostname, ctx.limits.line_bytes, tls, outcome)
        self.user = user

    def command(self, line: bytes) -> list[Observation]:
        cmd = _Line.parse(line)
        if cmd.verb == "USER" and cmd.arg.strip():
            self.user = cmd.arg.strip()
            decision = self.decide(self.user)
            return [UsernameSent(decision.display, decision.code, self.tls)]
        if cmd.verb == "PASS" and cmd.raw_arg:
            d = _NOBODY if self.user is None else self.decide(self.user, cmd.raw_arg)
            tls, outcome = self.tls, self.outcome
            return [
                AuthAttempted(
                    USER_MECHANISM, d.display, d.code, tls, True, not tls, outcome, d.proof
                )
            ]
        args = cmd.args
        if cmd.verb == "AUTH" and 1 <= len(args) <= 2 and args[0].upper() in RECOGNISED:
            return self.start_sasl(args[0].upper(), args[1] if len(args) == 2 else None)
        return []


class Pop3Core(AttackFlow):
    """One POP3 connection, server side. See the module docstring."""

    PROTOCOL = "pop3"
    WORDING = Wording(
        tls_unavailable=line(ERR_TLS_TEMP),
        too_many_errors=line(ERR_TOO_MANY_ERRORS),
        too_many_auth_failures=line(ERR_TOO_MANY_ERRORS),
    )

    __slots__ = ("_completed", "_decided", "_in_line", "_partial", "_state", "_user")

    def __init__(self, ctx: SessionContext) -> None:
        super().__init__(ctx)
        self._state = State.AUTHORIZATION
        self._in_line = False  # an incomplete line is buffered (its deadline is armed)
        self._completed = False  # the data just read completed a line
        self._partial = False  # the data just read ended inside a line
        self._user: str | None = None  # the USER name (in memory), until PASS
        self._decided: tuple[str, AuthDecision] | None = None

    @property
    def state(self) -> State:
        return self._state

    # --- the flow's hooks ----------------------------------------------------------------

    def _greeting(self) -> bytes:
        return line(greeting(self._ctx.hostname))

    def _read(self, data: bytes) -> None:
        self._lines.feed(data)
        self._completed = False
        while self.phase is Phase.READING and (item := self._lines.next_line()) is not None:
            self._completed = True
            self._on_item(item)
        self._partial = not data.endswith(b"\n")

    def _arm_timer(self) -> None:
        timer = input_timer(self._limits, self._completed, self._in_line, self._partial)
        if timer is not None:
            self._out.add(timer)
        self._in_line = self._partial

    def _starttls_reply(self, kind: StarttlsReply, tag: str) -> bytes:
        return line(_STLS_REPLIES[kind])

    def _timeout_reply(self) -> bytes:
        return line(ERR_INACTIVITY)

    def _kicked_reply(self, reason: str) -> bytes:
        return line(kicked(reason))

    def _scanner(self, tls: bool, outcome: str, before: SecretScanner | None) -> SecretScanner:
        user = before.user if isinstance(before, CredentialScanner) else self._user
        return CredentialScanner(self._ctx, tls, outcome, user)

    def _data_verb(self, data: bytes) -> str:
        return first_verb(data, _KNOWN_VERBS)

    def _challenge(self, data: bytes) -> bytes:
        return b"+ " + base64.b64encode(data) + b"\r\n"

    def _auth_reply(self, kind: AuthReply) -> bytes:
        return line(_AUTH_REPLIES[kind])

    def _forged_answer(self, tag: str) -> bytes:
        return multiline(OK_CAPA, ["USER", "SASL PLAIN"])

    def _logged_in(self, decision: AuthDecision | None) -> None:
        self._state = State.TRANSACTION
        self._out.reply(line(OK_LOGGED_IN))

    def _sasl_mode(self, active: bool) -> None:
        if active:
            self._state = State.SASL
        elif self._state is State.SASL:
            self._state = State.AUTHORIZATION

    def _forget_pre_tls(self) -> None:
        self._user = None
        self._in_line = False

    def _may_starttls(self) -> bool:
        return self._state is State.AUTHORIZATION

    def _discard_input(self) -> bytes:
        self._in_line = False
        return self._lines.take_rest()

    # --- commands ------------------------------------------------------------------------

    def _on_item(self, item: bytes | LineTooLong) -> None:
        if self._command_starts():
            self._disrupt_first(item)
        elif self._state is State.SASL:
            self._sasl_line(item)
        elif isinstance(item, LineTooLong):
            self._error("line_too_long", line(ERR_LINE_TOO_LONG))
        else:
            self._command(_Line.parse(item))

    def _command(self, cmd: _Line) -> None:
        spec = _VERBS.get(cmd.verb)
        if spec is None:
            self._out.record(CommandReceived(self._opaque(cmd), self._tls))
            self._error("unknown_command", line(ERR_UNKNOWN))
            return
        self._out.record(CommandReceived(truncate(spec.transcript(self, cmd)), self._tls))
        if b"\x00" in cmd.raw and not spec.opaque_arg:
            self._error("bad_character", line(ERR_BAD_CHARACTER))
        elif self._state not in spec.states:
            self._error("wrong_state", line(ERR_WRONG_STATE))
        else:
            spec.run(self, cmd)

    def _reply(self, text: str) -> None:
        self._out.reply(line(text))

    def _fail(self, reason: str, text: str) -> None:
        self._error(reason, line(text))

    def _capa(self, cmd: _Line) -> None:
        offered = self._starttls_offered()
        mechs: tuple[str, ...] = ()
        items: list[str] = []
        if self._state is State.AUTHORIZATION:
            mechs = self._offered_mechanisms()
            items += ["USER", "SASL " + " ".join(mechs), *(["STLS"] if offered else [])]
        items += [*CAPABILITIES, IMPLEMENTATION]
        self._out.record(CapabilitiesSent(offered, mechs, self._tls))
        self._out.reply(multiline(OK_CAPA, items))

    def _stls(self, cmd: _Line) -> None:
        self._starttls(bool(cmd.arg.strip()))

    def _user_cmd(self, cmd: _Line) -> None:
        name = cmd.arg.strip()
        if not name:
            self._fail("syntax", ERR_USER_SYNTAX)
            return
        self._user = name
        decision = self._decide(name)
        self._out.record(UsernameSent(decision.display, decision.code, self._tls))
        self._reply(OK_USER)

    def _pass(self, cmd: _Line) -> None:
        if not cmd.raw_arg:
            self._fail("syntax", ERR_PASS_SYNTAX)
            return
        name, self._user = self._user, None
        if name is None:
            self._out.record(self._attempt(USER_MECHANISM, _NOBODY, True, "refused"))
            self._fail("bad_sequence", ERR_NO_USER)
            return
        decision = self._ctx.authenticator(Credential(name, cmd.raw_arg))
        ok = decision.ok
        self._out.record(self._attempt(USER_MECHANISM, decision, True, SUCCESS if ok else FAILURE))
        if ok:
            self._logged_in(decision)
        else:
            self._auth_failed()

    def _apop(self, cmd: _Line) -> None:
        args = cmd.args
        decision = self._decide(args[0]) if args else _NOBODY
        self._out.record(self._attempt("APOP", decision, len(args) > 1, "refused"))
        self._error(None, line(ERR_APOP))

    def _auth(self, cmd: _Line) -> None:
        args = cmd.args
        if not args:
            self._out.reply(multiline(OK_MECHANISMS, list(self._offered_mechanisms())))
            return
        if len(args) > 2:
            self._fail("syntax", ERR_AUTH_SYNTAX)
            return
        mech = args[0].upper()
        initial = args[1] if len(args) > 1 else None
        if self._login_refused():
            self._refuse_login(mech, initial)
            return
        if not mechanism_allowed(mech, self._tls):
            self._record_refused(mech, initial)
            self._fail("auth_refused", ERR_AUTH_MECHANISM)
            return
        self._begin_sasl(mech, initial)

    def _stat(self, cmd: _Line) -> None:
        self._reply(OK_STAT)

    def _list(self, cmd: _Line) -> None:
        if cmd.args:
            self._no_message(cmd.args, 1)
        else:
            self._out.reply(multiline(OK_LIST, []))

    def _uidl(self, cmd: _Line) -> None:
        if cmd.args:
            self._no_message(cmd.args, 1)
        else:
            self._out.reply(multiline(OK_UIDL, []))

    def _retr(self, cmd: _Line) -> None:  # RETR and DELE
        self._no_message(cmd.args, 1)

    def _top(self, cmd: _Line) -> None:
        args = cmd.args
        if len(args) != 2 or ascii_number(args[1]) is None:
            self._fail("syntax", ERR_TOP_SYNTAX)
            return
        self._no_message(args, 2)

    def _noop(self, cmd: _Line) -> None:
        self._reply(OK_NOOP)

    def _rset(self, cmd: _Line) -> None:
        self._reply(OK_RSET)

    def _quit(self, cmd: _Line) -> None:
        # In TRANSACTION state this enters UPDATE: nothing was marked deleted, nothing to do.
        self._reply(OK_QUIT)
        self._close()

    def _no_message(self, args: list[str], count: int) -> None:
        """The maildrop is empty: a well-formed message number names no message."""
        number = ascii_number(args[0]) if len(args) == count else None
        if number is None or number < 1:
            self._fail("syntax", ERR_MESSAGE_NUMBER)
        else:
            self._reply(ERR_NO_SUCH_MESSAGE)

    def _decide(self, username: str) -> AuthDecision:
        """Ask the authenticator once per username (transcript and handler both need it)."""
        if self._decided is not None and self._decided[0] == username:
            return self._decided[1]
        decision = self._ctx.authenticator(Credential(username))
        self._decided = (username, decision)
        return decision

    def _disrupt_first(self, item: bytes | LineTooLong) -> None:
        """t4: the first command inside TLS; an over-long one is not shown."""
        inside = CredentialScanner(self._ctx, True, "disrupted", self._user)
        if isinstance(item, LineTooLong):
            self._disrupt_session(None, inside, [])
            return
        cmd = _Line.parse(item)
        spec = _VERBS.get(cmd.verb)
        shown = spec.transcript(self, cmd) if spec else self._opaque(cmd)
        self._disrupt_session(shown, inside, inside.feed(item + b"\n"))

    # --- transcript forms ----------------------------------------------------------------

    def _opaque(self, cmd: _Line) -> str:
        """Transcript of a line that is not a POP3 command: never what may be a secret."""
        if cmd.verb in FOREIGN_VERBS:
            return _redacted(cmd.sent_verb, len(cmd.raw_arg)) if cmd.raw_arg else cmd.sent_verb
        return f"<unrecognised, {len(cmd.raw)} bytes>"

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


_STLS_REPLIES: Final = {
    StarttlsReply.GO_AHEAD: OK_BEGIN_TLS,
    StarttlsReply.TEMPORARY: ERR_TLS_TEMP,
    StarttlsReply.NOT_ADVERTISED: ERR_STLS_NOT_ADVERTISED,
    StarttlsReply.ALREADY_TLS: ERR_TLS_ACTIVE,
    StarttlsReply.SYNTAX: ERR_STLS_SYNTAX,
}
_AUTH_REPLIES: Final = {
    AuthReply.FAILED: ERR_AUTH_FAILED,
    AuthReply.CANCELLED: ERR_AUTH_CANCELLED,
    AuthReply.MALFORMED: ERR_AUTH_MALFORMED,
    AuthReply.TLS_REQUIRED: ERR_TLS_REQUIRED,
}


@dataclass(frozen=True, slots=True)
class _Verb:
    """One row of the command table."""

    run: Callable[[Pop3Core, _Line], None]
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
_KNOWN_VERBS: Final = frozenset(_VERBS) | FOREIGN_VERBS
