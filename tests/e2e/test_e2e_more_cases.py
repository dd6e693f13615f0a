"""The cases beyond T1-T4 (``starttls_required``, ``preauth``, ``inject``) against real clients.

Every client of the CI matrix (curl, swaks, mutt, fetchmail, getmail6) and the standard library
references, each in the configurations that behave differently; the expected verdicts are what
these clients were observed to do (written down in docs/testcases.md, "What real clients do").
Where a case does not apply to a protocol (POP3 under ``starttls_required``, SMTP and POP3 under
``preauth``) the server is the honest baseline and the protocol's verdict is NOT_APPLICABLE.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from client_tools import curl_login, fetchmail_poll, getmail_poll, mutt_session, swaks_send
from e2e_helpers import CLIENTS, Api, Run, serving, tags, verdict

from conftest import ServeInstance

pytestmark = pytest.mark.system

FAIL_530 = ("FAIL", "credentials_before_530")
FAIL_LOGINDISABLED = ("FAIL", "ignored_logindisabled")
FAIL_PREAUTH = ("FAIL", "preauth_plaintext")
FAIL_INJECTION = ("FAIL", "response_injection")
FAIL_PLAINTEXT = ("FAIL", "plaintext_auth")
SECURE = ("INCONCLUSIVE", "aborted_after_downgrade")
PASS = ("PASS", "tls_auth")
NOT_APPLICABLE = ("NOT_APPLICABLE", "testcase_not_applicable")


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    data = tmp_path_factory.mktemp("e2e-more") / "var"
    with serving(data, limits={"disrupted_seconds": 3}) as server:
        yield server


@pytest.fixture(scope="module")
def api(inst: ServeInstance) -> Iterator[Api]:
    client = Api(inst)
    yield client
    client.close()


def new_step(api: Api, testcase: str) -> Run:
    run = api.create(("immediate", testcase))
    api.start(run)
    return run


# --- curl: refuses injected bytes ("Weird server reply"), honours LOGINDISABLED, uses PREAUTH --

CURL_EXPECTED = {
    ("smtp", "--ssl", "starttls_required"): SECURE,  # AUTH without an initial response: 530
    ("imap", "--ssl", "starttls_required"): SECURE,  # LOGINDISABLED, no AUTH=: "Login denied"
    ("pop3", "--ssl", "starttls_required"): NOT_APPLICABLE,
    ("smtp", "--ssl-reqd", "starttls_required"): SECURE,
    ("imap", "--ssl-reqd", "starttls_required"): SECURE,
    ("imap", "--ssl", "preauth"): FAIL_PREAUTH,  # lists the mailboxes in the clear
    ("imap", "--ssl-reqd", "preauth"): SECURE,  # "STARTTLS not available"
    ("smtp", "--ssl", "preauth"): NOT_APPLICABLE,
    ("smtp", "--ssl", "inject"): SECURE,  # exit 8: "Weird server reply"
    ("imap", "--ssl", "inject"): SECURE,
    ("pop3", "--ssl", "inject"): SECURE,
    ("imap", "--ssl-reqd", "inject"): SECURE,
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("protocol", "flag", "testcase"), sorted(CURL_EXPECTED))
def test_curl(inst: ServeInstance, api: Api, protocol: str, flag: str, testcase: str) -> None:
    run = new_step(api, testcase)
    out = curl_login(inst, run, protocol, flag)
    step = api.finish(run)
    assert verdict(step) == CURL_EXPECTED[protocol, flag, testcase], out
    if testcase == "inject":
        assert out.startswith("exit 8") and "Weird server reply" in out, out


# --- swaks: uses the forged EHLO reply; sends PLAIN's initial response before the 530 --------

SWAKS_EXPECTED = {
    (("-tlso", "-a", "PLAIN"), "starttls_required"): FAIL_530,
    (("-tlso", "-a", "LOGIN"), "starttls_required"): SECURE,  # AUTH LOGIN -> 530, gives up
    (("-tlso", "-a"), "starttls_required"): FAIL_530,  # LOGIN -> 530, then PLAIN with the secret
    (("-tls", "-a", "PLAIN"), "starttls_required"): SECURE,  # no STARTTLS: quits
    (("-tls", "-a", "PLAIN"), "inject"): FAIL_INJECTION,  # reads the forged 250, AUTH PLAIN
    (("-tls", "-a"), "inject"): FAIL_INJECTION,
    # reads the forged 250 too (only PLAIN listed) and quits: used, but nothing reached us
    (("-tls", "-a", "LOGIN"), "inject"): SECURE,
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("flags", "testcase"), sorted(SWAKS_EXPECTED))
def test_swaks(inst: ServeInstance, api: Api, flags: tuple[str, ...], testcase: str) -> None:
    run = new_step(api, testcase)
    out = swaks_send(inst, run, "--tls-verify", "--tls-ca-path", str(inst.ca), *flags)
    step = api.finish(run)
    assert verdict(step) == SWAKS_EXPECTED[flags, testcase], out


# --- mutt (IMAP): discards injected bytes, honours LOGINDISABLED; ssl_force_tls=no uses PREAUTH -

MUTT_EXPECTED = {
    ("defaults", "starttls_required"): SECURE,
    ("defaults", "preauth"): SECURE,
    ("defaults", "inject"): PASS,
    ("ssl_force_tls=no", "starttls_required"): SECURE,
    ("ssl_force_tls=no", "preauth"): FAIL_PREAUTH,
    ("ssl_force_tls=no", "inject"): PASS,
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("config", "testcase"), sorted(MUTT_EXPECTED))
def test_mutt(inst: ServeInstance, api: Api, tmp_path: Path, config: str, testcase: str) -> None:
    run = new_step(api, testcase)
    mutt_session(inst, run, tmp_path / "home", "" if config == "defaults" else f"set {config}\n")
    assert verdict(api.finish(run)) == MUTT_EXPECTED[config, testcase]


# --- fetchmail (no sslcertck): honours LOGINDISABLED, uses PREAUTH; the injected bytes break its
# handshake and it "tries to continue" in plaintext: its LOGIN goes out in the clear (IMAP), or it
# repolls without TLS (POP3) -----------------------------------------------------------------------

FETCHMAIL_EXPECTED = {
    ("imap", "starttls_required"): SECURE,
    ("imap", "preauth"): FAIL_PREAUTH,
    ("imap", "inject"): FAIL_INJECTION,
    ("pop3", "starttls_required"): NOT_APPLICABLE,
    ("pop3", "inject"): FAIL_PLAINTEXT,  # the repoll (a new connection) logs in without STLS
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("protocol", "testcase"), sorted(FETCHMAIL_EXPECTED))
def test_fetchmail(
    inst: ServeInstance, api: Api, tmp_path: Path, protocol: str, testcase: str
) -> None:
    run = new_step(api, testcase)
    out = fetchmail_poll(inst, run, tmp_path / "fetchmail", protocol)
    step = api.finish(run)
    assert verdict(step) == FETCHMAIL_EXPECTED[protocol, testcase], out
    if testcase == "inject":
        assert "opportunistic upgrade to TLS failed" in out, out
    if (protocol, testcase) == ("imap", "starttls_required"):
        assert "LOGINDISABLED" in out, out


# --- getmail6 (plain Simple*Retriever, never STARTTLS) ---------------------------------------

GETMAIL_EXPECTED = {
    ("imap", "starttls_required"): FAIL_LOGINDISABLED,  # imaplib's login() ignores it
    ("imap", "preauth"): SECURE,  # "LOGIN illegal in state AUTH": stops, reads nothing
    ("imap", "inject"): FAIL_PLAINTEXT,  # never tries STARTTLS (as in the baseline)
    ("pop3", "starttls_required"): FAIL_PLAINTEXT,  # the baseline served; USER/PASS in clear
}
RETRIEVER = {"imap": "SimpleIMAPRetriever", "pop3": "SimplePOP3Retriever"}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("protocol", "testcase"), sorted(GETMAIL_EXPECTED))
def test_getmail(
    inst: ServeInstance, api: Api, tmp_path: Path, protocol: str, testcase: str
) -> None:
    run = new_step(api, testcase)
    out = getmail_poll(inst, run, tmp_path / "getmail", RETRIEVER[protocol], protocol)
    assert verdict(api.finish(run)) == GETMAIL_EXPECTED[protocol, testcase], out


# --- the standard library references -----------------------------------------------------------

# (protocol, testcase, always STARTTLS) -> verdict; opportunistic scripts call STARTTLS only when
# it is advertised, strict ones always and stop when it fails
STDLIB_EXPECTED = {
    ("smtp", "starttls_required", False): FAIL_530,  # login() tries PLAIN with the secret
    ("smtp", "starttls_required", True): SECURE,
    ("imap", "starttls_required", False): FAIL_LOGINDISABLED,
    ("imap", "starttls_required", True): SECURE,
    ("imap", "preauth", False): SECURE,  # imaplib refuses login() in the PREAUTH state
    ("imap", "preauth", True): SECURE,
    ("pop3", "starttls_required", False): NOT_APPLICABLE,
    # STARTTLS discards what was buffered: the forged answer is never read
    ("smtp", "inject", False): PASS,
    ("imap", "inject", False): PASS,
    ("pop3", "inject", False): PASS,
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("protocol", "testcase", "strict"), sorted(STDLIB_EXPECTED))
def test_stdlib(api: Api, inst: ServeInstance, protocol: str, testcase: str, strict: bool) -> None:
    run = new_step(api, testcase)
    outcome = CLIENTS[protocol](inst, run.username, run.password, strict)
    step = api.finish(run)
    assert verdict(step) == STDLIB_EXPECTED[protocol, testcase, strict], outcome
    if verdict(step)[0] == "FAIL" and testcase != "inject":
        assert "plaintext_auth" in tags(step)
