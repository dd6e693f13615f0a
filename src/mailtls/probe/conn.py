"""One probe connection: a blocking socket with deadlines, bounded line reads, STARTTLS upgrade.

Every read has a size bound (``MAX_LINE`` per line, ``MAX_LINES`` per reply) and a timeout that
never passes the port's deadline. ``Conn`` keeps a transcript of short, escaped lines (``C:`` what
we sent, ``S:`` what the server sent); the caller passes a redacted form for anything that
carries the dummy password, so the transcript never holds it. Failures are ``ProbeFailure`` with
a kind (``dns``, ``refused``, ``timeout``, ``tls``, ``closed``, ``protocol``, ``network``) and a
one-line message for the user. Imports only the standard library and ``mailtls.termsafe``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from dataclasses import dataclass, field

from mailtls.termsafe import escape_terminal

MAX_LINE = 4096
MAX_LINES = 200
MAX_PENDING = 16384
TRANSCRIPT_LIMIT = 400
SHOWN_LINE = 200


class ProbeFailure(Exception):
    """A network or protocol failure on one port, described for the user in one line."""

    def __init__(self, kind: str, message: str, connecting: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.connecting = connecting


@dataclass
class Deadline:
    """Absolute monotonic deadline; ``left(cap)`` is the time a single operation may take."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self, cap: float | None = None) -> float:
        remaining = self.at - time.monotonic()
        if cap is not None:
            remaining = min(remaining, cap)
        if remaining <= 0:
            raise ProbeFailure("timeout", "time budget for this port used up")
        return remaining


def show(data: bytes) -> str:
    """A received or sent line as a short, terminal-safe string (CRLF dropped)."""
    text = escape_terminal(data.rstrip(b"\r\n").decode("utf-8", "replace"))
    return text if len(text) <= SHOWN_LINE else text[:SHOWN_LINE] + "..."


@dataclass
class Conn:
    sock: socket.socket
    deadline: Deadline
    op_timeout: float
    transcript: list[str] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    tls: bool = False

    @classmethod
    def open(
        cls, address: tuple[str, int], family: int, deadline: Deadline, op_timeout: float
    ) -> Conn:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.left(op_timeout))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except ProbeFailure as exc:
            sock.close()
            raise ProbeFailure(exc.kind, exc.message, connecting=True) from None
        except ConnectionRefusedError:
            sock.close()
            msg = "connection refused (nothing listens there)"
            raise ProbeFailure("refused", msg, connecting=True) from None
        except TimeoutError:
            sock.close()
            msg = f"no answer to the connection within {op_timeout:g} s"
            raise ProbeFailure("timeout", msg, connecting=True) from None
        except OSError as exc:
            sock.close()
            msg = f"cannot connect: {exc.strerror or exc}"
            raise ProbeFailure("network", msg, connecting=True) from None
        return cls(sock, deadline, op_timeout)

    # --- addresses -------------------------------------------------------------------------
    def local_address(self) -> str:
        return str(self.sock.getsockname()[0])

    def peer_address(self) -> str:
        return str(self.sock.getpeername()[0])

    # --- transcript --------------------------------------------------------------------------
    def note(self, line: str) -> None:
        if len(self.transcript) < TRANSCRIPT_LIMIT:
            self.transcript.append(line)

    # --- writing -----------------------------------------------------------------------------
    def send(self, data: bytes, shown: str | None = None) -> None:
        """Send ``data``; ``shown`` replaces it in the transcript (use it for anything secret)."""
        if shown is not None:
            self.note("C: " + shown)
        else:
            for line in data.split(b"\r\n"):
                if line:
                    self.note("C: " + show(line))
        try:
            self.sock.settimeout(self.deadline.left(self.op_timeout))
            self.sock.sendall(data)
        except TimeoutError:
            raise ProbeFailure("timeout", "the server stopped reading") from None
        except OSError as exc:
            raise ProbeFailure("closed", f"connection lost while sending: {exc}") from None

    # --- reading -----------------------------------------------------------------------------
    def _fill(self, wait: float) -> bool:
        """Read once into the buffer; False on a clean close."""
        try:
            self.sock.settimeout(wait)
            chunk = self.sock.recv(MAX_LINE)
        except TimeoutError:
            raise ProbeFailure("timeout", f"no answer within {wait:.3g} s") from None
        except ssl.SSLError as exc:
            raise ProbeFailure("tls", f"TLS error while reading: {exc.reason or exc}") from None
        except OSError as exc:
            raise ProbeFailure("closed", f"connection lost: {exc}") from None
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_line(self, timeout: float | None = None) -> bytes:
        """One line including its CRLF, at most ``MAX_LINE`` bytes."""
        cap = self.op_timeout if timeout is None else timeout
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                self.note("S: " + show(line))
                return line
            if len(self.buffer) > MAX_LINE:
                raise ProbeFailure("protocol", f"server sent a line longer than {MAX_LINE} bytes")
            if not self._fill(self.deadline.left(cap)):
                if self.buffer:
                    self.note("S: " + show(bytes(self.buffer)) + " (no line end)")
                raise ProbeFailure("closed", "the server closed the connection")

    def pending(self, wait: float) -> bytes:
        """Whatever the server sends within ``wait`` seconds without being asked (bounded)."""
        got = bytes(self.buffer)
        self.buffer.clear()
        end = time.monotonic() + wait
        while len(got) < MAX_PENDING:
            left = end - time.monotonic()
            if left <= 0:
                break
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                left = 0.001
            try:
                self.sock.settimeout(left)
                chunk = self.sock.recv(MAX_PENDING - len(got))
            except TimeoutError:
                break
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            got += chunk
        for line in got.splitlines()[:20]:
            self.note("S: " + show(line))
        return got

    def readable_now(self, wait: float) -> bool:
        """True when bytes are waiting on the raw socket (or in our buffer) within ``wait``."""
        if self.buffer:
            return True
        ready, _, _ = select.select([self.sock], [], [], max(wait, 0.0))
        return bool(ready)

    # --- TLS ---------------------------------------------------------------------------------
    def upgrade(self, ctx: ssl.SSLContext, server_hostname: str | None) -> None:
        """TLS handshake on this socket (STARTTLS or implicit TLS); buffer must be empty."""
        if self.buffer:
            raise ProbeFailure("protocol", "plaintext bytes left over before the TLS handshake")
        try:
            self.sock.settimeout(self.deadline.left(self.op_timeout))
            self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        except ssl.SSLCertVerificationError:
            raise
        except TimeoutError:
            raise ProbeFailure("timeout", "TLS handshake did not complete in time") from None
        except ssl.SSLError as exc:
            raise ProbeFailure("tls", f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ProbeFailure("tls", f"TLS handshake failed: connection lost ({exc})") from None
        self.tls = True
        self.note(f"-- TLS established: {self.tls_version()} {self.tls_cipher()}")

    def tls_version(self) -> str:
        if isinstance(self.sock, ssl.SSLSocket):
            return self.sock.version() or ""
        return ""

    def tls_cipher(self) -> str:
        if isinstance(self.sock, ssl.SSLSocket):
            cipher = self.sock.cipher()
            return cipher[0] if cipher else ""
        return ""

    def peer_certificate(self) -> bytes | None:
        if isinstance(self.sock, ssl.SSLSocket):
            return self.sock.getpeercert(binary_form=True)
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def resolve(host: str) -> list[tuple[int, str]]:
    """One address per family (IPv4 first), as (family, address)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # a bracketed IPv6 literal, as in URLs
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ProbeFailure("dns", f"cannot resolve {host!r}: {exc}") from None
    chosen: dict[int, str] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and family not in chosen:
            chosen[family] = str(sockaddr[0])
    if not chosen:
        raise ProbeFailure("dns", f"{host!r} has no IPv4 or IPv6 address")
    return sorted(chosen.items(), key=lambda kv: kv[0] != socket.AF_INET)
