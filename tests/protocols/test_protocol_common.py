"""Unit tests of ``mailtls.protocols.common``: the machinery every core shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from protocols_kit import PASSWORDS, authenticator, b64, hashed

from mailtls import observations as obs
from mailtls.protocols.base import (
    Close,
    Closed,
    DataReceived,
    Kicked,
    Limits,
    Record,
    Send,
    SetTimer,
    StartTls,
    Timeout,
)
from mailtls.protocols.common import (
    CANCELLED,
    FAILURE,
    MALFORMED,
    SUCCESS,
    Disrupted,
    Outbox,
    SaslFlow,
    ascii_number,
    first_verb,
    input_timer,
    looks_like_tls_record,
    mechanism_allowed,
    mechanism_label,
    mechanisms,
    set_timer,
)

USER = "test-abc123"
LIMITS = Limits()


def flow(mechanism: str, tls: bool = False) -> SaslFlow:
    return SaslFlow(mechanism, tls, authenticator, "mx.test")


def test_outbox_joins_replies_and_keeps_records_ahead() -> None:
    out = Outbox()
    out.record(obs.StarttlsAccepted())
    out.reply(b"a\r\n")
    out.reply(b"b\r\n")
    out.add(StartTls())
    out.reply(b"c\r\n")
    assert out.finish() == [
        Record(obs.StarttlsAccepted()),
        Send(b"a\r\nb\r\n"),
        StartTls(),
        Send(b"c\r\n"),
    ]
    assert Outbox().finish() == []


@pytest.mark.parametrize(
    ("completed", "before", "after", "expected"),
    [
        (True, False, False, SetTimer(LIMITS.idle_seconds)),
        (True, True, True, SetTimer(LIMITS.line_seconds)),  # a new partial line after a reply
        (False, False, True, SetTimer(LIMITS.line_seconds)),  # a partial line starts
        (False, True, True, None),  # it only grows: the deadline stays absolute
        (False, False, False, None),
    ],
)
def test_input_timer(completed: bool, before: bool, after: bool, expected: SetTimer | None) -> None:
    assert input_timer(LIMITS, completed, before, after) == expected


def test_set_timer_is_shared() -> None:
    assert set_timer(5.0) is set_timer(5.0) and set_timer(5.0) == SetTimer(5.0)


@pytest.mark.parametrize(
    ("data", "known", "expected"),
    [
        (b"EHLO x\r\n", True, "EHLO"),
        (b"ehlo x\r\n", True, "EHLO"),
        (b"aHVudGVyMg==\r\n", False, "?"),  # never copy an unknown word (a password?)
        (b"\x15\x03\x03", False, ""),
        (b"", False, ""),
        (b"EH\xffLO", False, ""),
    ],
)
def test_first_verb(data: bytes, known: bool, expected: str) -> None:
    assert first_verb(data, frozenset({"EHLO"})) == expected


def test_tls_record_and_mechanism_helpers() -> None:
    assert looks_like_tls_record(b"\x15\x03\x03\x00\x02")
    assert looks_like_tls_record(b"\x17")
    assert not looks_like_tls_record(b"EHLO") and not looks_like_tls_record(b"")
    assert mechanisms(False) == ("PLAIN", "LOGIN")
    assert mechanisms(True) == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert not mechanism_allowed("CRAM-MD5", False) and mechanism_allowed("CRAM-MD5", True)
    assert mechanism_allowed("XOAUTH2", False) and mechanism_allowed("OAUTHBEARER", False)
    assert mechanism_label("SCRAM-SHA-256") == "SCRAM-SHA-256"
    assert mechanism_label("HUNTER2") == "UNKNOWN"


def test_sasl_flow_plain_success_and_records() -> None:
    f = flow("plain")
    assert f.start(b64(f"\0{USER}\0{PASSWORDS[0]}")) == SUCCESS
    assert f.records(SUCCESS) == [
        obs.AuthAttempted("PLAIN", USER, "abc123", False, True, True, SUCCESS, proof=True)
    ]


def test_sasl_flow_wrong_password_names_the_run_without_proof() -> None:
    f = flow("plain")
    assert f.start(b64(f"\0{USER}\0pw")) == FAILURE
    assert f.records(FAILURE) == [
        obs.AuthAttempted("PLAIN", USER, "abc123", False, True, True, FAILURE, proof=False)
    ]


def test_sasl_flow_login_cancel_after_username() -> None:
    f = flow("LOGIN", tls=True)
    assert f.start(None) == b"Username:"
    assert f.respond(b64("someone")) == b"Password:"
    assert f.respond("*") == CANCELLED
    assert f.records(CANCELLED) == [
        obs.AuthAttempted("LOGIN", hashed("someone"), None, True, False, False, CANCELLED),
        obs.UsernameSent(hashed("someone"), None, True),
    ]


@pytest.mark.parametrize(
    ("mechanism", "lines", "secret_sent"),
    [
        ("PLAIN", ["%%%"], True),
        ("PLAIN", ["="], False),
        ("LOGIN", ["%%%"], False),  # the username line, not the secret
        ("LOGIN", [b64(USER), "%%%"], True),
    ],
)
def test_sasl_flow_malformed_is_conservative(
    mechanism: str, lines: list[str], secret_sent: bool
) -> None:
    f = flow(mechanism)
    assert f.start(None) in (b"", b"Username:")
    results = [f.respond(line) for line in lines]
    assert results[-1] == MALFORMED
    assert f.secret_sent is secret_sent


def test_sasl_flow_oauth_always_fails_and_token_counts_as_sent() -> None:
    f = flow("XOAUTH2")
    assert isinstance(f.start(b64(f"user={USER}\x01auth=Bearer t\x01\x01")), bytes)
    assert f.secret_sent
    assert f.respond("") == FAILURE
    assert f.records(FAILURE)[0] == obs.AuthAttempted(
        "XOAUTH2", USER, "abc123", False, True, True, FAILURE
    )


def test_sasl_flow_over_long_line() -> None:
    f = flow("PLAIN")
    f.start(None)
    assert f.fail_line() == MALFORMED and f.secret_sent


def test_sasl_flow_refuses_unimplemented_mechanisms() -> None:
    with pytest.raises(ValueError, match="not implemented"):
        flow("GSSAPI")


@dataclass
class FakeScanner:
    seen: list[bytes] = field(default_factory=list)
    finished: int = 0

    def feed(self, data: bytes) -> list[obs.Observation]:
        self.seen.append(data)
        if b"AUTH PLAIN" in data:
            return [obs.AuthAttempted("PLAIN", USER, "abc123", False, True, True, "disrupted")]
        return []

    def finish(self) -> list[obs.Observation]:
        self.finished += 1
        return []


def verb(data: bytes) -> str:
    return first_verb(data, frozenset({"AUTH", "EHLO"}))


def test_disrupted_records_chunks_and_secrets_without_replies() -> None:
    scanner = FakeScanner()
    d = Disrupted(scanner, verb)
    commands = d.handle(DataReceived(b"\x15\x03\x03\x00\x02\x02\x28"))
    assert commands == [Record(obs.DataAfterDisruption(7, True, ""))]
    commands = d.handle(DataReceived(b"EHLO x\r\nAUTH PLAIN xyz\r\n"))
    assert commands == [
        Record(obs.DataAfterDisruption(24, False, "EHLO")),
        Record(obs.AuthAttempted("PLAIN", USER, "abc123", False, True, True, "disrupted")),
    ]
    assert scanner.seen == [b"EHLO x\r\nAUTH PLAIN xyz\r\n"]  # alerts are not scanned
    assert d.handle(Timeout()) == [Close()]
    assert scanner.finished == 1
    assert d.handle(DataReceived(b"more")) == [] and d.data(b"more") == []


def test_disrupted_closing_on_data_records_the_first_chunk_then_closes() -> None:
    scanner = FakeScanner()
    d = Disrupted(scanner, verb, close_on_data=True)
    assert d.handle(DataReceived(b"EHLO x\r\n")) == [
        Record(obs.DataAfterDisruption(8, False, "EHLO")),
        Close(),
    ]
    assert scanner.finished == 1 and d.handle(Timeout()) == []


@pytest.mark.parametrize("event", [Closed(), Kicked("bye")])
def test_disrupted_ends(event: Closed | Kicked) -> None:
    d = Disrupted(FakeScanner(), verb)
    commands = d.handle(event)
    assert commands[-1] == Close() and not any(isinstance(c, Send) for c in commands)


def test_disrupted_is_bounded() -> None:
    d = Disrupted(FakeScanner(), verb)
    chunks = 0
    while d.handle(DataReceived(b"x" * 10))[-1] != Close():
        chunks += 1
        assert chunks < 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("9" * 40, 10**18),
        ("", None),
        ("\u00b2", None),
        ("\u0663", None),
        ("-1", None),
        ("1 ", None),
        ("1" + "0" * 5000, 10**18),
    ],
)
def test_ascii_number(text: str, expected: int | None) -> None:
    assert ascii_number(text) == expected
