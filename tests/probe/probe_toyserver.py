"""A tiny purpose-built mail server (asyncio, 127.0.0.1) for the probe's own tests.

It speaks just enough SMTP, IMAP or POP3 for the probe: greeting, capabilities, STARTTLS, NOOP,
a login that always fails (``535`` / ``NO [AUTHENTICATIONFAILED]`` / ``-ERR [AUTH]``) and QUIT.
Its STARTTLS handling is the point:

- ``SAFE``: discards whatever the client pipelined after STARTTLS (the correct behaviour);
- ``VULNERABLE``: keeps the pipelined bytes in its reader buffer and answers them inside TLS
  (the CVE-2011-0411 class: asyncio's ``start_tls`` leaves the StreamReader buffer untouched);
- ``PLAINTEXT_REPLY``: answers the pipelined command in plaintext before the handshake.

``lines`` records every line received (to check that the dummy password never leaks into the
probe's output); ``greeting`` can be replaced (hostile banners), ``silent`` makes it accept
and say nothing (timeouts), ``offer_starttls = False`` drops STARTTLS from SMTP's EHLO and
``login_delay`` delays the failed-login answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


class Mode(enum.Enum):
    SAFE = "safe"
    VULNERABLE = "vulnerable"
    PLAINTEXT_REPLY = "plaintext-reply"


GREETING = {
    "smtp": b"220 toy.test ESMTP\r\n",
    "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR] toy ready\r\n",
    "pop3": b"+OK toy ready\r\n",
}


@dataclass
class ToyServer:
    protocol: str
    mode: Mode
    ctx: ssl.SSLContext
    greeting: bytes | None = None
    silent: bool = False
    offer_starttls: bool = True
    login_delay: float = 0.0
    lines: list[bytes] = field(default_factory=list)
    port: int = 0

    def reply(self, line: bytes, tls: bool) -> tuple[bytes, bool]:
        """(reply bytes, whether this line was STARTTLS)."""
        text = line.decode("latin-1").rstrip("\r\n")
        handlers = {"smtp": self._smtp, "imap": self._imap, "pop3": self._pop3}
        return handlers[self.protocol](text, tls)

    def _smtp(self, text: str, tls: bool) -> tuple[bytes, bool]:
        verb = text.split(" ", 1)[0].upper()
        if verb == "EHLO":
            caps = b"250-toy.test\r\n"
            if not tls and self.offer_starttls:
                caps += b"250-STARTTLS\r\n"
            return caps + b"250 AUTH PLAIN LOGIN\r\n", False
        if verb == "STARTTLS":
            return b"220 2.0.0 Ready to start TLS\r\n", True
        if verb == "AUTH":
            return b"535 5.7.8 Authentication credentials invalid\r\n", False
        if verb == "MAIL":
            return b"250 2.1.0 Ok\r\n", False
        if verb in ("NOOP", "RSET"):
            return b"250 2.0.0 Ok\r\n", False
        if verb == "QUIT":
            return b"221 2.0.0 Bye\r\n", False
        return b"502 5.5.2 Error: command not recognized\r\n", False

    def _imap(self, text: str, tls: bool) -> tuple[bytes, bool]:
        tag, _, rest = text.partition(" ")
        verb = rest.split(" ", 1)[0].upper()
        if verb == "CAPABILITY":
            caps = "IMAP4rev1 AUTH=PLAIN SASL-IR" + ("" if tls else " STARTTLS")
            return f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode(), False
        if verb == "STARTTLS":
            return f"{tag} OK Begin TLS negotiation now\r\n".encode(), True
        if verb in ("LOGIN", "AUTHENTICATE"):
            return f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".encode(), False
        if verb == "NOOP":
            return f"{tag} OK NOOP completed\r\n".encode(), False
        if verb == "LOGOUT":
            return f"* BYE bye\r\n{tag} OK done\r\n".encode(), False
        return f"{tag} BAD unknown\r\n".encode(), False

    def _pop3(self, text: str, tls: bool) -> tuple[bytes, bool]:
        verb = text.split(" ", 1)[0].upper()
        if verb == "CAPA":
            caps = "+OK\r\nUSER\r\nSASL PLAIN\r\n" + ("" if tls else "STLS\r\n")
            return (caps + ".\r\n").encode(), False
        if verb == "STLS":
            return b"+OK Begin TLS negotiation now\r\n", True
        if verb in ("AUTH", "PASS"):
            return b"-ERR [AUTH] Authentication failed.\r\n", False
        if verb in ("USER", "NOOP"):
            return b"+OK\r\n", False
        if verb == "QUIT":
            return b"+OK bye\r\n", False
        return b"-ERR unknown\r\n", False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._session(reader, writer)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            await asyncio.sleep(30)
            return
        writer.write(self.greeting if self.greeting is not None else GREETING[self.protocol])
        tls = False
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:
                return
            self.lines.append(line)
            answer, starttls = self.reply(line, tls)
            if not starttls or tls:
                if b"uthentication failed" in answer or b"credentials invalid" in answer:
                    await asyncio.sleep(self.login_delay)  # servers delay failed logins
                writer.write(answer)
                await writer.drain()
                if line.upper().split(b" ")[-1].strip() in (b"QUIT", b"LOGOUT"):
                    return
                continue
            if self.mode is Mode.VULNERABLE:
                writer.write(answer)  # the pipelined bytes stay in the reader's buffer
            else:
                pipelined = b""
                with contextlib.suppress(TimeoutError):
                    pipelined = await asyncio.wait_for(reader.read(65536), 0.2)
                writer.write(answer)
                if self.mode is Mode.PLAINTEXT_REPLY:
                    for extra in pipelined.splitlines(keepends=True):
                        writer.write(self.reply(extra, tls)[0])
            await writer.drain()
            await writer.start_tls(self.ctx)
            tls = True


@contextlib.asynccontextmanager
async def running(server: ToyServer) -> AsyncIterator[ToyServer]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        srv.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.wait_closed(), 5)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
