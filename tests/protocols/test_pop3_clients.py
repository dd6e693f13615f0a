"""The POP3 core behind the real I/O shell on 127.0.0.1, driven by real clients: the standard
library's ``poplib`` (in a thread) and Debian's ``fetchmail``.

Each test starts a ``MailServer`` with a STLS listener and an implicit-TLS listener whose
connections are all bound to one test case, and reads what the journal recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import poplib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import require_tool
from mailtls.net.listeners import MailServer
from mailtls.net.pki import ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols import pop3
from mailtls.protocols.base import AuthDecision, Credential, PortRole
from mailtls.protocols.pop3 import Pop3Core
from mailtls.runs.proof import presents
from mailtls.runs.types import Binding
from mailtls.settings import Settings

ACCOUNT = "test-abc123"
PASSWORD = "Canary-Pa55w0rd-xyzzy"
T = TypeVar("T")


def authenticator(credential: Credential) -> AuthDecision:
    if credential.username.lower().partition("@")[0] == ACCOUNT:
        proof = presents(PASSWORD, credential)
        return AuthDecision(proof, ACCOUNT, "abc123", proof)
    return AuthDecision(False, "h:unknown", None)


@dataclass
class Lab:
    server: MailServer
    records: list[dict[str, Any]]
    ca: Path

    @property
    def port(self) -> int:
        return self.server.port("pop3")

    @property
    def tls_port(self) -> int:
        return self.server.port("pop3_tls")

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    async def settle(self, type_: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until the journal holds ``count`` records of a type (the server runs async)."""
        async with asyncio.timeout(timeout):
            while len(self.of(type_)) < count:
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def lab(tmp_path: Path, testcase: str) -> AsyncIterator[Lab]:
    settings = Settings(data_dir=tmp_path)
    settings = replace(
        settings,
        limits=replace(settings.limits, auth_fail_delay=0.05, disrupted_seconds=1.0),
        tls=replace(settings.tls, blocked_seconds=1.0),
    )
    certs = ensure_certificates(settings)
    assert certs.ca is not None
    records: list[dict[str, Any]] = []

    def binder(ip: str, local: tuple[str, int]) -> Binding:
        return Binding("run1", 1, testcase, "immediate", "address", True)

    server = MailServer(
        settings,
        certs=certs,
        binder=binder,
        authenticator=authenticator,
        sink=records.append,
        core_factories={"pop3": Pop3Core},
        specs=[
            ListenerSpec("pop3", "pop3", PortRole.POP3, 0, False),
            ListenerSpec("pop3_tls", "pop3", PortRole.POP3, 0, True),
        ],
    )
    await server.start()
    try:
        yield Lab(server, records, certs.ca)
    finally:
        await server.close(grace=0.5)


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.wait_for(asyncio.to_thread(fn), timeout=20)


def login_and_read(client: poplib.POP3) -> tuple[int, int]:
    client.user(ACCOUNT)
    client.pass_(PASSWORD)
    stat = client.stat()
    client.uidl()
    client.list()
    client.quit()
    return stat


def assert_no_secret(records: list[dict[str, Any]]) -> None:
    assert PASSWORD not in repr(records)


async def test_poplib_baseline_stls_login(tmp_path: Path) -> None:
    async with lab(tmp_path, "baseline") as lab_:

        def client() -> tuple[Any, tuple[int, int]]:
            c = poplib.POP3("127.0.0.1", lab_.port, timeout=5)
            caps = c.capa()
            c.stls(lab_.context())
            return caps, login_and_read(c)

        caps, stat = await in_thread(client)
        assert "STLS" in caps and caps["SASL"] == ["PLAIN", "LOGIN"]
        assert stat == (0, 0)
        await lab_.settle("connection_closed")
        (auth,) = lab_.of("auth")
        assert (auth["tls"], auth["secret_in_clear"], auth["outcome"]) == (True, False, "success")
        assert lab_.of("tls_established")[0]["implicit"] is False
        assert_no_secret(lab_.records)


async def test_poplib_implicit_tls(tmp_path: Path) -> None:
    async with lab(tmp_path, "baseline") as lab_:

        def client() -> tuple[Any, tuple[int, int]]:
            c = poplib.POP3_SSL("127.0.0.1", lab_.tls_port, context=lab_.context(), timeout=5)
            return c.capa(), login_and_read(c)

        caps, _stat = await in_thread(client)
        assert "STLS" not in caps and caps["SASL"] == ["PLAIN", "LOGIN", "CRAM-MD5"]
        await lab_.settle("connection_closed")
        assert lab_.of("auth")[0]["secret_in_clear"] is False
        (started,) = lab_.of("tls_established")  # recorded once, by the core
        assert started["implicit"] is True


async def test_poplib_under_t1_sees_no_stls_and_a_blind_stls_fails(tmp_path: Path) -> None:
    async with lab(tmp_path, "t1") as lab_:

        def client() -> tuple[Any, str]:
            c = poplib.POP3("127.0.0.1", lab_.port, timeout=5)
            caps = c.capa()
            with pytest.raises(poplib.error_proto, match="not supported by server"):
                c.stls(lab_.context())  # poplib checks CAPA; a blind STLS is sent by hand
            with pytest.raises(poplib.error_proto) as refused:
                c._shortcmd("STLS")  # type: ignore[attr-defined]
            login_and_read(c)  # a client that goes on anyway sends the password in the clear
            return caps, str(refused.value)

        caps, refusal = await in_thread(client)
        assert "STLS" not in caps
        assert pop3.ERR_STLS_NOT_ADVERTISED in refusal
        await lab_.settle("auth")
        assert lab_.of("starttls_refused")[0]["reason"] == "not_advertised"
        assert lab_.of("auth")[0]["secret_in_clear"] is True
        assert_no_secret(lab_.records)


async def test_poplib_under_t2_fails_the_handshake(tmp_path: Path) -> None:
    async with lab(tmp_path, "t2") as lab_:

        def client() -> None:
            c = poplib.POP3("127.0.0.1", lab_.port, timeout=5)
            with pytest.raises(ssl.SSLError):
                c.stls(lab_.context())
            with contextlib.suppress(OSError):
                c.close()

        await in_thread(client)
        await lab_.settle("starttls_disrupted")
        disrupted = lab_.of("starttls_disrupted")[0]
        assert disrupted["stage"] == "handshake" and disrupted["looks_like_tls"] is True
        assert disrupted["client_hello_bytes"] > 0


async def test_poplib_under_t3_is_refused_then_silence_closes(tmp_path: Path) -> None:
    async with lab(tmp_path, "t3") as lab_:

        def client() -> str:
            c = poplib.POP3("127.0.0.1", lab_.port, timeout=5)
            with pytest.raises(poplib.error_proto) as refused:
                c.stls(lab_.context())
            c.close()
            return str(refused.value)

        assert pop3.ERR_TLS_TEMP in await in_thread(client)
        await lab_.settle("connection_closed")
        assert lab_.of("starttls_refused")[0]["reason"] == "testcase"


async def test_poplib_under_t4_gets_a_cleartext_line_inside_tls(tmp_path: Path) -> None:
    async with lab(tmp_path, "t4") as lab_:

        def client() -> None:
            c = poplib.POP3("127.0.0.1", lab_.port, timeout=5)
            c.stls(lab_.context())
            with pytest.raises((ssl.SSLError, poplib.error_proto, OSError)):
                c.user(ACCOUNT)
            with contextlib.suppress(OSError):
                c.close()

        await in_thread(client)
        await lab_.settle("starttls_disrupted")
        assert lab_.of("starttls_disrupted")[0]["stage"] == "session"
        user = [r for r in lab_.of("command") if r["line"].startswith("USER")]
        assert user and user[0]["tls"] is True


def fetchmail_rc(tmp_path: Path, lab_: Lab, ssl_opts: str) -> Path:
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll localhost protocol POP3 port {lab_.port} timeout 10\n"
        f'  user "{ACCOUNT}" password "{PASSWORD}" is "nobody" here\n'
        f'  {ssl_opts} mda "/bin/true"\n'
    )
    rc.chmod(0o600)
    return rc


async def run_fetchmail(tmp_path: Path, rc: Path) -> tuple[int, str]:
    fetchmail = require_tool("fetchmail")
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = await asyncio.create_subprocess_exec(
        fetchmail, "-v", "--nosyslog", "--nodetach", "-f", str(rc),
        "--pidfile", str(tmp_path / "fetchmail.pid"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_fetchmail_uses_stls_under_baseline(tmp_path: Path) -> None:
    async with lab(tmp_path, "baseline") as lab_:
        opts = f'sslproto "tls1.2+" sslcertck sslcertfile "{lab_.ca}"'
        code, output = await run_fetchmail(tmp_path, fetchmail_rc(tmp_path, lab_, opts))
        assert code == 1, output  # 1: no mail
        await lab_.settle("auth")
        (auth,) = lab_.of("auth")
        assert (auth["tls"], auth["secret_in_clear"], auth["outcome"]) == (True, False, "success")
        assert lab_.of("capabilities_sent")[0]["starttls_offered"] is True
        assert_no_secret(lab_.records)


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_fetchmail_that_requires_tls_stops_under_t1(tmp_path: Path) -> None:
    async with lab(tmp_path, "t1") as lab_:
        opts = f'sslproto "tls1.2+" sslcertck sslcertfile "{lab_.ca}"'
        code, output = await run_fetchmail(tmp_path, fetchmail_rc(tmp_path, lab_, opts))
        assert code not in (0, 1), output
        await lab_.settle("connection_closed")
        assert not [r for r in lab_.of("auth") if r["secret_in_clear"]]
        assert_no_secret(lab_.records)


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_fetchmail_gives_up_when_stls_is_refused_under_t3(tmp_path: Path) -> None:
    """fetchmail 6.4 treats a refused STLS as fatal even without ``sslcertck``: no login."""
    async with lab(tmp_path, "t3") as lab_:
        code, output = await run_fetchmail(tmp_path, fetchmail_rc(tmp_path, lab_, ""))
        assert code == 2, output  # 2: socket/TLS error
        await lab_.settle("connection_closed")
        assert lab_.of("starttls_refused")[0]["reason"] == "testcase"
        assert not lab_.of("auth") and not lab_.of("username_sent")


@pytest.mark.system
@pytest.mark.timeout(60)
async def test_fetchmail_sends_a_blind_stls_under_t1_and_gives_up(tmp_path: Path) -> None:
    """fetchmail 6.4 with no TLS options sends STLS although CAPA does not list it: the core
    refuses it (whatever the test case), and fetchmail stops without logging in."""
    async with lab(tmp_path, "t1") as lab_:
        code, output = await run_fetchmail(tmp_path, fetchmail_rc(tmp_path, lab_, ""))
        assert code == 2, output
        assert pop3.ERR_STLS_NOT_ADVERTISED in output
        await lab_.settle("connection_closed")
        assert lab_.of("starttls_requested")[0]["advertised"] is False
        assert lab_.of("starttls_refused")[0]["reason"] == "not_advertised"
        assert not lab_.of("auth")


def getmail_rc(tmp_path: Path, lab_: Lab) -> Path:
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        f"server = 127.0.0.1\nport = {lab_.tls_port}\n"
        f"username = {ACCOUNT}\npassword = {PASSWORD}\n"
        f"ca_certs = {lab_.ca}\ntimeout = 5\n"
        "[destination]\ntype = MDA_external\npath = /bin/true\n"
        "[options]\nread_all = false\ndelete = false\nverbose = 2\n"
    )
    rc.chmod(0o600)
    return rc


async def run_getmail(tmp_path: Path, rc: Path) -> tuple[int, str]:
    getmail = require_tool("getmail")
    home = tmp_path / "getmail"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = await asyncio.create_subprocess_exec(
        getmail, "--rcfile", str(rc), "--getmaildir", str(home),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.system
@pytest.mark.timeout(60)
@pytest.mark.parametrize("testcase", ["baseline", "t1", "t4"])
async def test_getmail_on_the_implicit_tls_port(tmp_path: Path, testcase: str) -> None:
    """getmail6 speaks POP3 over implicit TLS only: baseline logs in inside TLS; t1 (port
    blocked) and t4 (cleartext line inside TLS) stop it before any credential is sent."""
    async with lab(tmp_path, testcase) as lab_:
        code, output = await run_getmail(tmp_path, getmail_rc(tmp_path, lab_))
        await lab_.settle("connection_closed")
        if testcase == "baseline":
            assert code == 0, output
            (auth,) = lab_.of("auth")
            assert (auth["tls"], auth["outcome"]) == (True, "success")
        else:
            assert code != 0, output
            assert not lab_.of("auth")
        if testcase == "t1":
            assert lab_.of("implicit_tls_blocked")[0]["style"] == "silence"
        if testcase == "t4":
            assert lab_.of("starttls_disrupted")[0]["stage"] == "session"
        assert_no_secret(lab_.records)
