"""Thunderbird (Debian's ESR) against a real ``mailtls serve``: the GUI client of issue 9.

Each case gets a run with one immediate step, a fresh profile that trusts the server's test CA
(and nothing else new), and a fresh Thunderbird on an Xvfb screen, driven through Marionette
(``thunderbird_kit``): the account is created as the manual account setup creates it, with the
case's connection security for the incoming server and SMTP, then "Get Messages" is pressed and
one message is sent. The server's events say what Thunderbird did; the step's verdict is the
server's. The account connects to ``127.0.0.1``, so the certificate is checked by mozilla::pkix
against an IP address: the chain of issue 9 (``DNS:127.0.0.1``) fails here with
``SEC_ERROR_BAD_DER`` and the baseline cases end INCONCLUSIVE instead of PASS.

When a case fails, the screen is kept as ``var/screenshots/thunderbird-<case>.png`` (named in
the assertion message, with the texts of the dialogs Thunderbird showed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import thunderbird_kit as kit
from e2e_helpers import Api, Run, api, inst, tags, verdict  # noqa: F401 (the module's fixtures)

from conftest import ServeInstance, free_ports, require_tool

pytestmark = pytest.mark.system

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
ACTION_TIMEOUT = 25.0  # bound of each wait: the incoming outcome, the send, the SMTP outcome
SETTLE = 1.5  # after that, time for a late retry (a plaintext one would turn the verdict)

Events = list[dict[str, Any]]


@dataclass(frozen=True)
class Tools:
    thunderbird: str
    xvfb: str
    certutil: str
    importer: str


@pytest.fixture(scope="module")
def tools() -> Tools:
    return Tools(
        require_tool("thunderbird"),
        require_tool("Xvfb"),
        require_tool("certutil"),
        require_tool("import"),
    )


@pytest.fixture(scope="module")
def screen(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[kit.Screen]:
    display = kit.Screen(tools.xvfb, tmp_path_factory.mktemp("xvfb") / "xvfb.log")
    yield display
    display.close()


def settled(protocol: str, events: Events) -> bool:
    """The server saw the client's outcome: a login (IMAP, POP3), a message (SMTP), a hang-up."""
    mine = [e for e in events if e.get("protocol") == protocol]
    wanted = "message_received" if protocol == "smtp" else "auth"
    return any(e["type"] in (wanted, "connection_closed") for e in mine)


def of_type(events: Events, kind: str, protocol: str) -> Events:
    return [e for e in events if e["type"] == kind and e.get("protocol") == protocol]


@dataclass(frozen=True)
class Case:
    testcase: str
    incoming: str  # "imap" | "pop3"
    socket: str  # Thunderbird's "Connection security": "STARTTLS" | "None"
    expect: Callable[[dict[str, Any], Events, Any, list[str]], None]


def expect_pass(step: dict[str, Any], events: Events, sent: Any, dialogs: list[str]) -> None:
    assert verdict(step) == ("PASS", "tls_auth")
    incoming = next(p for p in step["protocols"] if p != "smtp")
    for protocol in (incoming, "smtp"):
        auths = of_type(events, "auth", protocol)
        assert auths and all(a["tls"] and a["outcome"] == "success" for a in auths), auths
    messages = of_type(events, "message_received", "smtp")
    assert len(messages) == 1 and messages[0]["tls"], messages
    assert sent["state"] == "stopped" and sent["status"] == 0, sent
    assert dialogs == []


def expect_t1(step: dict[str, Any], events: Events, sent: Any, dialogs: list[str]) -> None:
    """Neither PASS nor FAIL: over IMAP Thunderbird sends STARTTLS although t1 does not advertise
    it, is refused and stops; over SMTP it stops when EHLO lacks STARTTLS. Nothing goes in the
    clear, not even the username."""
    assert step["verdict"] not in ("PASS", "FAIL")
    assert verdict(step) == ("INCONCLUSIVE", "aborted_after_downgrade")
    assert not [e for e in events if e["type"] in ("auth", "username_sent")]
    requested = of_type(events, "starttls_requested", "imap")
    assert requested and not any(e["advertised"] for e in requested), requested
    assert not of_type(events, "starttls_requested", "smtp")
    assert sent["state"] == "stopped" and sent["status"] != 0, sent
    assert any("doesn't advertise" in text for text in dialogs), dialogs


def expect_plain(step: dict[str, Any], events: Events, sent: Any, dialogs: list[str]) -> None:
    """Connection security "None": logs in and sends without trying TLS although it is offered."""
    assert verdict(step) == ("FAIL", "plaintext_auth")
    assert "starttls_not_attempted" in tags(step)
    assert not [e for e in events if e["type"] == "starttls_requested"]
    for protocol in ("imap", "smtp"):
        auths = of_type(events, "auth", protocol)
        assert auths and all(not a["tls"] and a["secret_in_clear"] for a in auths), auths
    assert sent["state"] == "stopped" and sent["status"] == 0, sent


CASES = {
    "imap-starttls-baseline": Case("baseline", "imap", "STARTTLS", expect_pass),
    "imap-starttls-t1": Case("t1", "imap", "STARTTLS", expect_t1),
    "imap-none-baseline": Case("baseline", "imap", "None", expect_plain),
    "pop3-starttls-baseline": Case("baseline", "pop3", "STARTTLS", expect_pass),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", sorted(CASES))
def test_thunderbird(
    tools: Tools, screen: kit.Screen, inst: ServeInstance, api: Api, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    run = api.create(("immediate", case.testcase))
    api.start(run)
    account = kit.MailAccount(
        email=run.username,
        username=run.username,
        password=run.password,
        incoming=case.incoming,
        incoming_port=inst.port_for(run.username, case.incoming),  # the run's own endpoints
        smtp_port=inst.port_for(run.username, "smtp_submission"),
        socket=case.socket,
    )
    port = free_ports(1)[0]
    profile = kit.make_profile(tmp_path / "profile", inst.ca, port, tools.certutil)
    tb: kit.Thunderbird | None = None
    try:
        tb = kit.Thunderbird(
            tools.thunderbird, profile, port, screen, tmp_path / "home", tmp_path / "tb.log"
        )
        step, events, sent = drive(tb, api, run, account)
        case.expect(step, events, sent, tb.dialogs_now())
    except (AssertionError, RuntimeError, kit.MarionetteError, OSError) as exc:
        shot = screen.screenshot(tools.importer, SCREENSHOTS / f"thunderbird-{name}.png")
        said = f"dialogs: {tb.dialogs_now()}\nlog:\n{tb.tail(1500)}" if tb else ""
        raise AssertionError(f"{exc}\n{shot}\n{said}") from exc
    finally:
        if tb is not None:
            tb.close()


def drive(
    tb: kit.Thunderbird, api: Api, run: Run, account: kit.MailAccount
) -> tuple[dict[str, Any], Events, Any]:
    """Set up the account, get messages, then send one; returns the finished step, the run's
    events and what Thunderbird's send listener reported."""
    key = tb.add_account(account)
    tb.get_messages(key)
    wait_settled(api, run, account.incoming)
    tb.send_message(key, "someone@mailtls.test", "mailtls: a message from Thunderbird")
    deadline = time.monotonic() + ACTION_TIMEOUT
    while (sent := tb.send_state()) is None or sent.get("state") == "started":
        assert time.monotonic() < deadline, f"the send did not end in {ACTION_TIMEOUT} s: {sent}"
        time.sleep(0.2)
    if sent.get("status") == 0:  # Thunderbird says it was delivered: the server saw it too
        wait_settled(api, run, "smtp")
    time.sleep(SETTLE)
    return api.finish(run), api.events(run), sent


def wait_settled(api: Api, run: Run, protocol: str) -> None:
    events = api.wait_events(run, lambda ev: settled(protocol, ev), timeout=ACTION_TIMEOUT)
    seen = [(e.get("protocol"), e["type"]) for e in events]
    assert settled(protocol, events), f"no {protocol} outcome in {ACTION_TIMEOUT} s: {seen}"
