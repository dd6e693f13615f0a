"""The sans-IO ClientHello reader: real hellos, splits, garbage, oversized records."""

from __future__ import annotations

import ssl

import pytest
from net_testkit import client_hello

from mailtls.protocols.tlsrecord import (
    TLS_FALLBACK_SCSV,
    ClientHelloOffer,
    ClientHelloReader,
    header_is_plausible,
    parse_client_hello,
    version_name,
)


def real_client_hello(
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    minimum: ssl.TLSVersion = ssl.TLSVersion.MINIMUM_SUPPORTED,
) -> bytes:
    ctx = ssl.create_default_context()
    if maximum < ssl.TLSVersion.TLSv1_2 or minimum < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    return client_hello(ctx)


def test_whole_client_hello() -> None:
    hello = real_client_hello()
    result = ClientHelloReader().feed(hello)
    assert result is not None
    assert (result.nbytes, result.looks_like_tls, result.rest) == (len(hello), True, b"")
    assert result.record == hello


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


def test_offer_of_a_default_client_hello() -> None:
    offer = parse_client_hello(real_client_hello())
    assert offer is not None
    assert offer.legacy_version == 0x0303  # frozen at TLS 1.2 by TLS 1.3 clients
    assert offer.highest == 0x0304 and offer.supported_versions[0] == 0x0304
    assert 0x0303 in offer.versions and offer.fallback_scsv is False


def test_offer_of_a_tls12_only_client_hello() -> None:
    hello = real_client_hello(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    offer = parse_client_hello(hello)
    assert offer is not None
    assert offer.highest == 0x0303 and version_name(offer.highest) == "TLSv1.2"


@pytest.mark.skipif(not ssl.HAS_TLSv1, reason="the local OpenSSL has no TLS 1.0")
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated")
def test_offer_of_a_tls10_client_hello() -> None:
    hello = real_client_hello(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1)
    offer = parse_client_hello(hello)
    assert offer is not None
    assert (offer.legacy_version, offer.supported_versions) == (0x0301, ())
    assert offer.highest == 0x0301 and offer.versions == (0x0301,)


def hand_made_hello(suites: list[int], versions: list[int] | None) -> bytes:
    extensions = b""
    if versions is not None:
        listed = b"".join(v.to_bytes(2, "big") for v in versions)
        data = bytes([len(listed)]) + listed
        extensions = b"\x00\x2b" + len(data).to_bytes(2, "big") + data
    cipher_bytes = b"".join(s.to_bytes(2, "big") for s in suites)
    body = (
        b"\x03\x02"
        + b"\x11" * 32
        + b"\x00"
        + len(cipher_bytes).to_bytes(2, "big")
        + cipher_bytes
        + b"\x01\x00"
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def test_scsv_and_grease_are_read() -> None:
    hello = hand_made_hello([0x002F, TLS_FALLBACK_SCSV], [0x3A3A, 0x0303, 0x0302])
    assert parse_client_hello(hello) == ClientHelloOffer(0x0302, (0x0303, 0x0302), True)


def test_without_extension_the_legacy_version_counts() -> None:
    offer = parse_client_hello(hand_made_hello([0x002F], None))
    assert offer is not None and offer.highest == 0x0302
    assert offer.versions == (0x0302, 0x0301) and not offer.fallback_scsv


@pytest.mark.parametrize("cut", [1, 5, 9, 40, 44, 47])
def test_truncated_or_garbled_hellos_give_none(cut: int) -> None:
    hello = hand_made_hello([0x002F], [0x0303])
    assert parse_client_hello(hello[:cut]) is None
    garbled = bytearray(hello)
    garbled[cut] ^= 0xFF
    result = parse_client_hello(bytes(garbled))  # never raises
    assert result is None or isinstance(result, ClientHelloOffer)


@pytest.mark.parametrize("garbage", [b"", b"EHLO x\r\n", b"\x16\x03\x01\x00\x01\x02", b"\xff" * 50])
def test_not_a_hello_gives_none(garbage: bytes) -> None:
    assert parse_client_hello(garbage) is None
