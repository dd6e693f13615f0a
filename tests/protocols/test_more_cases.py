"""The cases beyond T1-T4 (``starttls_required``, ``preauth``, ``inject``) as whole exchanges.

Each test states the complete ordered command list of an exchange (``playbook.Session``), for
every protocol the case applies to, with a pipelined and a blind client; where a case does not
apply the core must serve the honest baseline.
"""

from __future__ import annotations

import pytest
from playbook import CANARY, DIALECTS, LIMITS, PLAIN, PROTOCOLS, TLS, Session
from protocols_kit import CODE, USER

from mailtls import observations as obs
from mailtls.protocols import smtp_replies as R
from mailtls.protocols.base import (
    Connected,
    Record,
    Send,
    SetTimer,
    StartTls,
    TlsEstablished,
)
from mailtls.protocols.flow import reply_text
from mailtls.protocols.imap import next_tag
from mailtls.testcases import TESTCASES

IDLE = SetTimer(LIMITS.idle_seconds)
IMAP_REFUSED = "NO [PRIVACYREQUIRED] Plaintext authentication disallowed without TLS"
IMAP_CAPS = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS SPECIAL-USE"
AUTHED_CAPS = "IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS SPECIAL-USE UNSELECT"
HOST = "mail.mailtls.test"


def cmd(line: str, tls: bool = False) -> Record:
    return Record(obs.CommandReceived(line, tls))


def refused(mechanism: str, secret: bool) -> Record:
    user, code = (USER, CODE) if secret else ("", None)
    attempt = obs.AuthAttempted(mechanism, user, code, False, secret, secret, "refused", secret)
    return Record(attempt)


# --- starttls_required ------------------------------------------------------------------------


def test_starttls_required_imap_says_logindisabled_and_refuses_every_login() -> None:
    s = Session("imap", "starttls_required")
    greeting = f"* OK [CAPABILITY {IMAP_CAPS} LOGINDISABLED] {HOST} mailtls IMAP ready\r\n"
    s.expect(
        Connected(),
        [Record(obs.CapabilitiesSent(False, (), False)), Send(greeting.encode()), IDLE],
    )
    s.expect(
        f"a2 LOGIN {USER} {CANARY}\r\n".encode(),
        [
            cmd(f"a2 LOGIN {USER} <redacted, {len(CANARY)} bytes>"),
            Record(obs.AuthAttempted("IMAP-LOGIN", USER, CODE, False, True, True, "refused", True)),
            Send(f"a2 {IMAP_REFUSED}\r\n".encode()),
            IDLE,
        ],
    )
    s.expect(
        f"a3 AUTHENTICATE PLAIN {PLAIN}\r\n".encode(),
        [
            cmd(f"a3 AUTHENTICATE PLAIN <redacted, {len(PLAIN)} bytes>"),
            refused("PLAIN", True),
            Send(f"a3 {IMAP_REFUSED}\r\n".encode()),
            IDLE,
        ],
    )
    # a careful client: AUTHENTICATE without SASL-IR is refused before the secret is sent
    s.expect(
        b"a4 AUTHENTICATE PLAIN\r\n",
        [
            cmd("a4 AUTHENTICATE PLAIN"),
            refused("PLAIN", False),
            Send(f"a4 {IMAP_REFUSED}\r\n".encode()),
            IDLE,
        ],
    )


def test_starttls_required_imap_blind_and_pipelined_clients() -> None:
    s = Session("imap", "starttls_required")
    s.ready()
    # blind: STARTTLS although not advertised; then a pipelined CAPABILITY + LOGIN
    s.expect(
        b"a1 STARTTLS\r\n",
        [
            cmd("a1 STARTTLS"),
            Record(obs.StarttlsRequested(False)),
            Record(obs.StarttlsRefused("not_advertised", "a1 BAD STARTTLS not available")),
            Send(b"a1 BAD STARTTLS not available\r\n"),
            IDLE,
        ],
    )
    caps = f"* CAPABILITY {IMAP_CAPS} LOGINDISABLED\r\na2 OK Capability completed\r\n"
    s.expect(
        f"a2 CAPABILITY\r\na3 LOGIN {USER} {CANARY}\r\n".encode(),
        [
            cmd("a2 CAPABILITY"),
            Record(obs.CapabilitiesSent(False, (), False)),
            cmd(f"a3 LOGIN {USER} <redacted, {len(CANARY)} bytes>"),
            Record(obs.AuthAttempted("IMAP-LOGIN", USER, CODE, False, True, True, "refused", True)),
            Send((caps + f"a3 {IMAP_REFUSED}\r\n").encode()),
            IDLE,
        ],
    )


def test_starttls_required_smtp_answers_auth_with_530() -> None:
    s = Session("smtp", "starttls_required")
    s.ready()
    s.expect(
        f"AUTH PLAIN {PLAIN}\r\n".encode(),
        [
            cmd(f"AUTH PLAIN <redacted, {len(PLAIN)} bytes>"),
            refused("PLAIN", True),  # the initial response carried the secret before the 530
            Send(R.S530_STARTTLS_FIRST),
            IDLE,
        ],
    )
    s.expect(
        b"AUTH LOGIN\r\n",
        [cmd("AUTH LOGIN"), refused("LOGIN", False), Send(R.S530_STARTTLS_FIRST), IDLE],
    )


def test_starttls_required_smtp_blind_and_pipelined_clients() -> None:
    s = Session("smtp", "starttls_required")
    s.ready()
    s.expect(
        b"STARTTLS\r\n",
        [
            cmd("STARTTLS"),
            Record(obs.StarttlsRequested(False)),
            Record(obs.StarttlsRefused("not_advertised", reply_text(R.S502_STARTTLS_NOT_OFFERED))),
            Send(R.S502_STARTTLS_NOT_OFFERED),
            IDLE,
        ],
    )
    s.expect(
        f"AUTH PLAIN {PLAIN}\r\nMAIL FROM:<a@example.net>\r\n".encode(),
        [
            cmd(f"AUTH PLAIN <redacted, {len(PLAIN)} bytes>"),
            refused("PLAIN", True),
            cmd("MAIL FROM:<a@example.net>"),
            Send(R.S530_STARTTLS_FIRST + R.S530_AUTH_REQUIRED),
            IDLE,
        ],
    )


def test_starttls_required_smtp_after_a_real_starttls_would_accept() -> None:
    """The 530 is about TLS: inside implicit TLS (not blocked in this unit) AUTH works."""
    s = Session("smtp", "starttls_required", implicit=True)
    s.ready(TLS)
    commands = s.data(f"AUTH PLAIN {PLAIN}\r\n".encode())
    assert Send(R.S235_AUTH_SUCCESS) in commands


@pytest.mark.parametrize(
    ("testcase", "protocol"),
    [("starttls_required", "pop3"), ("preauth", "smtp"), ("preauth", "pop3")],
)
def test_where_a_case_does_not_apply_the_baseline_is_served(testcase: str, protocol: str) -> None:
    assert protocol not in TESTCASES[testcase].protocols
    under_case, honest = Session(protocol, testcase), Session(protocol, "baseline")
    d = DIALECTS[protocol]
    for data in (d.prelude, d.starttls):
        for s in (under_case, honest):
            if not s.history:
                s.event(Connected())
        if data:
            assert under_case.data(data) == honest.data(data)
    assert under_case.history == honest.history


# --- preauth ----------------------------------------------------------------------------------


def test_preauth_greets_authenticated_and_records_mailbox_use() -> None:
    s = Session("imap", "preauth")
    greeting = f"* PREAUTH [CAPABILITY {AUTHED_CAPS}] {HOST} mailtls IMAP ready, logged in\r\n"
    s.expect(
        Connected(),
        [
            Record(obs.PreauthGreeted()),
            Record(obs.CapabilitiesSent(False, (), False)),
            Send(greeting.encode()),
            IDLE,
        ],
    )
    # a blind client tries STARTTLS: not allowed once authenticated
    s.expect(
        b"a1 STARTTLS\r\n",
        [
            cmd("a1 STARTTLS"),
            Record(obs.StarttlsRequested(False)),
            Record(obs.StarttlsRefused("not_advertised", "a1 BAD STARTTLS not available")),
            Send(b"a1 BAD STARTTLS not available\r\n"),
            IDLE,
        ],
    )
    # a pipelining client goes on in plaintext: each mailbox command is the attacker's
    commands = s.data(b"a2 SELECT INBOX\r\na3 UID FETCH 1:* (FLAGS)\r\n")
    assert [r.observation for r in commands if isinstance(r, Record)] == [
        obs.CommandReceived("a2 SELECT INBOX", False),
        obs.PreauthUsed("SELECT", False),
        obs.CommandReceived("a3 UID FETCH 1:* (FLAGS)", False),
        obs.PreauthUsed("UID", False),
    ]
    assert commands[-1] == IDLE


def test_preauth_login_anyway_is_refused_and_in_the_clear() -> None:
    s = Session("imap", "preauth")
    s.ready()
    commands = s.data(f"a1 LOGIN {USER} {CANARY}\r\n".encode())
    assert (
        Record(
            obs.AuthAttempted("IMAP-LOGIN", USER, CODE, False, True, True, "refused", proof=True)
        )
        in commands
    )


def test_a_baseline_imap_session_records_no_preauth_use() -> None:
    s = Session("imap")
    s.ready()
    s.data(f"a1 LOGIN {USER} {CANARY}\r\n".encode())
    commands = s.data(b"a2 SELECT INBOX\r\n")
    assert not [
        c for c in commands if isinstance(c, Record) and isinstance(c.observation, obs.PreauthUsed)
    ]


# --- inject -----------------------------------------------------------------------------------

FORGED = {
    "smtp": f"250-{HOST}\r\n250 AUTH PLAIN\r\n".encode(),
    "imap": b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na2 OK Capability completed\r\n",
    "pop3": b"+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\n.\r\n",
}


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inject_sends_the_forged_answer_with_the_go_ahead(protocol: str, pipelined: bool) -> None:
    s = Session(protocol, "inject")
    s.ready()
    d = s.dialect
    extra = d.noop if pipelined else b""
    s.expect(
        d.starttls + extra,
        [
            cmd(reply_text(d.starttls)),
            Record(obs.StarttlsRequested(True)),
            *([Record(obs.PipelinedAfterStarttls(len(extra)))] if pipelined else []),
            Record(obs.StarttlsAccepted()),
            Record(obs.ResponseInjected(len(FORGED[protocol]))),
            Send(d.go_ahead + FORGED[protocol]),
            StartTls(),
            SetTimer(LIMITS.line_seconds),
        ],
    )
    s.expect(
        TlsEstablished(TLS),
        [Record(obs.TlsStarted(TLS.version, TLS.cipher, False)), IDLE],
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inject_leaves_plain_out_inside_tls_but_accepts_it(protocol: str) -> None:
    s = Session(protocol, "inject")
    s.ready()
    d = s.dialect
    s.data(d.starttls)
    s.event(TlsEstablished(TLS))
    caps = s.data(d.prelude or (b"a2 CAPABILITY\r\n" if protocol == "imap" else b"CAPA\r\n"))
    sent = [
        c.observation
        for c in caps
        if isinstance(c, Record) and isinstance(c.observation, obs.CapabilitiesSent)
    ]
    assert sent == [obs.CapabilitiesSent(False, ("LOGIN", "CRAM-MD5"), True)]
    plain = f"a3 AUTHENTICATE PLAIN {PLAIN}\r\n".encode() if protocol == "imap" else d.login
    login = s.data(plain)
    assert (
        Record(obs.AuthAttempted("PLAIN", USER, CODE, True, True, False, "success", proof=True))
        in login
    )


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("a1", "a2"),
        ("A0009", "A0010"),
        ("x", "x1"),
        ("7", "8"),
        ("a" + "9" * 40, "a" + "9" * 40 + "1"),
    ],
)
def test_next_tag(tag: str, expected: str) -> None:
    assert next_tag(tag) == expected


# --- the certificate cases: the protocol is the baseline's, the shell presents the certificate --

CERT_CASES = ["cert_selfsigned", "cert_expired", "cert_wronghost", "cert_unknown_ca"]


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("testcase", CERT_CASES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_certificate_cases_talk_like_the_baseline(
    protocol: str, testcase: str, implicit: bool
) -> None:
    d = DIALECTS[protocol]
    sessions = [
        Session(protocol, testcase, implicit=implicit),
        Session(protocol, implicit=implicit),
    ]
    for s in sessions:
        s.ready(TLS if implicit else None)
        if not implicit:
            s.data(d.starttls + d.noop)  # a pipelining client
            s.event(TlsEstablished(TLS))
            if d.prelude:
                s.data(d.prelude)
        s.data(d.login)
    assert sessions[0].history == sessions[1].history
    assert TESTCASES[testcase].certificate() != TESTCASES["baseline"].certificate()
