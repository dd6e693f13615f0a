"""Machinery shared by the SMTP, IMAP and POP3 cores (sans-IO, protocol-neutral).

What is here, and why it is shared:
- ``Outbox``: collects the commands of one ``handle`` call; replies of a pipelined batch are
  joined into one ``Send``, and every ``Record`` stays ahead of the reply it precedes.
- ``input_timer``: the contract's timer rule (idle after a reply, an absolute per-line deadline
  from the first byte of a partial line) without reading a clock: the deadline is armed only
  when a partial line starts and left alone while it grows.
- ``SaslFlow``: one AUTH/AUTHENTICATE exchange on top of ``sasl.SaslExchange`` that turns its
  steps into a protocol-neutral result and builds the exchange's single ``AuthAttempted`` (plus
  ``UsernameSent`` when a username went out without its secret). It hands the exchange's
  ``Credential`` to the authenticator once and keeps only the answer (``AuthDecision``, whose
  ``proof`` the ``AuthAttempted`` carries) and whether a secret was sent.
- ``SecretScanner`` (bytes that get no reply -> the observations of the secrets in them) and
  ``LineScanner``, its base for the line protocols (SMTP, POP3: the SASL lines after an AUTH
  and the exchange's end are handled once here).
- ``Disrupted``: the t2/t4 *disrupted* state (no replies; every chunk recorded as
  ``DataAfterDisruption``; secrets found by the protocol's ``SecretScanner`` recorded as
  ``AuthAttempted(outcome="disrupted")``; bounded; ``close_on_data`` ends it at the first chunk,
  as after t2 or a failed handshake).
The connection lifecycle that uses these is ``flow.AttackFlow``.
- small helpers: ``looks_like_tls_record``, ``first_verb``, ``redacted_line``, ``ascii_number``,
  ``mechanism_label``, ``mechanisms``, ``mechanism_allowed``, ``set_timer`` (cached).

Imports only ``mailtls.observations`` and sibling modules of ``mailtls.protocols`` (``base``,
``sasl``). Must not import a protocol core (``smtp``, ``imap``, ``pop3``), ``asyncio``, sockets,
``mailtls.net``, ``mailtls.store`` or ``mailtls.web``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Final, Protocol

from mailtls.observations import (
    AuthAttempted,
    DataAfterDisruption,
    Observation,
    SessionKicked,
    UsernameSent,
)
from mailtls.protocols.base import (
    AuthDecision,
    Authenticator,
    Close,
    Closed,
    Command,
    Credential,
    DataReceived,
    Event,
    Kicked,
    Limits,
    LineBuffer,
    Record,
    Send,
    SetTimer,
    Timeout,
    decode,
    truncate,
)
from mailtls.protocols.sasl import (
    PRE_TLS_MECHANISMS,
    RECOGNISED,
    TLS_MECHANISMS,
    Aborted,
    Challenge,
    Finished,
    SaslExchange,
    Step,
)

OAUTH_MECHANISMS: Final = frozenset({"XOAUTH2", "OAUTHBEARER"})
# Registered SASL mechanism names a client may ask for; any other name is shown as "UNKNOWN"
# (a confused client could put anything, even a password, where the mechanism goes).
KNOWN_MECHANISMS: Final = RECOGNISED | {
    "ANONYMOUS",
    "DIGEST-MD5",
    "EXTERNAL",
    "GSSAPI",
    "GS2-KRB5",
    "NTLM",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-512-PLUS",
}

# --- outgoing commands -------------------------------------------------------------------------


class Outbox:
    """The commands of one ``handle`` call, in order; consecutive replies become one ``Send``."""

    __slots__ = ("_commands", "_pending", "replied")

    def __init__(self) -> None:
        self._commands: list[Command] = []
        self._pending: list[bytes] = []
        self.replied = False  # a reply was queued in this call

    def record(self, observation: Observation) -> None:
        self._commands.append(Record(observation))

    def reply(self, data: bytes) -> None:
        """Queue reply bytes; they are sent, joined, before the next non-reply command."""
        self.replied = True
        self._pending.append(data)

    def add(self, command: Command) -> None:
        """Append a command after all replies queued so far (``Send`` with delay, ``Close``...)."""
        self.flush()
        self._commands.append(command)

    def flush(self) -> None:
        if self._pending:
            pending = self._pending
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            self._commands.append(Send(data))
            self._pending = []

    def finish(self) -> list[Command]:
        self.flush()
        return self._commands


set_timer = lru_cache(maxsize=32)(SetTimer)
"""``SetTimer(seconds)``, shared instances (commands are immutable; creating one is not free)."""


def input_timer(
    limits: Limits, completed: bool, partial_before: bool, partial_after: bool
) -> SetTimer | None:
    """The timer to arm after a ``DataReceived`` was parsed in a line-reading state.

    ``completed``: at least one line was handled (so a reply went out or is queued).
    ``partial_before``/``partial_after``: a partial line was buffered before/after the data.
    A partial line that just started gets the absolute ``line_seconds`` deadline; one that only
    grew keeps the deadline already armed (``None``: no command); otherwise ``idle_seconds``.
    """
    if partial_after and (completed or not partial_before):
        return set_timer(limits.line_seconds)
    if completed:
        return set_timer(limits.idle_seconds)
    return None


# --- small helpers -----------------------------------------------------------------------------


def looks_like_tls_record(data: bytes) -> bool:
    """Whether bytes start like a TLS record (change_cipher_spec, alert, handshake, app data)."""
    return bool(data) and 0x14 <= data[0] <= 0x17


def first_verb(data: bytes, known: frozenset[str]) -> str:
    """The first word of a plaintext chunk, for ``DataAfterDisruption.verb``.

    ``""`` for binary data; the upper-cased word when it is one of the protocol's ``known``
    verbs; ``"?"`` for any other text, so that a stray secret (a base64 password line) is never
    copied into an observation.
    """
    if not data or not 0x21 <= data[0] <= 0x7E:
        return ""
    word = data[:32].split(None, 1)[0]
    if not all(0x21 <= b <= 0x7E for b in word):
        return ""
    verb = word.decode("ascii").upper()
    return verb if verb in known else "?"


def ascii_number(text: str) -> int | None:
    """The value of a client's decimal number, ``None`` when it is not one.

    Only ASCII digits count (``str.isdigit`` also accepts ``²``, which ``int`` refuses); more
    than 18 digits count as ``10**18``, beyond every bound (``int`` refuses over 4300).
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 18 else 10**18


def mechanism_label(mechanism: str) -> str:
    """The form of a client-supplied (upper-cased) mechanism name that may be recorded."""
    return mechanism if mechanism in KNOWN_MECHANISMS else "UNKNOWN"


def redacted_line(nbytes: int) -> str:
    """Transcript form of a line that is entirely secret (a SASL continuation)."""
    return f"<redacted, {nbytes} bytes>"


def mechanisms(tls: bool) -> tuple[str, ...]:
    """SASL mechanisms offered: ``PLAIN LOGIN`` before TLS (the attacker's offer), plus CRAM-MD5."""
    return TLS_MECHANISMS if tls else PRE_TLS_MECHANISMS


def mechanism_allowed(mechanism: str, tls: bool) -> bool:
    """Offered now, or XOAUTH2/OAUTHBEARER (recognised, run to the end and refused)."""
    return mechanism in mechanisms(tls) or mechanism in OAUTH_MECHANISMS


# --- SASL --------------------------------------------------------------------------------------

SUCCESS: Final = "success"
FAILURE: Final = "failure"
CANCELLED: Final = "cancelled"
MALFORMED: Final = "malformed"


class SaslFlow:
    """One SASL exchange with its bookkeeping; the core phrases the result in its protocol.

    ``start(initial)`` and ``respond(line)`` return ``bytes`` (a challenge, raw: the core
    base64-encodes it) or one of ``SUCCESS``, ``FAILURE``, ``CANCELLED``, ``MALFORMED``. After
    the end, ``records(outcome)`` gives the observations of the exchange (``outcome`` is the
    ``AuthAttempted.outcome``: the result above, or ``refused``/``disrupted``/...).
    ``secret_sent`` is conservative: a malformed or over-long response in the position of the
    secret (any PLAIN response, the LOGIN password line, the CRAM-MD5 response, an OAuth token)
    counts as sent, since its bytes went over the wire.
    """

    __slots__ = (
        "_authenticator",
        "_challenged",
        "_decision",
        "_sasl",
        "mechanism",
        "secret_sent",
        "tls",
        "username",
    )

    def __init__(
        self, mechanism: str, tls: bool, authenticator: Authenticator, hostname: str
    ) -> None:
        if mechanism.upper() not in RECOGNISED:  # a caller's bug: check mechanism_allowed first
            raise ValueError(f"SaslFlow: mechanism {mechanism!r} is not implemented")
        self._sasl = SaslExchange(mechanism, hostname)
        self.mechanism = self._sasl.mechanism
        self.tls = tls
        self._authenticator = authenticator
        self._challenged = False
        self._decision: AuthDecision | None = None
        self.username: str | None = None  # only in memory; observations get the display form
        self.secret_sent = False

    def start(self, initial: str | None) -> bytes | str:
        return self._after(self._sasl.start(initial), initial)

    def respond(self, line: str) -> bytes | str:
        return self._after(self._sasl.respond(line), line)

    def fail_line(self, nonempty: bool = True) -> str:
        """A response that could not be read at all (over-long line): ``MALFORMED``."""
        if nonempty and self._secret_stage():
            self.secret_sent = True
        return MALFORMED

    @property
    def decision(self) -> AuthDecision | None:
        """The authenticator's answer: for the exchange's credential once it finished, else
        for the username alone (which proves nothing)."""
        if self._decision is None and self.username is not None:
            self._decision = self._authenticator(Credential(self.username))
        return self._decision

    def records(self, outcome: str) -> list[Observation]:
        """The exchange's ``AuthAttempted`` (+ ``UsernameSent`` if only a username went out)."""
        decision = self.decision
        display, code = (decision.display, decision.code) if decision else ("", None)
        sent = self.secret_sent
        proof = decision is not None and decision.proof
        out: list[Observation] = [
            AuthAttempted(
                self.mechanism, display, code, self.tls, sent, sent and not self.tls, outcome, proof
            )
        ]
        if decision is not None and not sent:
            out.append(UsernameSent(display, code, self.tls))
        return out

    def _secret_stage(self) -> bool:
        if self.mechanism == "LOGIN":
            return self.username is not None
        if self.mechanism == "CRAM-MD5":
            return self._challenged
        return True

    def _after(self, step: Step, line: str | None) -> bytes | str:
        if isinstance(step, Challenge):
            self._challenged = True
            if step.username_so_far is not None:
                self.username = step.username_so_far
                if self.mechanism in OAUTH_MECHANISMS:
                    self.secret_sent = True  # the token travelled with the first response
            return step.data
        if isinstance(step, Finished):
            self.username = step.username
            self.secret_sent = step.secret_sent
            self._decision = decision = self._authenticator(
                step.credential or Credential(step.username)
            )
            ok = decision is not None and decision.ok and not step.always_fail
            return SUCCESS if ok else FAILURE
        if isinstance(step, Aborted) and step.reason == "cancelled":
            if step.username is not None:
                self.username = step.username
            return CANCELLED
        empty = line is None or line.strip() in ("", "=")
        return self.fail_line(nonempty=not empty)


# --- lines the server never answers --------------------------------------------------------


class SecretScanner(Protocol):
    """A protocol's reader of bytes the server never answers (disrupted, pipelined after
    STARTTLS): it returns the observations of secrets and usernames those bytes carry."""

    def feed(self, data: bytes) -> list[Observation]: ...

    def finish(self) -> list[Observation]: ...


class LineScanner:
    """A ``SecretScanner`` for line protocols (SMTP, POP3): ``command(line)`` is the protocol's
    part (a line that is not a SASL response); the SASL lines after an ``AUTH`` and the exchange's
    end are handled here. ``outcome`` goes into ``AuthAttempted`` (``refused``, ``disrupted``)."""

    __slots__ = ("_authenticator", "_flow", "_hostname", "_lines", "outcome", "tls")

    def __init__(
        self, authenticator: Authenticator, hostname: str, line_limit: int, tls: bool, outcome: str
    ) -> None:
        self._authenticator = authenticator
        self._hostname = hostname
        self._lines = LineBuffer(line_limit)
        self._flow: SaslFlow | None = None
        self.tls = tls
        self.outcome = outcome

    def command(self, line: bytes) -> list[Observation]:
        """Observations of one command line; start an exchange with ``start_sasl``."""
        raise NotImplementedError

    def line(self, line: bytes) -> list[Observation]:
        if self._flow is not None:
            if isinstance(self._flow.respond(decode(line)), bytes):
                return []
            return self.finish()
        return self.command(line)

    def start_sasl(self, mechanism: str, initial: str | None) -> list[Observation]:
        self._flow = SaslFlow(mechanism, self.tls, self._authenticator, self._hostname)
        if isinstance(self._flow.start(initial), bytes):
            return []
        return self.finish()

    def decide(self, username: str, password: bytes | None = None) -> AuthDecision:
        """The authenticator's answer for a username, with its password when one was sent."""
        return self._authenticator(Credential(username, password))

    def feed(self, data: bytes) -> list[Observation]:
        self._lines.feed(data)
        found: list[Observation] = []
        while (line := self._lines.next_line()) is not None:
            if isinstance(line, bytes) and line:
                found += self.line(line)
        return found

    def finish(self) -> list[Observation]:
        """End of the bytes: a partial last line counts, an unfinished exchange is concluded."""
        rest = self._lines.take_rest().rstrip(b"\r")
        found = self.line(rest) if rest else []
        flow, self._flow = self._flow, None
        if flow is None:
            return found
        if flow.secret_sent:
            return [*found, *flow.records(self.outcome)[:1]]
        decision = flow.decision
        if decision is not None:
            return [*found, UsernameSent(decision.display, decision.code, self.tls)]
        return found

    def scan(self, data: bytes) -> list[Observation]:
        """Every line of a byte string (a partial last line included), then ``finish``."""
        return self.feed(data) + self.finish()


MAX_DISRUPTED_CHUNKS: Final = 64
MAX_DISRUPTED_BYTES: Final = 64 * 1024


class Disrupted:
    """The t2/t4 *disrupted* state: no replies; each chunk recorded as ``DataAfterDisruption``
    (``verb`` names it without copying a secret), secrets found by the protocol's
    ``SecretScanner`` recorded too; ``Close`` on ``Timeout``/``Closed``/``Kicked``, when the
    chunk or byte bound is reached, or (``close_on_data``: t2, as a real TLS server behind the
    attacker would abort on bytes that are not a valid TLS record) after the first chunk."""

    __slots__ = ("_bytes", "_chunks", "_close_on_data", "_closed", "_scanner", "_verb")

    def __init__(
        self, scanner: SecretScanner, verb: Callable[[bytes], str], close_on_data: bool = False
    ) -> None:
        self._scanner = scanner
        self._verb = verb
        self._close_on_data = close_on_data
        self._chunks = 0
        self._bytes = 0
        self._closed = False

    def handle(self, event: Event) -> list[Command]:
        if self._closed:
            return []
        if isinstance(event, DataReceived):
            return self.data(event.data)
        if isinstance(event, Timeout | Closed):
            return [*self._finish(), Close()]
        if isinstance(event, Kicked):
            return [*self._finish(), Record(SessionKicked(truncate(event.reason))), Close()]
        return []

    def data(self, data: bytes) -> list[Command]:
        if self._closed or not data:
            return []
        self._chunks += 1
        self._bytes += len(data)
        alert = looks_like_tls_record(data)
        out: list[Command] = [
            Record(DataAfterDisruption(len(data), alert, "" if alert else self._verb(data)))
        ]
        if not alert:
            out += [Record(o) for o in self._scanner.feed(data)]
        if (
            self._close_on_data
            or self._chunks >= MAX_DISRUPTED_CHUNKS
            or self._bytes >= MAX_DISRUPTED_BYTES
        ):
            out += [*self._finish(), Close()]
        return out

    def _finish(self) -> list[Record]:
        self._closed = True
        return [Record(o) for o in self._scanner.finish()]
