"""Shared pieces of the benchmarks: a server process pinned to one CPU, driven over a pipe.

The server process runs the real ``MailServer`` with the real SMTP core and records every event
into a real ``mailtls.store.Store`` (JSONL journal with group-committed fdatasync + SQLite index)
in a temporary directory. The parent (the load generator) sends it commands over a pipe:
``("start",)`` resets the counters, ``("stop",)`` answers CPU seconds, wall seconds and events,
``("rss",)`` answers the resident set size, ``("quit",)`` ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from mailtls.net.listeners import MailServer, raise_nofile_limit  # noqa: E402
from mailtls.net.pki import ensure_certificates  # noqa: E402
from mailtls.net.types import ListenerSpec  # noqa: E402
from mailtls.protocols.base import AuthDecision, Credential  # noqa: E402
from mailtls.runs.proof import presents  # noqa: E402
from mailtls.settings import Settings  # noqa: E402

USER = "test-BENCH7@mailtls.test"
PASSWORD = "secret"


def pin(cpu: int) -> None:
    """Pin this process to one CPU when the machine has it."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_settings(data_dir: Path) -> Settings:
    settings = Settings(data_dir=data_dir)
    return replace(settings, connections=replace(settings.connections, per_ip=50, total=100_000))


def authenticate(credential: Credential) -> AuthDecision:
    """The benchmark's one account: ``USER`` with the password ``secret``."""
    if credential.username.lower() == USER.lower():
        proof = presents(PASSWORD, credential)
        return AuthDecision(proof, USER, "BENCH7", proof)
    return AuthDecision(False, "h:unknown", None)


def client_sources(n: int) -> list[str]:
    """``n`` loopback source addresses spread over 127.0.0.0/8 (not 127.0.0.1)."""
    return [f"127.{1 + i // 65536 % 250}.{i // 256 % 256}.{1 + i % 250}" for i in range(n)]


SPENT = {"journal": 0.0, "core": 0.0, "tls": 0.0}


def _timed(bucket: str, fn: Any) -> Any:
    clock = time.thread_time

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[bucket] += clock() - t0

    return wrapper


class TimedCore:
    """Wraps a core to count the CPU time spent in ``handle`` (the shell's work is outside)."""

    def __init__(self, core: Any) -> None:
        self.handle = _timed("core", core.handle)


def install_breakdown() -> None:
    """Count thread CPU time in the TLS engine (handshakes, record crypto); the journal and the
    core are wrapped where they are built. Costs two clock reads per call (~1 µs)."""
    from mailtls.net import tlsengine

    for name in ("receive", "encrypt", "close_notify", "__init__"):
        setattr(tlsengine.TlsEngine, name, _timed("tls", getattr(tlsengine.TlsEngine, name)))


def server_main(
    conn: Connection,
    data_dir: str,
    loop_kind: str,
    cpu: int,
    specs: list[Any],
    sink: str,
    breakdown: bool = False,
) -> None:
    pin(cpu)
    raise_nofile_limit()
    if breakdown:
        install_breakdown()
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(_serve(conn, Path(data_dir), specs, sink, breakdown))
    else:
        asyncio.run(_serve(conn, Path(data_dir), specs, sink, breakdown))


class _TimedBatchSink:
    def __init__(self, append: Any, append_many: Any) -> None:
        self._append = _timed("journal", append)
        self._append_many = _timed("journal", append_many)

    def append(self, record: dict[str, Any]) -> None:
        self._append(record)

    def append_many(self, records: list[dict[str, Any]]) -> None:
        self._append_many(records)


def timed_sink(sink: Any) -> Any:
    """``sink`` counting its CPU time as "journal" (keeping ``append_many`` when it has one)."""
    many = getattr(getattr(sink, "__self__", None), "append_many", None)
    if getattr(sink, "__name__", "") == "append" and many is not None:
        return _TimedBatchSink(sink, many).append
    return _timed("journal", sink)


def make_sink(kind: str, data_dir: Path, counter: list[int]) -> tuple[Any, Any]:
    """``store``: the real Store; ``file``: one ``os.write`` of a JSON line per event to an
    O_APPEND file (no index, no fsync); ``none``: events are counted and dropped."""
    if kind == "store":
        from mailtls.store import Store

        store = Store(data_dir / "store", fsync=True)

        class Counted:
            """``Store.append``/``append_many`` counting events (the shell batches the records
            of one read through ``append_many``, as with ``sink=store.append``)."""

            def append(self, record: dict[str, Any]) -> None:
                counter[0] += 1
                store.append(record)

            def append_many(self, records: list[dict[str, Any]]) -> None:
                counter[0] += len(records)
                store.append_many(records)

        return Counted().append, store.close
    if kind == "file":
        fd = os.open(data_dir / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        encode = json.JSONEncoder(separators=(",", ":")).encode

        def to_file(record: dict[str, Any]) -> None:
            counter[0] += 1
            os.write(fd, (encode(record) + "\n").encode())

        return to_file, lambda: os.close(fd)

    def count(record: dict[str, Any]) -> None:
        counter[0] += 1

    return count, lambda: None


async def _serve(
    conn: Connection, data_dir: Path, specs: list[ListenerSpec], kind: str, breakdown: bool
) -> None:
    from mailtls.protocols.smtp import SmtpCore

    settings = bench_settings(data_dir)
    counter = [0]
    sink, close_sink = make_sink(kind, data_dir, counter)
    core_factory: Any = SmtpCore
    if breakdown:
        sink = timed_sink(sink)

        def core_factory(ctx: Any) -> Any:
            return TimedCore(SmtpCore(ctx))

    server = MailServer(
        settings,
        certs=ensure_certificates(settings),
        binder=lambda ip, local: None,
        authenticator=authenticate,
        sink=sink,
        core_factories={"smtp": core_factory},
        specs=specs,
    )
    await server.start()
    ports = {name: addrs[0][1] for name, addrs in server.bound().items()}
    conn.send({"ports": ports, "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    cpu0 = wall0 = loop_cpu0 = 0.0
    spent0 = dict(SPENT)
    events0 = 0
    profiler: Any = None
    while True:
        msg = await inbox.get()
        if msg[0] == "start":
            if len(msg) > 1 and msg[1]:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu0, wall0, events0 = time.process_time(), time.monotonic(), counter[0]
            spent0 = dict(SPENT)
            loop_cpu0 = time.thread_time()
            conn.send("ok")
        elif msg[0] == "stop":
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            loop_cpu = time.thread_time() - loop_cpu0
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(data_dir / "server.prof"))
                profiler = None
            spent = {k: v - spent0[k] for k, v in SPENT.items()}
            conn.send(
                {
                    "cpu": cpu,
                    "loop_cpu": loop_cpu,
                    "wall": wall,
                    "events": counter[0] - events0,
                    "spent": spent,
                }
            )
        elif msg[0] == "rss":
            conn.send({"rss": rss_bytes(), "open": server.open_connections})
        elif msg[0] == "quit":
            break
    loop.remove_reader(conn.fileno())
    await server.close(grace=0.5)
    close_sink()
    conn.send("bye")


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
