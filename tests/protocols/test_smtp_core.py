"""Transcript tests of the SMTP sans-IO core: feed events, compare the commands it returns.

No sockets: a ``Session`` drives ``SmtpCore`` with events and checks, on every call, that no
canary secret (password, token, or the base64 line that carries it) appears in the ``repr`` of
any returned command. Tables are parametrised over the five test cases.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from protocols_kit import authenticator, b64

from mailtls import observations as obs
from mailtls.protocols import smtp_replies as R
from mailtls.protocols.base import (
    ClientHelloReceived,
    Close,
    Closed,
    Command,
    Connected,
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
    SetTimer,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsInfo,
)
from mailtls.protocols.flow import Phase
from mailtls.protocols.smtp import DataBody, SmtpCore, State
from mailtls.testcases import STANDARD, TESTCASES

HOST = "mx.mailtls.test"
DOMAIN = "mailtls.test"
USER = "test-abc123"
CANARY = "Canary-Pa55w0rd-7f3e9"
TOKEN = "ya29.CanaryToken-0c1d2e3f"
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
ALL_CASES = list(STANDARD)  # T1-T4; the other cases have their own tests
STARTTLS_CASES = [name for name in ALL_CASES if TESTCASES[name].offer_starttls()]
LIMITS = Limits()

ObsT = TypeVar("ObsT", bound=obs.Observation)


SECRET_FORMS = (
    CANARY,
    TOKEN,
    b64(CANARY),
    b64(f"\0{USER}\0{CANARY}"),
    b64(f"\0bob\0{CANARY}"),
    b64(f"\0{USER}@{DOMAIN}\0{CANARY}"),
)


class Session:
    """One core plus everything it returned; every call is checked for leaked secrets."""

    def __init__(
        self,
        testcase: str = "baseline",
        role: PortRole = PortRole.SUBMISSION,
        limits: Limits = LIMITS,
    ) -> None:
        ctx = SessionContext(
            policy=TESTCASES[testcase],
            role=role,
            hostname=HOST,
            domain=DOMAIN,
            authenticator=authenticator,
            limits=limits,
        )
        self.core = SmtpCore(ctx)
        self.log: list[Command] = []

    def event(self, event: Event) -> list[Command]:
        commands = self.core.handle(event)
        text = repr(commands)
        for secret in SECRET_FORMS:
            assert secret not in text, f"secret leaked: {secret!r}"
        self.log += commands
        return commands

    def data(self, data: bytes) -> list[Command]:
        return self.event(DataReceived(data))

    def line(self, text: str) -> bytes:
        """Send one command line, return the bytes sent back (all ``Send`` commands joined)."""
        return sent(self.data(text.encode() + b"\r\n"))

    def connect(self, tls: TlsInfo | None = None) -> bytes:
        return sent(self.event(Connected(tls)))

    def ready(self, tls: TlsInfo | None = None) -> None:
        """Greeting and EHLO done."""
        assert self.connect(tls).startswith(b"220 ")
        assert self.line("EHLO client.example").startswith(b"250-")

    def starttls(self) -> None:
        """Baseline-style STARTTLS up to an established TLS session and a fresh EHLO."""
        self.ready()
        commands = self.data(b"STARTTLS\r\n")
        assert sent(commands) == R.S220_READY_TLS and StartTls() in commands
        self.event(TlsEstablished(TLS))
        assert self.line("EHLO client.example").startswith(b"250-")


def sent(commands: Iterable[Command]) -> bytes:
    return b"".join(c.data for c in commands if isinstance(c, Send))


def raw(commands: Iterable[Command]) -> bytes:
    return b"".join(c.data for c in commands if isinstance(c, SendRaw))


def records(commands: Iterable[Command], kind: type[ObsT]) -> list[ObsT]:
    return [
        c.observation for c in commands if isinstance(c, Record) and type(c.observation) is kind
    ]


def only(commands: Iterable[Command], kind: type[ObsT]) -> ObsT:
    found = records(commands, kind)
    assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
    return found[0]


def lines(commands: Iterable[Command]) -> list[str]:
    return [r.line for r in records(commands, obs.CommandReceived)]


def ehlo_lines(reply: bytes) -> list[str]:
    return [line[4:] for line in reply.decode().split("\r\n") if line]


# --- greeting, EHLO, capabilities --------------------------------------------------------------


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_greeting_and_first_timer(testcase: str) -> None:
    s = Session(testcase)
    commands = s.event(Connected())
    assert commands == [Send(b"220 mx.mailtls.test ESMTP mailtls\r\n"), SetTimer(300.0)]


PLAIN_CAPS = ["PIPELINING", "SIZE 10485760", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME"]
TLS_CAPS = [
    "PIPELINING",
    "SIZE 10485760",
    "AUTH PLAIN LOGIN CRAM-MD5",
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
]
WITH_STARTTLS = ["PIPELINING", "SIZE 10485760", "STARTTLS", *PLAIN_CAPS[2:]]


@pytest.mark.parametrize(
    ("testcase", "expected"),
    [
        ("baseline", WITH_STARTTLS),
        ("t1", PLAIN_CAPS),
        ("t2", WITH_STARTTLS),
        ("t3", WITH_STARTTLS),
        ("t4", WITH_STARTTLS),
    ],
)
def test_ehlo_capabilities_before_tls(testcase: str, expected: list[str]) -> None:
    s = Session(testcase)
    s.connect()
    commands = s.data(b"EHLO client.example\r\n")
    reply = sent(commands)
    assert ehlo_lines(reply) == [HOST, *expected]
    assert reply.endswith(b"\r\n250 8BITMIME\r\n") and reply.count(b"250 ") == 1
    caps = only(commands, obs.CapabilitiesSent)
    assert caps == obs.CapabilitiesSent("STARTTLS" in expected, ("PLAIN", "LOGIN"), False)
    assert only(commands, obs.ClientIdentified) == obs.ClientIdentified("ehlo", "client.example")
    assert lines(commands) == ["EHLO client.example"]


@pytest.mark.parametrize("testcase", [name for name in ALL_CASES if name != "t4"])
def test_ehlo_capabilities_inside_implicit_tls(testcase: str) -> None:
    s = Session(testcase)
    commands = s.event(Connected(TLS))
    assert only(commands, obs.TlsStarted) == obs.TlsStarted(TLS.version, TLS.cipher, True)
    commands = s.data(b"EHLO client.example\r\n")
    assert ehlo_lines(sent(commands)) == [HOST, *TLS_CAPS]
    caps = only(commands, obs.CapabilitiesSent)
    assert caps == obs.CapabilitiesSent(False, ("PLAIN", "LOGIN", "CRAM-MD5"), True)


def test_ehlo_after_starttls_drops_starttls_and_adds_cram_md5() -> None:
    s = Session()
    s.ready()
    s.data(b"STARTTLS\r\n")
    commands = s.event(TlsEstablished(TLS))
    assert only(commands, obs.TlsStarted) == obs.TlsStarted(TLS.version, TLS.cipher, False)
    assert commands[-1] == SetTimer(300.0) and sent(commands) == b""
    assert ehlo_lines(s.line("EHLO again")) == [HOST, *TLS_CAPS]


def test_helo_and_bad_ehlo() -> None:
    s = Session()
    s.connect()
    assert s.line("EHLO") == R.S501_SYNTAX_EHLO
    commands = s.data(b"HELO client.example\r\n")
    assert sent(commands) == b"250 mx.mailtls.test\r\n"
    assert only(commands, obs.ClientIdentified) == obs.ClientIdentified("helo", "client.example")
    assert records(commands, obs.CapabilitiesSent) == []


def test_client_identity_is_truncated() -> None:
    s = Session()
    s.connect()
    commands = s.data(b"EHLO " + b"x" * 1000 + b"\r\n")
    assert len(only(commands, obs.ClientIdentified).value) <= 201


# --- STARTTLS hygiene ----------------------------------------------------------------------


def test_blind_starttls_under_t1_is_refused_without_tls() -> None:
    s = Session("t1")
    s.ready()
    commands = s.data(b"STARTTLS\r\n")
    assert sent(commands) == R.S502_STARTTLS_NOT_OFFERED
    assert sent(commands).startswith(b"502 5.5.1")
    assert only(commands, obs.StarttlsRequested) == obs.StarttlsRequested(False)
    refused = only(commands, obs.StarttlsRefused)
    assert refused.reason == "not_advertised" and refused.reply.startswith("502 5.5.1")
    assert not any(isinstance(c, StartTls | ReadClientHello) for c in commands)
    assert s.core.state is State.COMMAND
    assert s.line("NOOP") == R.S250_OK  # the session goes on in plaintext


def test_starttls_inside_tls_is_refused() -> None:
    s = Session()
    s.starttls()
    commands = s.data(b"STARTTLS\r\n")
    assert sent(commands) == R.S502_STARTTLS_NOT_OFFERED
    assert only(commands, obs.StarttlsRefused).reason == "already_tls"
    assert StartTls() not in commands


@pytest.mark.parametrize("testcase", STARTTLS_CASES)
def test_starttls_with_a_parameter_gets_501(testcase: str) -> None:
    s = Session(testcase)
    s.ready()
    commands = s.data(b"STARTTLS now\r\n")
    assert sent(commands) == R.S501_SYNTAX_STARTTLS
    assert only(commands, obs.StarttlsRequested) == obs.StarttlsRequested(True)
    assert only(commands, obs.StarttlsRefused).reason == "syntax"
    assert not any(isinstance(c, StartTls | ReadClientHello) for c in commands)


@pytest.mark.parametrize(
    ("testcase", "expected"),
    [("baseline", StartTls()), ("t2", ReadClientHello()), ("t4", StartTls())],
)
def test_bytes_pipelined_after_starttls_are_discarded_and_recorded(
    testcase: str, expected: Command
) -> None:
    s = Session(testcase)
    s.ready()
    auth_line = f"AUTH PLAIN {PLAIN_OK}\r\n".encode()
    pipelined = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n" + auth_line + b"QUIT\r\n"
    commands = s.data(b"STARTTLS\r\n" + pipelined)
    assert sent(commands) == R.S220_READY_TLS  # nothing pipelined was answered
    assert expected in commands and Close() not in commands
    assert only(commands, obs.PipelinedAfterStarttls).bytes_discarded == len(pipelined)
    assert lines(commands) == ["STARTTLS"]  # never executed, never in the transcript
    auth = only(commands, obs.AuthAttempted)
    assert (auth.username, auth.secret_sent, auth.secret_in_clear) == (USER, True, True)
    order = [type(c.observation) for c in commands if isinstance(c, Record)]
    assert order.index(obs.StarttlsAccepted) > order.index(obs.PipelinedAfterStarttls)
    assert commands.index(expected) > commands.index(Send(R.S220_READY_TLS))


def test_tls_forgets_pre_tls_state() -> None:
    s = Session()
    s.ready()
    s.data(b"STARTTLS\r\n")
    s.event(TlsEstablished(TLS))
    assert s.line("MAIL FROM:<a@b.example>") == R.S503_HELO_FIRST


# --- t2: handshake disrupted ---------------------------------------------------------------

TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"


def t2_disrupted() -> Session:
    s = Session("t2")
    s.ready()
    commands = s.data(b"STARTTLS\r\n")
    assert sent(commands) == R.S220_READY_TLS
    assert commands[-2:] == [ReadClientHello(), SetTimer(LIMITS.line_seconds)]
    assert only(commands, obs.StarttlsAccepted) == obs.StarttlsAccepted()
    commands = s.event(ClientHelloReceived(517, True))
    assert sent(commands) == R.S454_TLS_NA and raw(commands) == b""
    disrupted = only(commands, obs.StarttlsDisrupted)
    assert disrupted == obs.StarttlsDisrupted("handshake", 517, True, R.text(R.S454_TLS_NA))
    assert commands[-1] == SetTimer(LIMITS.disrupted_seconds)
    assert s.core.phase is Phase.DISRUPTED
    return s


def test_t2_an_alert_after_the_broken_handshake_ends_the_connection() -> None:
    s = t2_disrupted()
    commands = s.data(TLS_ALERT)
    assert commands == [Record(obs.DataAfterDisruption(len(TLS_ALERT), True, "")), Close()]
    assert s.event(DataReceived(b"QUIT\r\n")) == [] and s.event(Timeout()) == []


def test_t2_plaintext_auth_after_the_broken_handshake_is_recorded_then_closed() -> None:
    """As a real TLS server behind the attacker: the first bytes that are not a TLS record end
    the connection, and a secret in them is still the evidence."""
    s = t2_disrupted()
    chunk = b"EHLO x\r\n" + f"AUTH PLAIN {PLAIN_OK}\r\n".encode()
    commands = s.data(chunk)
    assert sent(commands) == b"" and raw(commands) == b""  # no replies while disrupted
    assert records(commands, obs.DataAfterDisruption) == [
        obs.DataAfterDisruption(len(chunk), False, "EHLO")
    ]
    auth = only(commands, obs.AuthAttempted)
    assert auth == obs.AuthAttempted(
        "PLAIN", USER, "abc123", False, True, True, "disrupted", proof=True
    )
    assert commands[-1] == Close()


def test_t2_plaintext_instead_of_client_hello() -> None:
    s = Session("t2")
    s.ready()
    s.data(b"STARTTLS\r\n")
    commands = s.event(ClientHelloReceived(0, False))
    assert only(commands, obs.StarttlsDisrupted).looks_like_tls is False
    commands = s.data(f"AUTH LOGIN {b64(USER)}\r\n".encode())
    assert only(commands, obs.DataAfterDisruption).verb == "AUTH"
    # LOGIN's initial response is the username only: no secret, a UsernameSent
    assert records(commands, obs.AuthAttempted) == []
    assert commands[-2:] == [Record(obs.UsernameSent(USER, "abc123", False)), Close()]


def test_t2_bytes_held_while_the_client_hello_is_read_are_bounded() -> None:
    """A shell that hands the core data before ``ClientHelloReceived``: kept up to one line."""
    s = Session("t2")
    s.ready()
    s.data(b"STARTTLS\r\n")
    for _ in range(1000):
        assert s.data(b"x" * 1000) == []
    commands = s.event(ClientHelloReceived(0, False))
    assert sum(c.nbytes for c in records(commands, obs.DataAfterDisruption)) <= LIMITS.line_bytes


def test_t2_disrupted_state_is_kickable() -> None:
    s = t2_disrupted()
    commands = s.event(Kicked("step started"))
    assert commands == [Record(obs.SessionKicked("step started")), Close()]


# --- t3: STARTTLS refused ------------------------------------------------------------------


def test_t3_refusal_then_plaintext_auth() -> None:
    s = Session("t3")
    s.ready()
    commands = s.data(b"STARTTLS\r\n")
    assert sent(commands) == R.S454_TLS_NA
    refused = only(commands, obs.StarttlsRefused)
    assert refused == obs.StarttlsRefused("testcase", R.text(R.S454_TLS_NA))
    assert commands[-1] == SetTimer(LIMITS.silence_after_refusal)
    assert not any(isinstance(c, StartTls | ReadClientHello) for c in commands)
    assert s.line("EHLO client.example").startswith(b"250-")
    commands = s.data(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    assert sent(commands) == R.S235_AUTH_SUCCESS
    auth = only(commands, obs.AuthAttempted)
    assert auth == obs.AuthAttempted(
        "PLAIN", USER, "abc123", False, True, True, "success", proof=True
    )


def test_t3_silence_after_refusal_closes_without_reply() -> None:
    s = Session("t3")
    s.ready()
    s.data(b"STARTTLS\r\n")
    assert s.event(Timeout()) == [Close()]
    assert s.event(DataReceived(b"EHLO x\r\n")) == []


def test_t3_activity_after_refusal_restores_the_idle_timer() -> None:
    s = Session("t3")
    s.ready()
    s.data(b"STARTTLS\r\n")
    commands = s.data(b"NOOP\r\n")
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)
    commands = s.event(Timeout())
    assert sent(commands) == R.timeout(HOST) and commands[-1] == Close()


def test_t3_refusal_followed_by_pipelined_command_is_not_silence() -> None:
    s = Session("t3")
    s.ready()
    commands = s.data(b"STARTTLS\r\nNOOP\r\n")
    assert sent(commands) == R.S454_TLS_NA + R.S250_OK
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)


# --- t4: session disrupted -----------------------------------------------------------------


def test_t4_first_command_inside_tls_gets_cleartext_454_outside_tls() -> None:
    s = Session("t4")
    s.ready()
    assert StartTls() in s.data(b"STARTTLS\r\n")
    s.event(TlsEstablished(TLS))
    commands = s.data(b"EHLO client.example\r\n")
    assert sent(commands) == b""  # nothing inside TLS
    assert raw(commands) == R.S454_TLS_NA
    assert lines(commands) == ["EHLO client.example"]
    assert only(commands, obs.CommandReceived).tls is True
    disrupted = only(commands, obs.StarttlsDisrupted)
    assert disrupted == obs.StarttlsDisrupted("session", 0, True, R.text(R.S454_TLS_NA))
    assert commands[-1] == SetTimer(LIMITS.disrupted_seconds)
    commands = s.data(TLS_ALERT)
    assert commands == [Record(obs.DataAfterDisruption(len(TLS_ALERT), True, ""))]
    assert s.event(Closed()) == [Close()]


def test_t4_over_long_first_command_inside_tls_is_disrupted_too() -> None:
    """As IMAP and POP3: whatever the first line inside TLS is, it gets the cleartext 454."""
    s = Session("t4")
    s.ready()
    s.data(b"STARTTLS\r\n")
    s.event(TlsEstablished(TLS))
    commands = s.data(b"X" * (LIMITS.line_bytes + 10) + b"\r\n")
    assert sent(commands) == b"" and raw(commands) == R.S454_TLS_NA
    assert s.core.phase is Phase.DISRUPTED


def test_t4_pipelined_auth_inside_tls_then_plaintext_auth_outside() -> None:
    s = Session("t4")
    s.ready()
    s.data(b"STARTTLS\r\n")
    s.event(TlsEstablished(TLS))
    commands = s.data(f"EHLO x\r\nAUTH LOGIN\r\n{b64(USER)}\r\n{b64(CANARY)}\r\n".encode())
    assert raw(commands) == R.S454_TLS_NA and sent(commands) == b""
    inside = only(commands, obs.AuthAttempted)
    assert inside == obs.AuthAttempted(
        "LOGIN", USER, "abc123", True, True, False, "disrupted", proof=True
    )
    assert lines(commands) == ["EHLO x"]  # only the first command is in the transcript
    # SendRaw abandoned TLS: what comes next is raw TCP, a secret there is in the clear
    commands = s.data(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    outside = only(commands, obs.AuthAttempted)
    assert outside == obs.AuthAttempted(
        "PLAIN", USER, "abc123", False, True, True, "disrupted", proof=True
    )


def test_t4_implicit_tls_auth_as_first_command_is_a_tls_auth() -> None:
    s = Session("t4")
    assert s.connect(TLS).startswith(b"220 ")  # the greeting goes out inside TLS
    commands = s.data(f"AUTH PLAIN {PLAIN_OK_DOMAIN}\r\n".encode())
    assert raw(commands) == R.S454_TLS_NA and sent(commands) == b""
    auth = only(commands, obs.AuthAttempted)
    assert auth == obs.AuthAttempted(
        "PLAIN", USER, "abc123", True, True, False, "disrupted", proof=True
    )
    assert lines(commands)[0].startswith("AUTH PLAIN <redacted, ")


# --- authentication ------------------------------------------------------------------------

# (mechanism, initial response or None, client lines after each 334, expected challenges)
PLAIN_OK = b64(f"\0{USER}\0{CANARY}")
PLAIN_BAD = b64(f"\0bob\0{CANARY}")
PLAIN_OK_DOMAIN = b64(f"\0{USER}@{DOMAIN}\0{CANARY}")
XOAUTH2 = b64(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01")
OAUTHBEARER = b64(f"n,a={USER},\x01host=mx\x01port=587\x01auth=Bearer {TOKEN}\x01\x01")

MECHANISM_FLOWS: list[tuple[str, str | None, list[str], list[bytes]]] = [
    ("PLAIN", PLAIN_OK, [], []),
    ("PLAIN", None, [PLAIN_OK], [b""]),
    ("LOGIN", None, [b64(USER), b64(CANARY)], [b"Username:", b"Password:"]),
    ("LOGIN", b64(USER), [b64(CANARY)], [b"Password:"]),
    ("XOAUTH2", XOAUTH2, [""], [b'{"status":"invalid_token"']),
    ("XOAUTH2", None, [XOAUTH2, ""], [b"", b'{"status":"invalid_token"']),
    ("OAUTHBEARER", OAUTHBEARER, ["AQ=="], [b'{"status":"invalid_token"']),
    ("OAUTHBEARER", None, [OAUTHBEARER, "AQ=="], [b"", b'{"status":"invalid_token"']),
]


def challenges(reply: bytes) -> list[bytes]:
    return [base64.b64decode(line[4:]) for line in reply.split(b"\r\n") if line.startswith(b"334 ")]


@pytest.mark.parametrize("testcase", ALL_CASES)
@pytest.mark.parametrize(("mech", "initial", "responses", "expected_challenges"), MECHANISM_FLOWS)
def test_every_mechanism_with_and_without_initial_response(
    testcase: str,
    mech: str,
    initial: str | None,
    responses: list[str],
    expected_challenges: list[bytes],
) -> None:
    s = Session(testcase)
    s.ready()
    first = f"AUTH {mech} {initial}" if initial else f"AUTH {mech}"
    replies = s.line(first)
    for response in responses:
        replies += s.line(response)
    got = challenges(replies)
    assert len(got) == len(expected_challenges)
    for challenge, expected in zip(got, expected_challenges, strict=True):
        assert challenge.startswith(expected)
    auth = only(s.log, obs.AuthAttempted)
    assert (auth.mechanism, auth.username, auth.tls) == (mech, USER, False)
    assert auth.secret_sent and auth.secret_in_clear
    if mech.startswith(("XOAUTH2", "OAUTH")):
        assert auth.outcome == "failure" and replies.endswith(R.S535_AUTH_INVALID)
        assert Send(R.S535_AUTH_INVALID, LIMITS.auth_fail_delay) in s.log
    else:
        assert auth.outcome == "success" and replies.endswith(R.S235_AUTH_SUCCESS)
    transcript = lines(s.log)
    assert all("redacted" in line for line in transcript[2:] if line != "")
    if initial:
        assert transcript[1] == f"AUTH {mech} <redacted, {len(initial)} bytes>"
    else:
        assert transcript[1] == f"AUTH {mech}"


def test_cram_md5_after_tls_checks_the_digest_against_the_run_password() -> None:
    s = Session()
    s.starttls()
    (challenge,) = challenges(s.line("AUTH CRAM-MD5"))
    assert challenge.startswith(b"<") and challenge.endswith(b"@mx.mailtls.test>")
    wrong = hmac.new(b"not-the-password", challenge, hashlib.md5).hexdigest()
    s.line(b64(f"{USER} {wrong}"))
    assert Send(R.S535_AUTH_INVALID, LIMITS.auth_fail_delay) in s.log
    failed = obs.AuthAttempted("CRAM-MD5", USER, "abc123", True, True, False, "failure")
    assert only(s.log, obs.AuthAttempted) == failed  # the username, but no proof
    s.log.clear()
    (challenge,) = challenges(s.line("AUTH CRAM-MD5"))
    digest = hmac.new(CANARY.encode(), challenge, hashlib.md5).hexdigest()
    assert s.line(b64(f"{USER} {digest}")) == R.S235_AUTH_SUCCESS
    auth = only(s.log, obs.AuthAttempted)
    assert auth == obs.AuthAttempted("CRAM-MD5", USER, "abc123", True, True, False, "success", True)


def test_cram_md5_with_an_initial_response_is_malformed() -> None:
    s = Session()
    s.starttls()
    commands = s.data(f"AUTH CRAM-MD5 {b64(USER + ' 0123')}\r\n".encode())
    assert sent(commands) == R.S501_AUTH_DECODE
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_sent) == ("failure", False)


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_cram_md5_before_tls_is_not_offered(testcase: str) -> None:
    s = Session(testcase)
    s.ready()
    commands = s.data(b"AUTH CRAM-MD5\r\n")
    assert sent(commands) == R.S504_AUTH_MECHANISM
    assert sent(commands).startswith(b"504 5.5.4")
    auth = only(commands, obs.AuthAttempted)
    assert (auth.mechanism, auth.outcome, auth.secret_sent) == ("CRAM-MD5", "refused", False)


def test_unknown_mechanism_is_refused_and_recorded() -> None:
    s = Session()
    s.ready()
    commands = s.data(b"AUTH GSSAPI YIIBhgYJKoZIhvcS\r\n")
    assert sent(commands) == R.S504_AUTH_MECHANISM
    assert only(commands, obs.AuthAttempted) == obs.AuthAttempted(
        "GSSAPI", "", None, False, False, False, "refused"
    )
    assert lines(commands) == ["AUTH GSSAPI <redacted, 16 bytes>"]


def test_unregistered_mechanism_name_is_not_recorded() -> None:
    s = Session()
    s.ready()
    commands = s.data(f"AUTH {CANARY}\r\n".encode())
    assert sent(commands) == R.S504_AUTH_MECHANISM
    assert lines(commands) == ["AUTH UNKNOWN"]
    assert only(commands, obs.AuthAttempted).mechanism == "UNKNOWN"
    assert CANARY.upper() not in repr(commands)


@pytest.mark.parametrize("testcase", ALL_CASES)
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_unknown_user_fails_after_a_delay_with_a_hashed_name(testcase: str, mech: str) -> None:
    s = Session(testcase)
    s.ready()
    if mech == "PLAIN":
        commands = s.data(f"AUTH PLAIN {PLAIN_BAD}\r\n".encode())
    else:
        s.line(f"AUTH LOGIN {b64('bob@victim.example')}")
        commands = s.data(f"{b64(CANARY)}\r\n".encode())
    assert Send(R.S535_AUTH_INVALID, LIMITS.auth_fail_delay) in commands
    auth = only(commands, obs.AuthAttempted)
    assert auth.outcome == "failure" and auth.username.startswith("h:") and auth.code is None
    assert auth.secret_sent and auth.secret_in_clear
    assert "bob" not in repr(s.log) and "victim" not in repr(s.log)
    assert s.line("MAIL FROM:<a@b.example>") == R.S530_AUTH_REQUIRED  # not logged in


def test_cancel_before_the_secret() -> None:
    s = Session()
    s.ready()
    assert challenges(s.line("AUTH PLAIN")) == [b""]
    commands = s.data(b"*\r\n")
    assert sent(commands) == R.S501_AUTH_ABORTED
    assert lines(commands) == ["*"]
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_sent, auth.secret_in_clear) == ("cancelled", False, False)
    assert records(commands, obs.UsernameSent) == []


def test_login_cancelled_after_the_username_is_username_sent() -> None:
    s = Session()
    s.ready()
    s.line("AUTH LOGIN")
    s.line(b64(USER))
    commands = s.data(b"*\r\n")
    assert sent(commands) == R.S501_AUTH_ABORTED
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_sent, auth.username) == ("cancelled", False, USER)
    assert only(commands, obs.UsernameSent) == obs.UsernameSent(USER, "abc123", False)


def test_xoauth2_cancel_after_the_token_still_counts_the_token_as_sent() -> None:
    s = Session()
    s.ready()
    s.line(f"AUTH XOAUTH2 {XOAUTH2}")
    commands = s.data(b"*\r\n")
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_sent, auth.secret_in_clear) == ("cancelled", True, True)


def test_auth_after_successful_auth_is_503() -> None:
    s = Session()
    s.ready()
    assert s.line(f"AUTH PLAIN {PLAIN_OK}") == R.S235_AUTH_SUCCESS
    commands = s.data(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    assert sent(commands) == R.S503_ALREADY_AUTH
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_in_clear) == ("refused", True)


def test_auth_before_ehlo_is_503_but_the_secret_is_still_seen() -> None:
    s = Session()
    s.connect()
    commands = s.data(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    assert sent(commands) == R.S503_HELO_FIRST
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_in_clear, auth.username) == ("refused", True, USER)


@pytest.mark.parametrize(
    ("first", "then", "secret_sent"),
    [
        ("AUTH PLAIN !!notbase64!!", [], True),
        ("AUTH PLAIN =", [], False),
        ("AUTH LOGIN", ["not base64 at all"], False),
        ("AUTH LOGIN", [b64(USER), f"raw {CANARY}"], True),
    ],
)
def test_malformed_sasl_responses(first: str, then: list[str], secret_sent: bool) -> None:
    s = Session()
    s.ready()
    reply = s.line(first)
    for response in then:
        reply += s.line(response)
    assert reply.endswith(R.S501_AUTH_DECODE)
    auth = only(s.log, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_sent) == ("failure", secret_sent)
    assert only(s.log, obs.ProtocolError).reason == "sasl_malformed"
    assert s.core.state is State.COMMAND


def test_auth_syntax_and_in_transaction() -> None:
    s = Session(role=PortRole.MX)
    s.ready()
    assert s.line("AUTH") == R.S501_SYNTAX_AUTH
    s.line("MAIL FROM:<a@b.example>")
    assert s.line("AUTH LOGIN") == R.S503_MAIL_IN_PROGRESS


def test_pipelined_auth_login_responses_are_processed_in_order() -> None:
    s = Session()
    s.ready()
    commands = s.data(f"AUTH LOGIN\r\n{b64(USER)}\r\n{b64(CANARY)}\r\nNOOP\r\n".encode())
    assert sent(commands) == (
        R.challenge(b64("Username:").encode())
        + R.challenge(b64("Password:").encode())
        + R.S235_AUTH_SUCCESS
        + R.S250_OK
    )
    assert only(commands, obs.AuthAttempted).outcome == "success"


def test_auth_failure_budget_closes() -> None:
    s = Session(limits=replace(LIMITS, max_auth_failures=2))
    s.ready()
    s.data(f"AUTH PLAIN {PLAIN_BAD}\r\n".encode())
    commands = s.data(f"AUTH PLAIN {PLAIN_BAD}\r\n".encode())
    assert commands[-1] == Close()
    assert sent(commands).endswith(R.S421_TOO_MANY_ERRORS)


@pytest.mark.parametrize("event", [Timeout(), Kicked("shutdown"), Closed()])
def test_exchange_cut_short_still_ends_in_one_auth_attempted(event: Event) -> None:
    s = Session()
    s.ready()
    s.line("AUTH LOGIN")
    s.line(b64(USER))
    commands = s.event(event)
    assert only(commands, obs.AuthAttempted).outcome == "cancelled"
    assert only(commands, obs.UsernameSent).username == USER


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_canary_never_appears_in_any_command(testcase: str) -> None:
    """Every mechanism, in and out of TLS, successes and failures: the canary stays out."""
    s = Session(testcase, role=PortRole.MX)
    s.ready()
    for mech, initial, responses, _ in MECHANISM_FLOWS:
        s.line("RSET")
        s.line(f"AUTH {mech} {initial}" if initial else f"AUTH {mech}")
        for response in responses:
            s.line(response)
        s.line(f"AUTH PLAIN {PLAIN_BAD}")
        s.core._auth = None  # allow the next exchange on the same connection
        s.core._auth_failures = 0
    s.data(f"AUTH LOGIN {b64(USER)}\r\n*\r\n".encode())
    text = repr(s.log)
    for secret in SECRET_FORMS:
        assert secret not in text
    assert len(records(s.log, obs.AuthAttempted)) >= 2 * len(MECHANISM_FLOWS)


# --- mail transaction and DATA -------------------------------------------------------------


def mail_ready(role: PortRole = PortRole.SUBMISSION, limits: Limits = LIMITS) -> Session:
    s = Session(role=role, limits=limits)
    s.ready()
    assert s.line(f"AUTH PLAIN {PLAIN_OK}") == R.S235_AUTH_SUCCESS
    assert s.line("MAIL FROM:<test-abc123@mailtls.test>") == R.S250_SENDER_OK
    assert s.line("RCPT TO:<someone@example.org>") == R.S250_RCPT_OK
    assert s.line("DATA") == R.S354_START_DATA
    assert s.core.state is State.DATA
    return s


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n. \r\n", b"\n..\r\n"],
)
def test_data_ends_only_at_crlf_dot_crlf(smuggle: bytes) -> None:
    s = mail_ready()
    smuggled = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    body = b"Subject: hi\r\n\r\nfirst" + smuggle + smuggled + b"evil body\r\n"
    commands = s.data(body)
    assert sent(commands) == b"" and lines(commands) == []  # still inside the body
    assert s.core.state is State.DATA
    commands = s.data(b".\r\nNOOP\r\n")
    assert sent(commands) == R.S250_MESSAGE_OK + R.S250_OK
    message = only(commands, obs.MessageReceived)
    assert message == obs.MessageReceived(reference_size(body), 1, False)
    assert lines(commands) == ["NOOP"]


def test_data_body_byte_by_byte_and_pipelined_quit() -> None:
    s = mail_ready()
    stream = b"line one\r\n..stuffed\r\n.\r\nQUIT\r\n"
    commands: list[Command] = []
    for i in range(len(stream)):
        commands += s.data(stream[i : i + 1])
    assert sent(commands) == R.S250_MESSAGE_OK + R.S221_BYE
    assert only(commands, obs.MessageReceived).nbytes == len(b"line one\r\n.stuffed\r\n")
    assert commands[-1] == Close()


def test_empty_body_and_commands_after_body_are_executed() -> None:
    s = mail_ready()
    commands = s.data(b".\r\nMAIL FROM:<a@b.example>\r\n")
    assert sent(commands) == R.S250_MESSAGE_OK + R.S250_SENDER_OK
    assert only(commands, obs.MessageReceived).nbytes == 0


def test_data_body_lines_get_the_absolute_line_deadline_and_time_out() -> None:
    s = mail_ready()
    assert s.data(b"first line\r\n")[-1] == SetTimer(LIMITS.idle_seconds)
    assert s.data(b"partial body")[-1] == SetTimer(LIMITS.line_seconds)
    # the open line only grows: the deadline already running is not re-armed (no slow trickle)
    assert not [c for c in s.data(b" more") if isinstance(c, SetTimer)]
    assert s.data(b" end\r\n")[-1] == SetTimer(LIMITS.idle_seconds)
    assert s.data(b"again")[-1] == SetTimer(LIMITS.line_seconds)
    commands = s.event(Timeout())
    assert sent(commands) == R.timeout(HOST)
    assert sent(commands) == b"421 4.4.2 mx.mailtls.test Error: timeout exceeded\r\n"
    assert commands[-1] == Close()


def test_message_over_the_size_bound_gets_552() -> None:
    s = mail_ready(limits=replace(LIMITS, message_bytes=100))
    commands = s.data(b"x" * 150 + b"\r\n.\r\n")
    assert sent(commands) == R.S552_TOO_BIG
    assert records(commands, obs.MessageReceived) == []
    assert s.core.state is State.COMMAND
    assert s.line("NOOP") == R.S250_OK


def test_message_far_over_the_bound_closes() -> None:
    s = mail_ready(limits=replace(LIMITS, message_bytes=100))
    commands = s.data(b"x" * 300)
    assert sent(commands) == R.S552_TOO_BIG and commands[-1] == Close()


def test_mail_size_parameter_over_the_bound() -> None:
    s = Session(limits=replace(LIMITS, message_bytes=1000))
    s.ready()
    s.line(f"AUTH PLAIN {PLAIN_OK}")
    assert s.line("MAIL FROM:<a@b.example> SIZE=5000") == R.S552_TOO_BIG
    assert s.line("MAIL FROM:<a@b.example> SIZE=500 BODY=8BITMIME") == R.S250_SENDER_OK
    assert s.line("RSET") == R.S250_OK
    assert s.line("MAIL FROM:<a@b.example> FOO=BAR") == R.S555_MAIL_PARAMETER


def test_submission_requires_auth() -> None:
    s = Session(role=PortRole.SUBMISSION)
    s.ready()
    reply = s.line("MAIL FROM:<a@b.example>")
    assert reply == R.S530_AUTH_REQUIRED == b"530 5.7.0 Authentication required\r\n"
    assert s.line(f"AUTH PLAIN {PLAIN_OK}") == R.S235_AUTH_SUCCESS
    assert s.line("MAIL FROM:<a@b.example>") == R.S250_SENDER_OK


def test_mx_accepts_only_its_own_domain() -> None:
    s = Session(role=PortRole.MX)
    s.ready()
    assert s.line("MAIL FROM:<sender@example.org>") == R.S250_SENDER_OK  # no AUTH needed
    reply = s.line("RCPT TO:<victim@example.org>")
    assert reply == R.S550_RELAY_DENIED and reply.startswith(b"550 5.7.1")
    assert s.line("DATA") == R.S554_NO_VALID_RCPTS
    assert s.line("RCPT TO:<Test-ABC123@MailTLS.test>") == R.S250_RCPT_OK
    assert s.line("RCPT TO:<Postmaster>") == R.S250_RCPT_OK
    assert s.line("RCPT TO:<someone@mailtls.test.evil.example>") == R.S550_RELAY_DENIED
    assert s.line("DATA") == R.S354_START_DATA
    commands = s.data(b"hello\r\n.\r\n")
    assert only(commands, obs.MessageReceived) == obs.MessageReceived(7, 2, False)


def test_mx_still_offers_auth() -> None:
    s = Session(role=PortRole.MX)
    s.connect()
    assert "AUTH PLAIN LOGIN" in ehlo_lines(s.line("EHLO x"))


def test_bad_sequences_are_503() -> None:
    s = Session(role=PortRole.MX)
    s.connect()
    assert s.line("MAIL FROM:<a@b.example>") == R.S503_HELO_FIRST
    s.line("EHLO x")
    assert s.line("RCPT TO:<a@mailtls.test>") == R.S503_NEED_MAIL
    assert s.line("DATA") == R.S503_NEED_MAIL
    s.line("MAIL FROM:<a@b.example>")
    assert s.line("MAIL FROM:<a@b.example>") == R.S503_NESTED_MAIL
    assert s.line("DATA") == R.S503_NEED_RCPT
    assert s.line("RCPT TO:a@mailtls.test") == R.S250_RCPT_OK  # lenient without brackets
    assert s.line("RCPT TO:<a@mailtls.test") == R.S501_SYNTAX_RCPT
    assert s.line("MAIL") == R.S503_NESTED_MAIL
    assert s.line("RSET") == R.S250_OK
    assert s.line("MAIL TO:<a@b>") == R.S501_SYNTAX_MAIL
    assert all(e.reply.startswith(("503 5.5.1", "501")) for e in records(s.log, obs.ProtocolError))


def test_simple_commands() -> None:
    s = Session()
    s.ready()
    assert s.line("NOOP") == R.S250_OK
    assert s.line("noop with args") == R.S250_OK
    assert s.line("VRFY someone").startswith(b"252 ")
    assert s.line("EXPN list").startswith(b"502 ")
    assert s.line("HELP") == R.S214_HELP_STARTTLS
    assert s.line("RSET") == R.S250_OK
    commands = s.data(b"QUIT\r\nNOOP\r\n")
    assert sent(commands) == R.S221_BYE and commands[-1] == Close()
    assert s.core.phase is Phase.CLOSED
    assert s.data(b"NOOP\r\n") == []


def test_help_under_t1_does_not_mention_starttls() -> None:
    s = Session("t1")
    s.ready()
    assert b"STARTTLS" not in s.line("HELP")


def test_pipelined_commands_are_answered_in_order_in_one_send() -> None:
    s = Session(role=PortRole.MX)
    s.ready()
    commands = s.data(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@mailtls.test>\r\nRCPT TO:<y@example.org>\r\n"
        b"RCPT TO:<z@mailtls.test>\r\nDATA\r\n"
    )
    sends = [c for c in commands if isinstance(c, Send)]
    assert len(sends) == 1
    assert sends[0].data == (
        R.S250_SENDER_OK + R.S250_RCPT_OK + R.S550_RELAY_DENIED + R.S250_RCPT_OK + R.S354_START_DATA
    )
    assert commands.index(sends[0]) > max(
        i for i, c in enumerate(commands) if isinstance(c, Record)
    )
    assert only(s.data(b"body\r\n.\r\n"), obs.MessageReceived).recipients == 2


# --- garbage, limits, timers, kicks --------------------------------------------------------


def test_unknown_command_is_500_and_not_echoed() -> None:
    s = Session()
    s.ready()
    commands = s.data(f"{b64(CANARY)}\r\n".encode())
    assert sent(commands) == R.S500_UNKNOWN and sent(commands).startswith(b"500 5.5.2")
    assert lines(commands) == [f"<unrecognised, {len(b64(CANARY))} bytes>"]
    assert only(commands, obs.ProtocolError).reason == "unknown_command"
    assert lines(s.data(b"PASS hunter2\r\n")) == ["PASS <redacted, 7 bytes>"]


@pytest.mark.parametrize("bad", [b"NOOP\x00x", b"EHLO a\rb", b"MAIL FROM:<a\x00@b>"])
def test_nul_and_bare_cr_are_protocol_errors(bad: bytes) -> None:
    s = Session()
    s.ready()
    commands = s.data(bad + b"\r\n")
    assert sent(commands) == R.S500_BAD_CHAR and sent(commands).startswith(b"500 5.5.2")
    assert only(commands, obs.ProtocolError).reason == "bad_character"
    assert s.line("NOOP") == R.S250_OK


def test_over_long_line() -> None:
    s = Session(limits=replace(LIMITS, line_bytes=64))
    s.ready()
    commands = s.data(b"NOOP " + b"a" * 200 + b"\r\n")
    assert sent(commands) == R.S500_LINE_TOO_LONG == b"500 5.5.2 Line too long\r\n"
    assert only(commands, obs.ProtocolError).reason == "line_too_long"
    commands = s.data(b"b" * 100)  # another long one, in pieces, without its end yet
    commands += s.data(b"b" * 100)
    assert sent(commands) == b""
    commands = s.data(b"b\r\nNOOP\r\n")
    assert sent(commands) == R.S500_LINE_TOO_LONG + R.S250_OK


def test_over_long_sasl_response_ends_the_exchange() -> None:
    s = Session(limits=replace(LIMITS, line_bytes=64))
    s.ready()
    s.line("AUTH PLAIN")
    commands = s.data(b"A" * 100 + b"\r\n")
    assert sent(commands) == R.S501_AUTH_DECODE
    auth = only(commands, obs.AuthAttempted)
    assert (auth.outcome, auth.secret_sent) == ("failure", True)
    assert s.core.state is State.COMMAND


def test_error_budget() -> None:
    s = Session(limits=replace(LIMITS, max_errors=3))
    s.ready()
    assert s.line("BOGUS") == R.S500_UNKNOWN
    assert s.line("BOGUS") == R.S500_UNKNOWN
    commands = s.data(b"BOGUS\r\nNOOP\r\n")
    assert sent(commands) == R.S500_UNKNOWN + R.S421_TOO_MANY_ERRORS
    assert sent(commands).endswith(b"421 4.7.0 Too many errors\r\n")
    assert commands[-1] == Close()
    assert records(commands, obs.ProtocolError)[-1].reason == "too_many_errors"
    assert lines(commands) == ["<unrecognised, 5 bytes>"]  # NOOP never executed


def test_partial_line_timer_is_absolute() -> None:
    s = Session()
    s.ready()
    assert s.data(b"NO") == [SetTimer(LIMITS.line_seconds)]
    assert s.data(b"O") == []  # growing: the deadline from the first byte stays
    commands = s.data(b"P\r\nNO")
    assert sent(commands) == R.S250_OK and commands[-1] == SetTimer(LIMITS.line_seconds)
    assert s.data(b"OP\r\n")[-1] == SetTimer(LIMITS.idle_seconds)


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_timeout(testcase: str) -> None:
    s = Session(testcase)
    s.ready()
    commands = s.event(Timeout())
    assert commands == [Send(b"421 4.4.2 mx.mailtls.test Error: timeout exceeded\r\n"), Close()]
    assert s.event(Timeout()) == []


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_kicked(testcase: str) -> None:
    s = Session(testcase)
    s.ready()
    commands = s.event(Kicked("step started"))
    assert commands == [
        Record(obs.SessionKicked("step started")),
        Send(R.S421_KICKED),
        Close(),
    ]
    assert R.S421_KICKED == b"421 4.3.2 Service shutting down\r\n"


def test_kicked_during_handshake_sends_nothing() -> None:
    s = Session()
    s.ready()
    s.data(b"STARTTLS\r\n")
    commands = s.event(Kicked("shutdown"))
    assert sent(commands) == b"" and commands[-1] == Close()


def test_closed_returns_nothing_to_send() -> None:
    s = Session()
    s.ready()
    assert s.event(Closed()) == []
    assert s.data(b"NOOP\r\n") == []


def test_garbage_never_raises() -> None:
    rng = random.Random(1234)
    alphabet = [b"\r", b"\n", b"\x00", b".", b" ", b"AUTH ", b"PLAIN", b"=", b"*", b"DATA\r\n"]
    alphabet += [b"MAIL FROM:<a@mailtls.test>\r\n", b"RCPT TO:<b@mailtls.test>\r\n", b"\xff"]
    alphabet += [b"STARTTLS\r\n", b"EHLO x\r\n", b"AUTH LOGIN\r\n", b"\x16\x03\x01"]
    events: list[Event] = [TlsEstablished(TLS), ClientHelloReceived(5, True), Timeout()]
    for testcase in ALL_CASES:
        for role in (PortRole.MX, PortRole.SUBMISSION):
            s = Session(testcase, role, replace(LIMITS, line_bytes=128, max_errors=50))
            s.connect()
            for _ in range(300):
                if rng.random() < 0.03:
                    s.event(rng.choice(events))
                else:
                    s.data(b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))))


# --- DataBody against a reference ----------------------------------------------------------


def reference_size(body: bytes) -> int:
    """Unstuffed size of a complete body (without its terminating ``.`` line), CRLF-split."""
    parts = body.split(b"\r\n")
    assert parts[-1] == b""
    return sum(len(p) - p.startswith(b".") + 2 for p in parts[:-1])


def reference_split(stream: bytes) -> tuple[int, bytes] | None:
    """Body size and rest, reading lines split by CRLF only, ending at a ``.`` line."""
    pos, size = 0, 0
    while True:
        end = stream.find(b"\r\n", pos)
        if end < 0:
            return None
        line = stream[pos:end]
        if line == b".":
            return size, stream[end + 2 :]
        size += len(line) - line.startswith(b".") + 2
        pos = end + 2


@pytest.mark.parametrize("seed", range(20))
def test_data_body_matches_the_reference_for_any_split(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"bc", b"\r\n.", b".\r\n", b"\n.\n"]
    for _ in range(50):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        stream += b"\r\n.\r\nQUIT\r\n" if rng.random() < 0.7 else b""
        expected = reference_split(stream)
        body, result, pos = DataBody(), None, 0
        while pos < len(stream) and result is None:
            step = rng.randint(1, 6)
            result = body.feed(stream[pos : pos + step])
            pos += step
        if expected is None:
            assert result is None
        else:
            assert result is not None
            assert body.nbytes == expected[0]
            assert result + stream[pos:] == expected[1]


def test_records_and_replies_are_plain_data() -> None:
    """Every observation serialises (the journal's job) and holds no bytes."""
    s = mail_ready()
    s.data(b"hi\r\n.\r\nQUIT\r\n")
    for record in records_all(s.log):
        fields: dict[str, Any] = record.as_fields()
        assert all(not isinstance(v, bytes) for v in fields.values())


def records_all(commands: Iterable[Command]) -> list[obs.Observation]:
    return [c.observation for c in commands if isinstance(c, Record)]
