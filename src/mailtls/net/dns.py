"""The DNS responder for the test zone: the small loop around ``mailtls.dnszone.Zone``.

UDP: one ``DatagramProtocol`` per listen address; each datagram is answered at once (at most the
client's EDNS payload size, else truncated so it retries over TCP). TCP: a bounded reader (the
two-byte length, at most ``MAX_TCP_QUERY`` bytes per message, ``QUERIES_PER_CONNECTION`` messages,
``IDLE_SECONDS`` between them) and at most ``dns.tcp_connections`` at once. Both are rate-limited
per client address (an IPv6 client by its /64, like every listener) with token buckets kept in a
bounded table: a reflection attempt with a forged source gets at most the rate in answers, each
no larger than the query allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from mailtls.net.limits import TokenBucket
from mailtls.runs.binding import address_key

log = logging.getLogger("mailtls.net")

Respond = Callable[[bytes, int | None], bytes | None]
"""``respond(query, max_size)``: the answer (``max_size`` None over TCP), None for no answer."""

MAX_TCP_QUERY = 4096
QUERIES_PER_CONNECTION = 32
IDLE_SECONDS = 10.0
MAX_UDP_ANSWER = 1232
RATE_TABLE = 10_000  # client addresses remembered by the rate limiter (oldest dropped)


class RateLimit:
    """Token buckets per client address (IPv6: per prefix), in a bounded table."""

    def __init__(self, per_second: float, ipv6_prefix: int = 64) -> None:
        self._rate = per_second
        self._prefix = ipv6_prefix
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, client: str) -> bool:
        key = address_key(client, self._prefix) or client
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self._rate, max(1.0, self._rate * 2))
            if len(self._buckets) >= RATE_TABLE:
                self._buckets.popitem(last=False)
        self._buckets[key] = bucket
        return bucket.take(time.monotonic())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, respond: Respond, limit: RateLimit) -> None:
        self._respond = respond
        self._limit = limit
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is None or not self._limit.allow(str(addr[0])):
            return
        try:
            answer = self._respond(data, MAX_UDP_ANSWER)
        except Exception:  # a bug in the zone must not stop the responder
            log.exception("DNS answer failed")
            return
        if answer is not None:
            self._transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like
        pass


class DnsResponder:
    """UDP and TCP listeners on ``hosts``:``port``. ``await start()``, ``close()``."""

    def __init__(
        self,
        respond: Respond,
        hosts: Sequence[str],
        port: int,
        *,
        queries_per_second: float,
        tcp_connections: int,
        ipv6_prefix: int = 64,
    ) -> None:
        self._respond = respond
        self._hosts = tuple(hosts)
        self._port = port
        self._limit = RateLimit(queries_per_second, ipv6_prefix)
        self._tcp_slots = tcp_connections
        self._tcp_open = 0
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for host in self._hosts:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self._respond, self._limit), local_addr=(host, self._port)
                )
                self._udp.append(transport)
                self._tcp.append(
                    await asyncio.start_server(self._serve_tcp, host, self._port, backlog=64)
                )
        except BaseException:
            self.close()
            raise

    def bound(self) -> list[tuple[str, int]]:
        """The (address, port) of each UDP socket (tests: port 0 binds a free one)."""
        out = []
        for transport in self._udp:
            host, port = transport.get_extra_info("sockname")[:2]
            out.append((str(host), int(port)))
        return out

    def tcp_port(self) -> int:
        return int(self._tcp[0].sockets[0].getsockname()[1])

    def close(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        self._udp, self._tcp = [], []

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        if self._tcp_open >= self._tcp_slots:
            writer.close()
            return
        self._tcp_open += 1
        try:
            for _ in range(QUERIES_PER_CONNECTION):
                query = await self._read_message(reader)
                if query is None or not self._limit.allow(str(peer[0])):
                    break
                answer = self._respond(query, None)
                if answer is None:
                    break
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await asyncio.wait_for(writer.drain(), IDLE_SECONDS)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:  # the outermost shell of one connection
            log.exception("DNS over TCP failed")
        finally:
            self._tcp_open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await asyncio.wait_for(reader.readexactly(2), IDLE_SECONDS)
        except asyncio.IncompleteReadError:
            return None
        size = int.from_bytes(head, "big")
        if not 12 <= size <= MAX_TCP_QUERY:
            return None
        return await asyncio.wait_for(reader.readexactly(size), IDLE_SECONDS)
