"""The FULL ``mailtls serve`` against aiosmtpd and ``openssl s_server``, in one run.

Three servers, each its own process pinned to CPU 0, driven by the same load generator pinned to
CPU 1 (this process, uvloop, memory-BIO TLS clients from source addresses spread over
127.0.0.0/8):

- ``mailtls serve``: the real command as a subprocess (store with its journal fsync and SQLite
  index threads, run manager, web app, endpoint pool). A run is created and its step started
  through the web API; every session goes to the run's own submission port and authenticates with
  the run's account AND password (the proof of a run login): greeting, EHLO, STARTTLS, TLS 1.3,
  EHLO, AUTH PLAIN, QUIT. IMAP (STARTTLS, LOGIN, LOGOUT) and POP3 (STLS, USER/PASS, QUIT) to
  the run's own ports in the same rounds with ``--imap-pop3``.
- aiosmtpd (``aiosmtpd_reference.serve``: same session, same certificate, no recording).
- ``openssl s_server -rev`` (same ECDSA P-256 certificate, one TLS 1.3 ticket as mailtls): one
  handshake plus one small record each way per connection, the TLS limit of this machine.

CPU seconds are the server process's own (utime + stime of all its threads, /proc/PID/stat).
Rounds are interleaved; the medians and the ratios are printed. The machine is shared, so the
absolute figures move between runs: the ratios within one run are what counts.

    .venv/bin/python benchmarks/full_service.py [--sessions 2000] [--rounds 3] [--imap-pop3]
        [--profile]   # py-spy samples mailtls serve (GIL holder) in round 1, not counted
        [--baseline-src DIR] [--only-mailtls]

``--baseline-src`` adds an older mailtls (its ``src/`` folder) to the same interleaved rounds, to
measure a change before/after in one run: ``git archive main src | tar -x -C /tmp/base``, then
``--baseline-src /tmp/base/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchkit
from aiosmtpd_reference import serve as aiosmtpd_serve
from benchkit import client_sources, pin
from smtp_sessions import SmtpSession, run_sessions

from mailtls.net.pki import ensure_certificates

SRC = Path(__file__).resolve().parent.parent / "src"
PORT_NAMES = ("smtp_mx", "smtp_submission", "smtp_tls", "imap", "imap_tls", "pop3", "pop3_tls")
TICK = os.sysconf("SC_CLK_TCK")
WARMUP = 200  # sessions before each measured round


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (children not included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of ``pid`` (the main thread's id is ``pid``)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by thread id (``py-spy dump``; empty without py-spy)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--nonblocking"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
        return {
            int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', out, re.M)
        }
    return {}


def journal_lines(data: Path) -> int:
    """Records in the journal files under ``data`` (active file and sealed segments)."""
    total = 0
    for path in data.rglob("*.jsonl"):
        with path.open("rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def on_cpu0() -> None:
    os.sched_setaffinity(0, {0})


def tls13_client(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class LineSession(SmtpSession):
    """IMAP/POP3 as a script of (expected prefix, reply): STARTTLS/STLS, then a login."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        done: asyncio.Future[None],
        script: tuple[tuple[bytes, bytes | None], ...],
    ) -> None:
        super().__init__(ctx, done)
        self.SCRIPT = script

    def _handshake_done(self) -> None:
        """After STARTTLS/STLS the client speaks first: the script's next line (the login)."""
        reply = self.SCRIPT[self.step][1]
        self.step += 1
        assert reply
        self._send(reply)

    def _skip(self, line: bytes, code: bytes) -> bool:
        """IMAP untagged lines (``* ...``) before the tagged reply awaited."""
        return line.startswith(b"* ") and not code.startswith(b"* ")


def imap_script(user: str, password: str) -> tuple[tuple[bytes, bytes | None], ...]:
    return (
        (b"* OK", b"a STARTTLS\r\n"),
        (b"a OK", None),
        (b"", f'b LOGIN "{user}" "{password}"\r\n'.encode()),
        (b"b OK", b"c LOGOUT\r\n"),
        (b"c OK", b""),
    )


def pop3_script(user: str, password: str) -> tuple[tuple[bytes, bytes | None], ...]:
    return (
        (b"+OK", b"STLS\r\n"),
        (b"+OK", None),
        (b"", f"USER {user}\r\n".encode()),
        (b"+OK", f"PASS {password}\r\n".encode()),
        (b"+OK", b"QUIT\r\n"),
        (b"+OK", b""),
    )


class TlsOnly(asyncio.Protocol):
    """One TLS 1.3 handshake, one line each way (``s_server -rev`` answers it reversed)."""

    def __init__(self, ctx: ssl.SSLContext, done: asyncio.Future[None]) -> None:
        self.done = done
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.transport: asyncio.Transport | None = None
        self.handshaking = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self.transport.write(self.outgoing.read())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.incoming.write(data)
        try:
            if self.handshaking:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    self.transport.write(self.outgoing.read())
                    return
                self.handshaking = False
                self.tls.write(b"ping\n")
                self.transport.write(self.outgoing.read())
            with contextlib.suppress(ssl.SSLWantReadError):
                if b"\n" in self.tls.read(65536):
                    self.transport.close()
                    if not self.done.done():
                        self.done.set_result(None)
        except Exception as exc:
            if not self.done.done():
                self.done.set_exception(exc)
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def run_factory(port: int, n: int, concurrency: int, factory: Any) -> int:
    """``n`` sessions of ``factory(done)`` to ``port``, ``concurrency`` at a time."""
    loop = asyncio.get_running_loop()
    sources = client_sources(997)
    state = {"next": 0, "done": 0, "failed": 0}

    async def one(i: int) -> None:
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda: factory(done), "127.0.0.1", port, local_addr=(sources[i % len(sources)], 0)
        )
        await done

    async def worker() -> None:
        while state["next"] < n:
            i = state["next"]
            state["next"] += 1
            try:
                await asyncio.wait_for(one(i), 30)
                state["done"] += 1
            except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
                state["failed"] += 1
                if state["failed"] <= 3:
                    print(f"  session failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return state["done"]


class Mailtls:
    name = "mailtls serve"

    def __init__(self, root: Path, tls_dir: Path, src: Path = SRC, name: str = "mailtls") -> None:
        data = self.data = root / name
        (data / "tls").mkdir(parents=True, mode=0o700)
        for name in ("ca.pem", "server.pem", "server.key"):
            shutil.copy(tls_dir / name, data / "tls" / name)
            (data / "tls" / name).chmod(0o600)
        self.http = free_port()
        first = free_range()
        ports = "\n".join(f"{k} = {free_port()}" for k in PORT_NAMES)
        config = data / "mailtls.toml"
        config.write_text(
            f'data_dir = "{data}"\n'
            f"[ports]\n{ports}\nhttp = {self.http}\n"
            f"[endpoints]\nport_first = {first}\nport_last = {first + 59}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTLS_")}
        env["PYTHONPATH"] = str(src)
        self.log = data / "serve.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailtls", "serve", "--config", str(config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=on_cpu0,
        )
        self.pid = self.proc.pid
        base = f"http://127.0.0.1:{self.http}"
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mailtls serve did not start:\n{self.log.read_text()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base + "/api/openapi.json", timeout=2).close()
                break
            time.sleep(0.1)
        run = self._post(
            base + "/api/runs", {"steps": [{"scenario": "immediate", "testcase": "baseline"}]}
        )
        view = self._post(f"{base}/api/runs/{run['id']}/steps/1/start", {})
        account = view["account"]
        self.user, self.password = account["username"], account["password"]
        servers = account["servers"]

        def port_of(protocol: str, security: str) -> int:
            return int(next(s["port"] for s in servers[protocol] if s["security"] == security))

        self.port = port_of("smtp", "starttls")
        self.imap_port, self.pop3_port = port_of("imap", "starttls"), port_of("pop3", "starttls")
        self.threads = thread_names(self.pid)
        self.auth = (
            b"AUTH PLAIN " + base64.b64encode(f"\0{self.user}\0{self.password}".encode()) + b"\r\n"
        )

    @staticmethod
    def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.load(resp))

    def sessions(self, n: int, concurrency: int, ctx: ssl.SSLContext) -> int:
        import uvloop

        return int(uvloop.run(run_sessions(self.port, n, concurrency, ctx, self.auth)))

    def other(self, kind: str, n: int, concurrency: int, ctx: ssl.SSLContext) -> int:
        import uvloop

        port, script = (
            (self.imap_port, imap_script(self.user, self.password))
            if kind == "imap"
            else (self.pop3_port, pop3_script(self.user, self.password))
        )
        return int(
            uvloop.run(
                run_factory(port, n, concurrency, lambda done: LineSession(ctx, done, script))
            )
        )

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Aiosmtpd:
    name = "aiosmtpd"

    def __init__(self, cert: Path, key: Path) -> None:
        mp = multiprocessing.get_context("spawn")
        self.pipe, child = mp.Pipe()
        self.proc = mp.Process(target=aiosmtpd_serve, args=(child, str(cert), str(key), 0))
        self.proc.start()
        self.port = int(self.pipe.recv())
        assert self.proc.pid is not None
        self.pid = self.proc.pid

    def sessions(self, n: int, concurrency: int, ctx: ssl.SSLContext) -> int:
        import uvloop

        return int(uvloop.run(run_sessions(self.port, n, concurrency, ctx)))

    def close(self) -> None:
        self.pipe.send("quit")
        self.pipe.recv()
        self.proc.join(10)


class SServer:
    name = "openssl s_server"

    def __init__(self, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *("openssl", "s_server", "-accept", f"127.0.0.1:{self.port}"),
                *("-cert", str(cert), "-key", str(key), "-tls1_3", "-num_tickets", "1"),
                *("-rev", "-quiet"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=on_cpu0,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError("openssl s_server did not start")

    def sessions(self, n: int, concurrency: int, ctx: ssl.SSLContext) -> int:
        import uvloop

        return int(
            uvloop.run(run_factory(self.port, n, concurrency, lambda done: TlsOnly(ctx, done)))
        )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def free_range(size: int = 60) -> int:
    for first in range(20000, 30000, size):
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + size):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError("no free port range")


class Measured:
    """``n`` sessions after a warm-up: server CPU (all threads, and per thread), and for
    mailtls the journal records they wrote."""

    def __init__(self, server: Any, run: Any, n: int) -> None:
        pid, data = server.pid, getattr(server, "data", None)
        run(WARMUP)  # not counted
        threads0, lines0 = thread_cpu(pid), journal_lines(data) if data else 0
        cpu0 = cpu_seconds(pid)
        self.done = int(run(n))
        self.cpu = cpu_seconds(pid) - cpu0
        self.records = journal_lines(data) - lines0 if data else 0
        threads = thread_cpu(pid)
        self.threads = sorted(
            ((t - threads0.get(tid, 0.0), tid) for tid, t in threads.items()), reverse=True
        )


def pyspy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("  (py-spy is not installed: pip install py-spy; no profile)")
        return None
    return subprocess.Popen(
        [
            *(exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250"),
            *("--format", "raw", "--threads", "--gil", "--nonblocking", "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(path: Path, lines: int) -> None:
    """Self time per function and inclusive time per module group, from py-spy's raw stacks."""
    leaf: collections.Counter[str] = collections.Counter()
    group: collections.Counter[str] = collections.Counter()
    total = 0
    for row in path.read_text().splitlines():
        stack, _, count_text = row.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf[frames[-1]] += count
        group[classify(frames)] += count
    print(
        f"  py-spy: {total} samples of mailtls serve (all threads, only while holding the GIL: "
        "waits in epoll, fdatasync and SQLite's C code are left out)"
    )
    for name, count in group.most_common():
        print(f"    {count / total * 100:5.1f} %  {name}")
    print("  hottest functions (self time):")
    for name, count in leaf.most_common(lines):
        print(f"    {count / total * 100:5.1f} %  {name[:150]}")


GROUPS = (
    ("TLS (ssl: handshake, record crypto)", ("tlsengine.py", "ssl.py")),
    ("journal (store/journal.py, encoding)", ("journal.py", "encoding.py")),
    ("index thread (store/index.py, sqlite3)", ("index.py",)),
    ("store (store.py: subscribers, run manager)", ("store.py", "manager.py", "runs/")),
    ("protocol core (protocols/)", ("protocols/",)),
    ("shell (net/connection.py, listeners)", ("connection.py", "listeners.py", "limits.py")),
)


def classify(frames: list[str]) -> str:
    """The innermost mailtls layer on the stack (TLS before the shell that called it)."""
    for frame in reversed(frames):
        for name, marks in GROUPS:
            if any(m in frame for m in marks):
                return name
    return "event loop, kernel, other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--imap-pop3", action="store_true", help="IMAP and POP3 rounds as well")
    parser.add_argument("--profile", action="store_true", help="py-spy mailtls serve in round 1")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--baseline-src", type=Path, help="src/ of a mailtls to compare with")
    parser.add_argument("--only-mailtls", action="store_true", help="no aiosmtpd, no s_server")
    args = parser.parse_args()
    pin(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the servers are closed below
    rates: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="mailtls-full-") as tmp:
        root = Path(tmp)
        certs = ensure_certificates(benchkit.bench_settings(root))
        ctx = tls13_client(certs.ca)
        servers: list[Any] = []
        try:
            mailtls = Mailtls(root, root / "tls")
            servers = [mailtls, Aiosmtpd(certs.cert, certs.key), SServer(certs.cert, certs.key)]
            plan: list[tuple[str, Any, Any]] = [
                ("mailtls SMTP", mailtls, lambda n: mailtls.sessions(n, args.concurrency, ctx)),
                (
                    "aiosmtpd SMTP",
                    servers[1],
                    lambda n: servers[1].sessions(n, args.concurrency, ctx),
                ),
                (
                    "s_server TLS",
                    servers[2],
                    lambda n: servers[2].sessions(n, args.concurrency, ctx),
                ),
            ]
            if args.baseline_src is not None:
                base = Mailtls(root, root / "tls", args.baseline_src.resolve(), "baseline")
                servers.append(base)
                plan.insert(
                    1,
                    ("baseline SMTP", base, lambda n: base.sessions(n, args.concurrency, ctx)),
                )
            if args.only_mailtls:
                plan = [p for p in plan if "mailtls" in p[0] or "baseline" in p[0]]
            if args.imap_pop3:
                for kind in ("imap", "pop3"):
                    plan.append(
                        (
                            f"mailtls {kind.upper()}",
                            mailtls,
                            lambda n, k=kind: mailtls.other(k, n, args.concurrency, ctx),
                        )
                    )
            for r in range(args.rounds):
                for label, server, run in plan:
                    spy = None
                    prof = root / "profile.txt"
                    if args.profile and r == 0 and label == "mailtls SMTP":
                        spy = pyspy(server.pid, 600, prof)
                        time.sleep(0.5)
                    m = Measured(server, run, args.sessions)
                    done, cpu = m.done, m.cpu
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(30)
                        if prof.exists():
                            summarize_profile(prof, args.profile_lines)
                        continue  # sampling slows the server: a profiled round is not counted
                    rates[label].append(done / cpu)
                    print(
                        f"round {r + 1}  {label:14} sessions={done:5}  server CPU={cpu:6.2f} s  "
                        f"per server CPU second={done / cpu:6.0f}",
                        flush=True,
                    )
                    if isinstance(server, Mailtls):
                        names = {server.pid: "event loop", **server.threads}
                        names[server.pid] = "event loop"
                        split = ", ".join(
                            f"{names.get(tid, 'thread')} {c / done * 1e6:.0f}"
                            for c, tid in m.threads
                            if c > 0
                        )
                        print(
                            f"          µs of server CPU per session by thread: {split}; "
                            f"journal records per session {m.records / done:.1f}"
                        )
        finally:
            for server in servers:
                server.close()
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    print("median sessions (s_server: handshakes) per server CPU second:")
    for label, value in med.items():
        print(f"  {label:14} {value:6.0f}")
    smtp = med.get("mailtls SMTP")
    if smtp and "aiosmtpd SMTP" in med and "s_server TLS" in med:
        print(
            f"mailtls/aiosmtpd = {smtp / med['aiosmtpd SMTP']:.2f} (target >= 1.25, aim 1.5); "
            f"mailtls/s_server = {smtp / med['s_server TLS']:.2f} (target >= 0.63); "
            f"aiosmtpd/s_server = {med['aiosmtpd SMTP'] / med['s_server TLS']:.2f}"
        )
    if smtp and "baseline SMTP" in med:
        print(
            "mailtls/baseline (this tree against --baseline-src) = "
            f"{smtp / med['baseline SMTP']:.3f}"
        )
    for kind in ("IMAP", "POP3"):
        if f"mailtls {kind}" in med and "s_server TLS" in med:
            print(f"mailtls {kind}/s_server = {med[f'mailtls {kind}'] / med['s_server TLS']:.2f}")
    print(
        "(the machine is shared: absolute figures move between runs, the ratios within one "
        "run are what counts; CPU = utime+stime of the server process, all threads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
