"""``tls_fallback`` in the connection shell, over real sockets and real TLS: the alert bytes,
the per-step attempts (bounded), a retry served at TLS 1.0, SCSV refused, garbage and a stalled
ClientHello instead of one."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from net_testkit import (
    Journal,
    LineClient,
    client_context,
    client_hello,
    make_settings,
    start_server,
)

from mailtls.net import listeners
from mailtls.net.connection import FALLBACK_ALERT
from mailtls.net.pki import ensure_certificates
from mailtls.runs.types import Binding

FALLBACK_BINDING = Binding("run-fb", 1, "tls_fallback", "immediate", "address", active=True)


def fallback_bound(ip: str, local: tuple[str, int]) -> Binding:
    return FALLBACK_BINDING


@pytest.fixture
def journal() -> Journal:
    return Journal()


def legacy(ctx: ssl.SSLContext) -> ssl.SSLContext:
    if not ssl.HAS_TLSv1:
        pytest.skip("not testable: the local OpenSSL has no TLS 1.0")
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1
    return ctx


def raw_attempt(port: int, payload: bytes) -> bytes:
    """STARTTLS, then ``payload`` raw; everything the server sends until it closes."""
    c = LineClient(port)
    c.line()
    assert c.cmd(b"STARTTLS") == b"220 go ahead"
    c.send(payload)
    rest = c.read_eof()
    c.close()
    return rest


def tls_attempt(port: int, ctx: ssl.SSLContext) -> str:
    c = LineClient(port)
    c.line()
    assert c.cmd(b"STARTTLS") == b"220 go ahead"
    try:
        c.starttls(ctx)
    except ssl.SSLError as exc:
        return f"refused: {exc.reason}"
    finally:
        version = c.sock.version() if isinstance(c.sock, ssl.SSLSocket) else None
    line = c.line()
    c.close()
    return f"{version} {line.decode()}"


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated")
async def test_alert_then_a_tls10_retry_is_served(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal, binder=fallback_bound)
    ctx = client_context(ensure_certificates(settings))
    port = server.port("mini")
    try:
        hello = client_hello(ctx)
        assert await asyncio.to_thread(raw_attempt, port, hello) == FALLBACK_ALERT
        again = await asyncio.to_thread(tls_attempt, port, ctx)  # the same offer: alerted
        assert again == "refused: SSLV3_ALERT_HANDSHAKE_FAILURE"
        retry = await asyncio.to_thread(tls_attempt, port, legacy(ctx))
        assert retry == "TLSv1 220 tls ok"
        offers = [
            (r["attempt"], r["highest"], r["fallback"], r["answer"])
            for r in journal.of("client_hello_offered")
        ]
        assert offers == [
            (1, "TLSv1.3", False, "alert"),
            (2, "TLSv1.3", False, "alert"),
            (3, "TLSv1", True, "served"),
        ]
        failed = [r["reason"] for r in journal.of("tls_failed")]
        assert failed == ["fallback_alert_sent"] * 2
    finally:
        await server.close()


@pytest.mark.timeout(30)
async def test_garbage_and_a_stalled_hello_fail_the_handshake(
    tmp_path: Path, journal: Journal
) -> None:
    settings = make_settings(tmp_path, tls={"handshake_seconds": 0.4})
    server = await start_server(settings, journal, binder=fallback_bound)
    port = server.port("mini")
    try:
        assert await asyncio.to_thread(raw_attempt, port, b"AUTH PLAIN x\r\n") != FALLBACK_ALERT
        t0 = time.monotonic()
        assert await asyncio.to_thread(raw_attempt, port, b"\x16\x03\x01\x01") == b""
        assert time.monotonic() - t0 < 3
        await journal.wait_for("tls_failed", 2)
        reasons = [r["reason"] for r in journal.of("tls_failed")]
        assert reasons == ["wrong_version_number", "handshake_timeout"], reasons
        assert journal.of("client_hello_offered") == []  # neither was a ClientHello
    finally:
        await server.close()


@pytest.mark.timeout(30)
async def test_attempts_are_kept_per_step_and_bounded(
    tmp_path: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listeners, "FALLBACK_KEYS", 2)
    settings = make_settings(tmp_path)
    steps = iter(range(1, 100))

    def next_step(ip: str, local: tuple[str, int]) -> Binding:  # each connection a new step
        return Binding("run-fb", next(steps), "tls_fallback", "immediate", "address", True)

    server = await start_server(settings, journal, binder=next_step)
    ctx = client_context(ensure_certificates(settings))
    try:
        for _ in range(4):
            await asyncio.to_thread(raw_attempt, server.port("mini"), client_hello(ctx))
        assert [r["attempt"] for r in journal.of("client_hello_offered")] == [1, 1, 1, 1]
        assert len(server._fallback) == 2  # the oldest steps were dropped
    finally:
        await server.close()
