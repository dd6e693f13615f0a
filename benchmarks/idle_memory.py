"""Bytes per idle connection in the server process: 5,000 plaintext and 5,000 TLS connections.

The server (real ``MailServer`` + ``SmtpCore``, events into a real ``Store``) runs in its own
process; this process opens the connections from source addresses spread over 127.0.0.0/8 and
reads each greeting, so every connection is fully set up (TLS: handshake done) and idle. The
figure is the growth of the server's resident set size divided by the number of connections.
Both processes raise RLIMIT_NOFILE to the hard limit.

    .venv/bin/python benchmarks/idle_memory.py [--count 5000] [--loop both|asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import ssl
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import benchkit
from benchkit import client_sources, pin, server_main

from mailtls.net.listeners import raise_nofile_limit
from mailtls.net.pki import ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols.base import PortRole

SPECS = [
    ListenerSpec("smtp_submission", "smtp", PortRole.SUBMISSION, 0, False),
    ListenerSpec("smtp_tls", "smtp", PortRole.SUBMISSION, 0, True),
]
TARGET_PLAIN = 16 * 1024
TARGET_TLS = 64 * 1024


def _ask(conn: Connection, *msg: str) -> dict[str, int]:
    conn.send(msg)
    answer: dict[str, int] = conn.recv()
    return answer


def _open_plain(port: int, sources: list[str], n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), 10, (sources[i % len(sources)], 0))
        socks.append(s)
    for s in socks:  # every greeting arrived: the server finished setting each one up
        if not s.recv(512).startswith(b"220"):
            raise RuntimeError("no greeting")
    return socks


def _open_tls(port: int, sources: list[str], n: int, ctx: ssl.SSLContext) -> list[ssl.SSLSocket]:
    socks = []
    for i in range(n):
        raw = socket.create_connection(("127.0.0.1", port), 10, (sources[i % len(sources)], 0))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        if not tls.recv(512).startswith(b"220"):
            raise RuntimeError("no greeting")
        socks.append(tls)
    return socks


def _settle(conn: Connection, expected: int) -> dict[str, int]:
    for _ in range(100):
        state = _ask(conn, "rss")
        if state["open"] >= expected:
            return state
        time.sleep(0.05)
    raise RuntimeError(f"server holds {state['open']} connections, expected {expected}")


def measure(kind: str, n: int, tmp: Path) -> tuple[float, float]:
    data_dir = tmp / kind
    (data_dir / "tls").mkdir(parents=True)
    for name in ("ca.pem", "server.pem", "server.key"):
        (data_dir / "tls" / name).write_bytes((tmp / "tls" / name).read_bytes())
    mp = multiprocessing.get_context("spawn")
    parent, child = mp.Pipe()
    proc = mp.Process(target=server_main, args=(child, str(data_dir), kind, 0, SPECS, "store"))
    proc.start()
    hello = parent.recv()
    ports = hello["ports"]
    ctx = ssl.create_default_context(cafile=str(tmp / "tls" / "ca.pem"))
    sources = client_sources(997)
    warm = _open_plain(ports["smtp_submission"], sources, 50) + _open_tls(
        ports["smtp_tls"], sources, 50, ctx
    )
    for s in warm:
        s.close()
    time.sleep(0.5)
    base = _settle(parent, 0)["rss"]
    plain = _open_plain(ports["smtp_submission"], sources, n)
    after_plain = _settle(parent, n)["rss"]
    tls = _open_tls(ports["smtp_tls"], sources, n, ctx)
    after_tls = _settle(parent, 2 * n)["rss"]
    check = socket.create_connection(("127.0.0.1", ports["smtp_submission"]), 5)
    answered = check.recv(512).startswith(b"220")
    check.close()
    for s in [*plain, *tls]:
        s.close()
    parent.send(("quit",))
    parent.recv()
    proc.join(10)
    per_plain = (after_plain - base) / n
    per_tls = (after_tls - after_plain) / n
    print(
        f"{kind:8} idle plaintext: {per_plain / 1024:5.1f} KiB/connection "
        f"(target <= {TARGET_PLAIN // 1024})  idle TLS: {per_tls / 1024:5.1f} KiB/connection "
        f"(target <= {TARGET_TLS // 1024})  server RSS {base / 2**20:.0f} -> "
        f"{after_tls / 2**20:.0f} MiB; a new client was {'served' if answered else 'NOT served'}"
    )
    return per_plain, per_tls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--loop", choices=("both", "asyncio", "uvloop"), default="both")
    args = parser.parse_args()
    pin(1)
    limit = raise_nofile_limit()
    if limit < 2 * args.count + 100:
        print(f"open-file limit {limit} is too low for {2 * args.count} connections")
        return 1
    kinds = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    with tempfile.TemporaryDirectory(prefix="mailtls-idle-") as tmp:
        ensure_certificates(benchkit.bench_settings(Path(tmp)))
        for kind in kinds:
            measure(kind, args.count, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
