"""The standard library's clients as known references against a real ``mailtls serve``.

An opportunistic script (``smtplib``/``imaplib``/``poplib`` calling STARTTLS only when it is
advertised, then logging in) is the textbook vulnerable client: t1 strips STARTTLS and it sends
its password in the clear -> FAIL. A strict script (always STARTTLS, stop when it fails) never
gets FAIL; the observed verdicts are the documented secure outcome (DESIGN §8):
INCONCLUSIVE ``aborted_after_downgrade``, with ``starttls_disrupted`` when the handshake or the
TLS session was broken (t2, t4). Baseline -> PASS with ``tls_auth``. Implicit-TLS clients
(``SMTP_SSL``, ``IMAP4_SSL``, ``POP3_SSL``) meet silence in t1-t3 (the ports are blocked, so the
handshake times out) and a disrupted session in t4; never FAIL.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib

import pytest
from e2e_helpers import (  # noqa: F401 (the module's fixtures)
    CLIENT_ERRORS,
    CLIENTS,
    HOST,
    Api,
    Run,
    api,
    inst,
    tags,
    tls_context,
    verdict,
)

from conftest import ServeInstance

PROTOCOLS = ("smtp", "imap", "pop3")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_opportunistic_client_fails_under_t1(inst: ServeInstance, api: Api, protocol: str) -> None:
    run = api.create(("immediate", "t1"))
    api.start(run)
    outcome = CLIENTS[protocol](inst, run.username, run.password, False)
    assert outcome == "plain-login"
    step = api.finish(run)
    assert verdict(step) == ("FAIL", "plaintext_auth")
    assert "plaintext_auth" in tags(step)
    assert step["protocols"][protocol]["verdict"] == "FAIL"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_opportunistic_client_passes_in_baseline(
    inst: ServeInstance, api: Api, protocol: str
) -> None:
    run = api.create(("immediate", "baseline"))
    api.start(run)
    assert CLIENTS[protocol](inst, run.username, run.password, False) == "tls-login"
    step = api.finish(run)
    assert verdict(step) == ("PASS", "tls_auth")
    assert tags(step) == {"tls_auth"}


# what the strict client observably gets in each attack (the same for all three protocols)
STRICT_EXPECTED = {
    "t1": ("INCONCLUSIVE", "aborted_after_downgrade", set()),
    "t2": ("INCONCLUSIVE", "aborted_after_downgrade", {"starttls_disrupted"}),
    "t3": ("INCONCLUSIVE", "aborted_after_downgrade", set()),
    "t4": ("INCONCLUSIVE", "aborted_after_downgrade", {"starttls_disrupted"}),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("testcase", sorted(STRICT_EXPECTED))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_strict_client_never_fails(
    inst: ServeInstance, api: Api, protocol: str, testcase: str
) -> None:
    run = api.create(("immediate", testcase))
    api.start(run)
    outcome = CLIENTS[protocol](inst, run.username, run.password, True)
    # t4 lets the handshake finish: poplib's first command inside TLS is USER, which breaks
    assert outcome.startswith("error:" if (protocol, testcase) == ("pop3", "t4") else "stopped:")
    step = api.finish(run)
    expected_verdict, expected_reason, expected_tags = STRICT_EXPECTED[testcase]
    assert verdict(step) == (expected_verdict, expected_reason)
    assert tags(step) == expected_tags
    assert step["protocols"][protocol]["verdict"] == "INCONCLUSIVE"


@pytest.mark.timeout(30)
def test_client_that_goes_on_after_a_refused_starttls_fails_under_t3(
    inst: ServeInstance, api: Api
) -> None:
    """t3 refuses STARTTLS (454) and the session continues; a client that shrugs and logs in
    anyway (what "opportunistic" means in many MTAs) leaks its password."""
    run = api.create(("immediate", "t3"))
    api.start(run)
    with smtplib.SMTP(HOST, inst.port_for(run.username, "smtp_submission"), timeout=8) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            s.starttls(context=tls_context(inst))
        assert refused.value.smtp_code == 454
        s.login(run.username, run.password)
    step = api.finish(run)
    assert verdict(step) == ("FAIL", "plaintext_auth")


IMPLICIT = {"smtp": "smtp_tls", "imap": "imap_tls", "pop3": "pop3_tls"}


def implicit_tls_login(inst: ServeInstance, protocol: str, run: Run, timeout: float) -> str:
    user, password = run.username, run.password
    ctx = tls_context(inst)
    port = inst.port_for(user, IMPLICIT[protocol])
    try:
        if protocol == "smtp":
            with smtplib.SMTP_SSL(HOST, port, context=ctx, timeout=timeout) as s:
                s.login(user, password)
        elif protocol == "imap":
            m = imaplib.IMAP4_SSL(HOST, port, ssl_context=ctx, timeout=timeout)
            m.login(user, password)
            m.logout()
        else:
            p = poplib.POP3_SSL(HOST, port, context=ctx, timeout=timeout)
            p.user(user)
            p.pass_(password)
            p.quit()
    except TimeoutError:
        return "timeout"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    return "tls-login"


# implicit-TLS ports: honest in baseline, silent (blocked) in t1-t3, disrupted in t4
IMPLICIT_EXPECTED = {
    "baseline": ("tls-login", ("PASS", "tls_auth")),
    "t1": ("timeout", ("INCONCLUSIVE", "aborted_after_downgrade")),
    "t3": ("timeout", ("INCONCLUSIVE", "aborted_after_downgrade")),
    "t4": ("error", ("INCONCLUSIVE", "aborted_after_downgrade")),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("testcase", sorted(IMPLICIT_EXPECTED))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_implicit_tls_client(inst: ServeInstance, api: Api, protocol: str, testcase: str) -> None:
    run = api.create(("immediate", testcase))
    api.start(run)
    outcome = implicit_tls_login(inst, protocol, run, timeout=1.5)
    expected_outcome, expected_verdict = IMPLICIT_EXPECTED[testcase]
    assert outcome.startswith(expected_outcome), outcome
    step = api.finish(run)
    assert verdict(step) == expected_verdict
    if testcase == "t4":
        assert "starttls_disrupted" in tags(step)


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("attempts", "reason"), [(5, "aborted_after_downgrade"), (6, "loop")])
@pytest.mark.parametrize("testcase", ["t2", "t4"])
def test_strict_client_retrying_in_a_loop(
    inst: ServeInstance, api: Api, testcase: str, attempts: int, reason: str
) -> None:
    """A strict client that retries at once after each disruption: five connections within a
    minute after the first disruption (``binding.loop_connections``/``loop_seconds``) make the
    step a ``loop``; four are still ``aborted_after_downgrade``."""
    run = api.create(("immediate", testcase))
    api.start(run)
    for _ in range(attempts):
        assert not CLIENTS["imap"](inst, run.username, run.password, True).endswith("login")
    step = api.finish(run)
    assert verdict(step) == ("INCONCLUSIVE", reason)
    assert "starttls_disrupted" in tags(step)
