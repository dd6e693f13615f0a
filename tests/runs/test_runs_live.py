"""The run manager behind the real mail servers: stdlib clients over loopback with real TLS.

The manager binds, authenticates, activates and judges while ``MailServer`` runs the IMAP and
POP3 cores; each test uses its own 127.0.0.x source addresses as the "visitor" and "phone".
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import poplib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailtls.net.listeners import MailServer
from mailtls.net.pki import ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols.base import PortRole
from mailtls.protocols.imap import ImapCore
from mailtls.protocols.pop3 import Pop3Core
from mailtls.runs.keys import load_or_create_key
from mailtls.runs.manager import RunManager
from mailtls.runs.model import Run
from mailtls.settings import Endpoints, Settings
from mailtls.store import Store

SPECS = [
    ListenerSpec("imap", "imap", PortRole.IMAP, 0, False),
    ListenerSpec("imap_tls", "imap", PortRole.IMAP, 0, True),
    ListenerSpec("pop3", "pop3", PortRole.POP3, 0, False),
]


class Live:
    def __init__(self, settings: Settings, store: Store, manager: RunManager, server: MailServer):
        self.settings, self.store, self.manager, self.server = settings, store, manager, server
        certs = ensure_certificates(settings)
        assert certs.ca is not None
        self.tls = ssl.create_default_context(cafile=str(certs.ca))

    def user(self, run: Run) -> str:
        return self.manager.account_username(run)

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    # address binding (the fall-back): tests/net/test_net_endpoints.py covers a run's own
    settings = Settings(
        data_dir=tmp_path, listen=("127.0.0.1",), endpoints=Endpoints(enabled=False)
    )
    store = Store(tmp_path, fsync=False)
    manager = RunManager(store, settings, load_or_create_key(tmp_path))
    manager.load()
    store.subscribe(manager.on_record)
    server = MailServer(
        settings,
        certs=ensure_certificates(settings),
        binder=manager.binder,
        authenticator=manager.authenticate,
        sink=store.append,  # type: ignore[arg-type]  # returns the record; the shell ignores it
        core_factories={"imap": ImapCore, "pop3": Pop3Core},
        specs=SPECS,
    )
    loop = asyncio.get_running_loop()
    # kick after the event being handled (the activating login gets its reply first)
    manager.set_kicker(lambda run_id, why: loop.call_soon_threadsafe(server.kick_run, run_id, why))
    await server.start()
    try:
        yield Live(settings, store, manager, server)
    finally:
        await server.close(grace=0.5)
        store.close()


class Imap(imaplib.IMAP4):
    """imaplib from a chosen source address."""

    def __init__(self, port: int, source: str) -> None:
        self._source = source
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


class Pop3(poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self._source = source
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def imap_session(live: Live, source: str, run: Run, *, strict: bool) -> str:
    """STARTTLS when advertised (``strict``: or give up), then LOGIN. Returns what happened."""
    client = Imap(live.server.port("imap"), source)
    try:
        if "STARTTLS" in client.capabilities:
            client.starttls(ssl_context=live.tls)
        elif strict:
            return "gave up"
        client.login(live.user(run), live.manager.password_for(run))
        return "logged in"
    finally:
        with contextlib.suppress(imaplib.IMAP4.abort, OSError):
            client.logout()


async def test_t1_opportunistic_fails_strict_does_not(live: Live) -> None:
    weak = live.manager.create_run(steps=[("immediate", "t1")])
    strong = live.manager.create_run(steps=[("immediate", "t1")])
    live.manager.start_step(weak.id, 1, ["127.0.0.2"])
    live.manager.start_step(strong.id, 1, ["127.0.0.3"])

    outcome = await asyncio.to_thread(imap_session, live, "127.0.0.2", weak, strict=False)
    assert outcome == "logged in"
    outcome = await asyncio.to_thread(imap_session, live, "127.0.0.3", strong, strict=True)
    assert outcome == "gave up"

    weak_result = live.manager.finish(weak.id, 1)
    assert (weak_result.verdict, weak_result.reason) == ("FAIL", "plaintext_auth")
    strong_result = live.manager.finish(strong.id, 1)
    assert (strong_result.verdict, strong_result.reason) == (
        "INCONCLUSIVE",
        "aborted_after_downgrade",
    )
    # the weak client's login is evidence of the weak run only
    auths = live.store.query(types=["auth"])
    assert [(a["run"], a["code"], a["tls"]) for a in auths] == [(weak.id, weak.code, False)]


async def test_two_phase_activation_kicks_and_the_next_connection_is_attacked(
    live: Live,
) -> None:
    run = live.manager.create_run(steps=[("two_phase", "t1")])
    live.manager.start_step(run.id, 1, ["127.0.0.4"])
    step = run.step(1)

    # first session: STARTTLS is offered (baseline before activation), login inside TLS
    client = await asyncio.to_thread(Imap, live.server.port("imap"), "127.0.0.4")
    assert "STARTTLS" in client.capabilities
    await asyncio.to_thread(client.starttls, live.tls)
    typ, _ = await asyncio.to_thread(client.login, live.user(run), live.manager.password_for(run))
    assert typ == "OK"
    assert step.activated is not None
    await live.wait_for(lambda: live.store.query(run=run.id, types=["session_kicked"]))
    kicked = live.store.query(run=run.id, types=["session_kicked"])
    assert [k["reason"] for k in kicked] == ["activated"]
    client.shutdown()

    # the client comes back: now under t1, STARTTLS is gone; an opportunistic client leaks
    outcome = await asyncio.to_thread(imap_session, live, "127.0.0.4", run, strict=False)
    assert outcome == "logged in"
    result = live.manager.finish(run.id, 1)
    assert (result.verdict, result.reason) == ("FAIL", "plaintext_auth")
    assert {"plaintext_auth", "tls_auth"} <= result.tags()


async def test_a_two_phase_step_never_activated_is_not_fail(live: Live) -> None:
    run = live.manager.create_run(steps=[("two_phase", "t1")])
    live.manager.start_step(run.id, 1, ["127.0.0.7"])
    client = await asyncio.to_thread(Imap, live.server.port("imap"), "127.0.0.7")
    await asyncio.to_thread(client.logout)
    result = live.manager.finish(run.id, 1)
    assert (result.verdict, result.reason) == ("INCONCLUSIVE", "not_exercised")


def pop3_tls_login(live: Live, source: str, run: Run) -> None:
    client = Pop3(live.server.port("pop3"), source)
    try:
        client.stls(live.tls)
        client.user(live.user(run))
        client.pass_(live.manager.password_for(run))
    finally:
        client.quit()


async def test_the_phones_address_is_bound_after_its_login(live: Live) -> None:
    run = live.manager.create_run(steps=[("immediate", "t4"), ("immediate", "t3")])
    live.manager.start_step(run.id, 1, ["127.0.0.5"])  # the browser
    assert live.manager.binder("127.0.0.6") is None
    live.manager.finish(run.id, 1)
    live.manager.start_step(run.id, 2, ["127.0.0.5"])
    # the phone is elsewhere: its session is unbound (baseline), its login is a mismatch
    await asyncio.to_thread(pop3_tls_login, live, "127.0.0.6", run)
    bound = live.manager.binder("127.0.0.6")
    assert bound is not None and (bound.step, bound.testcase, bound.source) == (
        2,
        "t3",
        "login_address",
    )
    auth = live.store.query(code=run.code, types=["auth"])
    assert [(a["binding"], a["tls"], a["outcome"]) for a in auth] == [(None, True, "success")]
    result = live.manager.finish(run.id, 2)
    assert (result.verdict, result.reason) == ("INCONCLUSIVE", "binding_mismatch")

    # within the grace period a new session from the phone still gets t3: STLS is refused
    def stls_reply() -> str:
        sock = socket.create_connection(
            ("127.0.0.1", live.server.port("pop3")), 10, source_address=("127.0.0.6", 0)
        )
        with sock, sock.makefile("rb") as lines:
            lines.readline()  # greeting
            sock.sendall(b"STLS\r\n")
            return lines.readline(512).decode()

    assert "TLS not available" in await asyncio.to_thread(stls_reply)
    opened = live.store.query(run=run.id, step=2, types=["connection_opened"])
    assert [(o["client"], o["testcase"], o["binding"]["source"]) for o in opened] == [
        ("127.0.0.6", "t3", "login_address")
    ]


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything here stays on 127.0.0.0/8."""
    real = socket.create_connection

    def guarded(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        assert str(address[0]).startswith("127."), address
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
