"""The test PKI and the server's TLS context.

Without configured certificate files, the first start creates in ``DATA_DIR/tls/``:
- ``ca.pem``: a test CA that users and tests may trust. Its critical ``nameConstraints`` permit
  only the configured host names, ``localhost`` (and ``127.0.0.1`` as a DNS name), 127.0.0.0/8
  and ::1/128, so trusting it cannot endanger other sites. Its key is deleted (never written)
  after issuing, unless ``tls.keep_ca_key`` (then ``ca.key``, mode 0600).
- ``server.pem`` + ``server.key`` (ECDSA P-256, 0600): SAN ``localhost``, ``127.0.0.1`` (as IP
  and as DNS name), ``::1`` and the configured host names.
Later starts reuse the files. When the server certificate expires within 7 days or lacks a
configured name, it is reissued if the CA key was kept; otherwise a warning says what to do.

Imports only ``cryptography``, ``ssl`` and settings; no sockets.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailtls.settings import Settings

log = logging.getLogger("mailtls.pki")

CA_DAYS = 3650
SERVER_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=7)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")  # one DNS label, at most 63
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class PkiError(Exception):
    """Certificate files that cannot be read or used: shown without a traceback."""


@dataclass(frozen=True, slots=True)
class ServerCertificates:
    """Where the server certificate and key are; ``ca`` is the generated test CA (or None)."""

    cert: Path
    key: Path
    ca: Path | None = None


def server_names(settings: Settings) -> list[str]:
    """DNS names the certificate covers: localhost, 127.0.0.1 and the configured host names."""
    names = ["localhost", "127.0.0.1"]
    for name in (settings.hostname, *settings.public_hostnames):
        name = name.strip().lower().rstrip(".")
        if name:
            name = _a_label(name)
        if name and name not in names:
            names.append(name)
    return names


def _a_label(name: str) -> str:
    """``name`` as certificates carry it (IDNs as ``xn--`` A-labels), or ``PkiError``."""
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or len(ascii_name) > 253:
        raise PkiError(f"bad host name {name!r}: cannot put it in a certificate")
    return ascii_name


def server_ssl_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """Server-side context: TLS 1.2+, the given certificate chain and key, one ticket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # one TLS 1.3 session ticket instead of OpenSSL's two: clients can still resume, and each
    # ticket costs a noticeable share of a handshake (about 20 % measured with OpenSSL 3.0)
    ctx.num_tickets = 1
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load certificate {cert} / key {key}: {exc}") from None
    return ctx


def ensure_certificates(settings: Settings, now: dt.datetime | None = None) -> ServerCertificates:
    """The configured certificate files, or the generated test PKI (created when missing)."""
    tls = settings.tls
    if tls.cert_file or tls.key_file:
        if not (tls.cert_file and tls.key_file):
            raise PkiError("tls.cert_file and tls.key_file must be set together")
        certs = ServerCertificates(Path(tls.cert_file), Path(tls.key_file))
        for path in (certs.cert, certs.key):
            if not path.is_file():
                raise PkiError(f"certificate file {path} does not exist")
        return certs
    now = now or dt.datetime.now(dt.UTC)
    directory = settings.data_dir / "tls"
    certs = ServerCertificates(
        directory / "server.pem", directory / "server.key", directory / "ca.pem"
    )
    ca_key_path = directory / "ca.key"
    names = server_names(settings)
    if not (certs.cert.is_file() and certs.key.is_file() and certs.ca and certs.ca.is_file()):
        _create_all(directory, certs, names, settings.tls.keep_ca_key, now)
        return certs
    problem = _needs_renewal(certs.cert, names, now)
    if problem:
        if ca_key_path.is_file():
            log.info("reissuing the server certificate: %s", problem)
            assert certs.ca is not None
            ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
            if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
                raise PkiError(f"{ca_key_path} is not an EC key")
            _issue_server(certs, ca_cert, ca_key, names, now)
        else:
            log.warning(
                "server certificate %s: %s; the CA key was not kept, so it cannot be reissued: "
                "delete %s to create a new test CA (clients must trust the new ca.pem)",
                certs.cert,
                problem,
                directory,
            )
    return certs


def _needs_renewal(cert_path: Path, names: list[str], now: dt.datetime) -> str:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"cannot read {cert_path}: {exc}") from None
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    missing = sorted(set(names) - set(san.get_values_for_type(x509.DNSName)))
    return f"does not name {', '.join(missing)}" if missing else ""


def _create_all(
    directory: Path, certs: ServerCertificates, names: list[str], keep: bool, now: dt.datetime
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _make_ca(ca_key, names, now)
    _issue_server(certs, ca_cert, ca_key, names, now)
    if keep:
        _write_private(directory / "ca.key", _key_pem(ca_key))
    assert certs.ca is not None
    _write_atomic(certs.ca, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("created a test CA %s (key %s)", certs.ca, "kept" if keep else "discarded")


def _make_ca(
    key: ec.EllipticCurvePrivateKey, names: list[str], now: dt.datetime
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailtls test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mailtls test CA for {names[-1]}"[:64]),
        ]
    )
    constraints = x509.NameConstraints(
        permitted_subtrees=[
            *(x509.DNSName(name) for name in names),
            *(x509.IPAddress(net) for net in LOOPBACK_NETWORKS),
        ],
        excluded_subtrees=None,
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _issue_server(
    certs: ServerCertificates,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[str],
    now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cn = (names[2] if len(names) > 2 else "localhost")[:64]  # clients match the SAN, not the CN
    san = x509.SubjectAlternativeName(
        [
            *(x509.DNSName(name) for name in names),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(certs.key, _key_pem(key))
    _write_atomic(certs.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    _write_atomic(path, data, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file created with ``mode`` (never wider), then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
