"""Real mail clients from Debian against a real ``mailtls serve`` (issue 2's client matrix).

Each client exercises a different obligation of the servers:
- ``curl`` (SMTP, IMAP, POP3): ``--ssl`` is opportunistic (STARTTLS when advertised, else go on
  in the clear), ``--ssl-reqd`` strict. ``swaks`` (SMTP): ``-tlso`` optional, ``-tls`` strict.
- ``mutt`` over IMAP in a pseudo-terminal: with its defaults (``ssl_starttls`` and
  ``ssl_force_tls`` set in Mutt 2.2) it sends STARTTLS even when not advertised and stops when
  refused; with ``ssl_force_tls=no`` it only trusts the greeting's capabilities and logs in.
- ``fetchmail`` with ``no sslcertck`` (IMAP and POP3): after a disrupted handshake it reconnects
  by itself and logs in without TLS on its second connection.
- ``getmail6`` ``SimpleIMAPRetriever``/``SimplePOP3Retriever``: never tries STARTTLS at all.

Every client connects to its run's own endpoints (ports from the API's ``account``), as a user
copies them from the step page. The server here holds disrupted connections (t2/t4) for 3 s
instead of 10 s to keep the suite fast; nothing else differs from the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from client_tools import CURL_URLS, fetchmail_poll, getmail_poll, mutt_session, run_tool
from e2e_helpers import (
    Api,
    Run,
    api,  # noqa: F401 (the module's fixtures)
    serving,
    tags,
    verdict,
)

from conftest import ServeInstance, require_tool

pytestmark = pytest.mark.system

DISRUPTED_SECONDS = 3


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    data = tmp_path_factory.mktemp("e2e-clients") / "var"
    with serving(data, limits={"disrupted_seconds": DISRUPTED_SECONDS}) as server:
        yield server


def new_step(api: Api, testcase: str, scenario: str = "immediate") -> Run:
    run = api.create((scenario, testcase))
    api.start(run)
    return run


# --- curl -------------------------------------------------------------------------------------

# (flag, test case) -> (verdict, reason); the same for all three protocols
CURL_EXPECTED = {
    ("--ssl", "baseline"): ("PASS", "tls_auth"),
    ("--ssl", "t1"): ("FAIL", "plaintext_auth"),
    ("--ssl", "t3"): ("FAIL", "plaintext_auth"),
    # once STARTTLS was accepted curl treats a broken handshake or session as fatal (exit 35/56)
    ("--ssl", "t2"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("--ssl", "t4"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("--ssl-reqd", "baseline"): ("PASS", "tls_auth"),
    ("--ssl-reqd", "t1"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("--ssl-reqd", "t2"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("--ssl-reqd", "t3"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("--ssl-reqd", "t4"): ("INCONCLUSIVE", "aborted_after_downgrade"),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("flag", "testcase"), sorted(CURL_EXPECTED))
@pytest.mark.parametrize("protocol", sorted(CURL_URLS))
def test_curl(inst: ServeInstance, api: Api, protocol: str, flag: str, testcase: str) -> None:
    curl = require_tool("curl")
    run = new_step(api, testcase)
    argv = [curl, "-sS", "--max-time", "15", flag, "--cacert", str(inst.ca)]
    argv += [
        "--user",
        f"{run.username}:{run.password}",
        "--url",
        CURL_URLS[protocol].format(**inst.ports_for(run.username)),
    ]
    if protocol == "smtp":
        argv += ["--mail-from", "a@example.net", "--mail-rcpt", "b@mailtls.test", "-T", "/dev/null"]
    out = run_tool(argv, timeout=30)
    step = api.finish(run)
    assert verdict(step) == CURL_EXPECTED[flag, testcase], out
    assert step["protocols"][protocol]["verdict"] == step["verdict"]
    if (flag == "--ssl-reqd" and testcase != "baseline") or testcase in ("t2", "t4"):
        assert not out.startswith("exit 0"), out  # curl itself refused to go on
    if testcase in ("t2", "t4"):
        assert "starttls_disrupted" in tags(step)


# --- swaks ------------------------------------------------------------------------------------

# ``-tlso`` goes on in the clear also after a failed handshake (t2): FAIL as well. In t4 the
# handshake succeeds, swaks' EHLO inside TLS is answered outside TLS and swaks gives up.
SWAKS_EXPECTED = {
    ("-tlso", "baseline"): ("PASS", "tls_auth"),
    ("-tlso", "t1"): ("FAIL", "plaintext_auth"),
    ("-tlso", "t2"): ("FAIL", "plaintext_auth"),
    ("-tlso", "t3"): ("FAIL", "plaintext_auth"),
    ("-tlso", "t4"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("-tls", "baseline"): ("PASS", "tls_auth"),
    ("-tls", "t1"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("-tls", "t2"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("-tls", "t3"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("-tls", "t4"): ("INCONCLUSIVE", "aborted_after_downgrade"),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("flag", "testcase"), sorted(SWAKS_EXPECTED))
def test_swaks(inst: ServeInstance, api: Api, flag: str, testcase: str) -> None:
    swaks = require_tool("swaks")
    run = new_step(api, testcase)
    port = inst.port_for(run.username, "smtp_submission")
    argv = [swaks, "--server", "127.0.0.1", "--port", str(port)]
    argv += [flag, "--tls-verify", "--tls-ca-path", str(inst.ca), "--timeout", "10"]
    argv += ["-a", "PLAIN", "-au", run.username, "-ap", run.password]
    argv += ["--from", "a@example.net", "--to", "b@mailtls.test"]
    out = run_tool(argv, timeout=30)
    step = api.finish(run)
    assert verdict(step) == SWAKS_EXPECTED[flag, testcase], out
    if flag == "-tls" and testcase != "baseline":
        assert not out.startswith("exit 0"), out


# --- mutt in a pseudo-terminal --------------------------------------------------------------


@pytest.mark.timeout(40)
def test_mutt_defaults_baseline_pass(inst: ServeInstance, api: Api, tmp_path: Path) -> None:
    run = new_step(api, "baseline")
    mutt_session(inst, run, tmp_path / "home", "")
    step = api.finish(run)
    assert verdict(step) == ("PASS", "tls_auth")


@pytest.mark.timeout(40)
def test_mutt_defaults_t1_not_pass(inst: ServeInstance, api: Api, tmp_path: Path) -> None:
    """Mutt 2.2's defaults (ssl_starttls=yes, ssl_force_tls=yes) send STARTTLS although t1 does
    not advertise it; the refusal makes mutt stop ("Encrypted connection unavailable")."""
    run = new_step(api, "t1")
    screen = mutt_session(inst, run, tmp_path / "home", "")
    assert b"Encrypted connection unavailable" in screen
    step = api.finish(run)
    assert step["verdict"] != "PASS"
    assert verdict(step) == ("INCONCLUSIVE", "aborted_after_downgrade")
    events = api.events(run)
    assert any(e["type"] == "starttls_requested" for e in events)
    assert not any(e["type"] == "auth" for e in events)


@pytest.mark.timeout(40)
def test_mutt_without_force_tls_fails_under_t1(
    inst: ServeInstance, api: Api, tmp_path: Path
) -> None:
    """``ssl_force_tls=no``: mutt reads the capabilities of the greeting only, sees no STARTTLS
    and authenticates (AUTHENTICATE PLAIN with SASL-IR) in the clear."""
    run = new_step(api, "t1")
    mutt_session(inst, run, tmp_path / "home", "set ssl_force_tls=no\n")
    step = api.finish(run)
    assert verdict(step) == ("FAIL", "plaintext_auth")
    events = api.events(run)
    assert not any(e["type"] == "starttls_requested" for e in events)
    auths = [e for e in events if e["type"] == "auth"]
    assert auths and all(a["tls"] is False and a["secret_in_clear"] for a in auths)


# --- fetchmail --------------------------------------------------------------------------------


# fetchmail ``no sslcertck`` is opportunistic: in the clear when STARTTLS is stripped (t1) or
# refused (t3, "opportunistic upgrade to TLS failed, trying to continue"); t4 breaks the session
# after the handshake and fetchmail gives up (status 2); t2 is the repoll below.
FETCHMAIL_EXPECTED = {
    "baseline": ("PASS", "tls_auth"),
    "t1": ("FAIL", "plaintext_auth"),
    "t3": ("FAIL", "plaintext_auth"),
    "t4": ("INCONCLUSIVE", "aborted_after_downgrade"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("testcase", sorted(FETCHMAIL_EXPECTED))
def test_fetchmail(inst: ServeInstance, api: Api, tmp_path: Path, testcase: str) -> None:
    run = new_step(api, testcase)
    out = fetchmail_poll(inst, run, tmp_path / "fetchmail", hold=DISRUPTED_SECONDS)
    assert verdict(api.finish(run)) == FETCHMAIL_EXPECTED[testcase], out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_fetchmail_reconnects_in_the_clear_under_t2(
    inst: ServeInstance, api: Api, tmp_path: Path, protocol: str
) -> None:
    """fetchmail 6.4 with ``no sslcertck``: the failed handshake is only "trying to continue";
    its next command is answered by nothing, and when the server closes the disrupted connection
    fetchmail repolls at once and sends LOGIN without TLS ("server offered STARTTLS but sslproto
    '' given"). Its ``timeout`` must exceed the server's hold of the disrupted connection
    (``limits.disrupted_seconds``): a shorter one ends the poll with a socket error (status 2)
    and no second connection."""
    run = new_step(api, "t2")
    out = fetchmail_poll(inst, run, tmp_path / "fetchmail", protocol, DISRUPTED_SECONDS)
    assert "opportunistic upgrade to TLS failed" in out, out
    assert "Repoll immediately" in out, out
    step = api.finish(run)
    assert verdict(step) == ("FAIL", "plaintext_auth"), out
    assert {"starttls_disrupted", "plaintext_auth"} <= tags(step)
    assert step["protocols"][protocol]["connections"] == 2
    events = api.events(run)
    opened = [e["conn"] for e in events if e["type"] == "connection_opened"]
    auths = [e for e in events if e["type"] == "auth" and e.get("secret_sent")]
    assert len(opened) == 2 and len(auths) == 1
    assert auths[0]["conn"] == opened[1] and auths[0]["secret_in_clear"] is True
    assert any(e["type"] == "starttls_disrupted" and e["conn"] == opened[0] for e in events)


# --- getmail6 ---------------------------------------------------------------------------------


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    ("retriever", "protocol"), [("SimpleIMAPRetriever", "imap"), ("SimplePOP3Retriever", "pop3")]
)
def test_getmail_plain_mode_fails_in_baseline(
    inst: ServeInstance, api: Api, tmp_path: Path, retriever: str, protocol: str
) -> None:
    run = new_step(api, "baseline")
    out = getmail_poll(inst, run, tmp_path / "getmail", retriever, protocol)
    assert out.startswith("exit 0"), out
    step = api.finish(run)
    assert verdict(step) == ("FAIL", "plaintext_auth"), out
    assert "starttls_not_attempted" in tags(step)
    events = api.events(run)
    assert not any(e["type"] == "starttls_requested" for e in events)


# Mutt 2.2 under the other attacks: with its defaults it never goes on without TLS; with
# ssl_force_tls=no it goes on in the clear after a refused STARTTLS (t3), but treats a broken
# handshake or session (t2, t4) as fatal ("Could not negotiate TLS connection",
# "tls_socket_read (An unexpected TLS packet was received.)").
MUTT_EXPECTED = {
    ("defaults", "t2"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("defaults", "t3"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("defaults", "t4"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("ssl_force_tls=no", "t2"): ("INCONCLUSIVE", "aborted_after_downgrade"),
    ("ssl_force_tls=no", "t3"): ("FAIL", "plaintext_auth"),
    ("ssl_force_tls=no", "t4"): ("INCONCLUSIVE", "aborted_after_downgrade"),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("config", "testcase"), sorted(MUTT_EXPECTED))
def test_mutt_other_attacks(
    inst: ServeInstance, api: Api, tmp_path: Path, config: str, testcase: str
) -> None:
    run = new_step(api, testcase)
    settings = "" if config == "defaults" else f"set {config}\n"
    mutt_session(inst, run, tmp_path / "home", settings)
    assert verdict(api.finish(run)) == MUTT_EXPECTED[config, testcase]
