"""Observations: the past-tense facts a connection produces, journalled as events.

A protocol core or the I/O shell emits ``Record(observation)``; the shell wraps it in an envelope
(timestamp, event id, protocol, ports, client address, TLS state, binding, connection id) and
appends it to the journal. ``observation.as_fields()`` gives the JSON fields; ``TYPE`` names the
event type. Client-supplied strings are stored as data (already truncated by the cores) and
escaped wherever shown. No field ever holds a secret: SASL responses, passwords and tokens are
reduced to their length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

# field types whose values ``asdict`` would return unchanged (or as an equal new tuple)
_FLAT_TYPES = frozenset(
    {"str", "int", "bool", "float", "str | None", "int | None", "tuple[str, ...]"}
)
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _flat_field_names(cls: type) -> tuple[str, ...] | None:
    """The field names of ``cls`` when all its fields are flat, else None (then ``asdict``)."""
    found = fields(cls)
    if all(isinstance(f.type, str) and f.type in _FLAT_TYPES for f in found):
        return tuple(f.name for f in found)
    return None


@dataclass(frozen=True, slots=True)
class Observation:
    TYPE: ClassVar[str] = "observation"

    def as_fields(self) -> dict[str, Any]:
        """The fields as a dict (``dataclasses.asdict``; read directly for flat classes)."""
        cls = type(self)
        try:
            names = _FIELD_NAMES[cls]
        except KeyError:
            names = _FIELD_NAMES[cls] = _flat_field_names(cls)
        if names is None:
            return asdict(self)
        return {name: getattr(self, name) for name in names}


# --- connection lifecycle (recorded by the shell) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionOpened(Observation):
    TYPE: ClassVar[str] = "connection_opened"
    security: str  # "starttls" | "tls" (implicit)
    testcase: str  # the policy this connection got at accept time
    active: bool  # whether the attack is active on this connection


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Observation):
    TYPE: ClassVar[str] = "connection_closed"
    by: str  # "client" | "server" | "timeout" | "kick" | "error"
    bytes_in: int
    bytes_out: int
    duration: float


@dataclass(frozen=True, slots=True)
class ConnectionSummarized(Observation):
    """A connection bound to no run, recorded compactly (by the shell, at its close, instead of
    its other records): what it got and did, how much, and a sample of its command lines (as
    the transcript shows them: redacted). ``counts``: observations by type; ``code``: the run
    code a login of it named (with a wrong password), so that the run's deletion removes it."""

    TYPE: ClassVar[str] = "connection_summary"
    security: str
    testcase: str
    by: str
    bytes_in: int
    bytes_out: int
    duration: float
    counts: dict[str, int]
    lines: tuple[str, ...]
    mechanisms: tuple[str, ...]  # SASL/login mechanisms tried
    secrets_in_clear: int  # secret-carrying messages sent without TLS (no secret is kept)
    code: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetExceeded(Observation):
    """A connection (``scope`` "connection") or its address ("address") used up its budget of
    records or journal bytes (``what``); the connection gets the protocol's goodbye."""

    TYPE: ClassVar[str] = "budget_exceeded"
    scope: str
    what: str  # "records" | "bytes"
    limit: int


@dataclass(frozen=True, slots=True)
class ImplicitTlsBlocked(Observation):
    TYPE: ClassVar[str] = "implicit_tls_blocked"
    style: str  # "silence" | "close" | "reset" | "handshake_then_close"


@dataclass(frozen=True, slots=True)
class ConnectionRefused(Observation):
    TYPE: ClassVar[str] = "connection_refused"
    reason: str  # "per_ip_limit" | "global_limit" | "accept_rate"


# --- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsStarted(Observation):
    TYPE: ClassVar[str] = "tls_established"
    version: str
    cipher: str
    implicit: bool


@dataclass(frozen=True, slots=True)
class TlsHandshakeFailed(Observation):
    TYPE: ClassVar[str] = "tls_failed"
    reason: str


@dataclass(frozen=True, slots=True)
class ClientHelloOffered(Observation):
    """``tls_fallback``: what one ClientHello offered and how it was answered.

    ``attempt``: its number among the client's attempts on this port in this step (1 is the
    first); ``fallback``: it offers less than the first attempt did; ``answer``: ``alert``
    (a handshake_failure alert, then close) or ``served`` (the handshake goes on)."""

    TYPE: ClassVar[str] = "client_hello_offered"
    attempt: int
    highest: str
    versions: tuple[str, ...]
    fallback_scsv: bool
    fallback: bool
    answer: str


# --- capabilities and STARTTLS -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapabilitiesSent(Observation):
    TYPE: ClassVar[str] = "capabilities_sent"
    starttls_offered: bool
    auth_mechanisms: tuple[str, ...]
    tls: bool


@dataclass(frozen=True, slots=True)
class StarttlsRequested(Observation):
    TYPE: ClassVar[str] = "starttls_requested"
    advertised: bool


@dataclass(frozen=True, slots=True)
class StarttlsAccepted(Observation):
    TYPE: ClassVar[str] = "starttls_accepted"


@dataclass(frozen=True, slots=True)
class StarttlsRefused(Observation):
    TYPE: ClassVar[str] = "starttls_refused"
    reason: str  # "not_advertised" | "testcase" | "already_tls" | "syntax"
    reply: str


@dataclass(frozen=True, slots=True)
class StarttlsDisrupted(Observation):
    TYPE: ClassVar[str] = "starttls_disrupted"
    stage: str  # "handshake" (t2) | "session" (t4)
    client_hello_bytes: int
    looks_like_tls: bool
    reply: str


@dataclass(frozen=True, slots=True)
class ResponseInjected(Observation):
    """``inject``: the STARTTLS go-ahead was followed, in the same plaintext write, by a forged
    answer (``nbytes`` long) to the client's first command inside TLS."""

    TYPE: ClassVar[str] = "response_injected"
    nbytes: int


@dataclass(frozen=True, slots=True)
class PreauthGreeted(Observation):
    """``preauth``: the IMAP greeting was ``* PREAUTH`` (authenticated without TLS)."""

    TYPE: ClassVar[str] = "preauth_greeted"


@dataclass(frozen=True, slots=True)
class PreauthUsed(Observation):
    """A mailbox command (``verb``: SELECT, FETCH, APPEND, LIST...) in a session that the
    ``PREAUTH`` greeting authenticated: the attacker would read or write this mail."""

    TYPE: ClassVar[str] = "preauth_used"
    verb: str
    tls: bool


@dataclass(frozen=True, slots=True)
class PipelinedAfterStarttls(Observation):
    TYPE: ClassVar[str] = "pipelined_after_starttls"
    bytes_discarded: int


@dataclass(frozen=True, slots=True)
class DataAfterDisruption(Observation):
    TYPE: ClassVar[str] = "data_after_disruption"
    nbytes: int
    tls_alert: bool  # starts like a TLS record (alert or other)
    verb: str  # first word of a plaintext line, "" when binary


# --- commands and authentication ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandReceived(Observation):
    """A client command, as a redacted transcript line (``AUTH PLAIN <redacted, 24 bytes>``)."""

    TYPE: ClassVar[str] = "command"
    line: str
    tls: bool


@dataclass(frozen=True, slots=True)
class ClientIdentified(Observation):
    """EHLO/HELO name or IMAP ID fields (client-supplied, truncated, stored as data)."""

    TYPE: ClassVar[str] = "client_identified"
    kind: str  # "ehlo" | "helo" | "imap_id"
    value: str


@dataclass(frozen=True, slots=True)
class AuthAttempted(Observation):
    """One authentication exchange.

    ``username`` is the run's account name when it belongs to a known run, else a keyed hash
    (``h:...``). ``secret_sent`` says whether the secret-carrying message was sent;
    ``secret_in_clear`` whether it was sent without TLS. ``outcome`` is ``success``, ``failure``,
    ``cancelled``, ``refused`` (mechanism not offered / not allowed) or ``disrupted``.
    ``proof`` says whether the secret was the run's password (never anything derived from the
    secret itself): only such an attempt is evidence for the run; a run's username with another
    secret is someone else's (or a mistyped) login.
    """

    TYPE: ClassVar[str] = "auth"
    mechanism: str
    username: str
    code: str | None
    tls: bool
    secret_sent: bool
    secret_in_clear: bool
    outcome: str
    proof: bool = False


@dataclass(frozen=True, slots=True)
class UsernameSent(Observation):
    """A username without its secret (POP3 ``USER``, SASL LOGIN's first step)."""

    TYPE: ClassVar[str] = "username_sent"
    username: str
    code: str | None
    tls: bool


@dataclass(frozen=True, slots=True)
class ProtocolError(Observation):
    TYPE: ClassVar[str] = "protocol_error"
    reason: str
    reply: str


@dataclass(frozen=True, slots=True)
class MessageReceived(Observation):
    """An SMTP DATA body or IMAP APPEND: counted and discarded, never stored or relayed."""

    TYPE: ClassVar[str] = "message_received"
    nbytes: int
    recipients: int
    tls: bool


@dataclass(frozen=True, slots=True)
class SessionKicked(Observation):
    TYPE: ClassVar[str] = "session_kicked"
    reason: str
