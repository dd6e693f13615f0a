"""STARTTLS command injection against purpose-built servers (SMTP, IMAP, POP3 on 127.0.0.1).

A vulnerable server answers the command pipelined after STARTTLS inside TLS; a safe one drops it;
a third answers it in plaintext before the handshake (the lesser finding). Also: the dummy
password reaches the server but never the probe's output.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from probe_servers import Pki, make_pki
from probe_toyserver import Mode, ToyServer, running, server_context

from mailtls.probe import probe_host
from mailtls.probe.report import port_dict
from mailtls.probe.targets import target

INJECTION = "probe-starttls-command-injection"
PLAINTEXT = "probe-starttls-pipelined-answered-in-plaintext"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ("127.0.0.1",))


KIND = {"smtp": "submission", "imap": "imap", "pop3": "pop3"}


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Mode.SAFE, set()),
        (Mode.VULNERABLE, {INJECTION}),
        (Mode.PLAINTEXT_REPLY, {PLAINTEXT}),
    ],
)
async def test_injection_verdict(protocol: str, mode: Mode, expected: set[str], pki: Pki) -> None:
    toy = ToyServer(protocol, mode, server_context(str(pki.cert), str(pki.key)))
    async with running(toy):
        t = target(KIND[protocol], toy.port)
        result = await asyncio.to_thread(probe_host, "127.0.0.1", [t], 5.0, str(pki.ca), True)
    ids = {f.id for f in result.findings}
    assert ids & {INJECTION, PLAINTEXT} == expected
    (port,) = result.ports
    assert port.status == "ok"
    assert port.injection is not None and port.injection.tested
    assert port.tls is not None and port.tls.established and port.tls.verify_error is None
    # the fake login was processed like any login: the toy accepts cleartext credentials
    assert "probe-auth-before-tls" in ids
    if expected:
        (finding,) = [f for f in result.findings if f.id in expected]
        where = "inside TLS" if mode is Mode.VULNERABLE else "plaintext, before the handshake"
        assert any(where in e for e in finding.evidence), finding.evidence
    # source == target on 127.0.0.1: the probe warns that Dovecot-like servers trust that
    assert any("source address equals the target" in n for n in result.notes)


async def test_dummy_password_reaches_server_but_never_the_output(pki: Pki) -> None:
    toy = ToyServer("smtp", Mode.SAFE, server_context(str(pki.cert), str(pki.key)))
    async with running(toy):
        result = await asyncio.to_thread(
            probe_host, "127.0.0.1", [target("submission", toy.port)], 5.0, str(pki.ca), True
        )
    auth = [line for line in toy.lines if line.startswith(b"AUTH PLAIN ")]
    assert len(auth) == 1, "exactly one dummy login per port"
    _, user, password = base64.b64decode(auth[0].split()[2]).split(b"\0")
    assert user.startswith(b"mailtls-probe-") and len(password) >= 16
    dumped = json.dumps([port_dict(p) for p in result.ports]) + repr(result)
    assert password.decode() not in dumped
    assert auth[0].split()[2].decode() not in dumped
    assert user.decode() not in dumped or "redacted" in dumped


async def test_no_login_attempt_sends_no_credentials(pki: Pki) -> None:
    toy = ToyServer("pop3", Mode.SAFE, server_context(str(pki.cert), str(pki.key)))
    async with running(toy):
        result = await asyncio.to_thread(
            probe_host, "127.0.0.1", [target("pop3", toy.port)], 5.0, str(pki.ca), False
        )
    assert not [line for line in toy.lines if line.split(b" ")[0] in (b"AUTH", b"USER", b"PASS")]
    ids = {f.id for f in result.findings}
    assert "probe-auth-offered-before-tls" in ids
    assert "probe-auth-before-tls" not in ids


async def test_untrusted_certificate_is_a_finding_and_probing_goes_on(
    tmp_path: Path, pki: Pki
) -> None:
    other = make_pki(tmp_path / "other", ("127.0.0.1",))
    toy = ToyServer("imap", Mode.VULNERABLE, server_context(str(pki.cert), str(pki.key)))
    async with running(toy):
        result = await asyncio.to_thread(
            probe_host, "127.0.0.1", [target("imap", toy.port)], 5.0, str(other.ca), True
        )
    ids = {f.id for f in result.findings}
    assert "probe-certificate-untrusted" in ids
    assert INJECTION in ids  # tested again on a connection without verification
    (port,) = result.ports
    assert port.tls is not None and port.tls.verify_error
