"""Hostile and broken servers never crash the probe: every port ends in a clear status."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mailtls.probe import probe_host
from mailtls.probe.conn import resolve
from mailtls.probe.targets import target

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def scripted(chunks: list[bytes], then_read: bool = True) -> Behaviour:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if then_read:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(4096), 0.5)

    return run


RNG = random.Random(20261129)
BEHAVIOURS: dict[str, Behaviour] = {
    "close-at-once": scripted([]),
    "binary-garbage": scripted([bytes(RNG.randrange(256) for _ in range(3000))]),
    "endless-line": scripted([b"220 " + b"A" * 9000]),
    "endless-continuation": scripted([b"220-x\r\n" * 400]),
    "not-digits": scripted([b"\xb2\xb2\xb2 hello\r\n".decode("latin-1").encode("utf-8")]),
    "greeting-then-close": scripted([b"220 ok\r\n"], then_read=False),
    "ehlo-garbage": scripted([b"220 ok\r\n", b"250-\x00\x01\x02\r\n250 STARTTLS\r\n", b"\xff\r\n"]),
    "starttls-then-garbage": scripted(
        [b"220 ok\r\n", b"250-x\r\n250 STARTTLS\r\n", b"220 go\r\n", b"HTTP/1.1 400 nope\r\n"]
    ),
    "imap-bye": scripted([b"* BYE go away\r\n"]),
    "pop3-err": scripted([b"-ERR no\r\n"]),
}


@contextlib.asynccontextmanager
async def server(behaviour: Behaviour) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await behaviour(reader, writer)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
@pytest.mark.parametrize("kind", ["submission", "imap", "pop3s"])
async def test_broken_server(name: str, kind: str) -> None:
    async with server(BEHAVIOURS[name]) as port:
        result = await asyncio.to_thread(
            probe_host, "127.0.0.1", [target(kind, port)], 2.0, None, True
        )
    (p,) = result.ports
    assert p.status in ("ok", "refused", "timeout", "tls", "closed", "protocol", "network")
    if p.status != "ok":
        assert p.error and "\n" not in p.error
    assert all("\x1b" not in line and "\x00" not in line for line in p.transcript)


def test_resolve_one_address_per_family() -> None:
    assert resolve("127.0.0.1") == [(socket.AF_INET, "127.0.0.1")]
    assert resolve("::1") == [(socket.AF_INET6, "::1")]
    assert resolve("[::1]") == [(socket.AF_INET6, "::1")]  # bracketed, as in URLs
