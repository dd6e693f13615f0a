"""SMTP sessions per server CPU second with 1,000 open runs holding their own endpoints, against
none; and what one open run's endpoints cost (memory, descriptors).

Each server process runs the real ``RunManager`` (binder, authenticator, run records in a real
``Store``), the real ``MailServer`` with the three cores, and ``RunListeners`` for the runs' own
sockets, pinned to CPU 0; this process generates load pinned to CPU 1. One "target" run (a
baseline step) takes every session on its own submission port: connect, EHLO, STARTTLS, TLS 1.3,
EHLO, AUTH PLAIN with the run's account, QUIT. In the loaded server 1,000 more runs are open
first, each with a started step and six listening ports (SMTP, SMTPS, IMAP, IMAPS, POP3, POP3S):
6,000 extra listening sockets in the same event loop. Rounds alternate the two servers.

    .venv/bin/python benchmarks/endpoint_sessions.py [--runs 1000] [--sessions 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import random
import socket
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import benchkit
from benchkit import bench_settings, pin, rss_bytes
from smtp_sessions import run_sessions

from mailtls.net.endpoints import RunListeners
from mailtls.net.listeners import MailServer, raise_nofile_limit
from mailtls.net.pki import ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols.base import PortRole
from mailtls.settings import Endpoints

KINDS = [
    ("smtp_submission", "smtp", PortRole.SUBMISSION, False),
    ("smtp_tls", "smtp", PortRole.SUBMISSION, True),
    ("imap", "imap", PortRole.IMAP, False),
    ("imap_tls", "imap", PortRole.IMAP, True),
    ("pop3", "pop3", PortRole.POP3, False),
    ("pop3_tls", "pop3", PortRole.POP3, True),
]


def free_range(size: int) -> int:
    """The first port of a range where (by a sample) few ports are taken: the pool skips the
    taken ones itself (another program's port is blocked and the next one tried)."""
    rng = random.Random()
    for _ in range(100):
        first = rng.randrange(10000, 32000 - size)
        taken = 0
        for port in range(first, first + size, 7):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    taken += 1
        if taken * 7 * 100 <= size:  # at most about 1 %
            return first
    raise RuntimeError("no free port range")


def server_main(conn: Connection, data_dir: str, first: int, size: int) -> None:
    pin(0)
    raise_nofile_limit()
    import uvloop

    uvloop.run(_serve(conn, Path(data_dir), first, size))


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _serve(conn: Connection, data_dir: Path, first: int, size: int) -> None:
    from mailtls.protocols.imap import ImapCore
    from mailtls.protocols.pop3 import Pop3Core
    from mailtls.protocols.smtp import SmtpCore
    from mailtls.runs.keys import load_or_create_key
    from mailtls.runs.manager import RunManager
    from mailtls.store import Store

    pool = Endpoints(port_first=first, port_last=first + size - 1, max_runs=size // 6 - 1)
    settings = replace(bench_settings(data_dir), endpoints=pool)
    store = Store(data_dir / "store", fsync=True)
    manager = RunManager(store, settings, load_or_create_key(data_dir))
    manager.load()
    store.subscribe(manager.on_record)
    server = MailServer(
        settings,
        certs=ensure_certificates(settings),
        binder=manager.binder,
        authenticator=manager.authenticate,
        sink=store.append,
        core_factories={"smtp": SmtpCore, "imap": ImapCore, "pop3": Pop3Core},
        specs=[ListenerSpec(name, proto, role, 0, tls) for name, proto, role, tls in KINDS],
    )
    await server.start()
    listeners = RunListeners(server.listener, settings.listen)
    manager.set_endpoint_listeners(listeners)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    cpu0 = wall0 = 0.0
    while True:
        msg = await inbox.get()
        if msg[0] == "target":
            run = manager.create_run(steps=[("immediate", "baseline")])
            manager.start_step(run.id, 1, ["127.0.0.1"])
            endpoints = manager.endpoints_of(run.id)
            assert endpoints is not None
            port = next(e.port for e in endpoints if e.kind == "smtp_submission")
            user = manager.account_username(run)
            conn.send({"port": port, "user": user, "password": manager.password_for(run)})
        elif msg[0] == "runs":
            await asyncio.sleep(0.2)
            rss0, fds0 = rss_bytes(), descriptors()
            for _ in range(msg[1]):
                run = manager.create_run(steps=[("immediate", "t1")])
                manager.start_step(run.id, 1, ["127.0.0.1"])
            await asyncio.sleep(1.0)  # the listeners are served on the loop
            conn.send(
                {
                    "rss": rss_bytes() - rss0,
                    "fds": descriptors() - fds0,
                    "sockets": listeners.descriptors,
                }
            )
        elif msg[0] == "binder":
            local = ("127.0.0.1", msg[1])
            t0 = time.perf_counter()
            for _ in range(100_000):
                manager.binder("127.0.0.9", local)
            conn.send((time.perf_counter() - t0) / 100_000 * 1e6)
        elif msg[0] == "start":
            cpu0, wall0 = time.process_time(), time.monotonic()
            conn.send("ok")
        elif msg[0] == "stop":
            conn.send({"cpu": time.process_time() - cpu0, "wall": time.monotonic() - wall0})
        elif msg[0] == "quit":
            break
    loop.remove_reader(conn.fileno())
    listeners.close_all()
    await server.close(grace=0.5)
    store.close()
    conn.send("bye")


class Server:
    def __init__(self, data_dir: Path, first: int, size: int, runs: int) -> None:
        mp = multiprocessing.get_context("spawn")
        self.pipe, child = mp.Pipe()
        data_dir.mkdir()
        certs = ensure_certificates(benchkit.bench_settings(data_dir.parent))
        for name in ("ca.pem", "server.pem", "server.key"):
            target = data_dir / "tls" / name
            target.parent.mkdir(exist_ok=True, mode=0o700)
            target.write_bytes((data_dir.parent / "tls" / name).read_bytes())
            target.chmod(0o600)
        self.ca = certs.ca
        self.proc = mp.Process(target=server_main, args=(child, str(data_dir), first, size))
        self.proc.start()
        self.pipe.send(("target",))
        target = self.pipe.recv()
        self.port = target["port"]
        self.auth = (
            b"AUTH PLAIN "
            + base64.b64encode(f"\0{target['user']}\0{target['password']}".encode())
            + b"\r\n"
        )
        self.cost: dict[str, int] = {}
        if runs:
            self.pipe.send(("runs", runs))
            self.cost = self.pipe.recv()

    def measure(self, n: int, concurrency: int) -> tuple[int, float]:
        import uvloop

        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        uvloop.run(run_sessions(self.port, 200, concurrency, ctx, self.auth))  # warm-up
        self.pipe.send(("start",))
        self.pipe.recv()
        done = uvloop.run(run_sessions(self.port, n, concurrency, ctx, self.auth))
        self.pipe.send(("stop",))
        stats = self.pipe.recv()
        return done, float(stats["cpu"])

    def binder_us(self) -> float:
        """µs per accept-time lookup (``RunManager.binder``) of the target run's port."""
        self.pipe.send(("binder", self.port))
        return float(self.pipe.recv())

    def close(self) -> None:
        self.pipe.send(("quit",))
        self.pipe.recv()
        self.proc.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pin(1)
    size = (args.runs + 2) * 6
    with tempfile.TemporaryDirectory(prefix="mailtls-bench-") as tmp:
        root = Path(tmp)
        first = free_range(2 * size + 12)
        none = Server(root / "none", first, 12, 0)
        loaded = Server(root / "loaded", first + 12, size, args.runs)
        rates: dict[str, list[float]] = {"none": [], "loaded": []}
        try:
            for r in range(args.rounds):
                for name, server in (("none", none), ("loaded", loaded)):
                    done, cpu = server.measure(args.sessions, args.concurrency)
                    rates[name].append(done / cpu)
                    print(
                        f"round {r + 1} {name:6}  sessions={done}  server CPU={cpu:.2f} s  "
                        f"sessions per server CPU second={done / cpu:.0f}"
                    )
            lookups = (none.binder_us(), loaded.binder_us())
        finally:
            none.close()
            loaded.close()
    base, with_runs = statistics.median(rates["none"]), statistics.median(rates["loaded"])
    change = (with_runs - base) / base * 100
    pairs = [(b - a) / a * 100 for a, b in zip(rates["none"], rates["loaded"], strict=True)]
    print(
        f"median: no other open runs {base:.0f}/s, with {args.runs} open runs {with_runs:.0f}/s "
        f"({change:+.1f} %; target: within 5 %); per round {', '.join(f'{p:+.0f}' for p in pairs)}"
        f" % (median {statistics.median(pairs):+.1f} %, spread of the reference "
        f"{(max(rates['none']) - min(rates['none'])) / base * 100:.0f} %)"
    )
    print(
        f"accept-time binding (RunManager.binder): {lookups[0]:.2f} µs per connection with no "
        f"other open run, {lookups[1]:.2f} µs with {args.runs}"
    )
    cost = loaded.cost
    print(
        f"{args.runs} open runs' endpoints: {cost['sockets']} listening sockets, "
        f"{cost['fds']} descriptors, RSS +{cost['rss'] / 2**20:.1f} MiB "
        f"= {cost['rss'] / args.runs / 1024:.1f} KiB and {cost['fds'] / args.runs:.0f} descriptors "
        "per run (six ports; the run's state and journal records included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
