"""IMAP4rev1 server core (sans-IO): one connection as a state machine (docs/protocol-cores.md).

Flow: ``DataReceived`` bytes go into a ``LineBuffer``; ``imap_parse.CommandReader`` assembles
commands (with literals), ``parse_command`` tokenises them, and ``COMMANDS`` (verb -> handler and
the IMAP states where it is legal) dispatches. Connection-level commands (CAPABILITY, STARTTLS,
LOGIN, AUTHENTICATE, ID, IDLE, NOOP, LOGOUT) live here; the mailbox commands of the
authenticated and selected states run on ``imap_mailboxes.MailStore``. Two sub-modes read bare
lines instead of commands: a SASL exchange (``+`` continuations) and IDLE (until ``DONE``). The
connection's lifecycle (STARTTLS, handshake, t2/t4 disruption, timers, budgets, SASL outcome) is
``flow.AttackFlow``'s; its lines are phrased here in IMAP.

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
    MessageReceived,
    Observation,
    PreauthGreeted,
    PreauthUsed,
    UsernameSent,
)
from mailtls.protocols.base import (
    AuthDecision,
    Credential,
    LineBuffer,
    LineTooLong,
    Send,
    SessionContext,
    decode,
    truncate,
)
from mailtls.protocols.common import (
    FAILURE,
    SUCCESS,
    SaslFlow,
    SecretScanner,
    mechanism_allowed,
    mechanism_label,
    redacted_line,
    set_timer,
)
from mailtls.protocols.flow import AttackFlow, AuthReply, Phase, StarttlsReply, Wording
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
    """What the next client bytes are, inside the flow's ``Phase.READING``: commands, SASL
    responses or IDLE's DONE."""

    COMMAND = "command"
    SASL = "sasl"
    IDLE = "idle"


def _wire(line: str) -> bytes:
    return line.encode() + b"\r\n"


def next_tag(tag: str) -> str:
    """The tag a client that counts up uses next (``a1`` -> ``a2``, ``A0009`` -> ``A0010``)."""
    stem = tag.rstrip("0123456789")
    digits = tag[len(stem) :]
    if not digits or len(digits) > 18:
        return tag + "1"
    return stem + str(int(digits) + 1).zfill(len(digits))


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


class CommandScanner:
    """Finds credentials in IMAP commands that get no reply (pipelined after STARTTLS, the t4
    first command, plaintext after a disruption): LOGIN, and AUTHENTICATE with the SASL lines
    that follow it. Lines are reassembled into commands (literals included) as the core does.
    Implements ``common.SecretScanner``."""

    __slots__ = ("_buf", "_ctx", "_flow", "_outcome", "_reader", "_tls")

    def __init__(self, ctx: SessionContext, tls: bool, outcome: str) -> None:
        self._ctx = ctx
        self._tls = tls
        self._outcome = outcome
        self._flow: SaslFlow | None = None
        self._buf = LineBuffer(ctx.limits.line_bytes)
        self._reader = CommandReader(ctx.limits)

    def feed(self, data: bytes) -> list[Observation]:
        """Every complete command in the bytes received so far."""
        self._buf.feed(data)
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
        return found

    def command(self, cmd: ImapCommand, login: AuthDecision | None) -> list[Observation]:
        if cmd.name == "LOGIN" and len(cmd.args) == 2:
            user, password = astring(cmd.args[0]), astring(cmd.args[1])
            if user is None or password is None:
                return []
            decision = login or self._ctx.authenticator(Credential(decode(user), password))
            tls, outcome = self._tls, self._outcome
            display, code = decision.display, decision.code
            proof = decision.proof
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
        """The bytes end here: a partial last line counts, an unfinished exchange concludes."""
        found = self.feed(b"\r\n") if self._buf.pending else []
        return found + self._conclude()

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


class ImapCore(AttackFlow):
    """One IMAP connection. ``handle(event)`` returns the commands for the shell, in order."""

    PROTOCOL = "imap"
    WORDING = Wording(
        tls_unavailable=_wire(UNTAGGED_TLS_NOT_AVAILABLE),
        too_many_errors=_wire(BYE_ERRORS),
        too_many_auth_failures=_wire(BYE_AUTH_FAILURES),
    )

    __slots__ = (
        "_flow_tag",
        "_idle_tag",
        "_line_timer",
        "_literal_timer",
        "_login",
        "_mode",
        "_preauthed",
        "_reader",
        "_state",
        "_store",
    )

    def __init__(self, ctx: SessionContext) -> None:
        super().__init__(ctx)
        self._state = State.NOT_AUTHENTICATED
        self._mode = Mode.COMMAND
        self._reader = CommandReader(ctx.limits)
        self._store = MailStore()
        self._flow_tag = ""  # the tag of the LOGIN/AUTHENTICATE being answered
        self._idle_tag = ""
        self._login: AuthDecision | None = None  # the LOGIN command's username, decided once
        self._preauthed = False  # preauth: the greeting authenticated the session in the clear
        self._line_timer = False  # the absolute deadline of a partial command is armed
        self._literal_timer = False  # the deadline of a big APPEND body is armed

    @property
    def state(self) -> State:
        return self._state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def _is_tls(self) -> bool:
        return self._tls

    def _say(self, line: str, delay: float = 0.0) -> None:
        if delay:
            self._out.add(Send(_wire(line), delay))
        else:
            self._out.reply(_wire(line))

    # --- the flow's hooks -----------------------------------------------------------------

    def _greeting(self) -> bytes:
        name = _clean(self._ctx.hostname, 100)
        if self._policy.preauth() and not self._tls:
            self._preauthed = True
            self._state = State.AUTHENTICATED
            self._reader.allow_messages = True
            self._out.record(PreauthGreeted())
            caps = self._capabilities()
            return _wire(f"* PREAUTH [CAPABILITY {caps}] {name} mailtls IMAP ready, logged in")
        caps = self._capabilities()
        return _wire(f"* OK [CAPABILITY {caps}] {name} mailtls IMAP ready")

    def _forged_answer(self, tag: str) -> bytes:
        return _wire("* CAPABILITY IMAP4rev1 AUTH=PLAIN") + _wire(
            f"{next_tag(tag)} OK Capability completed"
        )

    def _starttls_reply(self, kind: StarttlsReply, tag: str) -> bytes:
        return _wire(f"{tag} {_STARTTLS_REPLIES[kind]}")

    def _timeout_reply(self) -> bytes:
        return _wire(BYE_TIMEOUT)

    def _kicked_reply(self, reason: str) -> bytes:
        return _wire(f"* BYE {reason or 'Server shutting down'}")

    def _scanner(self, tls: bool, outcome: str, before: SecretScanner | None) -> SecretScanner:
        return CommandScanner(self._ctx, tls, outcome)

    def _data_verb(self, data: bytes) -> str:
        return _verb(data)

    def _challenge(self, data: bytes) -> bytes:
        return b"+ " + base64.b64encode(data) + b"\r\n"

    def _auth_reply(self, kind: AuthReply) -> bytes:
        return _wire(f"{self._flow_tag} {_AUTH_REPLIES[kind]}")

    def _logged_in(self, decision: AuthDecision | None) -> None:
        self._state = State.AUTHENTICATED
        self._reader.allow_messages = True
        self._say(f"{self._flow_tag} OK [CAPABILITY {self._capabilities()}] {LOGGED_IN}")

    def _sasl_mode(self, active: bool) -> None:
        if active:
            self._mode = Mode.SASL
        elif self._mode is Mode.SASL:
            self._mode = Mode.COMMAND

    def _forget_pre_tls(self) -> None:
        self._mode = Mode.COMMAND
        self._reader = CommandReader(self._limits)

    def _may_starttls(self) -> bool:
        return self._state is State.NOT_AUTHENTICATED

    def _discard_input(self) -> bytes:
        self._reader.abort()
        return self._lines.take_rest()

    def _interrupted(self) -> None:
        """A command cut short while it waited for a literal still appears in the transcript."""
        if self.phase is Phase.READING and self._mode is Mode.COMMAND and self._reader.busy:
            text = _redact_partial(self._reader.partial())
            self._out.record(CommandReceived(truncate(text), self._is_tls))
            self._reader.abort()

    # --- reading ----------------------------------------------------------------------------

    def _read(self, data: bytes) -> None:
        self._lines.feed(data)
        while self.phase is Phase.READING:
            if self._mode is Mode.COMMAND:
                item = self._reader.next(self._lines)
                if item is None:
                    break
                self._on_item(item, self._command_starts())
            else:
                line = self._lines.next_line()
                if line is None:
                    break
                if self._mode is Mode.SASL:
                    self._sasl_line(line)
                else:
                    self._on_idle_line(line)

    def _arm_timer(self) -> None:
        limits = self._limits
        if self._reader.in_big_literal:
            if not self._literal_timer:
                self._out.add(set_timer(limits.idle_seconds))
                self._literal_timer = True
        elif self._lines.pending or self._reader.busy:
            if not self._line_timer or self._out.replied:
                self._out.add(set_timer(limits.line_seconds))
                self._line_timer = True
        else:
            self._line_timer = self._literal_timer = False
            self._out.add(set_timer(limits.idle_seconds))

    def _on_item(self, item: ReaderItem, disrupt: bool) -> None:
        match item:
            case Complete(raw=raw):
                self._on_command(raw, disrupt)
            case LiteralWanted():
                if disrupt:  # t4: no "+" inside TLS, the disruption instead
                    self._disrupt_first(_redact_partial(self._reader.partial()), [])
                else:
                    self._say(CONTINUE_LITERAL)
            case LiteralTooBig():
                if disrupt:
                    self._disrupt_first(_redact_partial(item.partial), [])
                else:
                    self._on_literal_too_big(item)
            case Overlong(tag=tag, nbytes=nbytes):
                if disrupt:
                    self._disrupt_first(None, [])
                else:
                    self._bad(tag, "line_too_long", f"Line too long ({nbytes} bytes)")

    def _on_literal_too_big(self, item: LiteralTooBig) -> None:
        self._out.record(CommandReceived(truncate(_redact_partial(item.partial)), self._is_tls))
        if item.fatal:
            self._give_up("literal_too_big", _wire(BYE_LITERAL))
        elif item.verb in COMMANDS and self._state not in COMMANDS[item.verb][1]:
            self._bad(item.tag, "bad_state", "Please log in first")
        elif item.verb == "APPEND" and item.synchronizing:
            self._say(f"{item.tag or '*'} NO [TOOBIG] Message too large")
        else:
            self._bad(item.tag, "literal_too_big", "[TOOBIG] Literal too large")

    def _disrupt_first(self, shown: str | None, found: list[Observation]) -> None:
        """t4: the first command inside TLS (``shown``, ``None`` when it was over-long)."""
        self._disrupt_session(shown, CommandScanner(self._ctx, True, "disrupted"), found)

    # --- commands ---------------------------------------------------------------------------

    def _on_command(self, raw: RawCommand, disrupt: bool) -> None:
        parsed = parse_command(raw)
        self._login = None
        shown = truncate(self._transcript(raw, parsed))
        if disrupt:
            inside = CommandScanner(self._ctx, True, "disrupted")
            found = inside.command(parsed, self._login) if isinstance(parsed, ImapCommand) else []
            self._disrupt_session(shown, inside, found)
            return
        self._out.record(CommandReceived(shown, self._is_tls))
        if isinstance(parsed, BadCommand):
            self._bad(parsed.tag, "syntax", f"Error in IMAP command: {parsed.reason}")
            return
        entry = COMMANDS.get(parsed.name)
        if entry is None:
            self._bad(parsed.tag, "unknown_command", "Unknown command")
            return
        handler, states = entry
        if self._state not in states:
            if self._state is State.NOT_AUTHENTICATED:
                text = "Please log in first"
            else:
                text = "No mailbox selected" if State.SELECTED in states else "Wrong state"
            self._bad(parsed.tag, "bad_state", text)
            return
        handler(self, parsed)

    def _transcript(self, raw: RawCommand, parsed: ImapCommand | BadCommand) -> str:
        """The redacted transcript line; for LOGIN it also decides the username (once)."""
        if isinstance(parsed, ImapCommand) and parsed.name == "LOGIN" and len(parsed.args) == 2:
            user, password = astring(parsed.args[0]), astring(parsed.args[1])
            if user is not None and password is not None:
                self._login = login = self._ctx.authenticator(Credential(decode(user), password))
                return f"{parsed.tag} LOGIN {login.display} {redacted_line(len(password))}"
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

    def _bad(self, tag: str | None, reason: str, text: str) -> None:
        self._error(reason, _wire(f"{tag or '*'} BAD {text}"))

    # --- capabilities, STARTTLS -------------------------------------------------------------

    def _capabilities(self) -> str:
        """The capability list for the current state; records ``CapabilitiesSent``."""
        if self._state is not State.NOT_AUTHENTICATED:
            self._out.record(CapabilitiesSent(False, (), self._is_tls))
            return AUTHENTICATED_CAPABILITIES
        starttls = self._starttls_offered()
        disabled = self._login_refused()  # starttls_required: as Dovecot without TLS
        offered = () if disabled else self._offered_mechanisms()
        self._out.record(CapabilitiesSent(starttls, offered, self._is_tls))
        parts = [BASE_CAPABILITIES, *(["STARTTLS"] if starttls else [])]
        parts += ["LOGINDISABLED"] if disabled else []
        return " ".join([*parts, *(f"AUTH={m}" for m in offered)])

    def _cmd_capability(self, cmd: ImapCommand) -> None:
        if cmd.args:
            self._bad(cmd.tag, "syntax", "CAPABILITY takes no arguments")
            return
        self._say(f"* CAPABILITY {self._capabilities()}")
        self._say(f"{cmd.tag} OK Capability completed")

    def _cmd_starttls(self, cmd: ImapCommand) -> None:
        self._starttls(bool(cmd.args), cmd.tag)

    # --- authentication ---------------------------------------------------------------------

    def _cmd_login(self, cmd: ImapCommand) -> None:
        decision = self._login
        if decision is None:
            self._bad(cmd.tag, "syntax", "LOGIN expects a user name and a password")
            return
        if self._state is not State.NOT_AUTHENTICATED or self._login_refused():
            self._out.record(self._attempt(LOGIN_MECHANISM, decision, True, "refused"))
            if self._state is not State.NOT_AUTHENTICATED:
                self._bad(cmd.tag, "bad_state", "Already authenticated")
            else:
                self._flow_tag = cmd.tag
                self._error(None, self._auth_reply(AuthReply.TLS_REQUIRED))
            return
        ok = decision.ok
        self._out.record(self._attempt(LOGIN_MECHANISM, decision, True, SUCCESS if ok else FAILURE))
        self._flow_tag = cmd.tag
        if ok:
            self._logged_in(decision)
        else:
            self._auth_failed()

    def _cmd_authenticate(self, cmd: ImapCommand) -> None:
        args = cmd.args
        mechanism = astring(args[0]) if args else None
        initial = astring(args[1]) if len(args) == 2 else None
        if mechanism is None or len(args) > 2 or (len(args) == 2 and initial is None):
            self._bad(cmd.tag, "syntax", "AUTHENTICATE expects a mechanism")
            return
        mech = decode(mechanism).upper()
        text = decode(initial) if initial is not None else None
        authenticated = self._state is not State.NOT_AUTHENTICATED
        if not authenticated and self._login_refused():
            self._flow_tag = cmd.tag
            self._refuse_login(mech, text)
            return
        if authenticated or not mechanism_allowed(mech, self._is_tls):
            self._record_refused(mech, text)
            if authenticated:
                self._bad(cmd.tag, "bad_state", "Already authenticated")
            else:
                self._say(f"{cmd.tag} {AUTH_UNSUPPORTED}")
            return
        self._flow_tag = cmd.tag
        self._begin_sasl(mech, text)

    # --- any state --------------------------------------------------------------------------

    def _cmd_noop(self, cmd: ImapCommand) -> None:
        self._say(f"{cmd.tag} OK {cmd.name.capitalize()} completed")

    def _cmd_logout(self, cmd: ImapCommand) -> None:
        self._say(BYE_LOGOUT)
        self._say(f"{cmd.tag} OK Logout completed")
        self._close()

    def _cmd_id(self, cmd: ImapCommand) -> None:
        arg = cmd.args[0] if len(cmd.args) == 1 else None
        if isinstance(arg, Group) and len(arg.items) % 2 == 0:
            fields: list[str] = []
            for key, value in zip(arg.items[::2], arg.items[1::2], strict=True):
                name = nstring(key)
                if name is not None and len(fields) < MAX_ID_FIELDS:
                    shown = nstring(value)
                    fields.append(f"{truncate(name, 30)}={truncate(shown or 'NIL', 100)}")
            if fields:
                self._out.record(ClientIdentified("imap_id", truncate("; ".join(fields), 500)))
        elif not (isinstance(arg, Atom) and arg.upper() == "NIL"):
            self._bad(cmd.tag, "syntax", "ID expects NIL or a list of fields")
            return
        self._say(SERVER_ID)
        self._say(f"{cmd.tag} OK ID completed")

    def _cmd_idle(self, cmd: ImapCommand) -> None:
        if cmd.args:
            self._bad(cmd.tag, "syntax", "IDLE takes no arguments")
            return
        self._idle_tag = cmd.tag
        self._mode = Mode.IDLE
        self._say(CONTINUE_IDLE)

    def _on_idle_line(self, line: bytes | LineTooLong) -> None:
        self._mode = Mode.COMMAND
        if isinstance(line, bytes) and line.strip().upper() == b"DONE":
            self._out.record(CommandReceived("DONE", self._is_tls))
            self._say(f"{self._idle_tag} OK Idle completed")
            return
        if isinstance(line, bytes):
            raw = RawCommand((line,), ())
            shown = self._transcript(raw, parse_command(raw))
            self._out.record(CommandReceived(truncate(shown), self._is_tls))
        self._bad(self._idle_tag, "syntax", "Expected DONE")

    # --- authenticated and selected states --------------------------------------------------

    def _cmd_mailbox(self, cmd: ImapCommand) -> None:
        if self._preauthed:
            self._out.record(PreauthUsed(cmd.name, self._is_tls))
        outcome = self._store.run(cmd)
        if outcome.message_bytes is not None:
            self._out.record(MessageReceived(outcome.message_bytes, 0, self._is_tls))
        for line in outcome.untagged:
            self._say(line)
        self._state = State.SELECTED if self._store.selected else State.AUTHENTICATED
        if outcome.status == "BAD":
            self._bad(cmd.tag, "syntax", outcome.text)
        else:
            self._say(f"{cmd.tag} {outcome.status} {outcome.text}")


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


Handler = Callable[[ImapCore, ImapCommand], None]

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

_STARTTLS_REPLIES: Final = {
    StarttlsReply.GO_AHEAD: STARTTLS_PROCEED,
    StarttlsReply.TEMPORARY: STARTTLS_REFUSED,
    StarttlsReply.NOT_ADVERTISED: STARTTLS_NOT_AVAILABLE,
    StarttlsReply.ALREADY_TLS: STARTTLS_NOT_AVAILABLE,
    StarttlsReply.SYNTAX: STARTTLS_SYNTAX,
}
_AUTH_REPLIES: Final = {
    AuthReply.FAILED: AUTH_FAILED,
    AuthReply.CANCELLED: AUTH_CANCELLED,
    AuthReply.MALFORMED: "BAD Invalid SASL response",
    AuthReply.TLS_REQUIRED: "NO [PRIVACYREQUIRED] Plaintext authentication disallowed without TLS",
}
