"""The SMTP core behind the real I/O shell, driven by real clients over 127.0.0.1 and real TLS.

Python's ``smtplib`` (as aiosmtpd tests do), ``swaks`` and ``curl`` talk to ``SmtpCore`` through
``mailtls.net.MailServer``; the journal the shell writes is checked: what the verdicts will see.
Every test case gets the connection's policy through the binder, as in production.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from protocols_kit import authenticator

from conftest import require_tool
from mailtls.net.listeners import MailServer
from mailtls.net.pki import ServerCertificates, ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols.base import Limits, PortRole
from mailtls.protocols.smtp import SmtpCore
from mailtls.runs.types import Binding
from mailtls.settings import Settings

USER = "test-abc123"
DOMAIN = "mailtls.test"
CANARY = "Canary-Pa55w0rd-51e8"
MESSAGE = b"Subject: hello\r\n\r\nbody line\r\n.leading dot\r\n"


@dataclass
class Lab:
    server: MailServer
    certs: ServerCertificates
    records: list[dict[str, Any]] = field(default_factory=list)
    testcase: str = "baseline"

    def port(self, name: str) -> int:
        return self.server.port(name)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.of(type_)) < count:
            assert time.monotonic() < deadline, f"no {type_}: {[r['type'] for r in self.records]}"
            await asyncio.sleep(0.01)

    def client_context(self) -> ssl.SSLContext:
        assert self.certs.ca is not None
        return ssl.create_default_context(cafile=str(self.certs.ca))

    def assert_no_secret(self) -> None:
        text = json.dumps(self.records)
        assert CANARY not in text and CANARY.encode().hex() not in text


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    limits = replace(
        Limits(), auth_fail_delay=0.05, disrupted_seconds=1.0, silence_after_refusal=1.0
    )
    settings = replace(Settings(data_dir=tmp_path), limits=limits)
    certs = ensure_certificates(settings)
    holder: dict[str, Lab] = {}

    def binder(ip: str, local: tuple[str, int]) -> Binding:
        return Binding("run1", 1, holder["lab"].testcase, "immediate", "address", True)

    records: list[dict[str, Any]] = []
    server = MailServer(
        settings,
        certs=certs,
        binder=binder,
        authenticator=authenticator,
        sink=records.append,
        core_factories={"smtp": SmtpCore},
        specs=[
            ListenerSpec("mx", "smtp", PortRole.MX, 0, False),
            ListenerSpec("submission", "smtp", PortRole.SUBMISSION, 0, False),
            ListenerSpec("smtps", "smtp", PortRole.SUBMISSION, 0, True),
        ],
    )
    await server.start()
    holder["lab"] = Lab(server, certs, records)
    try:
        yield holder["lab"]
    finally:
        await server.close(grace=0.5)


def auths(lab: Lab) -> list[tuple[str, bool, bool, str]]:
    return [
        (r["mechanism"], r["secret_sent"], r["secret_in_clear"], r["outcome"])
        for r in lab.of("auth")
    ]


# --- smtplib -------------------------------------------------------------------------------


async def test_smtplib_baseline_starttls_cram_md5_and_message(lab: Lab) -> None:
    def client() -> None:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            assert smtp.has_extn("starttls")
            smtp.starttls(context=lab.client_context())
            smtp.ehlo("client.example")
            assert "CRAM-MD5" in smtp.esmtp_features["auth"]
            smtp.login(USER, CANARY)  # smtplib prefers CRAM-MD5 when offered
            refused = smtplib.SMTP.sendmail(smtp, "a@b.example", ["x@example.org"], MESSAGE)
            assert refused == {}

    await asyncio.to_thread(client)
    await lab.wait_for("connection_closed")
    assert auths(lab) == [("CRAM-MD5", True, False, "success")]
    assert lab.of("auth")[0]["tls"] is True and lab.of("auth")[0]["code"] == "abc123"
    message = lab.of("message_received")[0]
    assert message["nbytes"] == len(MESSAGE) and message["tls"] is True
    assert lab.of("tls_established")[0]["implicit"] is False
    lab.assert_no_secret()


async def test_smtplib_implicit_tls_plain_login(lab: Lab) -> None:
    def client() -> None:
        ctx = lab.client_context()
        with smtplib.SMTP_SSL("127.0.0.1", lab.port("smtps"), timeout=5, context=ctx) as smtp:
            smtp.ehlo("client.example")
            assert not smtp.has_extn("starttls")
            smtp.login(f"{USER}@{DOMAIN}".upper(), CANARY, initial_response_ok=True)
            smtp.sendmail("a@b.example", ["x@example.org"], MESSAGE)

    await asyncio.to_thread(client)
    await lab.wait_for("message_received")
    assert lab.of("auth")[0]["tls"] is True and lab.of("auth")[0]["outcome"] == "success"
    assert [r["implicit"] for r in lab.of("tls_established")] == [True]  # recorded once
    lab.assert_no_secret()


async def test_smtplib_wrong_user_fails_with_hashed_name(lab: Lab) -> None:
    def client() -> int:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            try:
                smtp.login("alice@victim.example", CANARY)
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
        return 0

    assert await asyncio.to_thread(client) == 535
    attempts = lab.of("auth")
    assert attempts and all(a["username"].startswith("h:") for a in attempts)
    assert "victim" not in json.dumps(lab.records)
    lab.assert_no_secret()


async def test_smtplib_t1_blind_starttls_refused_then_plaintext_login(lab: Lab) -> None:
    lab.testcase = "t1"

    def client() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            assert not smtp.has_extn("starttls")
            blind = smtp.docmd("STARTTLS")  # as clients that ignore the capabilities do
            smtp.login(USER, CANARY)  # a downgradable client goes on without TLS
            return blind

    code, text = await asyncio.to_thread(client)
    assert code == 502 and text.startswith(b"5.5.1")
    await lab.wait_for("auth")
    assert lab.of("starttls_refused")[0]["reason"] == "not_advertised"
    assert auths(lab) == [("PLAIN", True, True, "success")]
    assert lab.of("connection_opened")[0]["testcase"] == "t1"
    lab.assert_no_secret()


async def test_smtplib_t2_handshake_answered_in_cleartext(lab: Lab) -> None:
    lab.testcase = "t2"

    def client() -> str:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            try:
                smtp.starttls(context=lab.client_context())
            except (ssl.SSLError, OSError) as exc:
                return type(exc).__name__
        return "no error"

    assert await asyncio.to_thread(client) != "no error"
    await lab.wait_for("starttls_disrupted")
    disrupted = lab.of("starttls_disrupted")[0]
    assert disrupted["stage"] == "handshake" and disrupted["looks_like_tls"] is True
    assert disrupted["client_hello_bytes"] > 5
    assert lab.of("tls_established") == []


async def test_smtplib_t3_refused_then_plaintext_login_and_silence_close(lab: Lab) -> None:
    lab.testcase = "t3"

    def client() -> int:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            try:
                smtp.starttls(context=lab.client_context())
            except smtplib.SMTPResponseException as exc:
                code = exc.smtp_code  # a downgradable client shrugs and goes on
            smtp.ehlo("client.example")
            smtp.login(USER, CANARY)
            return code

    assert await asyncio.to_thread(client) == 454
    await lab.wait_for("auth")
    assert auths(lab) == [("PLAIN", True, True, "success")]

    def silent_client() -> tuple[float, bytes]:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            assert smtp.docmd("STARTTLS")[0] == 454
            assert smtp.sock is not None
            started = time.monotonic()
            rest = smtp.sock.recv(100)  # the server closes after the silence bound
            return time.monotonic() - started, rest

    waited, rest = await asyncio.to_thread(silent_client)
    assert rest == b"" and 0.5 < waited < 4.0
    lab.assert_no_secret()


async def test_smtplib_t4_first_command_in_tls_answered_outside(lab: Lab) -> None:
    lab.testcase = "t4"

    def client() -> str:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            smtp.ehlo("client.example")
            smtp.starttls(context=lab.client_context())
            try:
                smtp.ehlo("client.example")
            except (ssl.SSLError, OSError, smtplib.SMTPException) as exc:
                return type(exc).__name__
        return "no error"

    assert await asyncio.to_thread(client) != "no error"
    await lab.wait_for("starttls_disrupted")
    assert lab.of("starttls_disrupted")[0]["stage"] == "session"
    assert [c["line"] for c in lab.of("command") if c["tls"]] == ["ehlo client.example"]


async def test_smtplib_mx_relay_refused_own_domain_accepted(lab: Lab) -> None:
    def client() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", lab.port("mx"), timeout=5) as smtp:
            return smtp.sendmail("a@b.example", ["victim@example.org", f"{USER}@{DOMAIN}"], MESSAGE)

    refused = await asyncio.to_thread(client)
    assert list(refused) == ["victim@example.org"] and refused["victim@example.org"][0] == 550
    await lab.wait_for("message_received")
    assert lab.of("message_received")[0]["recipients"] == 1


async def test_smtplib_submission_requires_auth(lab: Lab) -> None:
    def client() -> int:
        with smtplib.SMTP("127.0.0.1", lab.port("submission"), timeout=5) as smtp:
            try:
                smtp.sendmail("a@b.example", ["x@example.org"], MESSAGE)
            except smtplib.SMTPSenderRefused as exc:
                return exc.smtp_code
        return 0

    assert await asyncio.to_thread(client) == 530


# --- swaks and curl ------------------------------------------------------------------------


async def run(*argv: str, stdin: bytes = b"", timeout: float = 20.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def swaks_argv(lab: Lab, *extra: str) -> list[str]:
    swaks = require_tool("swaks")
    return [
        swaks,
        "--server",
        "127.0.0.1",
        "--port",
        str(lab.port("submission")),
        "--from",
        "a@b.example",
        "--to",
        "x@example.org",
        "--auth-user",
        USER,
        "--auth-password",
        CANARY,
        "--timeout",
        "10",
        "--hide-all",
        *extra,
    ]


@pytest.mark.system
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_swaks_baseline_starttls_auth_and_message(lab: Lab, mechanism: str) -> None:
    code, out = await run(*swaks_argv(lab, "--tls", "--auth", mechanism))
    assert code == 0, out
    await lab.wait_for("message_received")
    assert auths(lab) == [(mechanism, True, False, "success")]
    assert [r["kind"] for r in lab.of("client_identified")] == ["ehlo", "ehlo"]
    lab.assert_no_secret()


@pytest.mark.system
async def test_swaks_optional_tls_under_t1_downgrades(lab: Lab) -> None:
    lab.testcase = "t1"
    code, out = await run(*swaks_argv(lab, "--tls-optional", "--auth", "LOGIN"))
    assert code == 0, out
    await lab.wait_for("auth")
    assert auths(lab) == [("LOGIN", True, True, "success")]
    lab.assert_no_secret()


@pytest.mark.system
async def test_swaks_required_tls_under_t3_gives_up_without_auth(lab: Lab) -> None:
    lab.testcase = "t3"
    code, _ = await run(*swaks_argv(lab, "--tls", "--auth", "PLAIN"))
    assert code != 0
    await lab.wait_for("connection_closed")
    assert lab.of("auth") == []
    assert lab.of("starttls_refused")[0]["reason"] == "testcase"


def curl_argv(lab: Lab, ssl_flag: str) -> list[str]:
    curl = require_tool("curl")
    assert lab.certs.ca is not None
    port = lab.port("submission")
    return [
        curl,
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--url",
        f"smtp://localhost:{port}",
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        ssl_flag,
        "--cacert",
        str(lab.certs.ca),
        "--mail-from",
        "a@b.example",
        "--mail-rcpt",
        "x@example.org",
        "--user",
        f"{USER}:{CANARY}",
        "--upload-file",
        "-",
    ]


@pytest.mark.system
async def test_curl_ssl_reqd_baseline(lab: Lab) -> None:
    code, out = await run(*curl_argv(lab, "--ssl-reqd"), stdin=MESSAGE)
    assert code == 0, out
    await lab.wait_for("message_received")
    assert [(a["tls"], a["outcome"]) for a in lab.of("auth")] == [(True, "success")]
    assert lab.of("message_received")[0]["nbytes"] == len(MESSAGE)
    lab.assert_no_secret()


@pytest.mark.system
async def test_curl_ssl_reqd_under_t2_never_sends_credentials(lab: Lab) -> None:
    lab.testcase = "t2"
    code, _ = await run(*curl_argv(lab, "--ssl-reqd"), stdin=MESSAGE)
    assert code != 0
    await lab.wait_for("connection_closed")
    assert lab.of("starttls_disrupted")[0]["stage"] == "handshake"
    assert [a for a in lab.of("auth") if a["secret_in_clear"]] == []
