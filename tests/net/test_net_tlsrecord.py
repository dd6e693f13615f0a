"""The sans-IO ClientHello reader: real hellos, splits, garbage, oversized records."""

from __future__ import annotations

import ssl

import pytest

from mailtls.protocols.tlsrecord import ClientHelloReader, header_is_plausible


def real_client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_whole_client_hello() -> None:
    hello = real_client_hello()
    result = ClientHelloReader().feed(hello)
    assert result is not None
    assert (result.nbytes, result.looks_like_tls, result.rest) == (len(hello), True, b"")


@pytest.mark.parametrize("step", [1, 2, 3, 7, 100])
def test_client_hello_in_pieces(step: int) -> None:
    hello = real_client_hello()
    reader = ClientHelloReader()
    results = [reader.feed(hello[i : i + step]) for i in range(0, len(hello), step)]
    assert results[:-1] == [None] * (len(results) - 1)
    last = results[-1]
    assert last is not None and last.nbytes == len(hello) and last.looks_like_tls
    assert reader.done


def test_bytes_after_the_record_are_returned() -> None:
    hello = real_client_hello()
    result = ClientHelloReader().feed(hello + b"\x15\x03\x03")
    assert result is not None and result.rest == b"\x15\x03\x03"


@pytest.mark.parametrize(
    "garbage",
    [
        b"EHLO example.org\r\n",
        b"\x00",
        b"\x16\x04\x01\x00\x10",  # wrong major version
        b"\x16\x03\x09",  # unknown minor version
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x40\x01",  # longer than 2**14
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a handshake record, but a ServerHello
        b"\x17\x03\x03\x00\x10",  # application data
    ],
)
def test_not_a_client_hello_is_handed_back(garbage: bytes) -> None:
    result = ClientHelloReader().feed(garbage + b"more")
    assert result is not None
    assert result.looks_like_tls is False and result.nbytes == 0
    assert result.rest == garbage + b"more"


def test_incomplete_record_at_the_deadline() -> None:
    reader = ClientHelloReader()
    assert reader.feed(b"\x16\x03\x01\x01\x00\x01abc") is None
    result = reader.finish()
    assert result.nbytes == 9 and result.looks_like_tls is False


def test_reader_never_holds_more_than_one_record() -> None:
    reader = ClientHelloReader()
    assert reader.feed(b"\x16\x03\x01\x40\x00\x01") is None
    result = reader.feed(b"\0" * 100_000)
    assert result is not None and result.nbytes == 5 + 0x4000
    assert len(result.rest) == 100_000 + 1 - 0x4000
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


def test_header_plausibility_checks_what_is_there() -> None:
    assert header_is_plausible(b"")
    assert header_is_plausible(b"\x16\x03")
    assert not header_is_plausible(b"\x15")
