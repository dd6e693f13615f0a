"""Test kit for the I/O shell: a tiny line core, a recording sink, a server factory, clients.

``MiniCore`` is a deliberately small protocol core (not SMTP/IMAP/POP3): each line gets a reply
so tests can drive every command the shell understands:
``STARTTLS`` (reply, discard pipelined bytes, StartTls), ``HELLO`` (reply, ReadClientHello),
``RAW`` (SendRaw outside TLS), ``SLOW`` (a delayed Send followed by a record and a Send),
``QUIT`` (Close), ``RESET`` (Close with reset), anything else: ``250 <line>``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailtls import observations as obs
from mailtls.net.listeners import MailServer
from mailtls.net.pki import ServerCertificates, ensure_certificates
from mailtls.net.types import Binder, ListenerSpec
from mailtls.protocols.base import (
    AuthDecision,
    ClientHelloReceived,
    Close,
    Closed,
    Command,
    Connected,
    Credential,
    DataReceived,
    Event,
    Kicked,
    LineBuffer,
    LineTooLong,
    PortRole,
    ReadClientHello,
    Record,
    Send,
    SendRaw,
    SessionContext,
    SetTimer,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsFailed,
)
from mailtls.runs.types import Binding
from mailtls.settings import Settings


class MiniCore:
    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.lines = LineBuffer(ctx.limits.line_bytes)
        self.tls = False
        self.raw = False
        self.partial_since = False

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Connected):
            self.tls = event.tls is not None
            return [Send(b"220 mini ready\r\n"), SetTimer(self.ctx.limits.idle_seconds)]
        if isinstance(event, DataReceived):
            if self.raw:
                return [Record(obs.DataAfterDisruption(len(event.data), False, ""))]
            self.lines.feed(event.data)
            return self._lines()
        if isinstance(event, TlsEstablished):
            self.tls = True
            info = event.info
            return [
                Record(obs.TlsStarted(info.version, info.cipher, implicit=False)),
                Send(b"220 tls ok\r\n"),
            ]
        if isinstance(event, TlsFailed):
            return [Record(obs.TlsHandshakeFailed(event.reason)), Close()]
        if isinstance(event, ClientHelloReceived):
            return [
                Record(
                    obs.StarttlsDisrupted("handshake", event.nbytes, event.looks_like_tls, "454")
                ),
                Send(b"454 cleartext\r\n"),
                SetTimer(self.ctx.limits.disrupted_seconds),
            ]
        if isinstance(event, Timeout):
            return [Record(obs.ProtocolError("timeout", "421")), Send(b"421 timeout\r\n"), Close()]
        if isinstance(event, Kicked):
            return [Record(obs.SessionKicked(event.reason)), Send(b"421 kicked\r\n"), Close()]
        if isinstance(event, Closed):
            return [Record(obs.ProtocolError("peer_closed", "")), Send(b"never sent\r\n")]
        raise AssertionError(event)

    def _lines(self) -> list[Command]:
        out: list[Command] = []
        while True:
            line = self.lines.next_line()
            if line is None:
                break
            if isinstance(line, LineTooLong):
                out += [Record(obs.ProtocolError("too_long", "500")), Send(b"500 too long\r\n")]
                continue
            text = line.decode("utf-8", "replace")
            out.append(Record(obs.CommandReceived(text, self.tls)))
            out += self._command(text.upper())
            if out and isinstance(out[-1], StartTls | ReadClientHello | Close):
                return out
        if self.lines.pending:
            if not self.partial_since:  # absolute deadline from the first byte of the line
                self.partial_since = True
                out.append(SetTimer(self.ctx.limits.line_seconds))
        else:
            self.partial_since = False
            out.append(SetTimer(self.ctx.limits.idle_seconds))
        return out

    def _command(self, verb: str) -> list[Command]:
        if verb == "STARTTLS":
            rest = self.lines.take_rest()
            cmds: list[Command] = [Send(b"220 go ahead\r\n")]
            if rest:
                cmds.append(Record(obs.PipelinedAfterStarttls(len(rest))))
            return [*cmds, StartTls()]
        if verb == "HELLO":
            self.lines.take_rest()
            return [Send(b"220 go ahead\r\n"), ReadClientHello()]
        if verb == "RAW":
            self.raw = True
            return [SendRaw(b"454 raw outside tls\r\n"), Record(obs.SessionKicked("raw"))]
        if verb == "SLOW":
            return [
                Send(b"250 first\r\n", delay=0.3),
                Record(obs.ProtocolError("between", "")),
                Send(b"250 second\r\n"),
            ]
        if verb == "QUIT":
            return [Send(b"221 bye\r\n"), Close()]
        if verb == "RESET":
            return [Close(reset=True)]
        return [Send(b"250 " + verb.encode() + b"\r\n")]


class Journal:
    """A sink that keeps records and lets tests wait for one."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.hook: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.hook is not None:
            self.hook(record)

    def of(self, type_: str, conn: str | None = None) -> list[dict[str, Any]]:
        return [
            r for r in self.records if r["type"] == type_ and (conn is None or r["conn"] == conn)
        ]

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.of(type_)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} {type_} records: {self.types()}")
            await asyncio.sleep(0.01)
        return self.of(type_)

    def types(self) -> list[str]:
        return [r["type"] for r in self.records]


def authenticator(credential: Credential) -> AuthDecision:
    return AuthDecision(False, "h:x", None)


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    settings = Settings(data_dir=tmp_path)
    tls = changes.pop("tls", {})
    limits = changes.pop("limits", {})
    connections = changes.pop("connections", {})
    return replace(
        settings,
        tls=replace(settings.tls, **tls),
        limits=replace(settings.limits, **limits),
        connections=replace(settings.connections, **connections),
        **changes,
    )


SPECS = [
    ListenerSpec("mini", "mini", PortRole.SUBMISSION, 0, False),
    ListenerSpec("mini_tls", "mini", PortRole.SUBMISSION, 0, True),
]


def no_binding(ip: str, local: tuple[str, int]) -> None:
    return None


RUN_BINDING = Binding("run-under-test", 1, "baseline", "immediate", "address", active=False)


def bound(ip: str, local: tuple[str, int]) -> Binding:
    """Every connection is bound to one run (honest baseline): the shell records it fully.
    Connections bound to no run are recorded compactly (``test_net_recording.py``)."""
    return RUN_BINDING


async def start_server(
    settings: Settings,
    journal: Journal,
    binder: Binder = bound,
    specs: list[ListenerSpec] | None = None,
    **kwargs: Any,
) -> MailServer:
    server = MailServer(
        settings,
        certs=ensure_certificates(settings),
        binder=binder,
        authenticator=authenticator,
        sink=journal,
        core_factories={"mini": MiniCore},
        specs=specs or SPECS,
        **kwargs,
    )
    await server.start()
    return server


def client_context(certs: ServerCertificates) -> ssl.SSLContext:
    assert certs.ca is not None
    return ssl.create_default_context(cafile=str(certs.ca))


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """The ClientHello record ``ctx`` sends first (made on memory BIOs, no socket)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()
    raise AssertionError("a handshake completed without a server")


class LineClient:
    """A blocking client (run it in a thread) that reads CRLF lines, with STARTTLS."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock: socket.socket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, data: bytes) -> bytes:
        self.send(data + b"\r\n")
        return self.line()

    def starttls(self, ctx: ssl.SSLContext, hostname: str = "localhost") -> None:
        assert self.buf == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname=hostname)

    def read_eof(self) -> bytes:
        """Everything until the server closes."""
        data = self.buf
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()
