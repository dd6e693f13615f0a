"""SMTP STARTTLS+AUTH sessions per server CPU second, with the asyncio loop and with uvloop.

The server (real ``MailServer`` + ``SmtpCore``, events journalled into a real ``Store``) runs in
its own process pinned to CPU 0; this process generates load pinned to CPU 1, from source
addresses spread over 127.0.0.0/8 (per-address limits stay on and do not throttle). A session:
connect, EHLO, STARTTLS, TLS 1.3 handshake, EHLO, AUTH PLAIN, QUIT. The figure is sessions per
second of server CPU time (``time.process_time`` in the server: all its threads, including the
journal's fsync and index threads), so it does not depend on the load generator's speed.

    .venv/bin/python benchmarks/smtp_sessions.py [--sessions 4000] [--concurrency 48]
        [--loop both|asyncio|uvloop] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import pstats
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchkit
from benchkit import USER, client_sources, pin, server_main

from mailtls.net.pki import ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.protocols.base import PortRole
from mailtls.store.encoding import BACKEND

SPECS = [ListenerSpec("smtp_submission", "smtp", PortRole.SUBMISSION, 0, False)]
TARGET = 1400
AUTH = b"AUTH PLAIN " + base64.b64encode(b"\0" + USER.encode() + b"\0secret") + b"\r\n"


class SmtpSession(asyncio.Protocol):
    """A lean client for one session (memory-BIO TLS, so the load generator stays cheap)."""

    def __init__(self, ctx: ssl.SSLContext, done: asyncio.Future[None], auth: bytes = AUTH) -> None:
        self.SCRIPT = (
            (b"220", b"EHLO bench.example\r\n"),
            (b"250", b"STARTTLS\r\n"),
            (b"220", None),  # start TLS, then EHLO inside TLS
            (b"250", auth),
            (b"235", b"QUIT\r\n"),
            (b"221", b""),
        )
        self.ctx = ctx
        self.done = done
        self.step = 0
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.tls: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.handshaking = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            if self.tls is None:
                self.buf += data
            else:
                self.incoming.write(data)
                if self.handshaking:
                    try:
                        self.tls.do_handshake()
                    except ssl.SSLWantReadError:
                        self._flush()
                        return
                    self.handshaking = False
                    self._handshake_done()
                while True:
                    try:
                        chunk = self.tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    if not chunk:  # close_notify
                        break
                    self.buf += chunk
            self._replies()
        except Exception as exc:  # a failed session is counted, not fatal
            self._fail(exc)

    def _handshake_done(self) -> None:
        self._send(b"EHLO bench.example\r\n")

    def _skip(self, line: bytes, code: bytes) -> bool:
        """A line that is not the reply awaited (SMTP: a continuation line ``250-...``)."""
        return line[3:4] == b"-"

    def _replies(self) -> None:
        while b"\r\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\r\n")
            code, reply = self.SCRIPT[self.step]
            if self._skip(line, code):
                continue
            if not code:  # a step the client takes by itself (after a handshake)
                raise RuntimeError(f"unexpected {line!r}")
            if not line.startswith(code):
                raise RuntimeError(f"expected {code!r}, got {line!r}")
            self.step += 1
            if reply is None:
                self.tls = self.ctx.wrap_bio(
                    self.incoming, self.outgoing, server_hostname="localhost"
                )
                self.handshaking = True
                with contextlib.suppress(ssl.SSLWantReadError):
                    self.tls.do_handshake()
                self._flush()
            elif reply:
                self._send(reply)
            else:
                assert self.transport is not None
                self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        if self.tls is None:
            self.transport.write(data)
        else:
            self.tls.write(data)
            self._flush()

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out and self.transport is not None:
            self.transport.write(out)

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def session(port: int, source: str, ctx: ssl.SSLContext, auth: bytes = AUTH) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    await loop.create_connection(
        lambda: SmtpSession(ctx, done, auth), "127.0.0.1", port, local_addr=(source, 0)
    )
    await done


async def run_sessions(
    port: int, n: int, concurrency: int, ctx: ssl.SSLContext, auth: bytes = AUTH
) -> int:
    sources = client_sources(997)
    done = 0
    failures = 0
    next_index = 0

    async def worker() -> None:
        nonlocal done, failures, next_index
        while next_index < n:
            i = next_index
            next_index += 1
            try:
                await asyncio.wait_for(session(port, sources[i % len(sources)], ctx, auth), 30)
                done += 1
            except (OSError, RuntimeError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
                failures += 1
                if failures <= 3:
                    print(f"  session failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def measure(loop_kind: str, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    mp = multiprocessing.get_context("spawn")
    parent, child = mp.Pipe()
    proc = mp.Process(
        target=server_main,
        args=(child, str(data_dir / loop_kind), loop_kind, 0, SPECS, args.sink, args.breakdown),
    )
    (data_dir / loop_kind).mkdir()
    # the server and this process share one test CA
    certs = ensure_certificates(benchkit.bench_settings(data_dir))
    for name in ("ca.pem", "server.pem", "server.key"):
        target = data_dir / loop_kind / "tls" / name
        target.parent.mkdir(exist_ok=True, mode=0o700)
        target.write_bytes((data_dir / "tls" / name).read_bytes())
        target.chmod(0o600)
    proc.start()
    hello = parent.recv()
    port = hello["ports"]["smtp_submission"]
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    import uvloop

    uvloop.run(run_sessions(port, args.warmup, args.concurrency, ctx))
    parent.send(("start", args.profile))
    parent.recv()
    t0 = time.monotonic()
    done = uvloop.run(run_sessions(port, args.sessions, args.concurrency, ctx))
    wall = time.monotonic() - t0
    parent.send(("stop",))
    stats: dict[str, Any] = parent.recv()
    parent.send(("quit",))
    parent.recv()
    proc.join(10)
    stats.update(done=done, client_wall=wall)
    if args.profile:
        prof = data_dir / loop_kind / "server.prof"
        keep = Path(f"/tmp/smtp_sessions_{loop_kind}.prof")
        keep.write_bytes(prof.read_bytes())
        print(f"  profile: {keep}")
        pstats.Stats(str(keep)).sort_stats("tottime").print_stats(args.profile_lines)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--loop", choices=("both", "asyncio", "uvloop"), default="both")
    parser.add_argument("--profile", action="store_true", help="cProfile the server")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="split the event-loop thread's CPU time: TLS engine, protocol core, journal, rest",
    )
    parser.add_argument(
        "--sink",
        choices=("store", "file", "none"),
        default="store",
        help="event recording: the real Store (default), a plain O_APPEND file, or none",
    )
    parser.add_argument("--profile-lines", type=int, default=35)
    args = parser.parse_args()
    pin(1)
    kinds = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    with tempfile.TemporaryDirectory(prefix="mailtls-bench-") as tmp:
        for kind in kinds:
            s = measure(kind, args, Path(tmp))
            print(
                f"{kind:8} sessions={s['done']}  server CPU={s['cpu']:.2f} s  "
                f"(event loop thread {s['loop_cpu']:.2f} s)  "
                f"wall={s['wall']:.2f} s  events/session={s['events'] / max(1, s['done']):.1f}  "
                f"sessions per server CPU second={s['done'] / s['cpu']:.0f} "
                f"(target >= {TARGET}, aim 1600)"
            )
            if args.breakdown:
                per = {k: v / s["done"] * 1e6 for k, v in s["spent"].items()}
                rest = s["loop_cpu"] / s["done"] * 1e6 - sum(per.values())
                other = (s["cpu"] - s["loop_cpu"]) / s["done"] * 1e6
                print(
                    "         µs per session: TLS engine {tls:.0f}, protocol core {core:.0f}, "
                    "journal sink {journal:.0f}, shell+event loop+kernel {rest:.0f}; "
                    "other threads (fsync, index) {other:.0f}".format(**per, rest=rest, other=other)
                )
    print(
        {
            "store": "events: mailtls.store.Store (JSONL O_APPEND, group-committed fdatasync, "
            f"SQLite index thread; JSON by {BACKEND}; the records of one read in one write)",
            "file": "events: one os.write per event to an O_APPEND JSONL file (no fsync/index)",
            "none": "events: counted and dropped (recording OFF, for comparison only)",
        }[args.sink]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
