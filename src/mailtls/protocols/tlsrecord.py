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
    ``record``: the complete ClientHello record, when there was one (for ``parse_client_hello``).
    """

    nbytes: int
    looks_like_tls: bool
    rest: bytes = b""
    record: bytes = b""


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
        return self._finish(ClientHelloRead(total, True, bytes(data), bytes(self._buf)))

    def finish(self) -> ClientHelloRead:
        """The result when no more bytes will come: an incomplete record is not a ClientHello."""
        return self._finish(ClientHelloRead(len(self._buf), False))

    def _reject(self, more: bytes) -> ClientHelloRead:
        return self._finish(ClientHelloRead(0, False, bytes(self._buf) + bytes(more)))

    def _finish(self, result: ClientHelloRead) -> ClientHelloRead:
        self._done = True
        self._buf = bytearray()
        return result


TLS_FALLBACK_SCSV = 0x5600  # RFC 7507: "this is a fall-back retry"
SUPPORTED_VERSIONS = 43  # the TLS 1.3 extension listing every version the client accepts
VERSION_NAMES = {
    0x0300: "SSLv3",
    0x0301: "TLSv1",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}


@dataclass(frozen=True, slots=True)
class ClientHelloOffer:
    """What one ClientHello offers: the versions (``legacy_version`` and, when present, the
    ``supported_versions`` extension, GREASE values left out) and whether ``TLS_FALLBACK_SCSV``
    is among its cipher suites."""

    legacy_version: int
    supported_versions: tuple[int, ...]
    fallback_scsv: bool

    @property
    def highest(self) -> int:
        """The highest version offered: the extension's, else ``legacy_version``."""
        return max(self.supported_versions, default=self.legacy_version)

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version offered, highest first (TLS 1.0 up to ``legacy_version`` without the
        extension: a pre-1.3 client accepts any version up to the one it names)."""
        if self.supported_versions:
            return tuple(sorted(set(self.supported_versions), reverse=True))
        return tuple(range(self.legacy_version, 0x0300, -1))


def version_name(version: int) -> str:
    return VERSION_NAMES.get(version, f"0x{version:04x}")


def _is_grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


class _Cursor:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise ValueError("truncated")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    @property
    def left(self) -> int:
        return len(self._data) - self._pos


def parse_client_hello(record: bytes) -> ClientHelloOffer | None:
    """The offer of one complete ClientHello record (header included), or ``None`` when the
    bytes are not a well-formed ClientHello. Never raises on bad input."""
    try:
        return _parse(record)
    except ValueError:
        return None


def _parse(record: bytes) -> ClientHelloOffer:
    outer = _Cursor(record)
    header = outer.take(HEADER_BYTES)
    if not header_is_plausible(header):
        raise ValueError("not a handshake record")
    hs = _Cursor(outer.take(int.from_bytes(header[3:5], "big")))
    if hs.number(1) != CLIENT_HELLO:
        raise ValueError("not a ClientHello")
    body = _Cursor(hs.take(hs.number(3)))
    legacy_version = body.number(2)
    body.take(32)  # random
    body.vector(1)  # legacy_session_id
    suites = body.vector(2)
    if len(suites) % 2:
        raise ValueError("odd cipher suite list")
    scsv = TLS_FALLBACK_SCSV.to_bytes(2, "big") in (
        suites[i : i + 2] for i in range(0, len(suites), 2)
    )
    body.vector(1)  # compression methods
    versions: list[int] = []
    if body.left:
        extensions = _Cursor(body.vector(2))
        while extensions.left:
            kind = extensions.number(2)
            data = extensions.vector(2)
            if kind == SUPPORTED_VERSIONS:
                listed = _Cursor(data).vector(1)
                if len(listed) % 2:
                    raise ValueError("odd supported_versions list")
                versions = [
                    v
                    for i in range(0, len(listed), 2)
                    if not _is_grease(v := int.from_bytes(listed[i : i + 2], "big"))
                ]
    return ClientHelloOffer(legacy_version, tuple(versions), scsv)
