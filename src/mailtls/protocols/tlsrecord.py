"""Sans-IO reader of one TLS record by its 5-byte header (T2: read the ClientHello, never answer).

No sockets, no ``ssl``, no clock: bytes in, a ``ClientHelloRead`` out. The reader never buffers
more than one record of at most 5 + 2**14 bytes (the TLS plaintext limit; a larger length is
"not TLS") and gives up at once on bytes that cannot start a TLS handshake record (a plaintext
command, garbage). Bytes that are not a ClientHello are handed back as ``rest`` so the caller
can give them to the protocol core as ordinary data (a plaintext ``AUTH`` after a STARTTLS must
still be seen).

A TLS record header is ``type (1) | version (2) | length (2)``; a ClientHello travels in a
handshake record (type 22) whose first body byte is the handshake type ``client_hello`` (1).
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_BYTES = 5
HANDSHAKE = 0x16
CLIENT_HELLO = 0x01
MAX_RECORD_BODY = 2**14  # TLSPlaintext limit: a ClientHello record is never longer


@dataclass(frozen=True, slots=True)
class ClientHelloRead:
    """The outcome: how many bytes the record took and whether it was a TLS ClientHello.

    ``rest``: bytes not taken: those after a complete record in the same feed, or everything
    received when the bytes turned out not to be a ClientHello (then ``nbytes`` is 0).
    """

    nbytes: int
    looks_like_tls: bool
    rest: bytes = b""


def header_is_plausible(header: bytes) -> bool:
    """Whether up to 5 bytes can begin a TLS handshake record (checked as far as available)."""
    if len(header) >= 1 and header[0] != HANDSHAKE:
        return False
    if len(header) >= 2 and header[1] != 3:
        return False
    if len(header) >= 3 and header[2] > 4:
        return False
    if len(header) >= HEADER_BYTES:
        length = int.from_bytes(header[3:5], "big")
        return 0 < length <= MAX_RECORD_BODY
    return True


class ClientHelloReader:
    """Accumulate bytes until one record is complete or the bytes cannot be a ClientHello.

    ``feed(data)`` returns ``None`` while more bytes are needed, else the result (once).
    ``finish()`` gives the result for what arrived so far (deadline or end of stream).
    """

    __slots__ = ("_buf", "_done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def received(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> ClientHelloRead | None:
        if self._done:
            raise RuntimeError("ClientHelloReader already finished")
        need = HEADER_BYTES - len(self._buf)
        if need > 0:
            self._buf += data[:need]
            data = data[need:]
            if not header_is_plausible(bytes(self._buf)):
                return self._reject(data)
            if len(self._buf) < HEADER_BYTES:
                return None
        total = HEADER_BYTES + int.from_bytes(self._buf[3:5], "big")
        take = total - len(self._buf)
        self._buf += data[:take]
        data = data[take:]
        if len(self._buf) > HEADER_BYTES and self._buf[HEADER_BYTES] != CLIENT_HELLO:
            return self._reject(data)
        if len(self._buf) < total:
            return None
        return self._finish(ClientHelloRead(total, True, bytes(data)))

    def finish(self) -> ClientHelloRead:
        """The result when no more bytes will come: an incomplete record is not a ClientHello."""
        return self._finish(ClientHelloRead(len(self._buf), False))

    def _reject(self, more: bytes) -> ClientHelloRead:
        return self._finish(ClientHelloRead(0, False, bytes(self._buf) + bytes(more)))

    def _finish(self, result: ClientHelloRead) -> ClientHelloRead:
        self._done = True
        self._buf = bytearray()
        return result
