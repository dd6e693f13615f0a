"""Server-side TLS on memory buffers: ``ssl.SSLObject`` between two ``ssl.MemoryBIO``s.

The connection feeds ciphertext from the socket and gets plaintext for the core plus ciphertext
to write; it encrypts what the core sends. No sockets and no asyncio here, so the shell keeps the
raw TCP connection (T4 writes outside TLS; bytes buffered before the handshake are dropped).

Bounds: before the handshake completes at most ``pre_handshake_limit`` (32 KiB) ciphertext bytes
are accepted; plaintext is read through one shared scratch buffer (the event loop is single
threaded), so an idle engine holds no buffers of its own beyond OpenSSL's (which releases its
record buffers: CPython sets ``SSL_MODE_RELEASE_BUFFERS``). Errors become a failure reason string,
never an exception out of this module. The handshake deadline is the caller's timer.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import NamedTuple

from mailtls.protocols.base import TlsInfo

PRE_HANDSHAKE_LIMIT = 32 * 1024
_SCRATCH = bytearray(32 * 1024)
_SCRATCH_VIEW = memoryview(_SCRATCH)


class TlsOutput(NamedTuple):
    """What one ``receive`` produced.

    ``plaintext``: application data for the core. ``outgoing``: ciphertext to write (handshake
    messages, alerts, tickets). ``established``: set once, when the handshake completed in this
    call. ``failure``: the reason when the handshake or the session failed (then drop the
    engine). ``eof``: the peer sent close_notify.
    """

    plaintext: bytes
    outgoing: bytes
    established: TlsInfo | None
    failure: str | None
    eof: bool


def failure_reason(exc: ssl.SSLError) -> str:
    """A short, stable reason for an ``SSLError`` (``tlsv1_alert_unknown_ca``, ...)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower()
    return type(exc).__name__.lower()


class TlsEngine:
    """One server-side TLS session on memory BIOs."""

    __slots__ = ("_in", "_obj", "_out", "_pre", "info")

    def __init__(self, context: ssl.SSLContext, pre_handshake_limit: int = PRE_HANDSHAKE_LIMIT):
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._pre = pre_handshake_limit  # remaining pre-handshake budget
        self.info: TlsInfo | None = None

    @property
    def established(self) -> bool:
        return self.info is not None

    def receive(self, data: bytes | memoryview) -> TlsOutput:
        """Feed ciphertext from the peer."""
        if self.info is None:
            return self._handshake(data)
        self._in.write(data)
        return self._read(None)

    def _handshake(self, data: bytes | memoryview) -> TlsOutput:
        self._pre -= len(data)
        if self._pre < 0:
            return TlsOutput(b"", b"", None, "handshake_too_large", False)
        self._in.write(data)
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return TlsOutput(b"", self._out.read(), None, None, False)
        except ssl.SSLError as exc:
            return TlsOutput(b"", self._out.read(), None, failure_reason(exc), False)
        cipher = self._obj.cipher()
        self.info = TlsInfo(self._obj.version() or "", cipher[0] if cipher else "")
        return self._read(self.info)

    def _read(self, established: TlsInfo | None) -> TlsOutput:
        chunks: list[bytes] = []
        failure: str | None = None
        eof = False
        obj = self._obj
        incoming = self._in
        while True:  # read while input remains: avoids raising SSLWantReadError per call
            try:
                n = int(obj.read(len(_SCRATCH), _SCRATCH))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                failure = failure_reason(exc)
                break
            if not n:
                eof = True
                break
            chunks.append(bytes(_SCRATCH_VIEW[:n]))
            if not incoming.pending and not obj.pending():
                break
        plaintext = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return TlsOutput(plaintext, self._out.read(), established, failure, eof)

    def encrypt(self, data: bytes) -> bytes:
        """Ciphertext for ``data`` (only after the handshake completed)."""
        try:
            self._obj.write(data)
        except ssl.SSLError:
            return b""
        return self._out.read()

    def close_notify(self) -> bytes:
        """The close_notify alert to send before closing (empty if it cannot be produced)."""
        if self.info is None:
            return b""
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()
        return self._out.read()
