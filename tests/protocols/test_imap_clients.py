"""Real IMAP clients against ``ImapCore`` behind the real I/O shell on 127.0.0.1.

Python's ``imaplib`` (STARTTLS, implicit TLS, PLAIN, CRAM-MD5, under every test case), and the
system programs ``fetchmail`` and ``curl`` must finish their session without errors, and the
journal must say what happened (TLS state of each authentication).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import pty
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from protocols_kit import authenticator

from conftest import require_tool
from mailtls.net.listeners import MailServer
from mailtls.net.pki import ServerCertificates, ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols.base import PortRole
from mailtls.protocols.imap import ImapCore
from mailtls.runs.types import Binding
from mailtls.settings import Settings

USER = "test-abc123"
PASSWORD = "Canary-Pa55w0rd-7f3e9"


class Journal:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    async def wait_for(self, type_: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self.of(type_):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {type_} record: {[r['type'] for r in self.records]}")
            await asyncio.sleep(0.01)
        return self.of(type_)


@dataclass
class Server:
    plain: int
    implicit: int
    certs: ServerCertificates
    journal: Journal
    home: Path

    def context(self) -> ssl.SSLContext:
        assert self.certs.ca is not None
        return ssl.create_default_context(cafile=str(self.certs.ca))


SPECS = [
    ListenerSpec("imap", "imap", PortRole.IMAP, 0, False),
    ListenerSpec("imap_tls", "imap", PortRole.IMAP, 0, True),
]


async def start(tmp_path: Path, testcase: str) -> tuple[MailServer, Server]:
    settings = Settings(data_dir=tmp_path)
    settings = replace(settings, limits=replace(settings.limits, auth_fail_delay=0.0))
    journal = Journal()
    certs = ensure_certificates(settings)

    def binder(ip: str, local: tuple[str, int]) -> Binding:
        return Binding("run1", 1, testcase, "immediate", "address", True)

    server = MailServer(
        settings,
        certs=certs,
        binder=binder,
        authenticator=authenticator,
        sink=journal,
        core_factories={"imap": ImapCore},
        specs=SPECS,
    )
    await server.start()
    info = Server(server.port("imap"), server.port("imap_tls"), certs, journal, tmp_path)
    return server, info


@pytest.fixture
async def baseline(tmp_path: Path) -> AsyncIterator[Server]:
    server, info = await start(tmp_path, "baseline")
    yield info
    await server.close(grace=0.5)


def imaplib_session(client: imaplib.IMAP4) -> list[bytes]:
    """A mail client's sync on an authenticated connection; every reply must be OK."""
    seen: list[bytes] = []
    for typ, data in (
        client.list(),
        client.lsub(),
        client.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)"),
        client.select("INBOX"),
        client.uid("FETCH", "1:*", "(FLAGS)"),
        client.uid("SEARCH", "ALL"),
        client.append("Sent", "(\\Seen)", None, b"Subject: hi\r\n\r\nhello\r\n"),
        client.noop(),
        client.close(),
    ):
        assert typ == "OK", (typ, data)
        seen += [d for d in data if isinstance(d, bytes)]
    assert client.logout()[0] == "BYE"
    return seen


@pytest.mark.timeout(30)
async def test_imaplib_starttls_login_and_sync(baseline: Server) -> None:
    def run() -> list[bytes]:
        client = imaplib.IMAP4("127.0.0.1", baseline.plain, timeout=5)
        assert "STARTTLS" in client.capabilities
        assert "AUTH=PLAIN" in client.capabilities and "LOGINDISABLED" not in client.capabilities
        client.starttls(baseline.context())
        assert "AUTH=CRAM-MD5" in client.capabilities
        client.login(USER, PASSWORD)
        return imaplib_session(client)

    seen = await asyncio.to_thread(run)
    assert any(b"\\Sent" in line for line in seen)
    auth = (await baseline.journal.wait_for("auth"))[0]
    assert (auth["mechanism"], auth["tls"], auth["secret_in_clear"]) == ("IMAP-LOGIN", True, False)
    assert baseline.journal.of("message_received")[0]["nbytes"] == 22
    assert PASSWORD not in repr(baseline.journal.records)


@pytest.mark.timeout(30)
async def test_imaplib_implicit_tls_with_plain_and_cram_md5(baseline: Server) -> None:
    def run() -> None:
        client = imaplib.IMAP4_SSL("127.0.0.1", baseline.implicit, ssl_context=baseline.context())
        response = f"\0{USER}\0{PASSWORD}".encode()
        assert client.authenticate("PLAIN", lambda _: response)[0] == "OK"
        imaplib_session(client)
        other = imaplib.IMAP4_SSL("127.0.0.1", baseline.implicit, ssl_context=baseline.context())
        assert other.login_cram_md5(USER, PASSWORD)[0] == "OK"
        other.logout()

    await asyncio.to_thread(run)
    deadline = time.monotonic() + 5
    while len(baseline.journal.of("auth")) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    auths = baseline.journal.of("auth")
    assert [(a["mechanism"], a["tls"], a["outcome"]) for a in auths] == [
        ("PLAIN", True, "success"),
        ("CRAM-MD5", True, "success"),
    ]


EXPECTED_STARTTLS_OUTCOME = {
    "t1": "False:abort",  # imaplib refuses by itself: STARTTLS is not advertised
    "t2": "True:SSLError",  # the cleartext "* BAD" where the ServerHello should be
    "t3": "True:error",  # tagged NO
    "t4": "True:SSLError",  # handshake done, the CAPABILITY reply comes in cleartext
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("testcase", ["t1", "t2", "t3", "t4"])
async def test_imaplib_under_attack(tmp_path: Path, testcase: str) -> None:
    server, info = await start(tmp_path, testcase)
    try:

        def run() -> str:
            client = imaplib.IMAP4("127.0.0.1", info.plain, timeout=5)
            offered = "STARTTLS" in client.capabilities
            try:
                client.starttls(info.context())
            except (imaplib.IMAP4.error, ssl.SSLError, OSError) as exc:
                outcome = type(exc).__name__
            else:
                outcome = "tls"
            if testcase in ("t1", "t3"):  # a downgrading client goes on in plaintext
                client.login(USER, PASSWORD)
                client.logout()
            else:
                with contextlib.suppress(OSError):
                    client.shutdown()
            return f"{offered}:{outcome}"

        result = await asyncio.to_thread(run)
        journal = info.journal
        assert result == EXPECTED_STARTTLS_OUTCOME[testcase]
        if testcase == "t3":
            assert journal.of("starttls_refused")[0]["reason"] == "testcase"
        if testcase in ("t2", "t4"):
            await journal.wait_for("starttls_disrupted")
        if testcase in ("t1", "t3"):
            auth = (await journal.wait_for("auth"))[0]
            assert (auth["tls"], auth["secret_in_clear"]) == (False, True)
    finally:
        await server.close(grace=0.5)


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_fetchmail_checks_the_mailbox_over_starttls(baseline: Server) -> None:
    fetchmail = require_tool("fetchmail")
    assert baseline.certs.ca is not None
    rc = write_private(
        baseline.home / "fetchmailrc",
        f"set no bouncemail\n"
        f"poll localhost service {baseline.plain} protocol IMAP auth password timeout 10\n"
        f'  user "{USER}" there with password "{PASSWORD}" is "nobody" here\n'
        f'  sslproto "TLS1.2+" sslcertck sslcertfile "{baseline.certs.ca}"\n'
        f'  keep fetchall mda "/bin/cat"\n',
    )
    env = {**os.environ, "HOME": str(baseline.home), "FETCHMAILHOME": str(baseline.home)}
    proc = await asyncio.create_subprocess_exec(
        fetchmail, "-v", "--nodetach", "--nosyslog", "-f", str(rc),
        "--idfile", str(baseline.home / "ids"), "--pidfile", str(baseline.home / "pid"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 45)
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 1, text  # 1: no mail, the session itself succeeded
    assert "No mail for" in text and "IMAP< A" in text
    assert " BAD " not in text
    auth = (await baseline.journal.wait_for("auth"))[0]
    assert (auth["tls"], auth["outcome"]) == (True, "success")


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_curl_lists_and_examines_over_starttls(baseline: Server) -> None:
    curl = require_tool("curl")
    assert baseline.certs.ca is not None
    base = f"imap://localhost:{baseline.plain}"

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", str(baseline.certs.ca),
            "--resolve", f"localhost:{baseline.plain}:127.0.0.1",
            "-u", f"{USER}:{PASSWORD}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode("utf-8", "replace")
        return out.decode()

    listing = await run(base + "/")
    assert '\\Sent) "/" Sent' in listing and "INBOX" in listing
    examined = await run(base + "/INBOX", "-X", "EXAMINE INBOX")
    assert "* 0 EXISTS" in examined
    auths = baseline.journal.of("auth")
    assert auths and all(a["tls"] and a["outcome"] == "success" for a in auths)


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_mutt_opens_inbox_and_sent_over_starttls(baseline: Server) -> None:
    mutt = require_tool("mutt")
    assert baseline.certs.ca is not None
    home = baseline.home
    (home / "certs").write_text(baseline.certs.ca.read_text())
    rc = write_private(
        home / "muttrc",
        f'set imap_user="{USER}"\n'
        f'set imap_pass="{PASSWORD}"\n'
        "set ssl_starttls=yes ssl_force_tls=yes\n"
        f'set certificate_file="{home}/certs"\n'
        f'set folder="imap://localhost:{baseline.plain}/"\n'
        'set spoolfile="+INBOX" record="" header_cache="" message_cachedir=""\n'
        "set imap_check_subscribed=yes timeout=1 quit=yes\n",
    )
    controller, terminal = pty.openpty()  # mutt needs a terminal, even to quit at once
    try:
        proc = await asyncio.create_subprocess_exec(
            mutt, "-n", "-F", str(rc), "-e", "push '<change-folder>=Sent<enter><quit>'",
            stdin=terminal, stdout=terminal, stderr=terminal,
            env={**os.environ, "TERM": "vt100", "HOME": str(home)},
        )  # fmt: skip
    finally:
        os.close(terminal)
    try:
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(controller)
    journal = baseline.journal
    lines = [r["line"] for r in journal.of("command")]
    assert any(line.endswith('SELECT "INBOX"') for line in lines)
    assert any(line.endswith('SELECT "Sent"') for line in lines)
    assert lines[-1].endswith("LOGOUT")
    assert journal.of("protocol_error") == []
    auth = journal.of("auth")[0]
    assert (auth["tls"], auth["outcome"]) == (True, "success")
