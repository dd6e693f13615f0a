"""two_phase against a real ``mailtls serve``: the attack starts only after a TLS login.

Before activation the servers behave as baseline, so an opportunistic client logs in over TLS
and that login activates the step (the step's ``activated`` is set and the run's open
connections are closed, IMAP with ``* BYE``). From then on t1 strips STARTTLS and the same
client leaks: FAIL, with evidence only from connections accepted after activation. A step
that is never activated is never FAIL on account of the attack: INCONCLUSIVE ``not_exercised``.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import smtplib

import pytest
from e2e_helpers import (  # noqa: F401 (the module's fixtures)
    CLIENTS,
    HOST,
    Api,
    api,
    connect,
    imap_client,
    inst,
    read_all,
    read_until,
    smtp_client,
    tags,
    verdict,
)

from conftest import ServeInstance


@pytest.mark.timeout(40)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_fail_only_after_activation(inst: ServeInstance, api: Api, protocol: str) -> None:
    run = api.create(("two_phase", "t1"))
    assert api.start(run)["activated"] is None
    client = CLIENTS[protocol]
    # phase one: baseline, so the opportunistic client finds STARTTLS and logs in over TLS
    assert client(inst, run.username, run.password, False) == "tls-login"
    activated = api.step(run)["activated"]
    assert isinstance(activated, float)
    # phase two: t1 is active now, the same client sends its password in the clear
    assert client(inst, run.username, run.password, False) == "plain-login"
    step = api.finish(run)
    assert verdict(step) == ("FAIL", "plaintext_auth")
    assert {"plaintext_auth", "tls_auth"} <= tags(step)
    events = {e["id"]: e for e in api.events(run)}
    opened = {e["conn"]: e["ts"] for e in events.values() if e["type"] == "connection_opened"}
    evidence = next(f["evidence"] for f in step["findings"] if f["tag"] == "plaintext_auth")
    assert evidence
    for event_id in evidence:
        assert opened[events[event_id]["conn"]] > activated  # accepted after activation
        assert events[event_id]["secret_in_clear"] is True


@pytest.mark.timeout(40)
def test_activation_closes_the_runs_open_connections(inst: ServeInstance, api: Api) -> None:
    run = api.create(("two_phase", "t1"))
    api.start(run)
    held = connect(inst.port_for(run.username, "imap"), timeout=5)
    try:
        greeting = read_until(held, b"\r\n")
        assert b"STARTTLS" in greeting  # before activation: baseline
        assert imap_client(inst, run.username, run.password, False) == "tls-login"
        assert api.step(run)["activated"] is not None
        assert read_all(held).startswith(b"* BYE")
    finally:
        held.close()
    fresh = connect(inst.port_for(run.username, "imap"), timeout=5)
    try:
        assert b"STARTTLS" not in read_until(fresh, b"\r\n")  # t1 is active now
    finally:
        fresh.close()
    api.finish(run)


@pytest.mark.timeout(40)
def test_never_activated_is_not_fail(inst: ServeInstance, api: Api) -> None:
    """Clients connect and look around (EHLO, CAPABILITY, CAPA, even a failed STARTTLS-less
    session) but no TLS login ever happens: the attack never ran."""
    run = api.create(("two_phase", "t1"))
    api.start(run)
    with smtplib.SMTP(HOST, inst.port_for(run.username, "smtp_submission"), timeout=8) as s:
        assert s.ehlo()[0] == 250 and s.has_extn("starttls")
    m = imaplib.IMAP4(HOST, inst.port_for(run.username, "imap"), timeout=8)
    assert "STARTTLS" in m.capabilities
    m.logout()
    p = poplib.POP3(HOST, inst.port_for(run.username, "pop3"), timeout=8)
    assert "STLS" in p.capa()
    p.quit()
    step = api.finish(run)
    assert step["activated"] is None
    assert step["verdict"] != "FAIL"
    assert verdict(step) == ("INCONCLUSIVE", "not_exercised")


@pytest.mark.timeout(40)
def test_strict_client_after_activation_is_not_fail(inst: ServeInstance, api: Api) -> None:
    run = api.create(("two_phase", "t1"))
    api.start(run)
    assert smtp_client(inst, run.username, run.password, True) == "tls-login"
    assert api.step(run)["activated"] is not None
    assert smtp_client(inst, run.username, run.password, True).startswith("stopped:")
    step = api.finish(run)
    assert verdict(step) == ("INCONCLUSIVE", "aborted_after_downgrade")


@pytest.mark.timeout(40)
def test_plaintext_login_before_activation_is_still_a_leak(inst: ServeInstance, api: Api) -> None:
    """A client that ignores the offered STARTTLS and logs in in the clear never activates the
    step. DESIGN §5: PASS/FAIL come only from connections accepted after activation, so the
    verdict is INCONCLUSIVE ``not_exercised``; the leak itself is still reported, as the findings
    ``plaintext_auth`` and ``starttls_not_attempted`` (the client is configured without
    encryption: §8 reports that apart from downgrade FAILs)."""
    run = api.create(("two_phase", "t1"))
    api.start(run)
    sock = connect(inst.port_for(run.username, "imap"), timeout=5)
    with contextlib.closing(sock):
        assert b"STARTTLS" in read_until(sock, b"\r\n")
        sock.sendall(f'a LOGIN "{run.username}" {run.password}\r\n'.encode())
        assert b"a OK" in read_until(sock, b"a ")
    step = api.finish(run)
    assert step["activated"] is None
    assert verdict(step) == ("INCONCLUSIVE", "not_exercised")
    assert "plaintext_auth" in tags(step)
    assert "starttls_not_attempted" in tags(step)
