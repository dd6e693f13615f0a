"""Fuzz of the three protocol cores through ``handle()``: random and structured garbage.

For SMTP, IMAP and POP3, every test case, STARTTLS and implicit-TLS ports, a seeded random
conversation mixes well-formed commands that carry canary secrets (passwords, SASL responses,
tokens, CRAM digests) and canary usernames with random bytes, split at random points, and shell
events the core asked for (``TlsEstablished``/``TlsFailed`` after ``StartTls``,
``ClientHelloReceived`` after ``ReadClientHello``) or did not (timers, kicks, events out of turn).

Checked on every call: ``handle`` never raises; every returned command is a known command; no
canary secret appears in any command (observations and bytes sent); an unknown username never
appears raw (only its keyed hash); every string in an observation is bounded; a closed core
stays silent. No sockets: the cores are sans-IO.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import get_args

import pytest
from protocols_kit import authenticator, b64

from mailtls.observations import AuthAttempted, Observation
from mailtls.protocols.base import (
    ClientHelloReceived,
    Close,
    Closed,
    Command,
    Connected,
    Core,
    DataReceived,
    Event,
    Kicked,
    Limits,
    PortRole,
    ReadClientHello,
    Record,
    Send,
    SendRaw,
    SessionContext,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
    TlsInfo,
)
from mailtls.protocols.common import mechanism_label
from mailtls.protocols.imap import ImapCore
from mailtls.protocols.pop3 import Pop3Core
from mailtls.protocols.smtp import SmtpCore
from mailtls.testcases import TESTCASES

DOMAIN = "mailtls.test"
USER = "test-abc123"
SECRET = "Canary-Pa55w0rd-7f3e9"
TOKEN = "ya29.CanaryToken-0c1d2e3f"
DIGEST = "0123456789abcdefcanary0123456789"
VICTIM = "victim-user-5e8d"  # an unknown username: only its keyed hash may appear
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
MAX_FIELD = 1024  # longest string any observation field may hold


def _forms(text: str) -> list[bytes]:
    return [text.encode(), b64(text).encode()]


LEAKS: list[bytes] = [
    *_forms(SECRET),
    *_forms(TOKEN),
    *_forms(DIGEST),
    VICTIM.encode(),
    b64(VICTIM).encode(),
    b64(f"\0{USER}\0{SECRET}").encode(),
    b64(f"\0{VICTIM}\0{SECRET}").encode(),
    b64(f"{USER} {DIGEST}").encode(),
    b64(f"user={USER}\1auth=Bearer {TOKEN}\1\1").encode(),
    b64(f"n,a={VICTIM},\1auth=Bearer {TOKEN}\1\1").encode(),
]

# SASL exchanges (as lines after the verb), shared by the three protocols
SASL = [
    f"PLAIN {b64(chr(0) + USER + chr(0) + SECRET)}",
    f"PLAIN {b64(chr(0) + VICTIM + chr(0) + SECRET)}",
    "PLAIN",
    "LOGIN",
    f"LOGIN {b64(VICTIM)}",
    "CRAM-MD5",
    f"XOAUTH2 {b64(f'user={USER}{chr(1)}auth=Bearer {TOKEN}{chr(1)}{chr(1)}')}",
    f"OAUTHBEARER {b64(f'n,a={VICTIM},{chr(1)}auth=Bearer {TOKEN}{chr(1)}{chr(1)}')}",
    "SCRAM-SHA-256",
    SECRET,  # a password where the mechanism goes
]
SASL_LINES = [
    b64(f"\0{USER}\0{SECRET}"),
    b64(USER),
    b64(VICTIM),
    b64(SECRET),
    b64(f"{USER} {DIGEST}"),
    SECRET,
    "*",
    "=",
    "",
]

SMTP_LINES = [
    "EHLO client.example",
    "HELO client.example",
    "STARTTLS",
    "STARTTLS now",
    *(f"AUTH {s}" for s in SASL),
    *SASL_LINES,
    "MAIL FROM:<a@example.org>",
    "MAIL FROM:<a@example.org> SIZE=99999999999",
    "MAIL FROM:<a@example.org> SIZE=\u00b2",  # a digit to str.isdigit, not to int()
    f"RCPT TO:<x@{DOMAIN}>",
    "RCPT TO:<x@elsewhere.example>",
    "DATA",
    "body line\r\n.\r\n",
    ".",
    "RSET",
    "NOOP",
    "VRFY x",
    "HELP",
    f"PASS {SECRET}",
    f"USER {VICTIM}",
    "BDAT 10 LAST",
]

IMAP_LINES = [
    "a CAPABILITY",
    "a STARTTLS",
    "a STARTTLS now",
    f"a LOGIN {USER} {SECRET}",
    f'a LOGIN "{VICTIM}" "{SECRET}"',
    f"a LOGIN {{{len(VICTIM)}}}\r\n{VICTIM} {{{len(SECRET)}+}}\r\n{SECRET}",
    f"a LOGIN {USER} {{{len(SECRET)}}}\r\n{SECRET}",
    f"LOGIN {USER} {SECRET}",
    *(f"a AUTHENTICATE {s}" for s in SASL),
    *SASL_LINES,
    'a ID ("name" "fuzz" "version" "1")',
    "a ID NIL",
    "a NAMESPACE",
    "a ENABLE UTF8=ACCEPT",
    'a LIST "" "*"',
    'a LSUB "" "*"',
    "a SELECT INBOX",
    "a EXAMINE INBOX",
    "a CREATE foo",
    "a STATUS INBOX (MESSAGES UIDNEXT)",
    "a UID SEARCH ALL",
    "a UID FETCH 1:* (FLAGS)",
    "a UID STORE 1 +FLAGS (\\Seen)",
    "a APPEND INBOX {5}\r\nhello",
    "a APPEND INBOX {999999+}",
    "a APPEND INBOX {3+}\r\nabc",
    "a IDLE",
    "DONE",
    "a EXPUNGE",
    "a CLOSE",
    "a NOOP",
    "a CHECK",
    "a (((((((((((((((((((",
    'a LOGIN "unterminated',
]

POP3_LINES = [
    "CAPA",
    "STLS",
    "STLS now",
    f"USER {USER}",
    f"USER {VICTIM}",
    f"PASS {SECRET}",
    f"PASS {SECRET} with spaces",
    f"APOP {VICTIM} {DIGEST}",
    "AUTH",
    *(f"AUTH {s}" for s in SASL),
    *SASL_LINES,
    "STAT",
    "LIST",
    "LIST 1",
    "UIDL",
    "RETR 1",
    "DELE 1",
    "TOP 1 5",
    "RETR \u00b2",
    "TOP \u00b9 \u00b2",
    "LIST 1" + "0" * 5000,
    "NOOP",
    "RSET",
]

GARBAGE_ALPHABET = bytes(range(256)).replace(b"\n", b"").replace(b"{", b"")

CoreFactory = Callable[[SessionContext], Core]
PROTOCOLS: dict[str, tuple[CoreFactory, PortRole, list[str]]] = {
    "smtp": (SmtpCore, PortRole.SUBMISSION, SMTP_LINES),
    "smtp-mx": (SmtpCore, PortRole.MX, SMTP_LINES),
    "imap": (ImapCore, PortRole.IMAP, IMAP_LINES),
    "pop3": (Pop3Core, PortRole.POP3, POP3_LINES),
}


def _garbage(rng: random.Random) -> bytes:
    """Random bytes without LF or ``{`` (so that they cannot glue onto, or swallow as a
    literal, the structured line that follows), ending a line."""
    size = rng.choice((0, 1, 3, 20, 200, 5000))
    return bytes(rng.choice(GARBAGE_ALPHABET) for _ in range(size)) + b"\r\n"


def _stream(rng: random.Random, lines: list[str], n: int) -> bytes:
    parts: list[bytes] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.7:
            parts.append(rng.choice(lines).encode() + b"\r\n")
        elif roll < 0.8:
            parts.append(b"\x16\x03\x01\x00\x05hello")  # a TLS record where a command goes
        else:
            parts.append(_garbage(rng))
    return b"".join(parts)


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    out: list[bytes] = []
    while data:
        cut = rng.choice((1, 2, 7, 64, 1000, len(data)))
        out.append(data[:cut])
        data = data[cut:]
    return out


class Harness:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.closed = False
        self.calls = 0

    def event(self, event: Event) -> list[Command]:
        commands = self.core.handle(event)
        self.calls += 1
        if self.closed:
            assert commands == [], f"closed core answered {event!r}: {commands!r}"
        for command in commands:
            assert isinstance(command, get_args(Command)), command
            self._check(command)
        if any(isinstance(c, Close) for c in commands):
            self.closed = True
        return commands

    def _check(self, command: Command) -> None:
        shown = repr(command).encode()
        if isinstance(command, Send | SendRaw):
            shown += command.data
        for leak in LEAKS:
            assert leak not in shown, f"{leak!r} leaked in {command!r}"
        if isinstance(command, Record):
            _check_bounded(command.observation)


def _check_bounded(observation: Observation) -> None:
    for field in dataclasses.fields(observation):
        value = getattr(observation, field.name)
        if isinstance(value, str):
            assert len(value) <= MAX_FIELD, f"{type(observation).__name__}.{field.name} too long"


def _answer(h: Harness, commands: list[Command], rng: random.Random) -> None:
    """Play the shell: answer ``StartTls`` and ``ReadClientHello`` as a real peer might."""
    if any(isinstance(c, StartTls) for c in commands):
        _answer(h, h.event(TlsEstablished(TLS) if rng.random() < 0.8 else TlsFailed("x")), rng)
    elif any(isinstance(c, ReadClientHello) for c in commands):
        _answer(h, h.event(ClientHelloReceived(rng.randrange(0, 16390), rng.random() < 0.7)), rng)


STRAY_EVENTS: list[Event] = [
    Timeout(),
    Kicked("step started"),
    Kicked("\x1b[31m" + "x" * 5000),
    TlsEstablished(TLS),
    TlsFailed("y" * 5000),
    ClientHelloReceived(5, True),
    Connected(None),
    Closed(),
]


def _conversation(name: str, testcase: str, implicit: bool, seed: int) -> Harness:
    factory, role, lines = PROTOCOLS[name]
    rng = random.Random(f"{name}-{testcase}-{implicit}-{seed}")
    limits = Limits(
        line_bytes=rng.choice((256, 4096)),
        literal_bytes=rng.choice((64, 64 * 1024)),
        message_bytes=rng.choice((1000, 10 * 1024 * 1024)),
        max_errors=rng.choice((3, 1000)),
        max_auth_failures=rng.choice((2, 1000)),
    )
    ctx = SessionContext(
        policy=TESTCASES[testcase],
        role=role,
        hostname="mail.example.test",
        domain=DOMAIN,
        authenticator=authenticator,
        implicit_tls=implicit,
        limits=limits,
    )
    h = Harness(factory(ctx))
    _answer(h, h.event(Connected(TLS if implicit else None)), rng)
    for chunk in _chunks(rng, _stream(rng, lines, rng.randint(1, 60))):
        _answer(h, h.event(DataReceived(chunk)), rng)
        if rng.random() < 0.03:
            _answer(h, h.event(rng.choice(STRAY_EVENTS)), rng)
    h.event(rng.choice((Timeout(), Closed(), Kicked("end"))))
    h.event(Closed())
    return h


@pytest.mark.timeout(60)
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
@pytest.mark.parametrize("testcase", list(TESTCASES))
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_cores_survive_structured_garbage(name: str, testcase: str, implicit: bool) -> None:
    for seed in range(40):
        _conversation(name, testcase, implicit, seed)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_cores_survive_pure_random_bytes(name: str) -> None:
    factory, role, _ = PROTOCOLS[name]
    rng = random.Random(name)
    for testcase in TESTCASES:
        ctx = SessionContext(TESTCASES[testcase], role, "mail.example.test", DOMAIN, authenticator)
        h = Harness(factory(ctx))
        h.event(Connected())
        for _ in range(200):
            h.event(DataReceived(rng.randbytes(rng.randrange(1, 300))))
            if rng.random() < 0.05:
                _answer(h, h.event(rng.choice(STRAY_EVENTS)), rng)
        h.event(Closed())


REFUSED_AUTH = {
    "smtp": b"EHLO x\r\nAUTH {}\r\n",
    "imap": b"a AUTHENTICATE {}\r\n",
    "pop3": b"AUTH {}\r\n",
}


@pytest.mark.parametrize("name", list(REFUSED_AUTH))
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "GS2-KRB5", "NTLM", SECRET.upper()])
def test_every_core_labels_a_refused_mechanism_alike(name: str, mechanism: str) -> None:
    """One list of mechanism names that may be shown (``common.mechanism_label``) for all."""
    factory, role, _ = PROTOCOLS[name]
    ctx = SessionContext(TESTCASES["baseline"], role, "mail.example.test", DOMAIN, authenticator)
    h = Harness(factory(ctx))
    h.event(Connected())
    data = REFUSED_AUTH[name].replace(b"{}", mechanism.encode())
    attempts = [
        c.observation
        for c in h.event(DataReceived(data))
        if isinstance(c, Record) and isinstance(c.observation, AuthAttempted)
    ]
    assert [a.mechanism for a in attempts] == [mechanism_label(mechanism)]
