"""Journal append throughput: appends per second and microseconds per append.

Runs ``Store.append`` with a typical protocol event (the envelope of DESIGN §7) with fsync on and
off, next to the two costs it cannot avoid (JSON encoding, one ``os.write``), so the store's own
Python overhead per append can be read off. Then the cost of a query that first moves a batch of
pending records into SQLite.

    .venv/bin/python benchmarks/journal_append.py [--n 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailtls.store import Store
from mailtls.store.encoding import BACKEND


def event(i: int) -> dict[str, Any]:
    return {
        "type": "command",
        "proto": "smtp",
        "port": 2587,
        "client": "127.0.0.1",
        "tls": None,
        "run": "r-3f9c2a7d",
        "step": 3,
        "testcase": "t1",
        "scenario": "immediate",
        "source": "address",
        "conn": f"c{i // 20}",
        "line": "AUTH PLAIN <redacted, 24 bytes>",
    }


def timed(n: int, fn: Callable[[int], object], rounds: int = 5) -> float:
    """Seconds per call of ``fn(i)``: CPU time of this thread, best of ``rounds`` rounds of n/rounds
    calls (CPU time and best-of keep the figure stable on a shared machine)."""
    per_round = max(1, n // rounds)
    best = float("inf")
    for r in range(rounds):
        start = time.thread_time()
        for i in range(r * per_round, (r + 1) * per_round):
            fn(i)
        best = min(best, (time.thread_time() - start) / per_round)
    return best


def bench_store(n: int, *, fsync: bool, subscribers: int = 0) -> tuple[float, float]:
    """(CPU seconds of the appending thread per append, wall seconds per append)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), fsync=fsync)
        for _ in range(subscribers):
            store.subscribe(lambda rec: None)
        records = [event(i) for i in range(n)]
        per = timed(n, lambda i: store.append(records[i]))
        start = time.perf_counter()
        for i in range(n):
            store.append(records[i])
        wall = (time.perf_counter() - start) / n
        store.close()
    return per, wall


def bench_store_many(n: int, per_call: int) -> tuple[float, float]:
    """``append_many`` of ``per_call`` records at a time (the shell's batch for one read):
    (CPU seconds of the appending thread per record, process CPU seconds per record including
    the index and fsync threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), fsync=True)
        records = [event(i) for i in range(n)]
        batches = [records[i : i + per_call] for i in range(0, n, per_call)]
        per = timed(len(batches), lambda i: store.append_many(batches[i])) / per_call
        records = [event(i) for i in range(n)]
        batches = [records[i : i + per_call] for i in range(0, n, per_call)]
        start = time.process_time()
        for batch in batches:
            store.append_many(batch)
        store.close()  # the index catches up: its CPU time is part of the cost
        process = (time.process_time() - start) / n
    return per, process


def bench_baselines(n: int) -> tuple[float, float]:
    encode = json.JSONEncoder(separators=(",", ":")).encode
    records = [{"id": i, "ts": time.time(), **event(i)} for i in range(n)]
    per_json = timed(n, lambda i: encode(records[i]))
    line = (encode(records[0]) + "\n").encode()
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(Path(tmp) / "raw.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        per_write = timed(n, lambda i: os.write(fd, line))
        os.close(fd)
    return per_json, per_write


def bench_query_flush(pending: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), fsync=False, index_interval=3600)
        for i in range(pending):
            store.append(event(i))
        start = time.perf_counter()
        store.query(run="r-3f9c2a7d", step=3, limit=1)
        took = time.perf_counter() - start
        store.close()
    return took


def row(label: str, per: float, wall: float | None = None) -> None:
    line = f"  {label:<40} {per * 1e6:7.2f} µs CPU"
    if wall is not None:
        line += f"   {wall * 1e6:7.2f} µs wall = {1 / wall:9,.0f} appends/s"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="appends per measurement")
    n = parser.parse_args().n
    per_json, per_write = bench_baselines(n)
    off = bench_store(n, fsync=False)
    on = bench_store(n, fsync=True)
    subs = bench_store(n, fsync=True, subscribers=3)
    size = len(json.dumps(event(0)))
    print(f"journal append, JSON backend {BACKEND}, {n:,} events of ~{size} bytes each")
    print("(CPU: the appending thread only, best of 5 rounds; wall: includes the index thread)")
    row("json encode only", per_json)
    row("os.write of one line only", per_write)
    row("Store.append, fsync off", *off)
    row("Store.append, fsync on (group commit)", *on)
    row("Store.append, fsync on, 3 subscribers", *subs)
    for per_call in (1, 3):
        thread, process = bench_store_many(n, per_call)
        row(f"Store.append_many, {per_call} per call, per record", thread)
        row("  same, process CPU incl. index+fsync threads", process)
    own = on[0] - per_json - per_write
    print(f"  store's own Python per append (fsync on, CPU): {own * 1e6:.2f} µs")
    for pending in (1_000, 10_000):
        print(
            f"  query after {pending:,} pending appends: {bench_query_flush(pending) * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
