"""The mail server: implicit-TLS blocking and acceptance, limits, kicks, reload, many idle
connections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import socket
import ssl
import time
from pathlib import Path

import pytest
from net_testkit import (
    Journal,
    LineClient,
    client_context,
    make_settings,
    start_server,
)

from mailtls.net.listeners import raise_nofile_limit, standard_specs
from mailtls.net.pki import ensure_certificates
from mailtls.protocols.base import PortRole
from mailtls.runs.types import Binding
from mailtls.settings import Ports
from mailtls.testcases import BlockStyle


def bind_all(testcase: str, run: str = "run1", active: bool = True):  # type: ignore[no-untyped-def]
    def binder(ip: str, local: tuple[str, int]) -> Binding:
        return Binding(run, 3, testcase, "immediate", "address", active)

    return binder


def test_standard_specs_follow_the_ports_and_skip_disabled() -> None:
    specs = standard_specs(Ports(smtp_mx=25, smtp_submission=587, smtp_tls=0, pop3=0))
    by_name = {s.name: s for s in specs}
    assert "smtp_tls" not in by_name and "pop3" not in by_name
    assert by_name["smtp_mx"].role is PortRole.MX and not by_name["smtp_mx"].implicit_tls
    assert by_name["smtp_submission"].role is PortRole.SUBMISSION
    assert by_name["imap_tls"].implicit_tls and by_name["imap_tls"].protocol == "imap"
    assert by_name["pop3_tls"].port == Ports().pop3_tls


def test_raise_nofile_limit_reaches_the_hard_limit() -> None:
    soft = raise_nofile_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert soft == hard or hard == resource.RLIM_INFINITY


async def test_implicit_tls_accepted_handshakes_first(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    ctx = client_context(ensure_certificates(settings))

    def client(hostname: str) -> list[bytes]:
        raw = socket.create_connection(("127.0.0.1", server.port("mini_tls")), timeout=5)
        c = LineClient.__new__(LineClient)
        c.sock, c.buf = ctx.wrap_socket(raw, server_hostname=hostname), b""
        seen = [c.line(), c.cmd(b"QUIT")]
        c.close()
        return seen

    try:
        assert await asyncio.to_thread(client, "localhost") == [b"220 mini ready", b"221 bye"]
        assert await asyncio.to_thread(client, "127.0.0.1") == [b"220 mini ready", b"221 bye"]
        opened = journal.of("connection_opened")[0]
        assert opened["security"] == "tls"
        await journal.wait_for("connection_closed", 2)
        assert journal.of("implicit_tls_blocked") == []
    finally:
        await server.close()


def _blocked_client(port: int, ctx: ssl.SSLContext, handshake: bool) -> tuple[str, float]:
    """What a client sees: a TLS handshake attempt, or waiting for a first byte."""
    t0 = time.monotonic()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        if not handshake:
            data = raw.recv(100)
            return ("eof" if data == b"" else "data"), time.monotonic() - t0
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        data = tls.recv(100)
    except ConnectionResetError:
        return "reset", time.monotonic() - t0
    except (ssl.SSLError, OSError) as exc:
        return f"failed: {type(exc).__name__}", time.monotonic() - t0
    return ("closed after handshake" if data == b"" else "data"), time.monotonic() - t0


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        (BlockStyle.SILENCE, "eof"),
        (BlockStyle.CLOSE, "eof"),
        (BlockStyle.RESET, "reset"),
        (BlockStyle.HANDSHAKE_THEN_CLOSE, "closed after handshake"),
    ],
)
async def test_implicit_tls_blocked_in_each_style(
    tmp_path: Path, style: BlockStyle, expected: str
) -> None:
    journal = Journal()
    settings = make_settings(tmp_path, tls={"blocked_style": style, "blocked_seconds": 0.5})
    server = await start_server(settings, journal, binder=bind_all("t1"))
    ctx = client_context(ensure_certificates(settings))
    handshake = style is BlockStyle.HANDSHAKE_THEN_CLOSE
    try:
        outcome, elapsed = await asyncio.to_thread(
            _blocked_client, server.port("mini_tls"), ctx, handshake
        )
        assert outcome == expected
        if style is BlockStyle.SILENCE:
            assert 0.4 < elapsed < 3  # silent until the bound, then closed
        else:
            assert elapsed < 0.4
        blocked = journal.of("implicit_tls_blocked")
        assert [b["style"] for b in blocked] == [str(style)]
        assert blocked[0]["run"] == "run1" and blocked[0]["step"] == 3
        assert blocked[0]["binding"]["testcase"] == "t1"
        closed = await journal.wait_for("connection_closed")
        assert closed[0]["by"] == ("timeout" if style is BlockStyle.SILENCE else "server")
        assert journal.of("connection_opened")[0]["active"] is True
        if handshake:
            assert journal.of("tls_established")[0]["implicit"] is True
    finally:
        await server.close()


async def test_silently_blocked_port_discards_a_client_hello(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path, tls={"blocked_seconds": 0.3})
    server = await start_server(settings, journal, binder=bind_all("t2"))
    ctx = client_context(ensure_certificates(settings))

    def client() -> str:
        raw = socket.create_connection(("127.0.0.1", server.port("mini_tls")), timeout=5)
        try:
            ctx.wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, OSError) as exc:
            return type(exc).__name__
        return "handshake completed"

    try:
        assert await asyncio.to_thread(client) != "handshake completed"
        closed = await journal.wait_for("connection_closed")
        assert closed[0]["bytes_out"] == 0 and closed[0]["bytes_in"] > 0
    finally:
        await server.close()


async def test_inactive_binding_gets_baseline(tmp_path: Path) -> None:
    """A two_phase step before activation: the connection is honest (implicit TLS accepted)."""
    journal = Journal()
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal, binder=bind_all("t1", active=False))
    ctx = client_context(ensure_certificates(settings))

    def client() -> bytes:
        raw = socket.create_connection(("127.0.0.1", server.port("mini_tls")), timeout=5)
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        line = tls.recv(100)
        tls.close()
        return line

    try:
        assert await asyncio.to_thread(client) == b"220 mini ready\r\n"
        opened = journal.of("connection_opened")[0]
        assert opened["testcase"] == "baseline" and opened["active"] is False
        assert opened["run"] == "run1"
    finally:
        await server.close()


async def test_per_ip_limit_refuses_and_records(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path, connections={"per_ip": 3})
    server = await start_server(settings, journal)
    port = server.port("mini")

    def clients() -> tuple[list[bytes], bytes, bytes]:
        held = [LineClient(port) for _ in range(3)]
        greetings = [c.line() for c in held]
        extra = LineClient(port)
        try:
            refused = extra.sock.recv(100)
        except ConnectionResetError:
            refused = b""
        other = LineClient(port, source="127.0.0.2")  # another address is not limited
        other_line = other.line()
        for c in [*held, other]:
            c.close()
        return greetings, refused, other_line

    try:
        greetings, refused, other = await asyncio.to_thread(clients)
        assert greetings == [b"220 mini ready"] * 3
        assert refused == b""
        assert other == b"220 mini ready"
        refusals = journal.of("connection_refused")
        assert [r["reason"] for r in refusals] == ["per_ip_limit"]
        assert refusals[0]["client"] == "127.0.0.1"
        await journal.wait_for("connection_closed", 4)
        assert server.open_connections == 0
        # the address's count went back down: it may connect again
        again = await asyncio.to_thread(LineClient, port)
        assert await asyncio.to_thread(again.line) == b"220 mini ready"
        again.close()
    finally:
        await server.close()


async def test_exempt_network_skips_the_per_ip_limit(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path, connections={"per_ip": 1})
    server = await start_server(settings, journal, exempt=["127.0.0.0/8"])

    def clients() -> list[bytes]:
        held = [LineClient(server.port("mini")) for _ in range(3)]
        lines = [c.line() for c in held]
        for c in held:
            c.close()
        return lines

    try:
        assert await asyncio.to_thread(clients) == [b"220 mini ready"] * 3
        assert journal.of("connection_refused") == []
    finally:
        await server.close()


async def test_kick_run_closes_only_that_runs_connections(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path)

    def binder(ip: str, local: tuple[str, int]) -> Binding | None:
        if ip == "127.0.0.2":
            return Binding("runA", 1, "baseline", "immediate", "address", True)
        if ip == "127.0.0.3":
            return Binding("runB", 1, "baseline", "immediate", "address", True)
        return None

    server = await start_server(settings, journal, binder=binder)
    port = server.port("mini")
    try:
        a1, a2, b1, free = [
            await asyncio.to_thread(LineClient, port, source)
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.1")
        ]
        for c in (a1, a2, b1, free):
            assert await asyncio.to_thread(c.line) == b"220 mini ready"
        assert server.kick_run("runA", "step started") == 2
        assert await asyncio.to_thread(a1.read_eof) == b"421 kicked\r\n"
        assert await asyncio.to_thread(a2.read_eof) == b"421 kicked\r\n"
        assert await asyncio.to_thread(b1.cmd, b"STILL") == b"250 STILL"
        assert await asyncio.to_thread(free.cmd, b"HERE") == b"250 HERE"
        kicked = journal.of("session_kicked")
        assert {r["run"] for r in kicked} == {"runA"} and len(kicked) == 2
        closed = await journal.wait_for("connection_closed", 2)
        assert [r["by"] for r in closed] == ["kick", "kick"]
        assert server.kick_run("nope", "x") == 0
        for c in (a1, a2, b1, free):
            c.close()
    finally:
        await server.close()


async def test_close_kicks_everyone(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    c = await asyncio.to_thread(LineClient, server.port("mini"))
    await asyncio.to_thread(c.line)
    await server.close()
    assert await asyncio.to_thread(c.read_eof) == b"421 kicked\r\n"
    assert journal.of("session_kicked")[0]["reason"] == "server shutting down"
    c.close()


async def test_reload_tls_serves_the_new_certificate_to_new_connections(tmp_path: Path) -> None:
    journal = Journal()
    settings_a = make_settings(tmp_path / "a")
    settings_b = make_settings(tmp_path / "b")
    certs_a, certs_b = ensure_certificates(settings_a), ensure_certificates(settings_b)
    current = [certs_a]
    from mailtls.net.pki import server_ssl_context

    server = await start_server(
        settings_a,
        journal,
        ssl_context=lambda: server_ssl_context(current[0].cert, current[0].key),
    )

    def handshake(certs_ca: ssl.SSLContext) -> bool:
        raw = socket.create_connection(("127.0.0.1", server.port("mini_tls")), timeout=5)
        try:
            certs_ca.wrap_socket(raw, server_hostname="localhost").close()
            return True
        except ssl.SSLCertVerificationError:
            return False

    try:
        assert await asyncio.to_thread(handshake, client_context(certs_a))
        current[0] = certs_b
        server.reload_tls()
        assert not await asyncio.to_thread(handshake, client_context(certs_a))
        assert await asyncio.to_thread(handshake, client_context(certs_b))
        lines = server.addresses()
        assert any("mini_tls" in line and "implicit TLS" in line for line in lines)
    finally:
        await server.close()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(60)
async def test_a_thousand_idle_connections_stay_small(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path, connections={"per_ip": 0})
    server = await start_server(settings, journal)
    port = server.port("mini")
    n = 1000
    socks: list[socket.socket] = []
    try:
        gc.collect()
        before = _rss()
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            socks.append(s)
        await journal.wait_for("connection_opened", n, timeout=30)
        await asyncio.sleep(0.2)
        gc.collect()
        per_conn = (_rss() - before) / n
        # server objects + a client socket object each, in one process
        print(f"bytes per idle connection (server + client socket): {per_conn:.0f}")
        assert per_conn < 16 * 1024, per_conn
        c = await asyncio.to_thread(LineClient, port)
        assert await asyncio.to_thread(c.cmd, b"HI") in (b"220 mini ready", b"250 HI")
        c.close()
    finally:
        for s in socks:
            s.close()
        await server.close()


async def test_accept_rate_limit_refuses_the_excess(tmp_path: Path) -> None:
    journal = Journal()
    settings = make_settings(tmp_path, connections={"accept_rate": 2.0})
    server = await start_server(settings, journal)

    def clients() -> list[bytes]:
        out = []
        for _ in range(5):
            c = LineClient(server.port("mini"))
            try:
                out.append(c.line())
            except (EOFError, ConnectionResetError):
                out.append(b"")
            c.close()
        return out

    try:
        lines = await asyncio.to_thread(clients)
        assert lines.count(b"220 mini ready") == 2  # the bucket's burst, then refusals
        assert {r["reason"] for r in journal.of("connection_refused")} == {"accept_rate"}
    finally:
        await server.close()
