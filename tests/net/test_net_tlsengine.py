"""The TLS engine on memory BIOs: a full handshake, failures as reasons, the pre-handshake bound."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from net_testkit import client_context, make_settings

from mailtls.net.pki import ensure_certificates, server_ssl_context
from mailtls.net.tlsengine import PRE_HANDSHAKE_LIMIT, TlsEngine


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    certs = ensure_certificates(make_settings(tmp_path))
    return server_ssl_context(certs.cert, certs.key), client_context(certs)


def test_handshake_and_application_data(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = contexts
    engine = TlsEngine(server_ctx)
    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(cin, cout, server_hostname="localhost")
    established = None
    for _ in range(5):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            out = engine.receive(cout.read())
            assert out.failure is None
            established = established or out.established
            cin.write(out.outgoing)
    assert established is None  # the server still waits for the client's Finished
    client.write(b"EHLO inside\r\n")
    out = engine.receive(cout.read())  # Finished and the first command together
    assert out.established is not None and out.established.version == "TLSv1.3"
    assert engine.established and out.plaintext == b"EHLO inside\r\n"
    cin.write(out.outgoing)
    cin.write(engine.encrypt(b"250 ok\r\n"))
    got = b""
    while b"250 ok" not in got:
        got += client.read(100)
    cin.write(engine.close_notify())
    try:
        end = client.read(100)  # close_notify: an empty read (or SSLZeroReturnError)
    except ssl.SSLZeroReturnError:
        end = b""
    assert end == b""


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 64, b"\x16\x03\x01\x00\x05hello"]
)
def test_garbage_is_a_failure_reason(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], garbage: bytes
) -> None:
    out = TlsEngine(contexts[0]).receive(garbage)
    assert out.failure and out.established is None and out.plaintext == b""


def test_pre_handshake_input_is_bounded(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """A ClientHello that claims 65,535 bytes, sent as full records: cut at 32 KiB."""
    engine = TlsEngine(contexts[0])
    body = b"\x01\x00\xff\xff\x03\x03" + b"\x00" * (16384 - 6)
    fed = 0
    failure = None
    for _ in range(4):
        record = b"\x16\x03\x01\x40\x00" + body
        out = engine.receive(record)
        fed += len(record)
        body = b"\x00" * 16384
        if out.failure:
            failure = out.failure
            break
    assert failure == "handshake_too_large"
    assert fed > PRE_HANDSHAKE_LIMIT
