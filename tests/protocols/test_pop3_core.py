"""Transcript tests of the POP3 core: events in, commands out, no sockets.

Every session goes through ``Session``, which fails the test as soon as a returned command (a
reply or an observation) contains one of the session's secrets: the canary password and every
SASL response the test sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Iterable
from typing import Any, TypeVar, get_args

import pytest
from protocols_kit import b64

from mailtls import observations as obs
from mailtls.protocols import pop3
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
from mailtls.protocols.pop3 import Pop3Core, State
from mailtls.runs.proof import presents
from mailtls.testcases import STANDARD, TESTCASES

CANARY = "Canary-Pa55w0rd-xyzzy"
CODE = "abc123"
ACCOUNT = f"test-{CODE}"
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
LIMITS = Limits()
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"
ALL_CASES = list(STANDARD)  # T1-T4; the other cases have their own tests

Obs = TypeVar("Obs", bound=obs.Observation)


def fake_authenticator(credential: Credential) -> AuthDecision:
    """Knows only ``test-abc123`` (with or without ``@mailtls.test``, any case); accepts it with
    the canary password (or its CRAM-MD5 digest), as the run manager checks a run's password."""
    username = credential.username
    local, _, domain = username.lower().partition("@")
    if local == ACCOUNT and domain in ("", "mailtls.test"):
        proof = presents(CANARY, credential)
        return AuthDecision(ok=proof, display=ACCOUNT, code=CODE, proof=proof)
    digest = hmac.new(b"test-key", username.encode(), hashlib.sha256).hexdigest()[:16]
    return AuthDecision(ok=False, display="h:" + digest, code=None)


def wire(text: str) -> bytes:
    return pop3.line(text)


class Session:
    """One core plus the secrets that must never come out of it."""

    def __init__(self, testcase: str = "baseline", *, implicit: bool = False, **limits: Any):
        self.core = Pop3Core(
            SessionContext(
                policy=TESTCASES[testcase],
                role=PortRole.POP3,
                hostname="mail.mailtls.test",
                domain="mailtls.test",
                authenticator=fake_authenticator,
                implicit_tls=implicit,
                limits=Limits(**limits),
            )
        )
        self.secrets: set[str] = {CANARY}
        self.history: list[Command] = []

    def secret(self, text: str) -> str:
        self.secrets.add(text)
        return text

    def event(self, event: Event) -> list[Command]:
        commands = self.core.handle(event)
        for cmd in commands:
            shown = repr(cmd.observation) if isinstance(cmd, Record) else repr(cmd)
            if isinstance(cmd, Send | SendRaw):
                shown += cmd.data.decode("utf-8", "replace")
            for secret in self.secrets:
                assert secret not in shown, f"secret {secret!r} leaked in {cmd!r}"
        self.history += commands
        return commands

    def send(self, data: bytes | str) -> list[Command]:
        if isinstance(data, str):
            data = data.encode()
        return self.event(DataReceived(data))

    def connect(self, tls: TlsInfo | None = None) -> list[Command]:
        return self.event(Connected(tls))

    def login(self) -> None:
        self.send(f"USER {ACCOUNT}\r\n")
        assert replies(self.send(f"PASS {CANARY}\r\n")) == [pop3.OK_LOGGED_IN]

    def starttls(self) -> list[Command]:
        """STLS under an honest policy; returns the commands of ``TlsEstablished``."""
        assert StartTls() in self.send("STLS\r\n")
        return self.event(TlsEstablished(TLS))


def replies(commands: Iterable[Command]) -> list[str]:
    """The reply lines sent inside the protocol (``Send``), CRLF removed."""
    data = b"".join(c.data for c in commands if isinstance(c, Send))
    return data.decode().split("\r\n")[:-1]


def raw_replies(commands: Iterable[Command]) -> list[bytes]:
    return [c.data for c in commands if isinstance(c, SendRaw)]


def of(kind: type[Obs], commands: Iterable[Command]) -> list[Obs]:
    return [
        c.observation for c in commands if isinstance(c, Record) and type(c.observation) is kind
    ]


def one(kind: type[Obs], commands: Iterable[Command]) -> Obs:
    found = of(kind, commands)
    assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
    return found[0]


def transcript(commands: Iterable[Command]) -> list[str]:
    return [o.line for o in of(obs.CommandReceived, commands)]


def capa(commands: Iterable[Command]) -> list[str]:
    lines = replies(commands)
    assert lines[0] == pop3.OK_CAPA and lines[-1] == "."
    return lines[1:-1]


def connected(testcase: str = "baseline", **limits: Any) -> Session:
    s = Session(testcase, **limits)
    s.connect()
    return s


# --- greeting and capabilities -----------------------------------------------------------------


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_greeting_has_no_apop_timestamp(testcase: str) -> None:
    commands = Session(testcase).connect()
    assert replies(commands) == ["+OK mail.mailtls.test mailtls POP3 ready"]
    assert "<" not in replies(commands)[0]
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_capa_before_tls(testcase: str) -> None:
    s = connected(testcase)
    commands = s.send("CAPA\r\n")
    offered = testcase != "t1"
    expected = ["USER", "SASL PLAIN LOGIN", *(["STLS"] if offered else [])]
    expected += ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
    assert capa(commands) == [*expected, "IMPLEMENTATION mailtls"]
    assert one(obs.CapabilitiesSent, commands) == obs.CapabilitiesSent(
        starttls_offered=offered, auth_mechanisms=("PLAIN", "LOGIN"), tls=False
    )
    assert transcript(commands) == ["CAPA"]


@pytest.mark.parametrize("implicit", [False, True])
def test_capa_after_tls_adds_cram_md5_and_drops_stls(implicit: bool) -> None:
    s = Session(implicit=implicit)
    if implicit:
        s.connect(TLS)
    else:
        s.connect()
        s.starttls()
    commands = s.send("CAPA\r\n")
    assert capa(commands)[:2] == ["USER", "SASL PLAIN LOGIN CRAM-MD5"]
    assert "STLS" not in capa(commands)
    assert one(obs.CapabilitiesSent, commands) == obs.CapabilitiesSent(
        starttls_offered=False, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"), tls=True
    )


def test_capa_after_login_has_no_login_capabilities() -> None:
    s = connected()
    s.login()
    commands = s.send("CAPA\r\n")
    assert capa(commands) == [
        "TOP",
        "UIDL",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION mailtls",
    ]
    assert one(obs.CapabilitiesSent, commands).auth_mechanisms == ()


@pytest.mark.parametrize(
    ("tls", "mechanisms"), [(False, "PLAIN LOGIN"), (True, "PLAIN LOGIN CRAM-MD5")]
)
def test_auth_without_argument_lists_mechanisms(tls: bool, mechanisms: str) -> None:
    s = Session(implicit=tls)
    s.connect(TLS if tls else None)
    assert replies(s.send("AUTH\r\n")) == ["+OK", *mechanisms.split(), "."]


# --- STLS per test case ------------------------------------------------------------------------


def test_blind_stls_under_t1_is_refused() -> None:
    s = connected("t1")
    commands = s.send("STLS\r\n")
    assert replies(commands) == [pop3.ERR_STLS_NOT_ADVERTISED]
    assert one(obs.StarttlsRequested, commands).advertised is False
    assert one(obs.StarttlsRefused, commands) == obs.StarttlsRefused(
        "not_advertised", pop3.ERR_STLS_NOT_ADVERTISED
    )
    assert not [c for c in commands if isinstance(c, StartTls | ReadClientHello)]
    assert s.core.state is State.AUTHORIZATION  # the session goes on in plaintext


@pytest.mark.parametrize("testcase", ["baseline", "t2", "t3", "t4"])
def test_stls_with_argument_is_a_syntax_error(testcase: str) -> None:
    commands = connected(testcase).send("STLS now\r\n")
    assert replies(commands) == [pop3.ERR_STLS_SYNTAX]
    assert one(obs.StarttlsRefused, commands).reason == "syntax"
    assert StartTls() not in commands


def test_stls_inside_tls_is_refused() -> None:
    s = connected()
    s.starttls()
    commands = s.send("STLS\r\n")
    assert replies(commands) == [pop3.ERR_TLS_ACTIVE]
    assert one(obs.StarttlsRequested, commands).advertised is False
    assert one(obs.StarttlsRefused, commands).reason == "already_tls"


def test_stls_after_login_is_refused() -> None:
    s = connected()
    s.login()
    commands = s.send("STLS\r\n")
    assert one(obs.StarttlsRefused, commands).reason == "not_advertised"
    assert StartTls() not in commands


def test_baseline_stls_then_tls_forgets_pre_tls_state() -> None:
    s = connected()
    s.send(f"USER {ACCOUNT}\r\n")
    commands = s.send("STLS\r\n")
    assert commands == [
        Record(obs.CommandReceived("STLS", False)),
        Record(obs.StarttlsRequested(advertised=True)),
        Record(obs.StarttlsAccepted()),
        Send(wire(pop3.OK_BEGIN_TLS)),
        StartTls(),
        SetTimer(LIMITS.line_seconds),
    ]
    assert s.event(TlsEstablished(TLS)) == [
        Record(obs.TlsStarted(TLS.version, TLS.cipher, implicit=False)),
        SetTimer(LIMITS.idle_seconds),
    ]
    commands = s.send(f"PASS {CANARY}\r\n")  # the USER sent before TLS is forgotten
    assert replies(commands) == [pop3.ERR_NO_USER]
    attempt = one(obs.AuthAttempted, commands)
    assert (attempt.tls, attempt.secret_in_clear, attempt.outcome) == (True, False, "refused")


@pytest.mark.parametrize("testcase", ["baseline", "t2", "t4"])
def test_bytes_pipelined_after_stls_are_discarded_and_recorded(testcase: str) -> None:
    s = connected(testcase)
    pipelined = f"USER {ACCOUNT}\r\nPASS {CANARY}\r\n"
    commands = s.send("STLS\r\n" + pipelined)
    assert replies(commands) == [pop3.OK_BEGIN_TLS]  # nothing answered after the STLS
    assert one(obs.PipelinedAfterStarttls, commands).bytes_discarded == len(pipelined)
    assert transcript(commands) == ["STLS"]
    # the password went out in the clear, though the server never read it as a command
    assert one(obs.UsernameSent, commands) == obs.UsernameSent(ACCOUNT, CODE, False)
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "USER", ACCOUNT, CODE, False, True, True, "refused", proof=True
    )
    if testcase == "baseline":
        s.event(TlsEstablished(TLS))
        assert replies(s.send(f"PASS {CANARY}\r\n")) == [pop3.ERR_NO_USER]  # USER dropped


def test_pipelined_auth_plain_after_stls_is_recorded() -> None:
    s = connected()
    commands = s.send(f"STLS\r\nAUTH PLAIN {plain(s)}\r\n")
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "PLAIN", ACCOUNT, CODE, False, True, True, "refused", proof=True
    )


def test_t2_answers_the_client_hello_in_cleartext_then_only_records() -> None:
    s = connected("t2")
    commands = s.send("STLS\r\n")
    assert replies(commands) == [pop3.OK_BEGIN_TLS]
    assert one(obs.StarttlsAccepted, commands) == obs.StarttlsAccepted()
    assert ReadClientHello() in commands and StartTls() not in commands
    assert s.core.phase is Phase.CLIENT_HELLO

    assert s.event(ClientHelloReceived(517, True)) == [
        Record(obs.StarttlsDisrupted("handshake", 517, True, pop3.ERR_TLS_TEMP)),
        Send(wire(pop3.ERR_TLS_TEMP)),
        SetTimer(LIMITS.disrupted_seconds),
    ]
    # the first bytes after the broken handshake are recorded, then the connection ends
    data = f"USER {ACCOUNT}\r\nPASS {CANARY}\r\n"
    commands = s.send(data)
    assert not [c for c in commands if isinstance(c, Send | SendRaw)]
    assert one(obs.DataAfterDisruption, commands) == obs.DataAfterDisruption(
        len(data), False, "USER"
    )
    assert one(obs.UsernameSent, commands) == obs.UsernameSent(ACCOUNT, CODE, False)
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "USER", ACCOUNT, CODE, False, True, True, "disrupted", proof=True
    )
    assert commands[-1] == Close() and s.core.phase is Phase.CLOSED
    assert s.event(Timeout()) == []


def test_t2_alert_after_the_broken_handshake_ends_the_connection() -> None:
    s = connected("t2")
    s.send("STLS\r\n")
    s.event(ClientHelloReceived(517, True))
    assert s.send(TLS_ALERT) == [Record(obs.DataAfterDisruption(len(TLS_ALERT), True, "")), Close()]


def test_disrupted_state_is_bounded() -> None:
    s = connected("t4")
    s.starttls()
    s.send("CAPA\r\n")
    chunks = 0
    while Close() not in (commands := s.send(b"x")):
        assert all(isinstance(c, Record) for c in commands)
        chunks += 1
        assert chunks < 1000, "the disrupted state never closes"
    assert s.core.phase is Phase.CLOSED
    assert s.send(b"x") == [] and s.event(Timeout()) == []


def test_unknown_text_after_disruption_is_not_copied() -> None:
    s = connected("t2")
    s.send("STLS\r\n")
    s.event(ClientHelloReceived(517, True))
    commands = s.send(f"{CANARY}\r\n")
    assert one(obs.DataAfterDisruption, commands).verb == "?"


def test_t2_plaintext_instead_of_a_client_hello() -> None:
    s = connected("t2")
    s.send("STLS\r\n")
    s.event(ClientHelloReceived(0, False))
    secret = s.secret(b64(f"\0{ACCOUNT}\0{CANARY}".encode()))
    commands = s.send(f"AUTH PLAIN {secret}\r\n")
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "PLAIN", ACCOUNT, CODE, False, True, True, "disrupted", proof=True
    )
    assert one(obs.DataAfterDisruption, commands).verb == "AUTH"


def test_t3_refuses_then_plaintext_login_is_recorded_in_clear() -> None:
    s = connected("t3")
    commands = s.send("STLS\r\n")
    assert commands == [
        Record(obs.CommandReceived("STLS", False)),
        Record(obs.StarttlsRequested(advertised=True)),
        Record(obs.StarttlsRefused("testcase", pop3.ERR_TLS_TEMP)),
        Send(wire(pop3.ERR_TLS_TEMP)),
        SetTimer(LIMITS.silence_after_refusal),
    ]
    s.send(f"USER {ACCOUNT}\r\n")
    commands = s.send(f"PASS {CANARY}\r\n")
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "USER", ACCOUNT, CODE, False, True, True, "success", proof=True
    )
    assert replies(commands) == [pop3.OK_LOGGED_IN]


def test_t3_silence_after_refusal_closes_without_reply() -> None:
    s = connected("t3")
    s.send("STLS\r\n")
    assert s.event(Timeout()) == [Close()]


def test_t3_client_that_spoke_after_refusal_gets_the_inactivity_reply() -> None:
    s = connected("t3")
    s.send("STLS\r\n")
    assert s.send("CAPA\r\n")[-1] == SetTimer(LIMITS.idle_seconds)
    assert replies(s.event(Timeout())) == [pop3.ERR_INACTIVITY]


def test_t3_refusal_followed_by_pipelined_command_is_not_silence() -> None:
    s = connected("t3")
    commands = s.send("STLS\r\nNOOP\r\n")
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)
    assert replies(commands) == [pop3.ERR_TLS_TEMP, pop3.ERR_WRONG_STATE]


def test_t4_first_command_inside_tls_gets_cleartext_line_outside_tls() -> None:
    s = connected("t4")
    s.starttls()
    commands = s.send("CAPA\r\n")
    assert commands == [
        Record(obs.CommandReceived("CAPA", True)),
        Record(obs.StarttlsDisrupted("session", 0, True, pop3.ERR_TLS_TEMP)),
        SendRaw(wire(pop3.ERR_TLS_TEMP)),
        SetTimer(LIMITS.disrupted_seconds),
    ]
    assert s.core.phase is Phase.DISRUPTED
    assert s.send(TLS_ALERT) == [Record(obs.DataAfterDisruption(len(TLS_ALERT), True, ""))]
    commands = s.send(f"USER {ACCOUNT}\r\nPASS {CANARY}\r\n")
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "USER", ACCOUNT, CODE, False, True, True, "disrupted", proof=True
    )
    assert s.event(Timeout()) == [Close()]


def test_t4_auth_as_first_command_is_a_tls_auth() -> None:
    s = connected("t4")
    s.starttls()
    secret = s.secret(b64(f"\0{ACCOUNT}\0{CANARY}".encode()))
    commands = s.send(f"AUTH PLAIN {secret}\r\n")
    assert transcript(commands) == [f"AUTH PLAIN <redacted, {len(secret)} bytes>"]
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "PLAIN", ACCOUNT, CODE, True, True, False, "disrupted", proof=True
    )
    assert raw_replies(commands) == [wire(pop3.ERR_TLS_TEMP)]
    assert replies(commands) == []


def test_t4_pipelined_inside_tls_counts_as_tls() -> None:
    s = connected("t4")
    s.starttls()
    commands = s.send(f"USER {ACCOUNT}\r\nPASS {CANARY}\r\n")
    assert one(obs.UsernameSent, commands).tls is True
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "USER", ACCOUNT, CODE, True, True, False, "disrupted", proof=True
    )
    assert replies(commands) == []


def test_t4_on_implicit_tls_greets_then_disrupts() -> None:
    s = Session("t4", implicit=True)
    commands = s.connect(TLS)
    assert one(obs.TlsStarted, commands) == obs.TlsStarted(TLS.version, TLS.cipher, implicit=True)
    assert replies(commands) == ["+OK mail.mailtls.test mailtls POP3 ready"]
    commands = s.send("CAPA\r\n")
    assert raw_replies(commands) == [wire(pop3.ERR_TLS_TEMP)]
    assert one(obs.StarttlsDisrupted, commands).stage == "session"


@pytest.mark.parametrize("testcase", ["baseline", "t1", "t2", "t3"])
def test_no_disruption_after_tls_outside_t4(testcase: str) -> None:
    s = Session(testcase, implicit=True)
    s.connect(TLS)
    commands = s.send("CAPA\r\n")
    assert raw_replies(commands) == []
    assert capa(commands)


# --- USER / PASS -------------------------------------------------------------------------------


def test_user_alone_is_a_username_without_secret() -> None:
    s = connected()
    commands = s.send(f"USER {ACCOUNT}@mailtls.test\r\n")
    assert commands == [
        Record(obs.CommandReceived(f"USER {ACCOUNT}", False)),
        Record(obs.UsernameSent(ACCOUNT, CODE, False)),
        Send(b"+OK\r\n"),
        SetTimer(LIMITS.idle_seconds),
    ]
    commands = s.send("QUIT\r\n")
    assert replies(commands) == [pop3.OK_QUIT] and Close() in commands
    assert not of(obs.AuthAttempted, s.history)


@pytest.mark.parametrize("user", [ACCOUNT, "TEST-ABC123", "Test-Abc123@MailTLS.test"])
def test_pass_logs_in_the_run_account(user: str) -> None:
    s = connected()
    s.send(f"USER {user}\r\n")
    commands = s.send(f"PASS {CANARY}\r\n")
    assert commands == [
        Record(obs.CommandReceived(f"PASS <redacted, {len(CANARY)} bytes>", False)),
        Record(obs.AuthAttempted("USER", ACCOUNT, CODE, False, True, True, "success", True)),
        Send(wire(pop3.OK_LOGGED_IN)),
        SetTimer(LIMITS.idle_seconds),
    ]
    assert s.core.state is State.TRANSACTION


def test_unknown_user_fails_after_a_delay_and_is_hashed() -> None:
    s = connected()
    user = s.secret("alice@example.org")  # a stranger's username is never stored as such
    commands = s.send(f"USER {user}\r\n")
    shown = one(obs.UsernameSent, commands).username
    assert shown.startswith("h:")
    commands = s.send(f"PASS {CANARY}\r\n")
    assert Send(wire(pop3.ERR_AUTH_FAILED), delay=LIMITS.auth_fail_delay) in commands
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "USER", shown, None, False, True, True, "failure"
    )
    assert s.core.state is State.AUTHORIZATION


def test_pass_with_spaces_and_nul_is_redacted_whole() -> None:
    s = connected()
    s.send(f"USER {ACCOUNT}\r\n")
    password = f"{CANARY} with\0space"
    commands = s.send(f"PASS {password}\r\n".encode())
    assert transcript(commands) == [f"PASS <redacted, {len(password)} bytes>"]
    # the whole argument is the password: it is not the account's (the canary alone would be)
    attempt = one(obs.AuthAttempted, commands)
    assert (attempt.code, attempt.outcome, attempt.proof) == (CODE, "failure", False)


def test_pass_without_user_is_refused() -> None:
    s = connected()
    commands = s.send(f"PASS {CANARY}\r\n")
    assert replies(commands) == [pop3.ERR_NO_USER]
    assert one(obs.AuthAttempted, commands).outcome == "refused"
    assert one(obs.AuthAttempted, commands).secret_in_clear is True


def test_pass_without_argument_is_a_syntax_error() -> None:
    s = connected()
    s.send(f"USER {ACCOUNT}\r\n")
    commands = s.send("PASS\r\n")
    assert replies(commands) == [pop3.ERR_PASS_SYNTAX]
    assert not of(obs.AuthAttempted, commands)
    assert replies(s.send(f"PASS {CANARY}\r\n")) == [pop3.OK_LOGGED_IN]  # USER still holds


def test_too_many_auth_failures_close() -> None:
    s = connected(max_auth_failures=2)
    s.send("USER nobody\r\n")
    assert Close() not in s.send(f"PASS {CANARY}\r\n")
    s.send("USER nobody\r\n")
    commands = s.send(f"PASS {CANARY}\r\n")
    assert commands[-1] == Close()
    assert s.send("CAPA\r\n") == []


def test_apop_is_refused_and_its_digest_redacted() -> None:
    s = connected()
    digest = s.secret("c4c9334bac560ecc979e58001b3e22fb")
    commands = s.send(f"APOP {ACCOUNT} {digest}\r\n")
    assert transcript(commands) == [f"APOP {ACCOUNT} <redacted, 32 bytes>"]
    assert replies(commands) == [pop3.ERR_APOP]
    assert one(obs.AuthAttempted, commands).outcome == "refused"


# --- SASL --------------------------------------------------------------------------------------


def plain(s: Session, user: str = ACCOUNT) -> str:
    return s.secret(b64(f"\0{user}\0{CANARY}".encode()))


def challenge(commands: list[Command]) -> bytes:
    (reply,) = replies(commands)
    assert reply.startswith("+ ")
    return base64.b64decode(reply[2:])


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("initial", [False, True])
def test_auth_plain(tls: bool, initial: bool) -> None:
    s = Session(implicit=tls)
    s.connect(TLS if tls else None)
    response = plain(s)
    if initial:
        commands = s.send(f"AUTH PLAIN {response}\r\n")
        assert transcript(commands) == [f"AUTH PLAIN <redacted, {len(response)} bytes>"]
    else:
        assert challenge(s.send("AUTH PLAIN\r\n")) == b""
        commands = s.send(response + "\r\n")
        assert transcript(commands) == [f"<redacted, {len(response)} bytes>"]
    assert replies(commands) == [pop3.OK_LOGGED_IN]
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "PLAIN", ACCOUNT, CODE, tls, True, not tls, "success", proof=True
    )


@pytest.mark.parametrize("initial", [False, True])
def test_auth_login(initial: bool) -> None:
    s = connected()
    user = s.secret(b64(ACCOUNT.encode()))
    password = s.secret(b64(CANARY.encode()))
    if initial:
        commands = s.send(f"AUTH LOGIN {user}\r\n")
    else:
        assert challenge(s.send("AUTH LOGIN\r\n")) == b"Username:"
        commands = s.send(user + "\r\n")
    assert challenge(commands) == b"Password:"
    assert not of(obs.UsernameSent, commands)  # the exchange is still running
    commands = s.send(password + "\r\n")
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "LOGIN", ACCOUNT, CODE, False, True, True, "success", proof=True
    )
    assert transcript(commands) == [f"<redacted, {len(password)} bytes>"]


def test_auth_login_cancelled_after_username_is_a_username_only() -> None:
    s = connected()
    s.send(f"AUTH LOGIN {s.secret(b64(ACCOUNT.encode()))}\r\n")
    commands = s.send("*\r\n")
    assert transcript(commands) == ["*"]
    assert replies(commands) == [pop3.ERR_AUTH_CANCELLED]
    assert one(obs.UsernameSent, commands) == obs.UsernameSent(ACCOUNT, CODE, False)
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "LOGIN", ACCOUNT, CODE, False, False, False, "cancelled"
    )
    assert s.core.state is State.AUTHORIZATION


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"])
def test_cancel_at_first_continuation(mechanism: str) -> None:
    s = connected()
    s.send(f"AUTH {mechanism}\r\n")
    commands = s.send("*\r\n")
    assert replies(commands) == [pop3.ERR_AUTH_CANCELLED]
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        mechanism, "", None, False, False, False, "cancelled"
    )
    assert not of(obs.UsernameSent, commands)


@pytest.mark.parametrize("initial", [False, True])
def test_cram_md5_is_refused_before_tls(initial: bool) -> None:
    s = connected()
    commands = s.send("AUTH CRAM-MD5" + (" =" if initial else "") + "\r\n")
    assert replies(commands) == [pop3.ERR_AUTH_MECHANISM]
    assert one(obs.AuthAttempted, commands).outcome == "refused"
    assert s.core.state is State.AUTHORIZATION


def test_cram_md5_after_tls() -> None:
    s = Session(implicit=True)
    s.connect(TLS)
    token = challenge(s.send("AUTH CRAM-MD5\r\n"))
    assert token.startswith(b"<") and token.endswith(b"@mail.mailtls.test>")
    digest = hmac.new(CANARY.encode(), token, hashlib.md5).hexdigest()
    response = s.secret(b64(f"{ACCOUNT} {digest}".encode()))
    commands = s.send(response + "\r\n")
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        "CRAM-MD5", ACCOUNT, CODE, True, True, False, "success", proof=True
    )


def test_cram_md5_with_initial_response_is_malformed() -> None:
    s = Session(implicit=True)
    s.connect(TLS)
    commands = s.send("AUTH CRAM-MD5 =\r\n")
    assert replies(commands) == [pop3.ERR_AUTH_MALFORMED]
    assert s.core.state is State.AUTHORIZATION


def test_cram_md5_cancel() -> None:
    s = Session(implicit=True)
    s.connect(TLS)
    s.send("AUTH CRAM-MD5\r\n")
    commands = s.send("*\r\n")
    assert one(obs.AuthAttempted, commands).outcome == "cancelled"


def xoauth2(s: Session) -> str:
    return s.secret(b64(f"user={ACCOUNT}\x01auth=Bearer {CANARY}\x01\x01".encode()))


def oauthbearer(s: Session) -> str:
    return s.secret(b64(f"n,a={ACCOUNT},\x01auth=Bearer {CANARY}\x01\x01".encode()))


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize(
    ("mechanism", "make"), [("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)]
)
def test_oauth_mechanisms_run_to_the_end_and_are_refused(
    mechanism: str, make: Any, initial: bool
) -> None:
    s = connected()
    token = make(s)
    if initial:
        commands = s.send(f"AUTH {mechanism} {token}\r\n")
    else:
        s.send(f"AUTH {mechanism}\r\n")
        commands = s.send(token + "\r\n")
    assert b'"status":"invalid_token"' in challenge(commands)
    commands = s.send("\r\n")
    assert Send(wire(pop3.ERR_AUTH_FAILED), delay=LIMITS.auth_fail_delay) in commands
    assert one(obs.AuthAttempted, commands) == obs.AuthAttempted(
        mechanism, ACCOUNT, CODE, False, True, True, "failure"
    )


def test_oauth_token_cancelled_still_counts_as_sent() -> None:
    s = connected()
    s.send(f"AUTH XOAUTH2 {xoauth2(s)}\r\n")
    commands = s.send("*\r\n")
    attempt = one(obs.AuthAttempted, commands)
    assert (attempt.outcome, attempt.secret_sent, attempt.secret_in_clear) == (
        "cancelled",
        True,
        True,
    )


def test_unknown_mechanism_is_refused_without_echoing_it() -> None:
    s = connected()
    s.secret("HUNTER2")
    commands = s.send("AUTH hunter2\r\n")
    assert transcript(commands) == ["AUTH UNKNOWN"]
    assert replies(commands) == [pop3.ERR_AUTH_MECHANISM]
    assert one(obs.AuthAttempted, commands).mechanism == "UNKNOWN"


def test_known_but_unoffered_mechanism_is_named() -> None:
    commands = connected().send("AUTH SCRAM-SHA-256\r\n")
    assert one(obs.AuthAttempted, commands).mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    ("response", "secret_sent"), [("not base64!", True), ("AAAA", True), ("=", False)]
)
def test_malformed_plain_response(response: str, secret_sent: bool) -> None:
    s = connected()
    s.send("AUTH PLAIN\r\n")
    commands = s.send(response + "\r\n")
    assert replies(commands) == [pop3.ERR_AUTH_MALFORMED]
    assert one(obs.ProtocolError, commands).reason == "sasl_malformed"
    attempt = one(obs.AuthAttempted, commands)
    assert (attempt.outcome, attempt.secret_sent) == ("failure", secret_sent)
    assert s.core.state is State.AUTHORIZATION


def test_auth_with_too_many_arguments() -> None:
    commands = connected().send("AUTH PLAIN a b\r\n")
    assert replies(commands) == [pop3.ERR_AUTH_SYNTAX]


def test_sasl_login_then_transaction() -> None:
    s = connected()
    s.send(f"AUTH PLAIN {plain(s)}\r\n")
    assert replies(s.send("STAT\r\n")) == [pop3.OK_STAT]


# --- transaction state -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("STAT", [pop3.OK_STAT]),
        ("LIST", [pop3.OK_LIST, "."]),
        ("LIST 1", [pop3.ERR_NO_SUCH_MESSAGE]),
        ("LIST x", [pop3.ERR_MESSAGE_NUMBER]),
        ("LIST 0", [pop3.ERR_MESSAGE_NUMBER]),
        ("UIDL", ["+OK", "."]),
        ("UIDL 3", [pop3.ERR_NO_SUCH_MESSAGE]),
        ("RETR 1", [pop3.ERR_NO_SUCH_MESSAGE]),
        ("RETR", [pop3.ERR_MESSAGE_NUMBER]),
        ("DELE 1", [pop3.ERR_NO_SUCH_MESSAGE]),
        ("TOP 1 10", [pop3.ERR_NO_SUCH_MESSAGE]),
        ("TOP 1", [pop3.ERR_TOP_SYNTAX]),
        ("NOOP", [pop3.OK_NOOP]),
        ("rset", [pop3.OK_RSET]),
        (f"USER {ACCOUNT}", [pop3.ERR_WRONG_STATE]),
        ("AUTH PLAIN", [pop3.ERR_WRONG_STATE]),
    ],
)
def test_transaction_on_an_empty_maildrop(command: str, expected: list[str]) -> None:
    s = connected()
    s.login()
    commands = s.send(command + "\r\n")
    assert replies(commands) == expected
    assert transcript(commands) == [command]


def test_quit_in_transaction_closes() -> None:
    s = connected()
    s.login()
    commands = s.send("QUIT\r\nNOOP\r\n")
    assert replies(commands) == [pop3.OK_QUIT]  # nothing after QUIT is read
    assert commands[-1] == Close()
    assert s.send("NOOP\r\n") == []


@pytest.mark.parametrize("command", ["STAT", "LIST", "UIDL", "RETR 1", "DELE 1", "TOP 1 1", "NOOP"])
def test_transaction_commands_need_login(command: str) -> None:
    commands = connected().send(command + "\r\n")
    assert replies(commands) == [pop3.ERR_WRONG_STATE]
    assert one(obs.ProtocolError, commands).reason == "wrong_state"


# --- garbage, limits, timers -------------------------------------------------------------------


def test_unknown_command_is_recorded_without_its_arguments() -> None:
    s = connected()
    commands = s.send(f"a1 LOGIN {ACCOUNT} {CANARY}\r\n")  # an IMAP client on the POP3 port
    line = f"a1 LOGIN {ACCOUNT} {CANARY}"
    assert transcript(commands) == [f"<unrecognised, {len(line)} bytes>"]
    assert replies(commands) == [pop3.ERR_UNKNOWN]
    assert one(obs.ProtocolError, commands).reason == "unknown_command"
    commands = s.send("EHLO client.example\r\n")
    assert transcript(commands) == ["EHLO <redacted, 14 bytes>"]


def test_a_password_typed_as_a_command_is_not_shown() -> None:
    commands = connected().send(f"{CANARY}\r\n")
    assert transcript(commands) == [f"<unrecognised, {len(CANARY)} bytes>"]


def test_nul_byte_in_command() -> None:
    s = connected()
    commands = s.send(b"USER te\x00st\r\n")
    assert replies(commands) == [pop3.ERR_BAD_CHARACTER]
    assert one(obs.ProtocolError, commands).reason == "bad_character"
    assert not of(obs.UsernameSent, commands)
    assert replies(s.send(b"\x00\xff\xfe\r\n")) == [pop3.ERR_UNKNOWN]


def test_over_long_line_is_reported_once_and_the_session_goes_on() -> None:
    s = connected(line_bytes=64)
    commands = s.send(b"X" * 50)
    assert commands == [SetTimer(LIMITS.line_seconds)]
    assert s.send(b"Y" * 500) == []  # the deadline runs from the first byte
    commands = s.send(b"Z" * 10 + b"\r\nCAPA\r\n")
    assert replies(commands)[0] == pop3.ERR_LINE_TOO_LONG
    assert one(obs.ProtocolError, commands).reason == "line_too_long"
    assert transcript(commands) == ["CAPA"]
    assert one(obs.CapabilitiesSent, commands)


def test_over_long_sasl_response_ends_the_exchange() -> None:
    s = connected(line_bytes=64)
    s.send("AUTH PLAIN\r\n")
    commands = s.send(b"A" * 200 + b"\r\n")
    assert replies(commands) == [pop3.ERR_AUTH_MALFORMED]
    assert one(obs.AuthAttempted, commands).outcome == "failure"
    assert s.core.state is State.AUTHORIZATION


def test_partial_line_deadline_and_timeout() -> None:
    s = connected()
    assert s.send(b"CA") == [SetTimer(LIMITS.line_seconds)]
    assert s.send(b"P") == []
    commands = s.event(Timeout())
    assert commands == [Send(wire(pop3.ERR_INACTIVITY)), Close()]
    assert s.event(Timeout()) == []


def test_split_command_is_answered_once_complete() -> None:
    s = connected()
    s.send(b"CA")
    commands = s.send(b"PA\r")
    assert commands == []
    commands = s.send(b"\n")
    assert capa(commands) and commands[-1] == SetTimer(LIMITS.idle_seconds)


def test_error_budget_closes_the_connection() -> None:
    s = connected(max_errors=3)
    s.send("BOGUS\r\n")
    s.send("STAT\r\n")
    commands = s.send("XYZZY\r\nCAPA\r\n")
    assert replies(commands) == [pop3.ERR_UNKNOWN, pop3.ERR_TOO_MANY_ERRORS]
    assert commands[-1] == Close()
    assert of(obs.ProtocolError, commands)[-1].reason == "too_many_errors"
    assert s.send("CAPA\r\n") == []


def test_idle_timeout() -> None:
    s = connected()
    assert s.event(Timeout()) == [Send(wire(pop3.ERR_INACTIVITY)), Close()]


def test_timeout_during_the_handshake_closes_silently() -> None:
    s = connected()
    s.send("STLS\r\n")
    assert s.event(Timeout()) == [Close()]


def test_timeout_mid_sasl_records_the_abandoned_exchange() -> None:
    s = connected()
    s.send(f"AUTH LOGIN {s.secret(b64(ACCOUNT.encode()))}\r\n")
    commands = s.event(Timeout())
    assert one(obs.UsernameSent, commands).username == ACCOUNT
    assert one(obs.AuthAttempted, commands).outcome == "cancelled"
    assert commands[-2:] == [Send(wire(pop3.ERR_INACTIVITY)), Close()]


def test_peer_close_mid_sasl_only_records() -> None:
    s = connected()
    s.send(f"AUTH LOGIN {s.secret(b64(ACCOUNT.encode()))}\r\n")
    commands = s.event(Closed())
    assert all(isinstance(c, Record) for c in commands)
    assert one(obs.AuthAttempted, commands).outcome == "cancelled"
    assert s.event(Closed()) == []


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_kicked(testcase: str) -> None:
    s = connected(testcase)
    commands = s.event(Kicked("run activated\r\nInjected"))
    assert commands == [
        Record(obs.SessionKicked("run activated  Injected")),
        Send(wire("-ERR [SYS/TEMP] run activated  Injected")),
        Close(),
    ]
    assert s.event(Kicked("again")) == []


def test_kicked_while_disrupted_sends_nothing() -> None:
    s = connected("t2")
    s.send("STLS\r\n")
    s.event(ClientHelloReceived(300, True))
    assert s.event(Kicked("step started")) == [
        Record(obs.SessionKicked("step started")),
        Close(),
    ]


def test_events_before_connected_are_ignored() -> None:
    s = Session()
    assert s.send("CAPA\r\n") == []
    assert s.event(ClientHelloReceived(1, True)) == []
    assert s.event(TlsEstablished(TLS)) == []


# --- whole sessions ------------------------------------------------------------------------------


def test_fetchmail_like_session() -> None:
    """CAPA, STLS, CAPA, USER, PASS, STAT, UIDL, QUIT: what fetchmail and getmail send."""
    s = Session()
    assert replies(s.connect()) == ["+OK mail.mailtls.test mailtls POP3 ready"]
    assert "STLS" in capa(s.send("CAPA\r\n"))
    assert replies(s.send("STLS\r\n")) == [pop3.OK_BEGIN_TLS]
    s.event(TlsEstablished(TLS))
    assert "STLS" not in capa(s.send("CAPA\r\n"))
    assert replies(s.send(f"USER {ACCOUNT}@mailtls.test\r\n")) == ["+OK"]
    assert replies(s.send(f"PASS {CANARY}\r\n")) == [pop3.OK_LOGGED_IN]
    assert replies(s.send("STAT\r\n")) == ["+OK 0 0"]
    assert replies(s.send("UIDL\r\n")) == ["+OK", "."]
    commands = s.send("QUIT\r\n")
    assert replies(commands) == [pop3.OK_QUIT] and commands[-1] == Close()
    assert transcript(s.history) == [
        "CAPA",
        "STLS",
        "CAPA",
        f"USER {ACCOUNT}",
        f"PASS <redacted, {len(CANARY)} bytes>",
        "STAT",
        "UIDL",
        "QUIT",
    ]
    assert [o.tls for o in of(obs.CommandReceived, s.history)] == [False] * 2 + [True] * 6
    assert one(obs.AuthAttempted, s.history) == obs.AuthAttempted(
        "USER", ACCOUNT, CODE, True, True, False, "success", proof=True
    )


def test_pipelined_session_in_one_chunk() -> None:
    s = connected()
    commands = s.send(f"USER {ACCOUNT}\r\nPASS {CANARY}\r\nSTAT\r\nLIST\r\nQUIT\r\n")
    assert replies(commands) == [
        "+OK",
        pop3.OK_LOGGED_IN,
        pop3.OK_STAT,
        pop3.OK_LIST,
        ".",
        pop3.OK_QUIT,
    ]


def test_failed_auth_delay_precedes_pipelined_replies() -> None:
    """The shell holds commands behind a delayed Send: order is what the client sees."""
    s = connected()
    commands = s.send(f"USER nobody\r\nPASS {CANARY}\r\nCAPA\r\n")
    sends = [c for c in commands if isinstance(c, Send)]
    assert [c.delay for c in sends] == [0.0, LIMITS.auth_fail_delay, 0.0]


@pytest.mark.parametrize("testcase", ALL_CASES)
@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_never_crash_nor_leak(testcase: str, seed: int) -> None:
    rng = random.Random(seed)
    s = Session(testcase, line_bytes=256, max_errors=1000, max_auth_failures=1000)
    s.connect()
    pieces = [b"STLS\r\n", b"USER x\r\n", f"PASS {CANARY}\r\n".encode(), b"AUTH PLAIN\r\n"]
    pieces += [b"AUTH LOGIN\r\n", b"*\r\n", b"CAPA\r\n", b"\r\n", b"\x00", b"\n", TLS_ALERT]
    for _ in range(60):
        if rng.random() < 0.5:
            data = rng.choice(pieces)
        else:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
        s.send(data)
        if s.core.phase is Phase.HANDSHAKE:
            s.event(TlsEstablished(TLS))
        elif s.core.phase is Phase.CLIENT_HELLO:
            s.event(ClientHelloReceived(rng.randrange(0, 600), rng.random() < 0.5))
    s.event(Timeout())
    s.event(Closed())
    assert all(isinstance(c, get_args(Command)) for c in s.history)
    assert of(obs.ProtocolError, s.history)  # the garbage was noticed
