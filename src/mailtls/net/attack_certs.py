"""Certificates an attacker could present, for the certificate test cases (``cert_*``).

``ensure_attack_certificates(certs, ca_key)`` creates them once under ``DATA_DIR/tls/attack/``
(keys 0600) next to the server certificate of ``net.pki`` and reuses them later:

- ``selfsigned``: self-signed, the server's names, valid dates;
- ``expired``: issued by the test CA, the server's names, expired yesterday;
- ``wronghost``: issued by the test CA, valid, but for ``wrong-host.<name>`` only (inside the
  CA's ``nameConstraints``, so the only defect a client can see is the name);
- ``unknown_ca``: issued by a CA nobody trusts (its key is discarded), the server's names; the
  chain file carries that CA too.

The test CA key is needed once, at the first start (``serve`` keeps it just long enough). Without
it (a CA created by an older version, or configured certificate files) ``expired`` and
``wronghost`` are issued by an untrusted CA of their own and a warning says so: they then also
fail as an unknown CA.

Imports only ``cryptography``, ``ssl`` and ``net.pki``'s file layout; no sockets.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailtls.net.pki import ATTACK_DIR, PkiError, ServerCertificates, server_ssl_context

log = logging.getLogger("mailtls.attack_certs")

KINDS: Final = ("selfsigned", "expired", "wronghost", "unknown_ca")
DAYS: Final = 397


@dataclass(frozen=True, slots=True)
class AttackCertificates:
    """kind -> (certificate chain file, key file)."""

    files: Mapping[str, tuple[Path, Path]]

    def ssl_context(self, kind: str) -> ssl.SSLContext:
        cert, key = self.files[kind]
        return server_ssl_context(cert, key)


def ensure_attack_certificates(
    certs: ServerCertificates, ca_key: Path | None = None, now: dt.datetime | None = None
) -> AttackCertificates:
    directory = certs.cert.parent / ATTACK_DIR
    files = {kind: (directory / f"{kind}.pem", directory / f"{kind}.key") for kind in KINDS}
    if all(c.is_file() and k.is_file() for c, k in files.values()):
        return AttackCertificates(files)
    now = now or dt.datetime.now(dt.UTC)
    try:
        server = x509.load_pem_x509_certificate(certs.cert.read_bytes())
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise PkiError(f"cannot load certificate {certs.cert}: {exc}") from None
    issuer = _test_ca(certs, ca_key)
    if issuer is None:
        log.warning(
            "the test CA key is not available: the expired and wrong-host certificates are "
            "issued by an untrusted CA (delete %s to create them from a new test CA)",
            certs.cert.parent,
        )
        issuer = _new_ca("mailtls untrusted attack CA", now)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    dns = san.get_values_for_type(x509.DNSName)
    wrong = x509.SubjectAlternativeName(
        [x509.DNSName(f"wrong-host.{dns[-1] if dns else 'localhost'}")]
    )
    unknown = _new_ca("mailtls unknown CA", now)
    valid = (now - dt.timedelta(hours=1), now + dt.timedelta(days=DAYS))
    expired = (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
    _write(files["selfsigned"], *_leaf(san, valid, None))
    _write(files["expired"], *_leaf(san, expired, issuer))
    _write(files["wronghost"], *_leaf(wrong, valid, issuer))
    leaf, key = _leaf(san, valid, unknown)
    _write(files["unknown_ca"], leaf + unknown[0].public_bytes(serialization.Encoding.PEM), key)
    log.info("created the attack certificates in %s", directory)
    return AttackCertificates(files)


_Ca = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _test_ca(certs: ServerCertificates, ca_key: Path | None) -> _Ca | None:
    if certs.ca is None or ca_key is None or not ca_key.is_file() or not certs.ca.is_file():
        return None
    key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return x509.load_pem_x509_certificate(certs.ca.read_bytes()), key


def _new_ca(name: str, now: dt.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    san: x509.SubjectAlternativeName,
    validity: tuple[dt.datetime, dt.datetime],
    issuer: _Ca | None,
) -> tuple[bytes, bytes]:
    """A server certificate (PEM) and its key (PEM); ``issuer`` None: self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = san.get_values_for_type(x509.DNSName)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or ["localhost"])[0][:64])])
    signer = key if issuer is None else issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
    )
    cert = builder.sign(signer, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(paths: tuple[Path, Path], cert: bytes, key: bytes) -> None:
    cert_path, key_path = paths
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    cert_path.write_bytes(cert)
