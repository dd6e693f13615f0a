"""Events, commands and shared machinery of the sans-IO cores.

Rules of this file:
- Events flow shell -> core, commands core -> shell; both are frozen dataclasses.
- ``Core.handle`` never raises on anything a peer can send. Bugs (``LocalProtocolError``) may.
- ``LineBuffer`` enforces the per-line byte budget: a line longer than the limit is reported
  once as ``LineTooLong`` and its remainder is skipped up to the next LF.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from mailtls.observations import Observation
from mailtls.testcases import TestCase

# --- events (shell -> core) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    cipher: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The connection is ready for the greeting. On implicit-TLS ports ``tls`` is already set."""

    tls: TlsInfo | None = None


@dataclass(frozen=True, slots=True)
class DataReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class TlsEstablished:
    info: TlsInfo


@dataclass(frozen=True, slots=True)
class TlsFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class ClientHelloReceived:
    """Answer to ``ReadClientHello`` (T2): one record read by its header, never handshaken."""

    nbytes: int
    looks_like_tls: bool


@dataclass(frozen=True, slots=True)
class Timeout:
    """The timer set by the last ``SetTimer`` fired."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the connection (or it broke). No command returned for it is sent."""


@dataclass(frozen=True, slots=True)
class Kicked:
    """The server closes the run's open connections (activation, step start, shutdown)."""

    reason: str


Event = (
    Connected
    | DataReceived
    | TlsEstablished
    | TlsFailed
    | ClientHelloReceived
    | Timeout
    | Closed
    | Kicked
)

# --- commands (core -> shell) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send bytes on the connection (inside TLS when TLS is active), after ``delay`` seconds."""

    data: bytes
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class SendRaw:
    """Write bytes on the TCP connection outside TLS (T4's cleartext line)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Start the server side of a TLS handshake; bytes received after this go to TLS."""


@dataclass(frozen=True, slots=True)
class ReadClientHello:
    """T2: read one TLS record by its 5-byte header (bounded), answer ``ClientHelloReceived``."""


@dataclass(frozen=True, slots=True)
class SetTimer:
    """(Re)arm the connection's single timer; ``None`` disarms it. Fires ``Timeout``."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class Close:
    """Close after everything queued before it was sent. ``reset`` aborts with a TCP RST."""

    reset: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    observation: Observation


Command = Send | SendRaw | StartTls | ReadClientHello | SetTimer | Close | Record

# --- context given to a core -------------------------------------------------------------------


class PortRole(enum.StrEnum):
    MX = "mx"  # SMTP port 25 style: RCPT only for our own domain, AUTH optional
    SUBMISSION = "submission"  # SMTP 587/465: MAIL requires AUTH
    IMAP = "imap"
    POP3 = "pop3"


@dataclass(frozen=True, slots=True)
class Credential:
    """What a client presented to log in: handed to the authenticator, then dropped.

    A core builds one per login, asks the authenticator, and keeps only the answer: no field of
    a credential is ever recorded, kept or logged (``repr`` shows the username only).
    ``password``: PLAIN, LOGIN, POP3 ``PASS``, IMAP ``LOGIN``. ``challenge`` and ``response``:
    CRAM-MD5 (the server's challenge, the client's hex digest). None of them: only a username
    was presented (POP3 ``USER``, LOGIN cut short after the username, an OAuth exchange), which
    proves nothing: the username travels in the clear.
    """

    username: str
    password: bytes | None = field(default=None, repr=False)
    challenge: bytes | None = field(default=None, repr=False)
    response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """What the authenticator says about a credential.

    ``proof``: the credential is the run's own (its password, or the CRAM-MD5 digest of it):
    only such a login is evidence for the run (verdict, activation, login binding).
    ``ok``: log the client in: ``proof`` and the run is open.
    ``display``: what may be stored/shown: the account name for known runs, else a keyed hash.
    ``code``: the session code parsed from the username when it names a known run (a wrong
    password for it keeps the code, with ``proof`` false: someone else used the username).
    """

    ok: bool
    display: str
    code: str | None
    proof: bool = False


class Authenticator(Protocol):
    def __call__(self, credential: Credential) -> AuthDecision: ...


@dataclass(frozen=True, slots=True)
class Limits:
    line_bytes: int = 4096  # longest command line (SMTP allows 512; clients send longer AUTH)
    literal_bytes: int = 64 * 1024  # longest IMAP literal accepted (APPEND gets message_bytes)
    message_bytes: int = 10 * 1024 * 1024  # longest DATA/APPEND body (counted, discarded)
    idle_seconds: float = 300.0  # no command for this long -> close
    line_seconds: float = 30.0  # absolute deadline for one partial line
    silence_after_refusal: float = 10.0  # t3: close when the client stays silent after refusal
    disrupted_seconds: float = 10.0  # t2/t4: keep a disrupted connection open this long
    auth_fail_delay: float = 1.0  # delay before an authentication failure reply
    max_errors: int = 10  # protocol errors before the server gives up on a connection
    max_auth_failures: int = 3


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Everything a core needs to know about its connection, fixed at accept time."""

    policy: TestCase
    role: PortRole
    hostname: str  # our server name used in greetings
    domain: str  # the mail domain of test accounts
    authenticator: Authenticator
    implicit_tls: bool = False
    limits: Limits = field(default_factory=Limits)


class Core(Protocol):
    def handle(self, event: Event) -> list[Command]: ...


# --- line framing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineTooLong:
    nbytes: int


class LineBuffer:
    """Split a byte stream into lines (CRLF or bare LF) with a byte budget per line.

    ``feed`` buffers; ``next_line`` returns the next complete line without its terminator,
    ``LineTooLong`` once for a line over budget (its remainder is skipped), or ``None``.
    Bare CR inside a line is kept (the core decides whether it is an error).
    ``take_rest`` returns and clears unread bytes (pipelined after STARTTLS, DATA bodies).
    """

    __slots__ = ("_buf", "_limit", "_skipping", "_skipped")

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._skipping = False
        self._skipped = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        return len(self._buf)

    def next_line(self) -> bytes | LineTooLong | None:
        while True:
            idx = self._buf.find(b"\n")
            if self._skipping:
                if idx < 0:
                    self._skipped += len(self._buf)
                    self._buf.clear()
                    return None
                self._skipped += idx + 1
                del self._buf[: idx + 1]
                self._skipping = False
                return LineTooLong(self._skipped)
            if idx < 0:
                if len(self._buf) > self._limit:
                    self._skipping = True
                    self._skipped = 0
                    continue
                return None
            if idx > self._limit + 1:
                self._skipped = idx + 1
                del self._buf[: idx + 1]
                return LineTooLong(self._skipped)
            line = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            return line

    def take(self, n: int) -> bytes:
        """Take up to ``n`` raw bytes (IMAP literals)."""
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def truncate(text: str, limit: int = 200) -> str:
    """Client strings stored as data are truncated (and marked) to bound event sizes."""
    return text if len(text) <= limit else text[:limit] + "…"


def decode(line: bytes) -> str:
    """Decode a protocol line for parsing and display; undecodable bytes become U+FFFD."""
    return line.decode("utf-8", "replace")
