"""The attack flow (``protocols/flow.py``) as whole exchanges, the same for SMTP, IMAP and POP3.

Each test states the complete ordered command list a core returns for one event, parametrised
over the three protocols (and test cases): a timer, record or reply that one core adds or forgets
fails here. The lines differ only by the protocol's wording (``playbook.DIALECTS``).
"""

from __future__ import annotations

import pytest
from playbook import LIMITS, PROTOCOLS, TLS, Session
from protocols_kit import CODE, USER

from mailtls import observations as obs
from mailtls.protocols.base import (
    ClientHelloReceived,
    Close,
    Connected,
    Kicked,
    ReadClientHello,
    Record,
    Send,
    SendRaw,
    SetTimer,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
)
from mailtls.protocols.flow import Phase, reply_text


def text(line: bytes) -> str:
    return reply_text(line)


def starttls_shown(s: Session) -> Record:
    return Record(obs.CommandReceived(text(s.dialect.starttls), False))


@pytest.mark.parametrize("testcase", ["baseline", "t2", "t4"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_with_a_pipelined_command_is_accepted_the_same_way(
    protocol: str, testcase: str
) -> None:
    s = Session(protocol, testcase)
    s.ready()
    d = s.dialect
    wait = ReadClientHello() if testcase == "t2" else StartTls()
    s.expect(
        d.starttls + d.noop,
        [
            starttls_shown(s),
            Record(obs.StarttlsRequested(True)),
            Record(obs.PipelinedAfterStarttls(len(d.noop))),
            Record(obs.StarttlsAccepted()),
            Send(d.go_ahead),
            wait,
            SetTimer(LIMITS.line_seconds),  # a backstop behind the shell's handshake deadline
        ],
    )
    s.expect(Timeout(), [Close()])  # no reply while the handshake is awaited


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_pipelined_client_s_credentials_behind_starttls_are_recorded_as_sent_in_the_clear(
    protocol: str,
) -> None:
    s = Session(protocol)
    s.ready()
    d = s.dialect
    s.expect(
        d.starttls + d.login,
        [
            starttls_shown(s),
            Record(obs.StarttlsRequested(True)),
            Record(obs.PipelinedAfterStarttls(len(d.login))),
            Record(
                obs.AuthAttempted(d.login_mechanism, USER, CODE, False, True, True, "refused", True)
            ),
            Record(obs.StarttlsAccepted()),
            Send(d.go_ahead),
            StartTls(),
            SetTimer(LIMITS.line_seconds),
        ],
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_blind_starttls_under_t1_is_refused_as_not_advertised(protocol: str) -> None:
    s = Session(protocol, "t1")
    s.ready()
    d = s.dialect
    s.expect(
        d.starttls,
        [
            starttls_shown(s),
            Record(obs.StarttlsRequested(False)),
            Record(obs.StarttlsRefused("not_advertised", text(d.not_advertised))),
            Send(d.not_advertised),
            SetTimer(LIMITS.idle_seconds),
        ],
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_t3_refusal_then_silence_closes_without_a_reply(protocol: str) -> None:
    s = Session(protocol, "t3")
    s.ready()
    d = s.dialect
    s.expect(
        d.starttls,
        [
            starttls_shown(s),
            Record(obs.StarttlsRequested(True)),
            Record(obs.StarttlsRefused("testcase", text(d.temporary))),
            Send(d.temporary),
            SetTimer(LIMITS.silence_after_refusal),
        ],
    )
    s.expect(Timeout(), [Close()])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_t2_answers_the_client_hello_then_records_the_first_bytes_and_closes(
    protocol: str,
) -> None:
    s = Session(protocol, "t2")
    s.ready()
    d = s.dialect
    s.data(d.starttls)
    s.expect(
        ClientHelloReceived(517, True),
        [
            Record(obs.StarttlsDisrupted("handshake", 517, True, text(d.unavailable))),
            Send(d.unavailable),
            SetTimer(LIMITS.disrupted_seconds),
        ],
    )
    s.expect(
        d.login,
        [
            Record(obs.DataAfterDisruption(len(d.login), False, d.login_verb)),
            Record(
                obs.AuthAttempted(
                    d.login_mechanism, USER, CODE, False, True, True, "disrupted", True
                )
            ),
            Close(),
        ],
    )
    assert s.core.phase is Phase.CLOSED
    s.expect(Timeout(), [])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_t2_a_silent_client_is_closed_after_the_disrupted_window(protocol: str) -> None:
    s = Session(protocol, "t2")
    s.ready()
    s.data(s.dialect.starttls)
    s.event(ClientHelloReceived(517, True))
    s.expect(Timeout(), [Close()])


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_t4_the_first_command_inside_tls_gets_the_line_outside_tls(
    protocol: str, implicit: bool
) -> None:
    s = Session(protocol, "t4", implicit=implicit)
    d = s.dialect
    if implicit:
        s.event(Connected(TLS))  # the first command, whichever it is, is disrupted
    else:
        s.ready()
        s.data(d.starttls)
        s.expect(
            TlsEstablished(TLS),
            [
                Record(obs.TlsStarted(TLS.version, TLS.cipher, False)),
                SetTimer(LIMITS.idle_seconds),
            ],
        )
    s.expect(
        d.login,
        [
            Record(obs.CommandReceived(d.login_shown, True)),
            Record(
                obs.AuthAttempted(
                    d.login_mechanism, USER, CODE, True, True, False, "disrupted", True
                )
            ),
            Record(obs.StarttlsDisrupted("session", 0, True, text(d.unavailable))),
            SendRaw(d.unavailable),
            SetTimer(LIMITS.disrupted_seconds),
        ],
    )
    s.expect(b"\x15\x03\x03\x00\x02\x02\x28", [Record(obs.DataAfterDisruption(7, True, ""))])
    s.expect(Timeout(), [Close()])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failed_handshake_records_the_plaintext_that_follows_then_closes(protocol: str) -> None:
    """fetchmail after a failed upgrade "tries to continue" in plaintext on the connection: its
    LOGIN there is sent in the clear, so it is recorded before the connection ends."""
    s = Session(protocol)
    s.ready()
    d = s.dialect
    s.data(d.starttls)
    s.expect(
        TlsFailed("wrong version number"),
        [
            Record(obs.TlsHandshakeFailed("wrong version number")),
            SetTimer(LIMITS.disrupted_seconds),
        ],
    )
    s.expect(
        d.login,
        [
            Record(obs.DataAfterDisruption(len(d.login), False, d.login_verb)),
            Record(
                obs.AuthAttempted(
                    d.login_mechanism, USER, CODE, False, True, True, "disrupted", True
                )
            ),
            Close(),
        ],
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failed_handshake_then_silence_closes(protocol: str) -> None:
    s = Session(protocol)
    s.ready()
    s.data(s.dialect.starttls)
    s.event(TlsFailed("bad certificate"))
    s.expect(Timeout(), [Close()])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_handshake_wait_ends_silently_on_timeout_and_kick(protocol: str) -> None:
    s = Session(protocol)
    s.ready()
    s.data(s.dialect.starttls)
    s.expect(Kicked("step started"), [Record(obs.SessionKicked("step started")), Close()])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_auth_failure_budget_starts_again_inside_tls(protocol: str) -> None:
    s = Session(protocol)
    s.ready()
    d = s.dialect
    for _ in range(LIMITS.max_auth_failures - 1):
        assert Close() not in s.data(d.bad_login)
    s.data(d.starttls)
    s.event(TlsEstablished(TLS))
    if d.prelude:
        s.data(d.prelude)
    for _ in range(LIMITS.max_auth_failures - 1):
        commands = s.data(d.bad_login)
        assert Send(d.auth_failed, LIMITS.auth_fail_delay) in commands
        assert Close() not in commands
    commands = s.data(d.bad_login)
    assert commands[-4:] == [
        Send(d.auth_failed, LIMITS.auth_fail_delay),
        Record(obs.ProtocolError("too_many_auth_failures", text(d.too_many_auth_failures))),
        Send(d.too_many_auth_failures),
        Close(),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_idle_timeout_line(protocol: str) -> None:
    s = Session(protocol)
    s.ready()
    s.expect(Timeout(), [Send(s.dialect.timeout), Close()])
