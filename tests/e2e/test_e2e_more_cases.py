"""The cases beyond T1-T4 (``starttls_required``, ``preauth``, ``inject``, ``cert_*``,
``tls_fallback``) against real clients.

Every client of the CI matrix (curl, swaks, mutt, fetchmail, getmail6) and the standard library
references, each in the configurations that behave differently; the expected verdicts are what
these clients were observed to do (written down in docs/testcases.md, "What real clients do").
Where a case does not apply to a protocol (POP3 under ``starttls_required``, SMTP and POP3 under
``preauth``) the server is the honest baseline and the protocol's verdict is NOT_APPLICABLE.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_tools import (
    curl_login,
    fetchmail_poll,
    getmail_poll,
    mutt_session,
    run_tool,
    swaks_send,
)
from e2e_helpers import (
    CLIENTS,
    Api,
    Run,
    api,  # noqa: F401 (the module's fixtures)
    journal,
    serving,
    tags,
    tls_context,
    verdict,
)

from conftest import ServeInstance, require_tool

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
    (("-tls", "-a", "PLAIN"), "tls_fallback"): SECURE,
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
    ("defaults", "tls_fallback"): SECURE,
    ("ssl_force_tls=no", "tls_fallback"): SECURE,
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
    # the alert fails its upgrade; it "tries to continue" and repolls at once without STARTTLS
    ("imap", "tls_fallback"): FAIL_PLAINTEXT,
    ("pop3", "tls_fallback"): FAIL_PLAINTEXT,
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
    if testcase in ("inject", "tls_fallback"):
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


# --- the certificate cases ----------------------------------------------------------------------

CERT_CASES = ("cert_selfsigned", "cert_expired", "cert_wronghost", "cert_unknown_ca")
FAIL_CERT = ("FAIL", "accepted_bad_certificate")


@pytest.mark.timeout(40)
@pytest.mark.parametrize("testcase", CERT_CASES)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_curl_verifies_certificates_and_never_fails(
    inst: ServeInstance, api: Api, protocol: str, testcase: str
) -> None:
    """curl verifies by default (chain, dates and name): it refuses with an alert (the name it
    checks after the handshake, and leaves) -> the secure outcome, rejected_bad_certificate."""
    run = new_step(api, testcase)
    out = curl_login(inst, run, protocol, "--ssl-reqd")
    step = api.finish(run)
    assert verdict(step) == SECURE, out
    assert "rejected_bad_certificate" in tags(step)
    assert not out.startswith("exit 0"), out


@pytest.mark.timeout(40)
@pytest.mark.parametrize("testcase", CERT_CASES)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_curl_insecure_fails(inst: ServeInstance, api: Api, protocol: str, testcase: str) -> None:
    run = new_step(api, testcase)
    out = curl_login(inst, run, protocol, "--ssl-reqd", "--insecure")
    step = api.finish(run)
    assert verdict(step) == FAIL_CERT, out
    assert {"accepted_bad_certificate", "tls_auth"} <= tags(step)


@pytest.mark.timeout(40)
def test_curl_refuses_a_bad_certificate_on_implicit_tls(inst: ServeInstance, api: Api) -> None:
    run = new_step(api, "cert_selfsigned")
    port = inst.port_for(run.username, "imap_tls")
    argv = [require_tool("curl"), "-sS", "--max-time", "15", "--cacert", str(inst.ca)]
    argv += ["--user", f"{run.username}:{run.password}", "--url", f"imaps://127.0.0.1:{port}/"]
    out = run_tool(argv, timeout=30)
    step = api.finish(run)
    assert verdict(step) == SECURE, out
    details = [f["detail"] for f in step["findings"] if f["tag"] == "rejected_bad_certificate"]
    assert details and "unknown_ca" in details[0], details  # the alert curl sent


# swaks -tls: without --tls-verify it accepts any certificate; with it, it checks the chain and
# the dates but not the host name
SWAKS_CERT_EXPECTED = {
    (False, "cert_selfsigned"): FAIL_CERT,
    (False, "cert_unknown_ca"): FAIL_CERT,
    (True, "cert_selfsigned"): SECURE,
    (True, "cert_expired"): SECURE,
    (True, "cert_unknown_ca"): SECURE,
    (True, "cert_wronghost"): FAIL_CERT,
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("verify", "testcase"), sorted(SWAKS_CERT_EXPECTED))
def test_swaks_certificates(inst: ServeInstance, api: Api, verify: bool, testcase: str) -> None:
    run = new_step(api, testcase)
    flags = ["--tls-verify", "--tls-ca-path", str(inst.ca)] if verify else []
    out = swaks_send(inst, run, "-tls", *flags, "-a", "PLAIN")
    assert verdict(api.finish(run)) == SWAKS_CERT_EXPECTED[verify, testcase], out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("testcase", ["cert_selfsigned", "cert_wronghost"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_fetchmail_without_sslcertck_accepts_any_certificate(
    inst: ServeInstance, api: Api, tmp_path: Path, protocol: str, testcase: str
) -> None:
    run = new_step(api, testcase)
    out = fetchmail_poll(inst, run, tmp_path / "fetchmail", protocol)
    assert verdict(api.finish(run)) == FAIL_CERT, out


@pytest.mark.timeout(40)
@pytest.mark.parametrize("testcase", CERT_CASES)
def test_mutt_asks_or_accepts(inst: ServeInstance, api: Api, tmp_path: Path, testcase: str) -> None:
    """Mutt shows "(r)eject, accept (o)nce" for a certificate it cannot verify (the harness's
    <quit> rejects: it leaves after the handshake); the harness sets ``ssl_verify_host=no``, so
    the wrong host name passes and mutt logs in."""
    run = new_step(api, testcase)
    try:
        mutt_session(inst, run, tmp_path / "home", "")
    except AssertionError as exc:  # waiting at the certificate prompt until killed
        assert "Certificate check" in str(exc), exc
    expected = FAIL_CERT if testcase == "cert_wronghost" else SECURE
    assert verdict(api.finish(run)) == expected


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.mark.timeout(40)
@pytest.mark.parametrize("testcase", CERT_CASES)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_stdlib_verifying_never_fails_unverified_fails(
    inst: ServeInstance, api: Api, protocol: str, testcase: str
) -> None:
    run = new_step(api, testcase)
    outcome = CLIENTS[protocol](inst, run.username, run.password, True)  # verifying context
    step = api.finish(run)
    assert outcome.startswith("stopped") and verdict(step) == SECURE, outcome
    assert "rejected_bad_certificate" in tags(step)
    run = new_step(api, testcase)
    outcome = CLIENTS[protocol](inst, run.username, run.password, True, unverified())
    assert outcome == "tls-login"
    assert verdict(api.finish(run)) == FAIL_CERT


# --- tls_fallback ---------------------------------------------------------------------------------

FAIL_FALLBACK = ("FAIL", "version_fallback")
STARTTLS_PORT = {"smtp": "smtp_submission", "imap": "imap", "pop3": "pop3"}


def capped(inst: ServeInstance, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A verifying context that offers at most ``maximum`` (TLS 1.0/1.1 need security level 0
    on OpenSSL 3)."""
    ctx = tls_context(inst)
    if maximum < ssl.TLSVersion.TLSv1_2:
        if not ssl.HAS_TLSv1:
            pytest.skip("not testable: the local OpenSSL has no TLS 1.0")
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maximum
    return ctx


def offers(inst: ServeInstance, run: Run) -> list[tuple[str, str, bool]]:
    return [
        (r["answer"], r["highest"], r["fallback_scsv"])
        for r in journal(inst, run)
        if r["type"] == "client_hello_offered"
    ]


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated")
@pytest.mark.parametrize(
    ("maximum", "expected"),
    [(ssl.TLSVersion.TLSv1, FAIL_FALLBACK), (ssl.TLSVersion.TLSv1_2, PASS)],
    ids=["retry-tls1.0", "retry-tls1.2"],
)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_stdlib_retrying_lower_after_the_alert(
    inst: ServeInstance,
    api: Api,
    protocol: str,
    maximum: ssl.TLSVersion,
    expected: tuple[str, str],
) -> None:
    """A reference client that retries with a lower ``maximum_version`` after the alert (as
    browsers once did); Python's ssl cannot add TLS_FALLBACK_SCSV, so the retry has none."""
    run = new_step(api, "tls_fallback")
    first = CLIENTS[protocol](inst, run.username, run.password, True)
    assert first.startswith("stopped") and "HANDSHAKE_FAILURE" in first.upper(), first
    retry = CLIENTS[protocol](inst, run.username, run.password, True, capped(inst, maximum))
    assert retry == "tls-login", retry
    step = api.finish(run)
    assert verdict(step) == expected, step["findings"]
    assert "fallback_without_scsv" in tags(step)
    served = "TLSv1" if maximum is ssl.TLSVersion.TLSv1 else "TLSv1.2"
    assert offers(inst, run) == [("alert", "TLSv1.3", False), ("served", served, False)]
    versions = [r["version"] for r in journal(inst, run) if r["type"] == "tls_established"]
    assert versions == [served]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_openssl_fallback_scsv_retry_is_refused(
    inst: ServeInstance, api: Api, protocol: str
) -> None:
    """``openssl s_client -fallback_scsv -tls1`` as the retry: the server refuses it
    (inappropriate_fallback), the secure outcome."""
    openssl = require_tool("openssl")
    if not ssl.HAS_TLSv1:
        pytest.skip("not testable: the local OpenSSL has no TLS 1.0")
    run = new_step(api, "tls_fallback")
    first = CLIENTS[protocol](inst, run.username, run.password, True)
    assert first.startswith("stopped"), first
    port = inst.port_for(run.username, STARTTLS_PORT[protocol])
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", protocol]
    argv += ["-tls1", "-fallback_scsv", "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", str(inst.ca)]
    out = run_tool(argv, timeout=30)
    assert "inappropriate fallback" in out, out
    step = api.finish(run)
    assert verdict(step) == SECURE, step["findings"]
    assert not {"fallback_without_scsv", "version_fallback"} & tags(step)
    assert offers(inst, run) == [("alert", "TLSv1.3", False), ("served", "TLSv1", True)]
    failed = [r["reason"] for r in journal(inst, run) if r["type"] == "tls_failed"]
    assert failed == ["fallback_alert_sent", "inappropriate_fallback"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_curl_does_not_fall_back(inst: ServeInstance, api: Api, protocol: str) -> None:
    """curl reports the alert and stops; run again it offers the same versions (alerted again):
    it never goes below its own minimum, the secure outcome."""
    run = new_step(api, "tls_fallback")
    outs = [curl_login(inst, run, protocol, "--ssl-reqd") for _ in range(2)]
    step = api.finish(run)
    assert all(out.startswith("exit 35") for out in outs), outs
    assert verdict(step) == SECURE, step["findings"]
    assert offers(inst, run) == [("alert", "TLSv1.3", False)] * 2
