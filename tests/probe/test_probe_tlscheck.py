"""Certificate facts, host name matching and the local legacy-version capability check."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mailtls.probe.tlscheck import (
    can_offer,
    cert_facts,
    hostname_matches,
    legacy_context,
    verifying_context,
)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def cert(names: list[x509.GeneralName], days: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.org")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=days))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("mail.example.org", True),
        ("MAIL.example.org.", True),
        ("imap.example.org", True),  # *.example.org
        ("a.b.example.org", False),  # the wildcard covers one label
        ("example.org", False),
        ("mail.example.net", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("2001:db8::1", True),
    ],
)
def test_hostname_matches(host: str, ok: bool) -> None:
    c = cert(
        [
            x509.DNSName("mail.example.org"),
            x509.DNSName("*.example.org"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        ],
        90,
    )
    assert hostname_matches(c, host) is ok


def test_no_san_never_matches() -> None:
    assert not hostname_matches(cert([], 90), "mail.example.org")  # CN is not used


def test_cert_facts_expiry() -> None:
    fresh = cert([x509.DNSName("mail.example.org")], 90)
    facts = cert_facts(fresh.public_bytes(Encoding.DER), "mail.example.org", NOW)
    assert facts is not None and facts.days_left in (89, 90)
    assert facts.hostname_ok and not facts.expired and facts.subject == "mail.example.org"
    old = cert([x509.DNSName("mail.example.org")], -2)
    expired = cert_facts(old.public_bytes(Encoding.DER), "other.example.org", NOW)
    assert expired is not None and expired.expired and not expired.hostname_ok
    assert cert_facts(b"garbage", "x", NOW) is None


def _memory_handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> str | None:
    """Handshake two contexts through memory BIOs; the negotiated version or None."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=None)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if done[name]:
                continue
            try:
                obj.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return None
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return c.version()
    return None


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_can_offer_agrees_with_a_real_handshake(version: ssl.TLSVersion, tmp_path: Path) -> None:
    """When the local OpenSSL can offer the version, a server pinned to it completes the
    handshake with the probe's legacy context; when it cannot, the check says "not tested"."""
    from probe_servers import make_pki

    pki = make_pki(tmp_path, ("127.0.0.1",))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(pki.cert), str(pki.key))
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        server.minimum_version = version
        server.maximum_version = version
    negotiated = _memory_handshake(legacy_context(version), server)
    if can_offer(version):
        assert negotiated == version.name.replace("_", ".")
    else:
        assert negotiated is None
    assert can_offer(ssl.TLSVersion.TLSv1_2)


def test_verifying_context_rejects_a_bad_cafile(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("nothing\n")
    with pytest.raises(ssl.SSLError):
        verifying_context(str(bad))
