"""The DNS responder on real loopback sockets: UDP, TCP, the rate limit and the TCP bounds."""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import replace

import dns.message
import dns.query
import dns.rcode
import pytest

from mailtls import settings as cfg
from mailtls.dnszone import Zone, ZoneConfig
from mailtls.net.dns import DnsResponder

CONF = replace(
    cfg.Settings(),
    endpoints=cfg.Endpoints(prefix="127.0.10.0/24", zone="t.example"),
    dns=cfg.Dns(port=53, web_addresses=("127.0.0.1",)),
)
pytestmark = pytest.mark.timeout(30)


async def responder(rate: float = 100.0) -> DnsResponder:
    zone = Zone(ZoneConfig.from_settings(CONF), lambda label: None)
    r = DnsResponder(zone.respond, ["127.0.0.1"], 0, queries_per_second=rate, tcp_connections=2)
    await r.start()
    return r


async def test_udp_and_tcp_answer() -> None:
    r = await responder()
    try:
        port = r.bound()[0][1]
        query = dns.message.make_query("autoconfig.t.example", "A")
        udp = await asyncio.to_thread(dns.query.udp, query, "127.0.0.1", 3, port)
        assert udp.answer[0][0].to_text() == "127.0.0.1"
        tcp = await asyncio.to_thread(dns.query.tcp, query, "127.0.0.1", 3, r.tcp_port())
        assert tcp.answer == udp.answer
    finally:
        r.close()


async def test_a_flood_from_one_address_is_cut_to_the_rate() -> None:
    r = await responder(rate=5.0)
    try:
        port = r.bound()[0][1]
        wire = dns.message.make_query("t.example", "SOA").to_wire()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for _ in range(50):
                s.sendto(wire, ("127.0.0.1", port))
            await asyncio.sleep(0.3)
            answers = 0
            s.setblocking(False)
            while True:
                try:
                    s.recv(4096)
                except BlockingIOError:
                    break
                answers += 1
        assert 1 <= answers <= 12  # the burst (2 x rate) and what refilled meanwhile
    finally:
        r.close()


async def test_tcp_refuses_an_oversized_message_and_garbage() -> None:
    r = await responder()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.tcp_port())
        writer.write(struct.pack("!H", 60000) + b"x" * 100)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", r.tcp_port())
        writer.write(struct.pack("!H", 20) + b"\xff" * 20)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        query = dns.message.make_query("nosuch.t.example", "A")
        answer = await asyncio.to_thread(dns.query.tcp, query, "127.0.0.1", 3, r.tcp_port())
        assert answer.rcode() == dns.rcode.NXDOMAIN  # still serving
    finally:
        r.close()
