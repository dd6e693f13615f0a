"""Reply classification and port parsing: tables of real server answers."""

from __future__ import annotations

import pytest

from mailtls.probe.classify import (
    AuthOutcome,
    classify_imap_auth,
    classify_pop3_auth,
    classify_smtp_auth,
    imap_caps_from_line,
    parse_ehlo,
    parse_pop3_capa,
    smtp_requires_tls,
)
from mailtls.probe.targets import parse_ports, target

R, P, A, U = (
    AuthOutcome.REFUSED_BEFORE_TLS,
    AuthOutcome.PROCESSED,
    AuthOutcome.ACCEPTED,
    AuthOutcome.UNCLASSIFIED,
)


@pytest.mark.parametrize(
    ("code", "text", "advertised", "expected"),
    [
        (235, "2.7.0 Authentication successful", True, A),
        (535, "5.7.8 Error: authentication failed: (reason unavailable)", True, P),
        (535, "5.7.8 Authentication credentials invalid", True, P),
        (530, "5.7.0 Must issue a STARTTLS command first", False, R),
        (538, "5.7.11 Encryption required for requested authentication mechanism", True, R),
        (534, "5.7.9 Authentication mechanism is too weak", True, R),
        (504, "5.5.4 Unrecognized authentication type", True, R),
        (503, "5.5.1 Error: authentication not enabled", False, R),  # Postfix tls_auth_only
        (503, "5.5.1 Error: authentication not enabled", True, R),
        (503, "Bad sequence of commands", True, U),
        (454, "4.7.0 Temporary authentication failure: Connection lost", True, U),
        (421, "4.4.2 Timeout", True, U),
        (250, "2.0.0 Ok", True, U),
    ],
)
def test_smtp_auth(code: int, text: str, advertised: bool, expected: AuthOutcome) -> None:
    assert classify_smtp_auth(code, text, advertised) is expected


@pytest.mark.parametrize(
    ("status", "text", "login_disabled", "expected"),
    [
        ("OK", "[CAPABILITY IMAP4rev1] Logged in", False, A),
        ("NO", "[AUTHENTICATIONFAILED] Authentication failed.", False, P),
        ("NO", "[AUTHORIZATIONFAILED] not allowed", False, P),
        (
            "NO",
            "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS)"
            " connections.",
            True,
            R,
        ),
        ("NO", "[PRIVACYREQUIRED] TLS required", False, R),
        ("BAD", "LOGIN disabled", True, R),  # LOGINDISABLED honoured
        ("NO", "Login failed", True, R),
        ("NO", "Please use TLS", False, R),
        ("NO", "[UNAVAILABLE] Temporary failure", False, U),
        ("BAD", "Error in IMAP command", False, U),
        ("NO", "LOGIN failed.", False, U),
    ],
)
def test_imap_auth(status: str, text: str, login_disabled: bool, expected: AuthOutcome) -> None:
    assert classify_imap_auth(status, text, login_disabled) is expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("+OK Logged in.", A),
        ("-ERR [AUTH] Authentication failed.", P),
        # Dovecot: the same [AUTH] code as a failed login, so the text decides
        ("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.", R),
        ("-ERR Plaintext authentication not allowed without SSL/TLS", R),
        ("-ERR Must issue STLS first", R),
        ("-ERR invalid password", P),
        ("-ERR [SYS/TEMP] Temporary failure", U),
        ("-ERR [IN-USE] Mailbox locked", U),
        ("hello", U),
    ],
)
def test_pop3_auth(line: str, expected: AuthOutcome) -> None:
    assert classify_pop3_auth(line) is expected


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (530, "5.7.0 Must issue a STARTTLS command first", True),
        (250, "2.1.0 Ok", False),
        (451, "4.3.0 Error: queue file write error", False),
        (554, "5.7.1 Encryption required", True),
        (553, "5.7.1 Sender address rejected", False),
        (999, "weird", None),
    ],
)
def test_smtp_requires_tls(code: int, text: str, expected: bool | None) -> None:
    assert smtp_requires_tls(code, text) is expected


def test_ehlo_capabilities() -> None:
    caps = parse_ehlo(
        ["250-mail.example", "250-PIPELINING", "250-STARTTLS", "250-AUTH PLAIN LOGIN",
         "250-AUTH=PLAIN LOGIN CRAM-MD5", "250 8BITMIME"]
    )  # fmt: skip
    assert caps.starttls
    assert caps.mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert caps.plaintext_mechanisms == ("PLAIN", "LOGIN")
    hidden = parse_ehlo(["250-mail.example", "250-STARTTLS", "250 SIZE 1000"])
    assert hidden.starttls and hidden.mechanisms == ()


def test_imap_capabilities() -> None:
    greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED] Dovecot ready."
    caps = imap_caps_from_line(greeting)
    assert caps is not None and caps.starttls and caps.login_disabled and caps.mechanisms == ()
    line = imap_caps_from_line("* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN auth=plain")
    assert line is not None and line.mechanisms == ("PLAIN", "LOGIN") and not line.starttls
    assert imap_caps_from_line("* OK ready") is None


def test_pop3_capabilities() -> None:
    caps = parse_pop3_capa(["CAPA", "TOP", "STLS", "USER", "SASL PLAIN LOGIN"])
    assert caps.starttls and caps.user_command and caps.mechanisms == ("PLAIN", "LOGIN")
    assert not parse_pop3_capa(["USER"]).starttls


def test_ports() -> None:
    ts = parse_ports("25, 587,465,143,993,110,995,submission:2587,imaps:1993,587")
    assert [t.port for t in ts] == [25, 587, 465, 143, 993, 110, 995, 2587, 1993]
    assert ts[0] == target("smtp", 25) and ts[0].is_mx
    assert ts[1].role == "submission" and not ts[1].implicit_tls
    assert ts[2].implicit_tls and ts[2].protocol == "smtp"
    assert ts[8].name == "imaps" and ts[8].implicit_tls
    assert ts[7].name == "submission"


@pytest.mark.parametrize("spec", ["0", "65536", "x", "2525", "ftp:21", ":25", "imap:"])
def test_bad_ports(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_ports(spec)
