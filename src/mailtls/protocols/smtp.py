"""The SMTP server core (sans-IO): greeting, EHLO/HELO, STARTTLS, AUTH, MAIL/RCPT/DATA, ...

Shape: the connection's lifecycle (events, STARTTLS, handshake, t2/t4 disruption, timers,
budgets, SASL outcome) is ``flow.AttackFlow``'s; this file supplies SMTP's wording and reader:
``DataReceived`` is split into lines by ``LineBuffer`` and each command line goes through the verb
table ``_COMMANDS`` (verb -> handler). A DATA body is read by ``DataBody``, which ends only at
``CRLF.CRLF`` (a bare LF ``.`` LF is body, not an end: SMTP smuggling). Replies of a pipelined
batch are joined into one ``Send``; every ``Record`` precedes the reply it explains. Attack
behaviour comes from ``ctx.policy`` (``mailtls.testcases``), asked by the flow. See
``docs/protocol-cores.md`` for the contract.

Must not import ``imap``, ``pop3``, ``asyncio``, sockets, ``mailtls.net``/``store``/``web``.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from typing import Final

from mailtls.observations import (
    CapabilitiesSent,
    ClientIdentified,
    CommandReceived,
    MessageReceived,
    Observation,
)
from mailtls.protocols import smtp_replies as R
from mailtls.protocols.base import (
    AuthDecision,
    LineTooLong,
    PortRole,
    SessionContext,
    decode,
    truncate,
)
from mailtls.protocols.common import (
    LineScanner,
    SecretScanner,
    ascii_number,
    first_verb,
    input_timer,
    mechanism_allowed,
    mechanism_label,
    set_timer,
)
from mailtls.protocols.flow import AttackFlow, AuthReply, Phase, StarttlsReply, Wording
from mailtls.protocols.sasl import RECOGNISED, redacted

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


class AuthLineScanner(LineScanner):
    """Finds secrets in SMTP lines the server will never answer (pipelined after STARTTLS, or
    after a disruption): ``AUTH <mech> <initial>`` and the SASL lines that follow it."""

    __slots__ = ()

    def __init__(self, ctx: SessionContext, tls: bool, outcome: str) -> None:
        super().__init__(ctx.authenticator, ctx.hostname, ctx.limits.line_bytes, tls, outcome)

    def command(self, line: bytes) -> list[Observation]:
        verb, _, arg = decode(line).partition(" ")
        if verb.upper() != "AUTH":
            return []
        mech, initial = _split_auth(arg)
        return self.start_sasl(mech, initial) if mech in RECOGNISED else []


Handler = Callable[["SmtpCore", str], None]


class SmtpCore(AttackFlow):
    """One SMTP connection, server side. ``handle(event)`` -> commands for the shell."""

    PROTOCOL = "smtp"
    WORDING = Wording(
        tls_unavailable=R.S454_TLS_NA,
        too_many_errors=R.S421_TOO_MANY_ERRORS,
        too_many_auth_failures=R.S421_TOO_MANY_ERRORS,
    )

    __slots__ = (
        "_auth",
        "_body",
        "_completed",
        "_domain_suffix",
        "_greeted",
        "_mail",
        "_partial_before",
        "_rcpts",
        "_rejected",
        "state",
    )

    def __init__(self, ctx: SessionContext) -> None:
        super().__init__(ctx)
        self._domain_suffix = "@" + ctx.domain.lower()
        self.state = State.COMMAND
        self._greeted = False  # HELO/EHLO seen (in the current TLS epoch)
        self._auth: AuthDecision | None = None
        self._mail = False
        self._rcpts = 0
        self._rejected = 0
        self._body: DataBody | None = None
        self._completed = False  # the data just read completed a line
        self._partial_before = False  # a partial line was buffered before the data

    # --- the flow's hooks -----------------------------------------------------------------

    def _greeting(self) -> bytes:
        return R.greeting(self._ctx.hostname)

    def _read(self, data: bytes) -> None:
        self._partial_before = self._lines.pending > 0
        self._completed = self._pump(data)

    def _arm_timer(self) -> None:
        body = self._body
        if self.state is State.DATA and body is not None:
            # a body line gets the same absolute deadline as a command line (no slow trickle)
            if not body.line_open:
                body.deadline_armed = False
                self._out.add(set_timer(self._limits.idle_seconds))
            elif not body.deadline_armed:
                body.deadline_armed = True
                self._out.add(set_timer(self._limits.line_seconds))
            return
        partial = self._lines.pending > 0
        timer = input_timer(self._limits, self._completed, self._partial_before, partial)
        if timer is not None:
            self._out.add(timer)

    def _starttls_reply(self, kind: StarttlsReply, tag: str) -> bytes:
        return _STARTTLS_REPLIES[kind]

    def _timeout_reply(self) -> bytes:
        return R.timeout(self._ctx.hostname)

    def _kicked_reply(self, reason: str) -> bytes:
        return R.S421_KICKED

    def _scanner(self, tls: bool, outcome: str, before: SecretScanner | None) -> SecretScanner:
        return AuthLineScanner(self._ctx, tls, outcome)

    def _data_verb(self, data: bytes) -> str:
        return first_verb(data, _KNOWN_VERBS)

    def _challenge(self, data: bytes) -> bytes:
        return R.challenge(base64.b64encode(data))

    def _auth_reply(self, kind: AuthReply) -> bytes:
        return _AUTH_REPLIES[kind]

    def _forged_answer(self, tag: str) -> bytes:
        return R.forged_ehlo(self._ctx.hostname)

    def _logged_in(self, decision: AuthDecision | None) -> None:
        self._auth = decision
        self._out.reply(R.S235_AUTH_SUCCESS)

    def _sasl_mode(self, active: bool) -> None:
        self.state = State.AUTH if active else State.COMMAND

    def _forget_pre_tls(self) -> None:
        self._greeted = False
        self._auth = None
        self._reset_transaction()
        self.state = State.COMMAND

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
            if self._command_starts():  # never in AUTH: the first line of a fresh TLS session
                self._disrupt_first(line)
            elif self.state is State.AUTH:
                self._sasl_line(line)
            elif isinstance(line, LineTooLong):
                self._error("line_too_long", R.S500_LINE_TOO_LONG)
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
        return self.phase is Phase.READING and (state is State.COMMAND or state is State.AUTH)

    def _command(self, line: bytes) -> None:
        text = decode(line)
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = _COMMANDS.get(verb)
        bad_character = verb != "AUTH" and (b"\x00" in line or b"\r" in line)
        if handler is None or bad_character:
            self._out.record(CommandReceived(self._transcript(verb, text, arg), self._tls))
            if bad_character:
                self._error("bad_character", R.S500_BAD_CHAR)
            else:
                self._error("unknown_command", R.S500_UNKNOWN)
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

    def _disrupt_first(self, line: bytes | LineTooLong) -> None:
        """t4: the first command inside TLS; an over-long one is not shown (as in IMAP, POP3)."""
        inside = AuthLineScanner(self._ctx, True, "disrupted")
        if isinstance(line, LineTooLong):
            self._disrupt_session(None, inside, [])
            return
        text = decode(line)
        verb, _, arg = text.partition(" ")
        shown = self._transcript(verb.upper(), text, arg)
        self._disrupt_session(shown, inside, inside.feed(line + b"\n"))

    def _reset_transaction(self) -> None:
        self._mail = False
        self._rcpts = 0
        self._rejected = 0

    # --- HELO / EHLO / simple commands ----------------------------------------------------

    def _cmd_ehlo(self, arg: str) -> None:
        name = arg.strip()
        if not name:
            self._error("syntax", R.S501_SYNTAX_EHLO)
            return
        self._out.record(ClientIdentified("ehlo", truncate(name)))
        self._greeted = True
        self._reset_transaction()
        mechs = self._offered_mechanisms()
        starttls = self._starttls_offered()
        self._out.record(CapabilitiesSent(starttls, mechs, self._tls))
        self._out.reply(R.ehlo(self._ctx.hostname, self._limits.message_bytes, starttls, mechs))

    def _cmd_helo(self, arg: str) -> None:
        name = arg.strip()
        if not name:
            self._error("syntax", R.S501_SYNTAX_HELO)
            return
        self._out.record(ClientIdentified("helo", truncate(name)))
        self._greeted = True
        self._reset_transaction()
        self._out.reply(R.helo(self._ctx.hostname))

    def _cmd_noop(self, arg: str) -> None:
        self._out.reply(R.S250_OK)

    def _cmd_rset(self, arg: str) -> None:
        if arg.strip():
            self._error("syntax", R.S501_SYNTAX_RSET)
            return
        self._reset_transaction()
        self._out.reply(R.S250_OK)

    def _cmd_vrfy(self, arg: str) -> None:
        self._out.reply(R.S252_CANNOT_VRFY)

    def _cmd_expn(self, arg: str) -> None:
        self._error(None, R.S502_EXPN)

    def _cmd_help(self, arg: str) -> None:
        offered = self._starttls_offered()
        self._out.reply(R.S214_HELP_STARTTLS if offered else R.S214_HELP)

    def _cmd_quit(self, arg: str) -> None:
        self._out.reply(R.S221_BYE)
        self._close()

    # --- STARTTLS -------------------------------------------------------------------------

    def _cmd_starttls(self, arg: str) -> None:
        self._starttls(bool(arg.strip()))

    # --- AUTH -----------------------------------------------------------------------------

    def _cmd_auth(self, arg: str) -> None:
        mech, initial = _split_auth(arg)
        self._out.record(CommandReceived(_auth_transcript(mech, initial), self._tls))
        if not mech:
            self._error("syntax", R.S501_SYNTAX_AUTH)
            return
        refusal = self._auth_refusal(mech)
        if refusal is None and self._login_refused():
            self._refuse_login(mech, initial)
            return
        if refusal is not None:
            self._record_refused(mech, initial)
            self._error("auth_refused", refusal)
            return
        self._begin_sasl(mech, initial)

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

    # --- mail transaction -----------------------------------------------------------------

    def _cmd_mail(self, arg: str) -> None:
        if not self._greeted:
            self._error("bad_sequence", R.S503_HELO_FIRST)
        elif self._ctx.role is PortRole.SUBMISSION and self._auth is None:
            self._error(None, R.S530_AUTH_REQUIRED)
        elif self._mail:
            self._error("bad_sequence", R.S503_NESTED_MAIL)
        elif (parsed := _path(arg, "FROM:")) is None:
            self._error("syntax", R.S501_SYNTAX_MAIL)
        elif (bad := self._mail_parameters(parsed[1])) is not None:
            self._error("mail_parameter", bad)
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
            self._error("bad_sequence", R.S503_NEED_MAIL)
        elif (parsed := _path(arg, "TO:")) is None:
            self._error("syntax", R.S501_SYNTAX_RCPT)
        elif self._rcpts >= MAX_RECIPIENTS:
            self._out.reply(R.S452_TOO_MANY_RCPTS)
        elif (
            self._ctx.role is PortRole.MX
            and self._auth is None
            and not self._local_recipient(parsed[0])
        ):
            self._rejected += 1
            self._error(None, R.S550_RELAY_DENIED)
        else:
            self._rcpts += 1
            self._out.reply(R.S250_RCPT_OK)

    def _local_recipient(self, address: str) -> bool:
        """An address of our own domain, or the bare ``postmaster`` (RFC 5321 4.5.1)."""
        address = address.lower()
        return address.endswith(self._domain_suffix) or address == "postmaster"

    def _cmd_data(self, arg: str) -> None:
        if arg.strip():
            self._error("syntax", R.S501_SYNTAX_DATA)
        elif not self._mail:
            self._error("bad_sequence", R.S503_NEED_MAIL)
        elif not self._rcpts:
            if self._rejected:
                self._error(None, R.S554_NO_VALID_RCPTS)
            else:
                self._error("bad_sequence", R.S503_NEED_RCPT)
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
                self._error("message_too_large", R.S552_TOO_BIG)
                if self.phase is not Phase.CLOSED:
                    self._close()
            return None
        self._body = None
        self.state = State.COMMAND
        if body.nbytes > limit:
            self._error("message_too_large", R.S552_TOO_BIG)
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
_STARTTLS_REPLIES: Final = {
    StarttlsReply.GO_AHEAD: R.S220_READY_TLS,
    StarttlsReply.TEMPORARY: R.S454_TLS_NA,
    StarttlsReply.NOT_ADVERTISED: R.S502_STARTTLS_NOT_OFFERED,
    StarttlsReply.ALREADY_TLS: R.S502_STARTTLS_NOT_OFFERED,
    StarttlsReply.SYNTAX: R.S501_SYNTAX_STARTTLS,
}
_AUTH_REPLIES: Final = {
    AuthReply.FAILED: R.S535_AUTH_INVALID,
    AuthReply.CANCELLED: R.S501_AUTH_ABORTED,
    AuthReply.MALFORMED: R.S501_AUTH_DECODE,
    AuthReply.TLS_REQUIRED: R.S530_STARTTLS_FIRST,
}
