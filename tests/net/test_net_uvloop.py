"""The shell on uvloop (the production loop when installed): the same flows as on asyncio."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from net_testkit import Journal, LineClient, client_context, make_settings, start_server

from mailtls.net.pki import ensure_certificates

uvloop = pytest.importorskip("uvloop")


def test_starttls_delay_reset_and_implicit_tls_on_uvloop(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    ctx = client_context(ensure_certificates(settings))
    journal = Journal()

    def client(port: int, tls_port: int) -> list[bytes]:
        c = LineClient(port)
        seen = [c.line(), c.cmd(b"STARTTLS")]
        c.starttls(ctx)
        seen += [c.line(), c.cmd(b"SLOW"), c.line(), c.cmd(b"QUIT")]
        c.close()
        r = LineClient(port)
        r.line()
        r.send(b"RESET\r\n")
        time.sleep(0.1)
        try:
            seen.append(r.sock.recv(10))
        except ConnectionResetError:
            seen.append(b"<reset>")
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        seen.append(tls.recv(100))
        tls.close()
        return seen

    async def scenario() -> list[bytes]:
        server = await start_server(settings, journal)
        try:
            return await asyncio.to_thread(client, server.port("mini"), server.port("mini_tls"))
        finally:
            await server.close()

    seen = uvloop.run(scenario())
    assert seen == [
        b"220 mini ready",
        b"220 go ahead",
        b"220 tls ok",
        b"250 first",
        b"250 second",
        b"221 bye",
        b"<reset>",
        b"220 mini ready\r\n",
    ]
    assert len(journal.of("connection_opened")) == 3
