"""The generated test PKI: names, constraints, key handling, reuse and renewal."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from net_testkit import make_settings

from mailtls.net.pki import PkiError, ensure_certificates, server_ssl_context


def _load(path: Path | None) -> x509.Certificate:
    assert path is not None
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_first_start_creates_ca_and_server_certificate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hostname="mail.example.test")
    settings = replace(settings, public_hostnames=("imap.example.test",))
    certs = ensure_certificates(settings)
    assert certs.ca == tmp_path / "tls" / "ca.pem"
    assert not (tmp_path / "tls" / "ca.key").exists()  # CA key discarded after issuing
    assert stat.S_IMODE(certs.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.startswith(".")]

    ca = _load(certs.ca)
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = set(constraints.value.permitted_subtrees or [])
    for name in ("localhost", "127.0.0.1", "mail.example.test", "imap.example.test"):
        assert x509.DNSName(name) in permitted
    assert x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")) in permitted
    assert x509.IPAddress(ipaddress.ip_network("::1/128")) in permitted
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    server = _load(certs.cert)
    public = server.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) >= {
        "localhost",
        "127.0.0.1",
        "mail.example.test",
        "imap.example.test",
    }
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert ips == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def _serve_once(ctx: ssl.SSLContext, listener: socket.socket) -> None:
    conn, _ = listener.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError):
        pass


@pytest.mark.parametrize(
    ("hostname", "ok"),
    [("localhost", True), ("127.0.0.1", True), ("other.example", False)],
)
def test_certificate_verifies_for_localhost_and_loopback_ip(
    tmp_path: Path, hostname: str, ok: bool
) -> None:
    """A real handshake, verified by a default client context trusting only ca.pem (this also
    exercises OpenSSL's nameConstraints check on the chain)."""
    certs = ensure_certificates(make_settings(tmp_path))
    server_ctx = server_ssl_context(certs.cert, certs.key)
    client_ctx = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=_serve_once, args=(server_ctx, listener))
        thread.start()
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        try:
            if ok:
                with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                    assert tls.recv(2) == b"ok"
                    assert tls.version() in ("TLSv1.2", "TLSv1.3")
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    client_ctx.wrap_socket(raw, server_hostname=hostname)
        finally:
            raw.close()
            thread.join(5)


def test_later_starts_reuse_the_files(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = ensure_certificates(settings)
    pem = first.cert.read_bytes()
    second = ensure_certificates(settings)
    assert second == first and second.cert.read_bytes() == pem


def test_expiring_certificate_is_reissued_when_the_ca_key_was_kept(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tls={"keep_ca_key": True})
    certs = ensure_certificates(settings)
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    old = _load(certs.cert)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=395)  # within 7 days of expiry
    ensure_certificates(settings, now=later)
    new = _load(certs.cert)
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert _load(certs.ca).serial_number == _load(certs.ca).serial_number


def test_expiring_certificate_without_ca_key_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    certs = ensure_certificates(settings)
    pem = certs.cert.read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=395)
    with caplog.at_level("WARNING", logger="mailtls.pki"):
        ensure_certificates(settings, now=later)
    assert certs.cert.read_bytes() == pem
    assert "cannot be reissued" in caplog.text


def test_configured_files_are_used_instead(tmp_path: Path) -> None:
    generated = ensure_certificates(make_settings(tmp_path / "gen"))
    settings = make_settings(
        tmp_path / "data", tls={"cert_file": str(generated.cert), "key_file": str(generated.key)}
    )
    certs = ensure_certificates(settings)
    assert certs.cert == generated.cert and certs.ca is None
    assert not (tmp_path / "data" / "tls").exists()
    with pytest.raises(PkiError):
        ensure_certificates(make_settings(tmp_path, tls={"cert_file": str(generated.cert)}))
    with pytest.raises(PkiError):
        server_ssl_context(generated.cert, tmp_path / "missing.key")


def test_server_context_refuses_tls_1_1(tmp_path: Path) -> None:
    certs = ensure_certificates(make_settings(tmp_path))
    ctx = server_ssl_context(certs.cert, certs.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("hostname", "dns_name"),
    [
        ("m" * 63 + ".example-provider.test", "m" * 63 + ".example-provider.test"),  # CN > 64
        ("mäil.example.test", "xn--mil-qla.example.test"),  # an IDN: its A-label
    ],
)
def test_long_and_international_host_names_get_a_certificate(
    tmp_path: Path, hostname: str, dns_name: str
) -> None:
    certs = ensure_certificates(make_settings(tmp_path, hostname=hostname))
    san = _load(certs.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert dns_name in san.value.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("hostname", ["bad..name", "a" * 64 + ".test", "sp ace.test"])
def test_impossible_host_names_are_a_pki_error(tmp_path: Path, hostname: str) -> None:
    with pytest.raises(PkiError, match="host name"):
        ensure_certificates(make_settings(tmp_path, hostname=hostname))
