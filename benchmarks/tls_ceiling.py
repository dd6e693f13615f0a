"""The TLS ceiling of this machine: server-side TLS 1.3 handshakes per CPU second, no sockets.

A server ``SSLObject`` (mailtls's own context: ECDSA P-256 test certificate, one ticket) and a
client ``SSLObject`` exchange the handshake over memory BIOs in one thread; only the CPU time of
the server's calls is counted (``time.thread_time`` around each), so the client's cost and the
kernel are left out. No protocol, no journal, no event loop: an upper bound for any Python
server using ``ssl`` on this machine, to set ``smtp_sessions.py``'s figure against.

    .venv/bin/python benchmarks/tls_ceiling.py [--handshakes 3000] [--repeat 3] [--cpu 0]
        [--tickets N]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

import benchkit
from benchkit import pin

from mailtls.net.pki import ensure_certificates, server_ssl_context


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> float:
    """One full handshake plus one small record each way; returns the server's CPU seconds."""
    clock = time.thread_time
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    spent = 0.0
    t0 = clock()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    spent += clock() - t0
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            t0 = clock()
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            spent += clock() - t0
        c_in.write(s_out.read())
    client.write(b"EHLO x\r\n")
    s_in.write(c_out.read())
    t0 = clock()
    server.read(1024)
    server.write(b"250 ok\r\n")
    out = s_out.read()
    spent += clock() - t0
    c_in.write(out)
    client.read(1024)
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument(
        "--tickets", type=int, default=None, help="TLS 1.3 tickets (default: mailtls's, 1)"
    )
    args = parser.parse_args()
    pin(args.cpu)
    with tempfile.TemporaryDirectory(prefix="mailtls-tls-") as tmp:
        certs = ensure_certificates(benchkit.bench_settings(Path(tmp)))
        server_ctx = server_ssl_context(certs.cert, certs.key)
        if args.tickets is not None:
            server_ctx.num_tickets = args.tickets
        client_ctx = ssl.create_default_context(cafile=str(certs.ca))
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        for _ in range(50):
            handshake(server_ctx, client_ctx)
        for _ in range(args.repeat):
            spent = sum(handshake(server_ctx, client_ctx) for _ in range(args.handshakes))
            print(
                f"server-side TLS 1.3 handshakes (ECDSA P-256, {server_ctx.num_tickets} ticket(s), "
                f"{ssl.OPENSSL_VERSION}): "
                f"{spent / args.handshakes * 1e6:.0f} µs each, "
                f"{args.handshakes / spent:.0f} per server CPU second"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
