"""Transcript tests of the IMAP sans-IO core: feed events, compare the commands it returns.

No sockets: a ``Session`` drives ``ImapCore`` with events and checks, on every call, that no
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
from typing import TypeVar

import pytest
from protocols_kit import authenticator, b64

from mailtls import observations as obs
from mailtls.protocols.base import (
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
from mailtls.protocols.imap import ImapCore, Mode, State
from mailtls.testcases import STANDARD, TESTCASES

HOST = "imap.mailtls.test"
DOMAIN = "mailtls.test"
USER = "test-abc123"
CANARY = "Canary-Pa55w0rd-7f3e9"
TOKEN = "ya29.CanaryToken-0c1d2e3f"
STRANGER = "victim@example.org"
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
ALL_CASES = list(STANDARD)  # T1-T4; the other cases have their own tests
OFFERING = [name for name in ALL_CASES if TESTCASES[name].offer_starttls()]
LIMITS = Limits()
BREAK = "* BAD TLS not available due to temporary reason\r\n"

ObsT = TypeVar("ObsT", bound=obs.Observation)


SECRET_FORMS = (
    CANARY,
    TOKEN,
    STRANGER,
    b64(CANARY),
    b64(f"\0{USER}\0{CANARY}"),
    b64(f"\0{STRANGER}\0{CANARY}"),
    b64(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01"),
)


class Session:
    """One core plus everything it returned; every call is checked for leaked secrets."""

    def __init__(
        self, testcase: str = "baseline", limits: Limits = LIMITS, implicit: bool = False
    ) -> None:
        ctx = SessionContext(
            policy=TESTCASES[testcase],
            role=PortRole.IMAP,
            hostname=HOST,
            domain=DOMAIN,
            authenticator=authenticator,
            implicit_tls=implicit,
            limits=limits,
        )
        self.core = ImapCore(ctx)
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

    def line(self, text: str) -> str:
        """Send one command line, return the text sent back (all ``Send`` commands joined)."""
        return sent(self.data(text.encode() + b"\r\n")).decode()

    def connect(self, tls: TlsInfo | None = None) -> str:
        return sent(self.event(Connected(tls))).decode()

    def login(self) -> None:
        self.connect()
        assert self.line(f"l1 LOGIN {USER} {CANARY}").startswith("l1 OK [CAPABILITY ")

    def selected(self) -> None:
        self.login()
        assert "s1 OK [READ-WRITE]" in self.line("s1 SELECT INBOX")

    def starttls(self) -> None:
        """STARTTLS up to an established TLS session."""
        self.connect()
        commands = self.data(b"t1 STARTTLS\r\n")
        assert sent(commands) == b"t1 OK Begin TLS negotiation now\r\n"
        assert StartTls() in commands
        self.event(TlsEstablished(TLS))


def state(s: Session) -> State:
    return s.core.state


def mode(s: Session) -> Mode:
    return s.core.mode


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


def capability_words(text: str) -> list[str]:
    start = text.index("CAPABILITY ") + len("CAPABILITY ")
    return text[start:].split("]")[0].split("\r\n")[0].split()


PRE_TLS = [
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "SPECIAL-USE",
]
AUTH_PLAIN_LOGIN = ["AUTH=PLAIN", "AUTH=LOGIN"]


# --- greeting and capabilities -----------------------------------------------------------------


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_greeting_capability_code_per_test_case(testcase: str) -> None:
    s = Session(testcase)
    commands = s.event(Connected())
    starttls = ["STARTTLS"] if testcase != "t1" else []
    greeting = sent(commands).decode()
    assert greeting.startswith("* OK [CAPABILITY ")
    assert greeting.endswith(f"] {HOST} mailtls IMAP ready\r\n")
    assert capability_words(greeting) == [*PRE_TLS, *starttls, *AUTH_PLAIN_LOGIN]
    assert "LOGINDISABLED" not in greeting
    assert only(commands, obs.CapabilitiesSent) == obs.CapabilitiesSent(
        testcase != "t1", ("PLAIN", "LOGIN"), False
    )
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_capability_command_matches_greeting(testcase: str) -> None:
    s = Session(testcase)
    greeting = s.connect()
    commands = s.data(b"c1 CAPABILITY\r\n")
    reply = sent(commands).decode()
    assert reply.startswith("* CAPABILITY ") and reply.endswith("c1 OK Capability completed\r\n")
    assert capability_words(reply) == capability_words(greeting)
    assert lines(commands) == ["c1 CAPABILITY"]
    assert only(commands, obs.CapabilitiesSent).starttls_offered == (testcase != "t1")


@pytest.mark.parametrize("testcase", ["baseline", "t4"])
def test_capabilities_after_starttls_add_cram_md5_and_drop_starttls(testcase: str) -> None:
    s = Session(testcase)
    s.connect()
    s.data(b"t1 STARTTLS\r\n")
    established = s.event(TlsEstablished(TLS))
    assert only(established, obs.TlsStarted) == obs.TlsStarted(TLS.version, TLS.cipher, False)
    if testcase == "t4":
        return  # the first command inside TLS is disrupted (tested below)
    reply = s.line("c2 CAPABILITY")
    assert capability_words(reply) == [*PRE_TLS, *AUTH_PLAIN_LOGIN, "AUTH=CRAM-MD5"]


def test_implicit_tls_greeting_offers_cram_md5_and_no_starttls() -> None:
    s = Session(implicit=True)
    commands = s.event(Connected(TLS))
    assert only(commands, obs.TlsStarted) == obs.TlsStarted(TLS.version, TLS.cipher, True)
    assert capability_words(sent(commands).decode()) == [
        *PRE_TLS,
        *AUTH_PLAIN_LOGIN,
        "AUTH=CRAM-MD5",
    ]
    assert only(commands, obs.CapabilitiesSent) == obs.CapabilitiesSent(
        False, ("PLAIN", "LOGIN", "CRAM-MD5"), True
    )


def test_capabilities_after_login_have_no_auth_and_no_starttls() -> None:
    s = Session()
    s.connect()
    commands = s.data(f"a1 LOGIN {USER} {CANARY}\r\n".encode())
    reply = sent(commands).decode()
    words = capability_words(reply)
    assert reply.endswith("] Logged in\r\n")
    assert "STARTTLS" not in words and not any(w.startswith("AUTH=") for w in words)
    assert "IMAP4rev1" in words and "IDLE" in words
    assert capability_words(s.line("a2 CAPABILITY")) == words
    assert records(commands, obs.CapabilitiesSent)[-1] == obs.CapabilitiesSent(False, (), False)


# --- STARTTLS ----------------------------------------------------------------------------------


def test_blind_starttls_under_t1_is_refused_with_tagged_bad() -> None:
    s = Session("t1")
    s.connect()
    commands = s.data(b"a1 STARTTLS\r\n")
    assert sent(commands) == b"a1 BAD STARTTLS not available\r\n"
    assert StartTls() not in commands and ReadClientHello() not in commands
    assert only(commands, obs.StarttlsRequested) == obs.StarttlsRequested(False)
    assert only(commands, obs.StarttlsRefused) == obs.StarttlsRefused(
        "not_advertised", "a1 BAD STARTTLS not available"
    )
    assert mode(s) is Mode.COMMAND  # the session goes on in plaintext
    assert s.line("a2 NOOP") == "a2 OK Noop completed\r\n"


@pytest.mark.parametrize("testcase", OFFERING)
def test_starttls_with_an_argument_is_bad(testcase: str) -> None:
    s = Session(testcase)
    s.connect()
    commands = s.data(b"a1 STARTTLS now\r\n")
    assert sent(commands) == b"a1 BAD STARTTLS takes no arguments\r\n"
    assert only(commands, obs.StarttlsRefused).reason == "syntax"
    assert StartTls() not in commands


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_starttls_after_login_is_not_advertised(testcase: str) -> None:
    s = Session(testcase)
    s.login()
    commands = s.data(b"a2 STARTTLS\r\n")
    assert sent(commands) == b"a2 BAD STARTTLS not available\r\n"
    assert only(commands, obs.StarttlsRefused).reason == "not_advertised"


def test_starttls_inside_tls_is_refused_as_already_tls() -> None:
    s = Session()
    s.starttls()
    commands = s.data(b"a2 STARTTLS\r\n")
    assert sent(commands) == b"a2 BAD STARTTLS not available\r\n"
    assert only(commands, obs.StarttlsRefused).reason == "already_tls"


def test_baseline_starttls_discards_pipelined_bytes_and_records_credentials_in_them() -> None:
    s = Session()
    s.connect()
    pipelined = f"a2 LOGIN {USER} {CANARY}\r\na3 SELECT INBOX\r\n".encode()
    commands = s.data(b"a1 STARTTLS\r\n" + pipelined)
    assert sent(commands) == b"a1 OK Begin TLS negotiation now\r\n"
    assert only(commands, obs.PipelinedAfterStarttls).bytes_discarded == len(pipelined)
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.username, attempt.secret_in_clear, attempt.outcome) == (USER, True, "refused")
    kinds = [type(c) for c in commands]
    assert kinds.index(StartTls) == len(kinds) - 2 and commands[-1] == SetTimer(30.0)
    assert only(commands, obs.StarttlsAccepted) == obs.StarttlsAccepted()
    # bytes arriving during the handshake are the shell's business: the core ignores them
    assert s.data(b"a4 NOOP\r\n") == []
    established = s.event(TlsEstablished(TLS))
    assert records(established, obs.CommandReceived) == []
    assert s.line("a5 NOOP") == "a5 OK Noop completed\r\n"
    assert state(s) is State.NOT_AUTHENTICATED  # nothing from before TLS survives


def test_t2_answers_the_client_hello_in_cleartext_then_records_what_arrives() -> None:
    s = Session("t2")
    s.connect()
    commands = s.data(b"a1 STARTTLS\r\n")
    assert sent(commands) == b"a1 OK Begin TLS negotiation now\r\n"
    assert ReadClientHello() in commands and StartTls() not in commands
    assert only(commands, obs.StarttlsAccepted) == obs.StarttlsAccepted()
    hello = s.event(ClientHelloReceived(517, True))
    assert sent(hello) == BREAK.encode()
    assert only(hello, obs.StarttlsDisrupted) == obs.StarttlsDisrupted(
        "handshake", 517, True, BREAK.strip()
    )
    assert hello[-1] == SetTimer(LIMITS.disrupted_seconds)
    # the first bytes after the broken handshake are recorded, then the connection ends
    plain = s.data(f"a2 LOGIN {USER} {CANARY}\r\n".encode())
    assert sent(plain) == b""
    assert only(plain, obs.DataAfterDisruption).verb == "LOGIN"
    attempt = only(plain, obs.AuthAttempted)
    assert (attempt.mechanism, attempt.username, attempt.code) == ("IMAP-LOGIN", USER, "abc123")
    assert (attempt.tls, attempt.secret_in_clear, attempt.outcome) == (False, True, "disrupted")
    assert plain[-1] == Close()
    assert s.event(Timeout()) == []


def test_t2_alert_after_the_broken_handshake_ends_the_connection() -> None:
    s = Session("t2")
    s.connect()
    s.data(b"a1 STARTTLS\r\n")
    s.event(ClientHelloReceived(517, True))
    alert = s.data(b"\x15\x03\x03\x00\x02\x02\x28")
    assert alert == [Record(obs.DataAfterDisruption(7, True, "")), Close()]


def test_t2_plaintext_authenticate_with_initial_response_after_disruption() -> None:
    s = Session("t2")
    s.connect()
    s.data(b"a1 STARTTLS\r\n")
    s.event(ClientHelloReceived(0, False))
    commands = s.data(b"a2 AUTHENTICATE PLAIN " + b64(f"\0{USER}\0{CANARY}").encode() + b"\r\n")
    assert only(commands, obs.DataAfterDisruption).verb == "AUTHENTICATE"
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.mechanism, attempt.secret_in_clear, attempt.outcome) == (
        "PLAIN",
        True,
        "disrupted",
    )
    assert commands[-1] == Close()


def test_t2_disrupted_state_is_bounded_and_kick_is_silent() -> None:
    s = Session("t2")
    s.connect()
    s.data(b"a1 STARTTLS\r\n")
    s.event(ClientHelloReceived(300, True))
    kicked = s.event(Kicked("run finished"))
    assert sent(kicked) == b"" and kicked[-1] == Close()
    assert only(kicked, obs.SessionKicked).reason == "run finished"


def test_t3_refuses_starttls_and_closes_silently_when_the_client_waits() -> None:
    s = Session("t3")
    s.connect()
    commands = s.data(b"a1 STARTTLS\r\n")
    reply = "a1 NO [UNAVAILABLE] TLS not available due to temporary reason"
    assert sent(commands) == (reply + "\r\n").encode()
    assert only(commands, obs.StarttlsRefused) == obs.StarttlsRefused("testcase", reply)
    assert StartTls() not in commands
    assert commands[-1] == SetTimer(LIMITS.silence_after_refusal)
    assert s.event(Timeout()) == [Close()]


def test_t3_session_continues_in_plaintext_and_login_is_in_the_clear() -> None:
    s = Session("t3")
    s.connect()
    s.data(b"a1 STARTTLS\r\n")
    commands = s.data(f"a2 LOGIN {USER} {CANARY}\r\n".encode())
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.secret_in_clear, attempt.outcome) == (True, "success")
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)
    timeout = s.event(Timeout())
    assert sent(timeout) == b"* BYE Autologout; idle for too long\r\n" and timeout[-1] == Close()


def test_t3_pipelined_commands_after_refused_starttls_are_answered() -> None:
    s = Session("t3")
    s.connect()
    commands = s.data(b"a1 STARTTLS\r\na2 NOOP\r\n")
    assert sent(commands).endswith(b"a2 OK Noop completed\r\n")
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)


def test_t4_disrupts_the_first_command_inside_tls_with_a_cleartext_line() -> None:
    s = Session("t4")
    s.starttls()
    commands = s.data(f"a2 LOGIN {USER} {CANARY}\r\n".encode())
    assert sent(commands) == b"" and raw(commands) == BREAK.encode()
    assert lines(commands) == [f"a2 LOGIN {USER} <redacted, {len(CANARY)} bytes>"]
    assert only(commands, obs.CommandReceived).tls is True
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.tls, attempt.secret_sent, attempt.secret_in_clear, attempt.outcome) == (
        True,
        True,
        False,
        "disrupted",
    )
    assert only(commands, obs.StarttlsDisrupted) == obs.StarttlsDisrupted(
        "session", 0, True, BREAK.strip()
    )
    assert commands[-1] == SetTimer(LIMITS.disrupted_seconds)
    later = s.data(b"\x15\x03\x03\x00\x02\x01\x00")
    assert only(later, obs.DataAfterDisruption).tls_alert is True
    assert sent(later) == b"" and raw(later) == b""
    assert s.event(Closed()) == [Close()]


def test_t4_credentials_pipelined_behind_the_first_command_count_as_tls() -> None:
    s = Session("t4")
    s.starttls()
    commands = s.data(f"a2 CAPABILITY\r\na3 LOGIN {USER} {CANARY}\r\n".encode())
    assert lines(commands) == ["a2 CAPABILITY"] and raw(commands) == BREAK.encode()
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.tls, attempt.secret_in_clear, attempt.outcome) == (True, False, "disrupted")


def test_t4_on_implicit_tls_greets_then_disrupts_the_first_command() -> None:
    s = Session("t4", implicit=True)
    greeting = s.connect(TLS)
    assert greeting.startswith("* OK [CAPABILITY ")
    commands = s.data(b"a1 CAPABILITY\r\n")
    assert lines(commands) == ["a1 CAPABILITY"]
    assert raw(commands) == BREAK.encode() and sent(commands) == b""


def test_t4_first_command_with_a_synchronizing_literal_gets_no_continuation() -> None:
    s = Session("t4")
    s.starttls()
    commands = s.data(b"a2 LOGIN {11}\r\n")
    assert sent(commands) == b"" and raw(commands) == BREAK.encode()
    assert lines(commands) == ["a2 LOGIN <redacted, 4 bytes>"]
    assert records(commands, obs.AuthAttempted) == []


def test_t4_authenticate_with_initial_response_is_a_tls_attempt() -> None:
    s = Session("t4")
    s.starttls()
    commands = s.data(f"a2 AUTHENTICATE PLAIN {PLAIN_RESPONSE}\r\n".encode())
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.mechanism, attempt.tls, attempt.secret_in_clear) == ("PLAIN", True, False)
    assert attempt.outcome == "disrupted"


# --- LOGIN -------------------------------------------------------------------------------------

LOGIN_FORMS = {
    "atoms": [f"a1 LOGIN {USER} {CANARY}\r\n"],
    "quoted": [f'a1 LOGIN "{USER}" "{CANARY}"\r\n'],
    "domain_upper": [f'a1 LOGIN "{USER.upper()}@{DOMAIN}" {CANARY}\r\n'],
    "literals": [f"a1 LOGIN {{{len(USER)}}}\r\n", f"{USER} {{{len(CANARY)}}}\r\n", f"{CANARY}\r\n"],
    "literal_plus": [f"a1 LOGIN {{{len(USER)}+}}\r\n{USER} {{{len(CANARY)}+}}\r\n{CANARY}\r\n"],
}


@pytest.mark.parametrize("testcase", ALL_CASES)
@pytest.mark.parametrize("form", list(LOGIN_FORMS))
def test_login_forms_in_plaintext_are_secrets_in_the_clear(testcase: str, form: str) -> None:
    s = Session(testcase)
    s.connect()
    chunks = LOGIN_FORMS[form]
    for chunk in chunks[:-1]:
        assert sent(s.data(chunk.encode())) == b"+ Ready for literal\r\n"
    commands = s.data(chunks[-1].encode())
    assert lines(commands) == [f"a1 LOGIN {USER} <redacted, {len(CANARY)} bytes>"]
    assert only(commands, obs.AuthAttempted) == obs.AuthAttempted(
        "IMAP-LOGIN", USER, "abc123", False, True, True, "success", proof=True
    )
    assert sent(commands).decode().startswith("a1 OK [CAPABILITY IMAP4rev1 ")
    assert state(s) is State.AUTHENTICATED


def test_login_quoted_strings_with_escapes() -> None:
    s = Session()
    s.connect()
    commands = s.data(b'a1 LOGIN "test-abc123" "pa\\"ss\\\\word"\r\n')
    assert lines(commands) == ["a1 LOGIN test-abc123 <redacted, 10 bytes>"]
    attempt = only(commands, obs.AuthAttempted)  # the unescaped password is not the account's
    assert (attempt.code, attempt.outcome, attempt.proof) == ("abc123", "failure", False)


def test_login_unknown_user_fails_with_delay_and_a_hashed_name() -> None:
    s = Session()
    s.connect()
    commands = s.data(f'a1 LOGIN "{STRANGER}" {CANARY}\r\n'.encode())
    display = authenticator(Credential(STRANGER)).display
    assert lines(commands) == [f"a1 LOGIN {display} <redacted, {len(CANARY)} bytes>"]
    assert only(commands, obs.AuthAttempted) == obs.AuthAttempted(
        "IMAP-LOGIN", display, None, False, True, True, "failure"
    )
    failure = [c for c in commands if isinstance(c, Send)]
    assert failure == [
        Send(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n", LIMITS.auth_fail_delay)
    ]
    assert state(s) is State.NOT_AUTHENTICATED


def test_repeated_authentication_failures_end_the_connection() -> None:
    s = Session()
    s.connect()
    for i in range(LIMITS.max_auth_failures - 1):
        assert Close() not in s.data(f"a{i} LOGIN nobody {CANARY}\r\n".encode())
    last = s.data(f"z LOGIN nobody {CANARY}\r\n".encode())
    assert b"* BYE Too many authentication failures\r\n" in sent(last)
    assert last[-1] == Close()


def test_login_inside_tls_is_not_in_the_clear() -> None:
    s = Session()
    s.starttls()
    commands = s.data(f"a2 LOGIN {USER} {CANARY}\r\n".encode())
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.tls, attempt.secret_sent, attempt.secret_in_clear) == (True, True, False)
    assert only(commands, obs.CommandReceived).tls is True


def test_login_after_login_is_refused_but_recorded() -> None:
    s = Session()
    s.login()
    commands = s.data(f"a2 LOGIN {USER} {CANARY}\r\n".encode())
    assert sent(commands) == b"a2 BAD Already authenticated\r\n"
    assert only(commands, obs.AuthAttempted).outcome == "refused"


@pytest.mark.parametrize(
    "line",
    [
        f"a1 LOGIN {USER}",
        f'a1 LOGIN {USER} "{CANARY}',
        f"a1 LOGIN {USER} {CANARY} extra",
        f"LOGIN {USER} {CANARY}",
        f"a1 login {USER} ({CANARY})",
    ],
)
def test_malformed_login_is_bad_and_never_shows_its_arguments(line: str) -> None:
    s = Session()
    s.connect()
    commands = s.data(line.encode() + b"\r\n")
    reply = sent(commands).decode()
    assert " BAD " in reply and reply.startswith(("a1 ", "* "))
    shown = only(commands, obs.CommandReceived).line
    assert USER not in shown and "redacted" in shown
    assert shown.startswith(("a1 LOGIN <redacted, ", "* LOGIN <redacted, "))
    assert records(commands, obs.AuthAttempted) == []


# --- AUTHENTICATE ------------------------------------------------------------------------------

PLAIN_RESPONSE = b64(f"\0{USER}\0{CANARY}")


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_authenticate_plain_with_sasl_ir(testcase: str) -> None:
    s = Session(testcase)
    s.connect()
    commands = s.data(f"a1 AUTHENTICATE PLAIN {PLAIN_RESPONSE}\r\n".encode())
    assert lines(commands) == [f"a1 AUTHENTICATE PLAIN <redacted, {len(PLAIN_RESPONSE)} bytes>"]
    assert only(commands, obs.AuthAttempted) == obs.AuthAttempted(
        "PLAIN", USER, "abc123", False, True, True, "success", proof=True
    )
    assert sent(commands).decode().startswith("a1 OK [CAPABILITY ")


def test_authenticate_plain_with_continuation() -> None:
    s = Session()
    s.connect()
    first = s.data(b"a1 AUTHENTICATE PLAIN\r\n")
    assert sent(first) == b"+ \r\n" and lines(first) == ["a1 AUTHENTICATE PLAIN"]
    assert mode(s) is Mode.SASL
    second = s.data(PLAIN_RESPONSE.encode() + b"\r\n")
    assert lines(second) == [f"<redacted, {len(PLAIN_RESPONSE)} bytes>"]
    assert only(second, obs.AuthAttempted).secret_in_clear is True
    assert sent(second).startswith(b"a1 OK [CAPABILITY ")


def test_authenticate_login_mechanism_with_username_and_password_prompts() -> None:
    s = Session()
    s.connect()
    assert sent(s.data(b"a1 AUTHENTICATE LOGIN\r\n")) == f"+ {b64('Username:')}\r\n".encode()
    assert sent(s.data(b64(USER).encode() + b"\r\n")) == f"+ {b64('Password:')}\r\n".encode()
    commands = s.data(b64(CANARY).encode() + b"\r\n")
    assert only(commands, obs.AuthAttempted) == obs.AuthAttempted(
        "LOGIN", USER, "abc123", False, True, True, "success", proof=True
    )


def test_authenticate_cancel_is_tagged_bad_and_login_cancel_records_the_username() -> None:
    s = Session()
    s.connect()
    s.data(b"a1 AUTHENTICATE LOGIN\r\n")
    s.data(b64(USER).encode() + b"\r\n")
    commands = s.data(b"*\r\n")
    assert sent(commands) == b"a1 BAD Authentication cancelled\r\n"
    assert lines(commands) == ["*"]
    assert only(commands, obs.UsernameSent) == obs.UsernameSent(USER, "abc123", False)
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.secret_sent, attempt.outcome) == (False, "cancelled")
    assert records(commands, obs.ProtocolError) == []
    assert mode(s) is Mode.COMMAND
    assert s.line("a2 NOOP") == "a2 OK Noop completed\r\n"


def test_authenticate_bad_base64_is_bad() -> None:
    s = Session()
    s.connect()
    s.data(b"a1 AUTHENTICATE PLAIN\r\n")
    commands = s.data(b"not base64!!\r\n")
    assert sent(commands) == b"a1 BAD Invalid SASL response\r\n"
    assert only(commands, obs.ProtocolError).reason == "sasl_malformed"
    assert only(commands, obs.AuthAttempted).outcome == "failure"


def test_cram_md5_is_refused_before_tls_and_works_inside_tls() -> None:
    s = Session()
    s.connect()
    refused = s.data(b"a1 AUTHENTICATE CRAM-MD5\r\n")
    assert sent(refused) == b"a1 NO Unsupported authentication mechanism\r\n"
    assert only(refused, obs.AuthAttempted).outcome == "refused"
    s.data(b"t1 STARTTLS\r\n")
    s.event(TlsEstablished(TLS))
    challenge = sent(s.data(b"a2 AUTHENTICATE CRAM-MD5\r\n")).decode()
    assert challenge.startswith("+ ")
    token = base64.b64decode(challenge[2:])
    assert token.startswith(b"<")
    digest = hmac.new(CANARY.encode(), token, hashlib.md5).hexdigest()  # the account's
    commands = s.data(b64(f"{USER} {digest}").encode() + b"\r\n")
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.mechanism, attempt.tls, attempt.outcome) == ("CRAM-MD5", True, "success")


@pytest.mark.parametrize(
    ("mechanism", "initial"),
    [
        ("XOAUTH2", b64(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01")),
        ("OAUTHBEARER", b64(f"n,a={USER},\x01auth=Bearer {TOKEN}\x01\x01")),
    ],
)
def test_oauth_mechanisms_are_recognised_and_refused_after_the_exchange(
    mechanism: str, initial: str
) -> None:
    s = Session()
    s.connect()
    first = s.data(f"a1 AUTHENTICATE {mechanism} {initial}\r\n".encode())
    challenge = sent(first).decode()
    assert challenge.startswith("+ ") and b"invalid_token" in base64.b64decode(challenge[2:])
    commands = s.data(b"\r\n")
    assert sent(commands) == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    attempt = only(commands, obs.AuthAttempted)
    assert (attempt.mechanism, attempt.username, attempt.outcome) == (mechanism, USER, "failure")
    assert attempt.secret_in_clear is True


def test_unknown_mechanism_name_is_never_shown() -> None:
    s = Session()
    s.connect()
    commands = s.data(f"a1 AUTHENTICATE {CANARY}\r\n".encode())
    assert sent(commands) == b"a1 NO Unsupported authentication mechanism\r\n"
    assert lines(commands) == ["a1 AUTHENTICATE UNKNOWN"]
    assert only(commands, obs.AuthAttempted).mechanism == "UNKNOWN"


def test_line_without_a_command_name_is_shown_only_by_length() -> None:
    """A password typed where a command goes (no tag, or no command name) is never shown."""
    s = Session()
    s.connect()
    for line in (CANARY, f'"{CANARY}"', f"+{CANARY} x"):
        commands = s.data(line.encode() + b"\r\n")
        assert lines(commands) == [f"<unrecognised, {len(line)} bytes>"]
        assert b"* BAD " in sent(commands)


def test_unknown_command_arguments_are_never_shown() -> None:
    """Garbage in front of a LOGIN makes it an unknown command: its arguments stay hidden."""
    s = Session()
    s.connect()
    line = f"x a LOGIN {USER} {CANARY}"
    commands = s.data(line.encode() + b"\r\n")
    assert lines(commands) == [f"x A <redacted, {len(line) - 4} bytes>"]
    assert lines(s.data(b"a2 GETQUOTAROOT\r\n")) == ["a2 GETQUOTAROOT"]
    s.data(f"a3 FROB {CANARY}{{5}}\r\n".encode())
    assert lines(s.event(Timeout())) == [f"a3 FROB <redacted, {len(CANARY) + 3} bytes>"]


def test_unfinished_line_without_a_command_name_is_shown_only_by_length() -> None:
    """A line cut short while waiting for its literal follows the rule of complete lines."""
    s = Session()
    s.connect()
    line = f"{CANARY}{{5}}"
    assert sent(s.data(line.encode() + b"\r\n")) == b"+ Ready for literal\r\n"
    commands = s.event(Timeout())
    assert lines(commands) == [f"<unrecognised, {len(line)} bytes>"]


def test_idle_lines_other_than_done_are_redacted_like_commands() -> None:
    s = Session()
    s.login()
    for line, shown in (
        (CANARY, f"<unrecognised, {len(CANARY)} bytes>"),
        (f"a9 LOGIN {USER} {CANARY}", f"a9 LOGIN {USER} <redacted, {len(CANARY)} bytes>"),
        ("a9 NOOP", "a9 NOOP"),
    ):
        assert "+ idling" in s.line("i1 IDLE")
        commands = s.data(line.encode() + b"\r\n")
        assert lines(commands) == [shown]
        assert b"i1 BAD Expected DONE" in sent(commands)


def test_sasl_response_sent_out_of_turn_is_redacted() -> None:
    s = Session()
    s.connect()
    commands = s.data(PLAIN_RESPONSE.encode() + b"\r\n")
    assert lines(commands) == [f"<redacted, {len(PLAIN_RESPONSE)} bytes>"]
    assert b" BAD " in sent(commands)


def test_connection_lost_during_exchange_ends_it_as_cancelled() -> None:
    s = Session()
    s.connect()
    s.data(b"a1 AUTHENTICATE LOGIN\r\n")
    s.data(b64(USER).encode() + b"\r\n")
    commands = s.event(Closed())
    assert only(commands, obs.AuthAttempted).outcome == "cancelled"
    assert only(commands, obs.UsernameSent).username == USER
    assert sent(commands) == b"" and Close() not in commands  # the peer is gone


# --- literals, garbage, limits -----------------------------------------------------------------


def test_huge_synchronizing_literal_is_refused_without_continuation() -> None:
    s = Session()
    s.connect()
    commands = s.data(b"a1 LOGIN {999999999}\r\n")
    assert sent(commands) == b"a1 BAD [TOOBIG] Literal too large\r\n"
    assert lines(commands) == ["a1 LOGIN <redacted, 11 bytes>"]
    assert s.line("a2 NOOP") == "a2 OK Noop completed\r\n"


def test_huge_non_synchronizing_literal_closes_the_connection() -> None:
    s = Session()
    s.connect()
    commands = s.data(b"a1 LOGIN {999999999+}\r\nxxxx")
    assert sent(commands) == b"* BYE Literal too large\r\n" and commands[-1] == Close()


def test_oversized_non_synchronizing_literal_is_skipped_unbuffered() -> None:
    limits = replace(LIMITS, literal_bytes=1024)
    s = Session(limits=limits)
    s.connect()
    commands = s.data(b"a1 LOGIN {5000+}\r\n")
    assert sent(commands) == b"a1 BAD [TOOBIG] Literal too large\r\n"
    for _ in range(5):
        assert sent(s.data(b"x" * 1000)) == b""
    assert s.line(" pass") == ""  # the rest of the refused command is swallowed
    assert s.line("a2 NOOP") == "a2 OK Noop completed\r\n"


def test_append_body_is_counted_and_discarded() -> None:
    s = Session()
    s.login()
    size = 3 * 1024 * 1024
    assert sent(s.data(f"a2 APPEND Sent (\\Seen) {{{size}}}\r\n".encode())) == (
        b"+ Ready for literal\r\n"
    )
    chunk = b"x" * 65536
    for _ in range(size // len(chunk)):
        assert sent(s.data(chunk)) == b""
    commands = s.data(b"\r\n")
    assert only(commands, obs.MessageReceived) == obs.MessageReceived(size, 0, False)
    reply = sent(commands).decode()
    assert reply.startswith("a2 OK [APPENDUID ") and reply.endswith(" 1] Append completed\r\n")
    assert "[UIDNEXT 2]" in s.line("a3 SELECT Sent")


def test_append_over_the_message_limit_is_refused_before_the_body() -> None:
    s = Session()
    s.login()
    commands = s.data(f"a2 APPEND INBOX {{{LIMITS.message_bytes + 1}}}\r\n".encode())
    assert sent(commands) == b"a2 NO [TOOBIG] Message too large\r\n"


def test_append_before_login_gets_no_continuation_for_a_big_body() -> None:
    s = Session()
    s.connect()
    commands = s.data(f"a1 APPEND INBOX {{{LIMITS.literal_bytes + 1}}}\r\n".encode())
    assert sent(commands) == b"a1 BAD Please log in first\r\n"
    small = s.data(b"a2 APPEND INBOX {3+}\r\nabc\r\n")
    assert sent(small) == b"a2 BAD Please log in first\r\n"
    assert records(small, obs.MessageReceived) == []


def test_a_command_cut_short_while_waiting_for_a_literal_is_recorded() -> None:
    s = Session()
    s.connect()
    assert sent(s.data(b"a1 LOGIN {11}\r\n")) == b"+ Ready for literal\r\n"
    timeout = s.event(Timeout())
    assert lines(timeout) == ["a1 LOGIN <redacted, 4 bytes>"]
    assert sent(timeout) == b"* BYE Autologout; idle for too long\r\n"


def test_append_to_a_missing_mailbox_asks_to_create_it() -> None:
    s = Session()
    s.login()
    commands = s.data(b"a2 APPEND Archive {3+}\r\nabc\r\n")
    assert sent(commands) == b"a2 NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert lines(commands) == ["a2 APPEND Archive {3+}"]  # literal contents never shown
    assert only(commands, obs.MessageReceived).nbytes == 3


def test_over_long_line_is_bad_and_the_session_goes_on() -> None:
    s = Session()
    s.connect()
    commands = s.data(b"a1 NOOP " + b"x" * (LIMITS.line_bytes + 10) + b"\r\n")
    assert sent(commands).startswith(b"* BAD Line too long")
    assert only(commands, obs.ProtocolError).reason == "line_too_long"
    assert s.line("a2 NOOP") == "a2 OK Noop completed\r\n"


def test_nul_bytes_are_bad() -> None:
    s = Session()
    s.connect()
    commands = s.data(b"a1 NOOP \x00\r\n")
    assert sent(commands).startswith(b"a1 BAD ")
    assert only(commands, obs.ProtocolError).reason == "syntax"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("", "* BAD"),
        ("+ x", "* BAD"),
        ("a1", "* BAD"),
        ("a1 123", "* BAD"),
        ("a1 FROB", "a1 BAD Unknown command"),
        ("a1 SELECT INBOX", "a1 BAD Please log in first"),
        ("a1 ENABLE IDLE", "a1 BAD Please log in first"),
        ('a1 LIST "" "*"', "a1 BAD Please log in first"),
        ("a1 NOOP (unbalanced", "a1 BAD"),
        ('a1 ID ("a" "b"', "a1 BAD"),
    ],
)
def test_garbage_and_wrong_state_get_bad(line: str, reply: str) -> None:
    s = Session()
    s.connect()
    commands = s.data(line.encode() + b"\r\n")
    assert sent(commands).decode().startswith(reply)
    assert len(records(commands, obs.ProtocolError)) == 1


def test_too_many_errors_end_the_connection() -> None:
    s = Session()
    s.connect()
    commands = s.data(b"x FROB\r\n" * LIMITS.max_errors + b"y NOOP\r\n")
    assert sent(commands).endswith(b"* BYE Too many invalid commands\r\n")
    assert b"y OK" not in sent(commands)
    assert commands[-1] == Close()
    assert s.data(b"z NOOP\r\n") == []


@pytest.mark.parametrize("testcase", ALL_CASES)
def test_random_garbage_never_raises(testcase: str) -> None:
    rng = random.Random(f"imap-{testcase}")
    alphabet = b'aA1 *%(){}[]"\\+\r\n\x00\x15\xff' + b"LOGIN" + b"{3}" + b"{2+}"
    for _ in range(60):
        s = Session(testcase, limits=replace(LIMITS, max_errors=1000))
        s.connect()
        for _ in range(rng.randint(1, 8)):
            size = rng.randint(0, 300)
            s.data(bytes(rng.choice(alphabet) for _ in range(size)))
        s.event(ClientHelloReceived(5, True))
        s.event(TlsEstablished(TLS))
        s.data(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
        s.event(Timeout())


# --- timers ------------------------------------------------------------------------------------


def test_partial_line_gets_an_absolute_deadline_that_growth_does_not_extend() -> None:
    s = Session()
    s.connect()
    assert s.data(b"a1 NO") == [SetTimer(LIMITS.line_seconds)]
    assert s.data(b"O") == []
    commands = s.data(b"P\r\n")
    assert sent(commands) == b"a1 OK Noop completed\r\n"
    assert commands[-1] == SetTimer(LIMITS.idle_seconds)


def test_timeout_says_bye_and_kick_says_the_reason() -> None:
    s = Session()
    s.connect()
    timeout = s.event(Timeout())
    assert timeout == [Send(b"* BYE Autologout; idle for too long\r\n"), Close()]
    s = Session()
    s.login()
    kicked = s.event(Kicked("Server restarting"))
    assert only(kicked, obs.SessionKicked) == obs.SessionKicked("Server restarting")
    assert sent(kicked) == b"* BYE Server restarting\r\n" and kicked[-1] == Close()
    assert s.event(DataReceived(b"a1 NOOP\r\n")) == []


# --- mail commands and real client sessions ----------------------------------------------------


def test_select_and_examine_an_empty_mailbox() -> None:
    s = Session()
    s.login()
    reply = s.line("a2 SELECT INBOX")
    expected = [
        "* 0 EXISTS",
        "* 0 RECENT",
        r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)",
        r"* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Flags permitted",
    ]
    got = reply.split("\r\n")
    assert got[:4] == expected
    assert (
        got[4].startswith("* OK [UIDVALIDITY ") and got[5] == "* OK [UIDNEXT 1] Predicted next UID"
    )
    assert got[6] == "a2 OK [READ-WRITE] Select completed"
    assert state(s) is State.SELECTED
    examine = s.line("a3 EXAMINE Sent")
    assert "* OK [PERMANENTFLAGS ()]" in examine
    assert examine.endswith("a3 OK [READ-ONLY] Examine completed\r\n")
    assert s.line("a4 STORE 1:* +FLAGS (\\Seen)").startswith("a4 NO [READ-ONLY]")
    assert s.line("a5 SELECT Nowhere") == "a5 NO [NONEXISTENT] Mailbox doesn't exist\r\n"
    assert state(s) is State.AUTHENTICATED


def test_selected_state_commands_on_an_empty_mailbox() -> None:
    s = Session()
    s.selected()
    assert s.line("b1 UID SEARCH ALL") == "* SEARCH\r\nb1 OK Search completed\r\n"
    assert s.line("b2 SEARCH UNSEEN") == "* SEARCH\r\nb2 OK Search completed\r\n"
    assert s.line("b3 FETCH 1:* (FLAGS)") == "b3 OK Fetch completed\r\n"
    assert s.line("b4 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From)])") == (
        "b4 OK Fetch completed\r\n"
    )
    assert s.line("b5 UID STORE 1 +FLAGS.SILENT (\\Deleted)") == "b5 OK Store completed\r\n"
    assert s.line("b6 UID COPY 1:3 Trash") == "b6 OK Copy completed\r\n"
    assert s.line("b7 COPY 1 Nowhere") == "b7 NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert s.line("b8 EXPUNGE") == "b8 OK Expunge completed\r\n"
    assert s.line("b9 UID EXPUNGE 1:*") == "b9 OK Expunge completed\r\n"
    assert s.line("c1 CHECK") == "c1 OK Check completed\r\n"
    assert s.line("c2 FETCH x:y FLAGS").startswith("c2 BAD ")
    assert s.line("c3 UID FROB 1").startswith("c3 BAD ")
    assert s.line("c4 UNSELECT") == "c4 OK Unselect completed\r\n"
    assert s.line("c5 FETCH 1 FLAGS") == "c5 BAD No mailbox selected\r\n"
    s.line("c6 SELECT INBOX")
    assert s.line("c7 CLOSE") == "c7 OK Close completed\r\n"
    assert state(s) is State.AUTHENTICATED


def test_list_lsub_status_create_delete_subscribe() -> None:
    s = Session()
    s.login()
    assert s.line('a1 LIST "" ""') == '* LIST (\\Noselect) "/" ""\r\na1 OK LIST completed\r\n'
    assert s.line('a0 LIST "Archive/2024" ""') == (
        '* LIST (\\Noselect) "/" Archive/\r\na0 OK LIST completed\r\n'
    )
    assert s.line('a2 LIST "" "inbox"') == (
        '* LIST (\\HasNoChildren) "/" INBOX\r\na2 OK LIST completed\r\n'
    )
    assert s.line('a3 LIST "" "S*"') == (
        '* LIST (\\HasNoChildren \\Sent) "/" Sent\r\na3 OK LIST completed\r\n'
    )
    assert s.line("a4 CREATE Archive/2024") == "a4 OK Create completed\r\n"
    top = s.line('a5 LIST "" "%"')
    assert '* LIST (\\HasChildren) "/" Archive\r\n' in top and "2024" not in top
    assert s.line('a6 LIST "Archive/" "%"') == (
        '* LIST (\\HasNoChildren) "/" Archive/2024\r\na6 OK LIST completed\r\n'
    )
    assert s.line("a7 CREATE Archive/2024").startswith("a7 NO [ALREADYEXISTS]")
    special = s.line('a8 LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)')
    assert [line.split()[-1] for line in special.splitlines()[:-1]] == ["Drafts", "Sent", "Trash"]
    assert s.line("a9 DELETE Archive").startswith("a9 NO [INUSE]")
    assert s.line("b1 DELETE Archive/2024") == "b1 OK Delete completed\r\n"
    assert s.line("b2 DELETE INBOX").startswith("b2 NO [CANNOT]")
    assert s.line("b3 UNSUBSCRIBE Trash") == "b3 OK Unsubscribe completed\r\n"
    lsub = s.line('b4 LSUB "" "*"')
    assert lsub == (
        '* LSUB () "/" INBOX\r\n* LSUB () "/" Drafts\r\n* LSUB () "/" Sent\r\n'
        "b4 OK LSUB completed\r\n"
    )
    status = s.line("b5 STATUS Sent (MESSAGES UIDNEXT UNSEEN)")
    assert status == "* STATUS Sent (MESSAGES 0 UIDNEXT 1 UNSEEN 0)\r\nb5 OK Status completed\r\n"
    assert s.line("b6 STATUS Sent (BOGUS)").startswith("b6 BAD ")
    assert s.line("b7 STATUS Nowhere (MESSAGES)").startswith("b7 NO [NONEXISTENT]")
    assert s.line("b8 RENAME Sent Old").startswith("b8 NO [CANNOT]")
    assert s.line("b9 CREATE bad%name").startswith("b9 NO [CANNOT]")


def test_id_fields_are_recorded_truncated() -> None:
    s = Session()
    s.connect()
    long_value = "v" * 500
    commands = s.data(
        f'a1 ID ("name" "Thunderbird" "version" "{long_value}" "os" NIL)\r\n'.encode()
    )
    identified = only(commands, obs.ClientIdentified)
    assert identified.kind == "imap_id"
    assert identified.value.startswith("name=Thunderbird; version=vvv")
    assert identified.value.endswith("; os=NIL") and len(identified.value) < 200
    assert sent(commands) == b'* ID ("name" "mailtls")\r\na1 OK ID completed\r\n'
    assert records(s.data(b"a2 ID NIL\r\n"), obs.ClientIdentified) == []


def test_idle_until_done_and_other_lines_end_it_with_bad() -> None:
    s = Session()
    s.selected()
    assert s.line("i1 IDLE") == "+ idling\r\n"
    assert mode(s) is Mode.IDLE
    commands = s.data(b"DONE\r\n")
    assert sent(commands) == b"i1 OK Idle completed\r\n" and lines(commands) == ["DONE"]
    assert s.line("i2 IDLE") == "+ idling\r\n"
    assert s.line("i3 NOOP") == "i2 BAD Expected DONE\r\n"
    assert mode(s) is Mode.COMMAND


THUNDERBIRD = [
    "1 capability",
    '2 ID ("name" "Thunderbird" "version" "128.5.0")',
    "3 authenticate PLAIN",
    PLAIN_RESPONSE,
    "4 namespace",
    '5 list (SPECIAL-USE) "" "*"',
    '6 list "" "*"',
    '7 lsub "" "*"',
    '8 select "INBOX"',
    "9 UID fetch 1:* (FLAGS)",
    "10 IDLE",
    "DONE",
    '11 STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)',
    "12 APPEND Sent (\\Seen) {12+}",
    "Subject: hi\r",
    "13 noop",
    "14 logout",
]

MUTT = [
    "a0000 CAPABILITY",
    f'a0001 LOGIN "{USER}@{DOMAIN}" "{CANARY}"',
    'a0002 LIST "" ""',
    'a0003 LSUB "" "*"',
    'a0004 STATUS "INBOX" (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)',
    'a0005 SELECT "INBOX"',
    "a0006 UID FETCH 1:* (FLAGS)",
    "a0007 FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE FROM)])",
    "a0008 CHECK",
    "a0009 CLOSE",
    "a0010 LOGOUT",
]

FETCHMAIL = [
    "A0001 CAPABILITY",
    f"A0002 LOGIN {USER} {CANARY}",
    "A0003 EXAMINE INBOX",
    "A0004 EXPUNGE",
    "A0005 SEARCH UNSEEN NOT DELETED",
    "A0006 LOGOUT",
]


@pytest.mark.parametrize(
    ("script", "tagged"),
    [(THUNDERBIRD, 14), (MUTT, 11), (FETCHMAIL, 6)],
    ids=["thunderbird", "mutt", "fetchmail"],
)
def test_client_sessions_finish_without_errors(script: list[str], tagged: int) -> None:
    s = Session()
    s.connect()
    replies = ""
    for line in script:
        replies += s.line(line)
    tagged_lines = [ln for ln in replies.split("\r\n") if ln and not ln.startswith(("*", "+"))]
    bad = [ln for ln in tagged_lines if ln.split(" ", 2)[1] != "OK"]
    expected_no = ["A0004 NO [READ-ONLY] Mailbox is read-only"] if script is FETCHMAIL else []
    assert bad == expected_no
    assert len(tagged_lines) == tagged
    assert replies.endswith("OK Logout completed\r\n")
    assert s.log[-1] == Close()
    assert records(s.log, obs.ProtocolError) == []
    attempts = records(s.log, obs.AuthAttempted)
    assert [a.outcome for a in attempts] == ["success"]


def test_thunderbird_like_session_over_starttls() -> None:
    s = Session()
    s.connect()
    s.line("1 capability")
    s.data(b"2 STARTTLS\r\n")
    s.event(TlsEstablished(TLS))
    assert "AUTH=CRAM-MD5" in s.line("3 capability")
    s.line(f"4 authenticate PLAIN {PLAIN_RESPONSE}")
    assert "* LIST (\\HasNoChildren \\Sent)" in s.line('5 list "" "*"')
    s.line("6 select INBOX")
    assert s.line("7 IDLE") == "+ idling\r\n"
    assert s.line("DONE") == "7 OK Idle completed\r\n"
    attempt = only(s.log, obs.AuthAttempted)
    assert (attempt.tls, attempt.secret_in_clear, attempt.outcome) == (True, False, "success")
    assert all(r.tls for r in records(s.log, obs.CommandReceived)[2:])
