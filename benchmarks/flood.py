"""What one flooding address costs a real ``mailtls serve``, and what others see meanwhile.

Starts ``python -m mailtls serve`` (sources from ``--src``, default this checkout) on free
loopback ports and prints:
1. flood (``--seconds``, default 15): from 127.0.0.2, ``--flooders`` SMTP connections pipelining
   ``EHLO a``/``NOOP`` plus an AUTH bot (new session, random username, AUTH PLAIN, QUIT) — data
   bytes per attacker byte and per unbound session, data growth, peak RSS (VmHWM) of the server,
   SIGTERM time; from 127.0.0.3 meanwhile: SMTP greeting latency p50/p99 (a new connection every
   50 ms) and ``GET /api/runs/{id}`` p99 (every 50 ms);
2. SMTP sessions/s (connect, greeting, EHLO, QUIT; 32 at a time) with 0, 500 and 3,000 open SSE
   streams on one run, and the server's RSS after the streams closed;
3. the longest greeting delay (a new connection every 5 ms) while ``DELETE /api/runs/{id}``
   compacts a ~100 MB journal (``--journal-mb``), and how long the deletion took.

    .venv/bin/python benchmarks/flood.py [--seconds 15] [--src PATH] [--skip-delete]

``--legacy`` omits the ``[web]``/``[storage]`` tables (a tree that predates them, e.g. main).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
ATTACKER = "127.0.0.2"
OTHER = "127.0.0.3"
PORTS = ("smtp_mx", "smtp_submission", "smtp_tls", "imap", "imap_tls", "pop3", "pop3_tls", "http")


procs: list[subprocess.Popen[bytes]] = []  # every server started (killed at exit)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    def __init__(self, src: Path, data_dir: Path, legacy: bool) -> None:
        self.src = src
        self.data_dir = data_dir
        self.ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        extra = (
            ""
            if legacy
            else (
                "[web]\nstreams_per_run = 5000\nstreams_total = 5000\nper_ip = 5000\ntotal = 8000\n"
            )
        )
        self.config = data_dir.parent / "flood.toml"
        lines = "\n".join(f"{k} = {v}" for k, v in self.ports.items())
        if not legacy:  # the run's own ports are not what is measured here
            extra += "[endpoints]\nenabled = false\n"
        self.config.write_text(
            f'data_dir = "{data_dir}"\n[connections]\nper_ip = 5000\n{extra}[ports]\n{lines}\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports['http']}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTLS_")}
        env["PYTHONPATH"] = str(self.src)
        log = (self.data_dir.parent / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailtls", "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        procs.append(self.proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/api/openapi.json", timeout=2),
            ):
                return
            time.sleep(0.2)
        raise RuntimeError("serve did not start; see serve.log")

    def stop(self) -> float:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0

    def status(self, key: str) -> int:
        """A /proc/PID/status value in bytes (VmRSS, VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def data_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())


def new_run(server: Server) -> str:
    code, view = api(server, "POST", "/api/runs", {"plan": "guided"})
    if code != 201:
        raise RuntimeError(f"POST /api/runs answered {code}")
    return str(view["id"])


def api(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# --- 1. the flood ---------------------------------------------------------------------------


class Counter:
    sent = 0
    sessions = 0


async def flooder(port: int, stop: float, counter: Counter) -> None:
    chunk = b"EHLO a\r\nNOOP\r\n" * 256

    async def drain_replies(reader: asyncio.StreamReader) -> None:
        while await reader.read(1 << 16):
            pass

    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(ATTACKER, 0))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        counter.sessions += 1
        replies = asyncio.create_task(drain_replies(reader))
        try:
            while time.monotonic() < stop and not replies.done():
                writer.write(chunk)
                counter.sent += len(chunk)
                await asyncio.wait_for(writer.drain(), max(0.01, stop - time.monotonic()))
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            replies.cancel()
            with contextlib.suppress(BaseException):
                await replies


async def auth_bot(port: int, stop: float, counter: Counter) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(ATTACKER, 0))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        counter.sessions += 1
        user = f"user{secrets.token_hex(4)}@example.com"
        cred = base64.b64encode(f"\0{user}\0hunter2".encode())
        lines = [b"EHLO bot\r\n", b"AUTH PLAIN " + cred + b"\r\n", b"QUIT\r\n"]
        try:
            await reader.readline()
            for line in lines:
                writer.write(line)
                counter.sent += len(line)
                await writer.drain()
                while True:
                    reply = await asyncio.wait_for(reader.readline(), 5)
                    if not reply or reply[3:4] != b"-":
                        break
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


async def greeting_probe(port: int, stop: float, every: float, out: list[float]) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(OTHER, 0))
            await asyncio.wait_for(reader.readline(), 10)
            out.append((time.perf_counter() - t0) * 1000)
            writer.close()
        except (OSError, TimeoutError):
            out.append(10_000.0)
        await asyncio.sleep(max(0.0, every - (time.perf_counter() - t0)))


def get_probe(server: Server, run_id: str, stop: float, out: list[float]) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        api(server, "GET", f"/api/runs/{run_id}")
        out.append((time.perf_counter() - t0) * 1000)
        if os.environ.get("FLOOD_VERBOSE"):
            print(f"  GET {out[-1]:.0f} ms", flush=True)
        time.sleep(0.05)


def _attack(ports: tuple[int, int], seconds: float, flooders: int, out: Any) -> None:
    """The flooding address, in its own process (the probes must not share its event loop)."""

    async def run() -> None:
        counter = Counter()
        stop = time.monotonic() + seconds
        tasks = [flooder(ports[0], stop, counter) for _ in range(flooders)]
        await asyncio.gather(*tasks, auth_bot(ports[1], stop, counter))
        out.send((counter.sent, counter.sessions))

    asyncio.run(run())


def greeting_probe_sync(port: int, stop: float, every: float, out: list[float]) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        try:
            with socket.socket() as s:
                s.settimeout(10)
                s.bind((OTHER, 0))
                s.connect((HOST, port))
                s.recv(512)
            out.append((time.perf_counter() - t0) * 1000)
        except OSError:
            out.append(10_000.0)
        time.sleep(max(0.0, every - (time.perf_counter() - t0)))


async def flood(server: Server, seconds: float, flooders: int) -> dict[str, Any]:
    run_id = new_run(server)
    before = server.data_bytes()
    stop = time.monotonic() + seconds
    greetings: list[float] = []
    gets: list[float] = []
    receiver, sender = multiprocessing.Pipe(duplex=False)
    ports = (server.ports["smtp_mx"], server.ports["smtp_submission"])
    attacker = multiprocessing.Process(target=_attack, args=(ports, seconds, flooders, sender))
    attacker.start()
    probes = [
        asyncio.to_thread(get_probe, server, run_id, stop, gets),
        asyncio.to_thread(greeting_probe_sync, ports[1], stop, 0.05, greetings),
    ]
    await asyncio.gather(*probes)
    sent, sessions = await asyncio.to_thread(receiver.recv)
    attacker.join()
    await asyncio.sleep(1.0)
    grown = server.data_bytes() - before
    return {
        "attacker bytes": sent,
        "unbound sessions": sessions,
        "data growth MB": grown / 1e6,
        "data bytes per attacker byte": grown / max(1, sent),
        "data bytes per unbound session": grown / max(1, sessions),
        "peak RSS MB": server.status("VmHWM") / 1e6,
        "greeting p50 ms": pct(greetings, 50),
        "greeting p99 ms": pct(greetings, 99),
        "GET /api/runs/{id} p99 ms": pct(gets, 99),
    }


# --- 2. SMTP throughput with open SSE streams ----------------------------------------------


async def smtp_rate(port: int, seconds: float, concurrency: int = 32) -> float:
    done = 0
    stop = time.monotonic() + seconds
    sources = [f"127.0.{10 + i // 200}.{1 + i % 200}" for i in range(concurrency)]

    async def worker(source: str) -> None:
        nonlocal done
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
                await reader.readline()
                writer.write(b"EHLO c\r\nQUIT\r\n")
                while (line := await reader.readline()) and not line.startswith(b"221"):
                    pass
                writer.close()
                done += 1
            except OSError:
                await asyncio.sleep(0.01)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(s) for s in sources))
    return done / (time.monotonic() - t0)


def open_streams(server: Server, run_id: str, n: int) -> list[socket.socket]:
    request = (
        f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.{100 + i // 250}.{1 + i % 250}", 0))
        s.connect((HOST, server.ports["http"]))
        s.sendall(request)
        socks.append(s)
    ok = 0
    for s in socks:
        s.settimeout(10)
        with contextlib.suppress(OSError):
            ok += s.recv(4096).startswith(b"HTTP/1.1 200")
    if ok != n:
        print(f"  ({ok} of {n} streams answered 200)")
    return socks


async def streams(server: Server, seconds: float) -> dict[str, Any]:
    run_id = new_run(server)
    port = server.ports["smtp_mx"]
    out: dict[str, Any] = {}
    rss0 = server.status("VmRSS")
    for n in (0, 500, 3000):
        socks = open_streams(server, run_id, n)
        await asyncio.sleep(1.0)
        out[f"SMTP sessions/s with {n} streams"] = await smtp_rate(port, seconds)
        if n == 3000:
            out["RSS MB with 3000 streams open"] = server.status("VmRSS") / 1e6
        for s in socks:
            s.close()
        await asyncio.sleep(2.0)
    out["RSS MB before streams"] = rss0 / 1e6
    out["RSS MB after the streams closed"] = server.status("VmRSS") / 1e6
    base = out["SMTP sessions/s with 0 streams"]
    out["cost of 500 streams %"] = 100 * (1 - out["SMTP sessions/s with 500 streams"] / base)
    return out


# --- 3. DELETE with a large journal ----------------------------------------------------------


def journal_bytes(data_dir: Path) -> int:
    """The journal's size: the active file and the sealed segments (``journal/``)."""
    files = [data_dir / "events.jsonl", *(data_dir / "journal").glob("*.jsonl")]
    return sum(f.stat().st_size for f in files if f.exists())


def fill_journal(server: Server, run_id: str, megabytes: int) -> None:
    """Append ~``megabytes`` of records offline (the server is stopped), some of them the run's."""
    sys.path.insert(0, str(server.src))
    from mailtls.store import Store

    pad = "x" * 200
    with Store(server.data_dir, fsync=False) as store:
        target = megabytes * 1_000_000
        start = store.stats().last_id
        i = 0
        while True:
            batch = [
                {
                    "type": "ehlo",
                    "conn": f"bulk-{i + k}",
                    "client": "192.0.2.1",
                    "value": pad,
                    **({"run": run_id} if (i + k) % 100 == 0 else {}),
                }
                for k in range(2000)
            ]
            store.append_many(batch)
            i += len(batch)
            if i % 20000 == 0 and journal_bytes(server.data_dir) > target:
                break
        print(f"  journal: {i} records added after id {start}")


async def delete_stall(server: Server, megabytes: int) -> dict[str, Any]:
    run_id = new_run(server)
    server.stop()
    fill_journal(server, run_id, megabytes)
    server.start()
    size = journal_bytes(server.data_dir)
    delays: list[float] = []
    stop_at = [time.monotonic() + 600]

    async def probe() -> None:
        while time.monotonic() < stop_at[0]:
            await greeting_probe(
                server.ports["smtp_submission"], time.monotonic() + 0.001, 0.005, delays
            )

    task = asyncio.create_task(probe())
    await asyncio.sleep(1.0)
    baseline = list(delays)
    delays.clear()
    t0 = time.monotonic()
    code, _ = await asyncio.to_thread(api, server, "DELETE", f"/api/runs/{run_id}")
    answered = time.monotonic() - t0
    if code == 202:
        while True:
            _, status = await asyncio.to_thread(api, server, "GET", f"/api/runs/{run_id}/deletion")
            if status is None or status.get("state") == "done":
                break
            await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    stop_at[0] = 0
    await task
    return {
        "journal MB": size / 1e6,
        "DELETE status": code,
        "DELETE answered in s": answered,
        "deletion done in s": took,
        "greeting p50 ms before": pct(baseline, 50),
        "longest greeting delay during DELETE ms": max(delays, default=float("nan")),
        "greeting p99 ms during DELETE": pct(delays, 99),
    }


def show(title: str, figures: dict[str, Any]) -> None:
    print(title)
    for key, value in figures.items():
        text = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"  {key:<44} {text}")


async def main_async(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="mailtls-flood-"))
    try:
        print(f"server sources: {args.src} (cores: {os.cpu_count()})")
        if not args.skip_flood:
            server = Server(args.src, tmp / "var", args.legacy)
            server.start()
            flood_figures = await flood(server, args.seconds, args.flooders)
            flood_figures["SIGTERM to exit s"] = server.stop()
            show(f"1. one address floods for {args.seconds:g} s", flood_figures)
        server = Server(args.src, tmp / "var2", args.legacy)
        server.start()
        show("2. SSE streams", await streams(server, args.rate_seconds))
        if not args.skip_delete:
            show("3. DELETE", await delete_stall(server, args.journal_mb))
        server.stop()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--flooders", type=int, default=6)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--journal-mb", type=int, default=100)
    parser.add_argument("--src", type=Path, default=HERE.parent / "src")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--skip-delete", action="store_true")
    parser.add_argument("--skip-flood", action="store_true")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
