"""The connection shell over real sockets and real TLS: STARTTLS, T2 reads, SendRaw, delays,
timers, records before replies, garbage."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest
from net_testkit import Journal, LineClient, client_context, make_settings, start_server

from mailtls.net.pki import ensure_certificates


@pytest.fixture
def journal() -> Journal:
    return Journal()


async def test_starttls_then_commands_inside_tls(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    ctx = client_context(ensure_certificates(settings))

    def client() -> list[bytes]:
        c = LineClient(server.port("mini"))
        seen = [c.line(), c.cmd(b"EHLO x"), c.cmd(b"STARTTLS")]
        c.starttls(ctx)
        seen += [c.line(), c.cmd(b"NOOP"), c.cmd(b"QUIT")]
        c.close()
        return seen

    try:
        seen = await asyncio.to_thread(client)
        assert seen == [
            b"220 mini ready",
            b"250 EHLO X",
            b"220 go ahead",
            b"220 tls ok",
            b"250 NOOP",
            b"221 bye",
        ]
        closed = (await journal.wait_for("connection_closed"))[0]
        assert closed["by"] == "server"
        started = journal.of("tls_established")[0]
        assert started["version"] in ("TLSv1.2", "TLSv1.3")
        assert started["tls"] == {"version": started["version"], "cipher": started["cipher"]}
        assert journal.of("connection_opened")[0]["tls"] is None
        # an observation's own ``tls`` field wins over the envelope's (the brief's ** order)
        assert [r["tls"] for r in journal.of("command")] == [False, False, True, True]
        opened = journal.of("connection_opened")[0]
        assert opened["security"] == "starttls" and opened["testcase"] == "baseline"
        assert opened["client"] == "127.0.0.1" and opened["port"] == server.port("mini")
        assert opened["listener"] == "mini" and opened["protocol"] == "mini"
        assert len({r["conn"] for r in journal.records}) == 1
    finally:
        await server.close()


async def test_bytes_pipelined_after_starttls_never_reach_tls(
    tmp_path: Path, journal: Journal
) -> None:
    """Command injection: a line sent in cleartext with STARTTLS must not be run inside TLS."""
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    ctx = client_context(ensure_certificates(settings))

    def client() -> list[bytes]:
        c = LineClient(server.port("mini"))
        c.line()
        c.send(b"STARTTLS\r\nINJECTED\r\n")
        first = c.line()
        c.starttls(ctx)
        seen = [first, c.line(), c.cmd(b"AFTER")]
        c.close()
        return seen

    try:
        assert await asyncio.to_thread(client) == [b"220 go ahead", b"220 tls ok", b"250 AFTER"]
        assert journal.of("pipelined_after_starttls")[0]["bytes_discarded"] == len(b"INJECTED\r\n")
        assert "INJECTED" not in [r["line"] for r in journal.of("command")]
    finally:
        await server.close()


async def test_records_reach_the_sink_before_the_reply_is_sent(
    tmp_path: Path, journal: Journal
) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    order: list[str] = []
    journal.hook = lambda r: order.append(f"record:{r['type']}")

    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port("mini"))
        await reader.readline()
        writer.write(b"PING\r\n")
        reply = await reader.readline()
        order.append(f"reply:{reply.decode().strip()}")
        writer.close()
        # the command record was handed over before the client could read the reply line
        assert order.index("record:command") < order.index("reply:250 PING")
    finally:
        await server.close()


async def test_send_with_delay_keeps_order_and_holds_later_commands(
    tmp_path: Path, journal: Journal
) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)

    def client() -> tuple[list[bytes], float]:
        c = LineClient(server.port("mini"))
        c.line()
        t0 = time.monotonic()
        c.send(b"SLOW\r\nNEXT\r\n")
        lines = [c.line(), c.line(), c.line()]
        c.close()
        return lines, time.monotonic() - t0

    try:
        lines, elapsed = await asyncio.to_thread(client)
        assert lines == [b"250 first", b"250 second", b"250 NEXT"]
        assert elapsed >= 0.28
        types = journal.types()
        between = types.index("protocol_error")
        assert types.index("command") < between  # SLOW's record, then the held one
        assert [r["line"] for r in journal.of("command")] == ["SLOW", "NEXT"]
    finally:
        await server.close()


async def test_send_raw_after_handshake_goes_outside_tls(tmp_path: Path, journal: Journal) -> None:
    """T4 shape: the reply to a command inside TLS is written as cleartext on the TCP socket."""
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    ctx = client_context(ensure_certificates(settings))

    def client() -> bytes:
        raw = socket.create_connection(("127.0.0.1", server.port("mini")), timeout=5)
        c = LineClient.__new__(LineClient)
        c.sock, c.buf = raw, b""
        c.line()
        c.cmd(b"STARTTLS")
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        c.sock = tls
        c.line()
        tls.sendall(b"RAW\r\n")
        # the next bytes on the TCP socket are cleartext, not a TLS record
        with pytest.raises(ssl.SSLError):
            tls.recv(100)
        raw.close()
        return b""

    try:
        await asyncio.to_thread(client)
        raw_records = journal.of("session_kicked")
        assert raw_records and raw_records[0]["tls"] is None  # recorded outside TLS
        closed = await journal.wait_for("connection_closed")
        assert closed[0]["by"] in ("client", "error")
    finally:
        await server.close()


async def test_send_raw_line_is_readable_in_cleartext(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    ctx = client_context(ensure_certificates(settings))

    def client() -> bytes:
        raw = socket.create_connection(("127.0.0.1", server.port("mini")), timeout=5)
        raw.recv(100)
        raw.sendall(b"STARTTLS\r\n")
        assert raw.recv(100) == b"220 go ahead\r\n"
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        # read the "220 tls ok" (and any session tickets) inside TLS
        got = b""
        while b"220 tls ok" not in got:
            incoming.write(raw.recv(65536))
            with contextlib.suppress(ssl.SSLWantReadError):
                got += obj.read(1000)
        obj.write(b"RAW\r\n")
        raw.sendall(outgoing.read())
        data = raw.recv(1000)
        raw.sendall(b"AUTH PLAIN in the clear\r\n")
        time.sleep(0.1)
        raw.close()
        return data

    try:
        assert await asyncio.to_thread(client) == b"454 raw outside tls\r\n"
        await journal.wait_for("connection_closed")
        after = journal.of("data_after_disruption")
        assert after and after[0]["nbytes"] == len(b"AUTH PLAIN in the clear\r\n")
    finally:
        await server.close()


# --- T2: ClientHello read by record header -----------------------------------------------------


def _t2_client(port: int, payload_parts: list[bytes], pause: float = 0.0) -> bytes:
    c = LineClient(port)
    c.line()
    assert c.cmd(b"HELLO") == b"220 go ahead"
    for part in payload_parts:
        c.sock.sendall(part)
        if pause:
            time.sleep(pause)
    reply = c.line()
    c.close()
    return reply


def _real_client_hello(ctx: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def test_t2_reads_a_real_client_hello(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    hello = _real_client_hello(client_context(ensure_certificates(settings)))
    try:
        reply = await asyncio.to_thread(_t2_client, server.port("mini"), [hello])
        assert reply == b"454 cleartext"
        event = journal.of("starttls_disrupted")[0]
        assert event["client_hello_bytes"] == len(hello) and event["looks_like_tls"] is True
        assert journal.of("tls_established") == []
    finally:
        await server.close()


async def test_t2_client_hello_split_across_segments(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    hello = _real_client_hello(client_context(ensure_certificates(settings)))
    parts = [hello[:2], hello[2:4], hello[4:9], hello[9:100], hello[100:]]
    try:
        reply = await asyncio.to_thread(_t2_client, server.port("mini"), parts, 0.05)
        assert reply == b"454 cleartext"
        event = journal.of("starttls_disrupted")[0]
        assert event["client_hello_bytes"] == len(hello) and event["looks_like_tls"] is True
    finally:
        await server.close()


async def test_t2_garbage_instead_of_client_hello_reaches_the_core(
    tmp_path: Path, journal: Journal
) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    try:
        reply = await asyncio.to_thread(_t2_client, server.port("mini"), [b"EHLO plain\r\n"])
        assert reply == b"454 cleartext"
        event = journal.of("starttls_disrupted")[0]
        assert event["client_hello_bytes"] == 0 and event["looks_like_tls"] is False
        await journal.wait_for("command", 2)
        assert journal.of("command")[-1]["line"] == "EHLO plain"  # plaintext still seen
    finally:
        await server.close()


async def test_t2_oversized_record_is_not_a_client_hello(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    header = b"\x16\x03\x01" + struct.pack("!H", 40000)
    try:
        reply = await asyncio.to_thread(
            _t2_client, server.port("mini"), [header + b"\x01" + b"\0" * 100]
        )
        assert reply == b"454 cleartext"
        event = journal.of("starttls_disrupted")[0]
        assert event["looks_like_tls"] is False and event["client_hello_bytes"] == 0
    finally:
        await server.close()


async def test_t2_silent_client_hits_the_deadline(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path, tls={"handshake_seconds": 0.3})
    server = await start_server(settings, journal)
    try:
        reply = await asyncio.to_thread(_t2_client, server.port("mini"), [b"\x16\x03"])
        assert reply == b"454 cleartext"
        event = journal.of("starttls_disrupted")[0]
        assert event["looks_like_tls"] is False and event["client_hello_bytes"] == 2
    finally:
        await server.close()


# --- deadlines ---------------------------------------------------------------------------------


async def test_stalled_handshake_hits_the_deadline(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path, tls={"handshake_seconds": 0.4})
    server = await start_server(settings, journal)

    def client() -> tuple[bytes, float]:
        c = LineClient(server.port("mini"))
        c.line()
        c.cmd(b"STARTTLS")
        t0 = time.monotonic()
        c.send(b"\x16\x03\x01\x00")  # the start of a record, then nothing
        rest = c.read_eof()
        return rest, time.monotonic() - t0

    try:
        rest, elapsed = await asyncio.to_thread(client)
        assert rest == b"" and 0.3 < elapsed < 3
        failed = journal.of("tls_failed")[0]
        assert failed["reason"] == "handshake_timeout"
        closed = await journal.wait_for("connection_closed")
        assert closed[0]["by"] == "timeout"
    finally:
        await server.close()


async def test_handshake_with_untrusted_certificate_fails_cleanly(
    tmp_path: Path, journal: Journal
) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    strict = ssl.create_default_context()  # system roots: our test CA is unknown

    def client() -> None:
        c = LineClient(server.port("mini"))
        c.line()
        c.cmd(b"STARTTLS")
        with pytest.raises(ssl.SSLCertVerificationError):
            c.starttls(strict)
        c.close()

    try:
        await asyncio.to_thread(client)
        failed = await journal.wait_for("tls_failed")
        assert "unknown_ca" in failed[0]["reason"] or failed[0]["reason"]
        await journal.wait_for("connection_closed")
    finally:
        await server.close()


async def test_slow_line_hits_the_line_deadline_while_others_are_served(
    tmp_path: Path, journal: Journal
) -> None:
    settings = make_settings(tmp_path, limits={"line_seconds": 1.5})
    server = await start_server(settings, journal)
    port = server.port("mini")

    def slow() -> tuple[bytes, float]:
        c = LineClient(port, timeout=10)
        c.line()
        t0 = time.monotonic()
        try:
            for byte in b"NOOP-NEVER-ENDS":
                c.send(bytes([byte]))
                time.sleep(1.0)
                answered, _, _ = select.select([c.sock], [], [], 0)
                if answered or time.monotonic() - t0 > 5:
                    break  # the server said something (its goodbye): stop trickling
        except OSError:
            pass
        try:
            line = c.line()
        except (EOFError, OSError):
            line = b""
        return line, time.monotonic() - t0

    def quick() -> list[bytes]:
        out = []
        for _ in range(3):
            c = LineClient(port)
            out += [c.line(), c.cmd(b"PING"), c.cmd(b"QUIT")]
            c.close()
            time.sleep(0.2)
        return out

    try:
        (line, elapsed), served = await asyncio.gather(
            asyncio.to_thread(slow), asyncio.to_thread(quick)
        )
        assert line == b"421 timeout"
        assert 1.4 < elapsed < 4
        assert served.count(b"250 PING") == 3
        by = [r["by"] for r in journal.of("connection_closed")]
        assert "timeout" in by
    finally:
        await server.close()


# --- garbage and resets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00" * 5000,
        bytes(range(256)) * 40,
        b"\x16\x03\x03\xff\xff" + b"\xff" * 3000,
        b"A" * 20000 + b"\r\n",
        b"\r\n\r\n\n\r\x00",
    ],
)
async def test_garbage_never_escapes(
    tmp_path: Path, journal: Journal, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    port = server.port("mini")

    def client() -> None:
        for mode in (b"", b"STARTTLS\r\n", b"HELLO\r\n"):
            c = LineClient(port)
            c.line()
            if mode:
                c.cmd(mode.strip())
            c.send(payload)
            time.sleep(0.05)
            c.close()

    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        await asyncio.to_thread(client)
        await journal.wait_for("connection_closed", 3)
        # still serving after all of it
        c = await asyncio.to_thread(LineClient, port)
        assert await asyncio.to_thread(c.cmd, b"HI") in (b"220 mini ready", b"250 HI")
        c.close()
        assert errors == []
        assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
        assert "error" not in [r["by"] for r in journal.of("connection_closed")]
    finally:
        await server.close()


async def test_close_with_reset_sends_rst(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)

    def client() -> type[BaseException] | None:
        c = LineClient(server.port("mini"))
        c.line()
        c.send(b"RESET\r\n")
        time.sleep(0.2)
        try:
            c.sock.recv(10)
        except ConnectionResetError as exc:
            return type(exc)
        return None

    try:
        assert await asyncio.to_thread(client) is ConnectionResetError
    finally:
        await server.close()


async def test_peer_close_is_delivered_to_the_core(tmp_path: Path, journal: Journal) -> None:
    settings = make_settings(tmp_path)
    server = await start_server(settings, journal)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port("mini"))
        await reader.readline()
        writer.close()
        closed = await journal.wait_for("connection_closed")
        assert closed[0]["by"] == "client"
        assert closed[0]["bytes_out"] == len(b"220 mini ready\r\n")
        assert [r["reason"] for r in journal.of("protocol_error")] == ["peer_closed"]
    finally:
        await server.close()
