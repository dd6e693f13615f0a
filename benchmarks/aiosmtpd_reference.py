"""The issue's reference server on this machine: aiosmtpd sessions per server CPU second.

Same client and session as ``smtp_sessions.py`` (EHLO, STARTTLS, TLS 1.3 with mailtls's test
certificate, EHLO, AUTH PLAIN, QUIT) against aiosmtpd (no event recording) in its own process
pinned to CPU 0, so mailtls's figure can be set against it measured on the same machine at
about the same time. aiosmtpd is not a mailtls dependency: install it anywhere on the path, e.g.
``pip install --target /tmp/aiosmtpd_pkg aiosmtpd`` and run with
``PYTHONPATH=/tmp/aiosmtpd_pkg .venv/bin/python benchmarks/aiosmtpd_reference.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import ssl
import sys
import tempfile
import time
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import benchkit
from benchkit import USER, pin
from smtp_sessions import run_sessions

from mailtls.net.pki import ensure_certificates, server_ssl_context


def serve(conn: Connection, cert: str, key: str, cpu: int) -> None:
    pin(cpu)
    warnings.simplefilter("ignore")  # aiosmtpd 1.4 warns about its own deprecated attribute
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # ... and logs it, per session
    asyncio.run(_serve(conn, cert, key))


async def _serve(conn: Connection, cert: str, key: str) -> None:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    ctx = server_ssl_context(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and data.login.decode().lower() == USER.lower()
        return AuthResult(success=ok)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            Handler(),
            tls_context=ctx,
            authenticator=authenticator,
            auth_require_tls=True,
            hostname="bench.example",
        ),
        "127.0.0.1",
        0,
    )
    conn.send(server.sockets[0].getsockname()[1])
    inbox: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    cpu0 = 0.0
    while True:
        msg = await inbox.get()
        if msg == "start":
            cpu0 = time.process_time()
            conn.send("ok")
        elif msg == "stop":
            conn.send(time.process_time() - cpu0)
        else:
            break
    loop.remove_reader(conn.fileno())
    server.close()
    conn.send("bye")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=48)
    args = parser.parse_args()
    pin(1)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="mailtls-aiosmtpd-") as tmp:
        certs = ensure_certificates(benchkit.bench_settings(Path(tmp)))
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        proc = mp.Process(target=serve, args=(child, str(certs.cert), str(certs.key), 0))
        proc.start()
        port = parent.recv()
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        uvloop.run(run_sessions(port, 300, args.concurrency, ctx))
        parent.send("start")
        parent.recv()
        done = uvloop.run(run_sessions(port, args.sessions, args.concurrency, ctx))
        parent.send("stop")
        cpu = parent.recv()
        parent.send("quit")
        parent.recv()
        proc.join(10)
    print(
        f"aiosmtpd (asyncio, no recording) sessions={done}  server CPU={cpu:.2f} s  "
        f"sessions per server CPU second={done / cpu:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
