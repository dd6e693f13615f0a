"""The test PKI and the server's TLS context.

Without configured certificate files, the first start creates in ``DATA_DIR/tls/``:
- ``ca.pem``: a test CA that users and tests may trust. Its critical ``nameConstraints`` permit
  only ``localhost`` and the configured host names (DNS), 127.0.0.0/8, ::1/128 and the configured
  addresses (IP), so trusting it cannot endanger other sites. Its key is deleted (never written)
  after issuing, unless ``tls.keep_ca_key`` (then ``ca.key``, mode 0600).
- ``server.pem`` + ``server.key`` (ECDSA P-256, 0600): SAN DNS ``localhost`` and the configured
  host names, IP ``127.0.0.1``, ``::1`` and the configured addresses.
An address is only ever an IP entry, never a DNS name: Mozilla's verifier (mozilla::pkix, in
Thunderbird and Firefox) rejects a chain with ``DNS:127.0.0.1`` in a SAN or a name constraint
(``SEC_ERROR_BAD_DER``), which OpenSSL and GnuTLS accept. Data folders made before this rule have
such a chain; the next start replaces it (CA included) and logs why.
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
import shutil
import ssl
import warnings
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


ATTACK_DIR = "attack"  # DATA_DIR/tls/attack: the certificates of the cert_* test cases


@dataclass(frozen=True, slots=True)
class ServerCertificates:
    """Where the server certificate and key are; ``ca`` is the generated test CA (or None)."""

    cert: Path
    key: Path
    ca: Path | None = None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """What the server certificate names: DNS names (A-labels) and IP addresses, apart."""

    dns: tuple[str, ...]
    ips: tuple[IPAddress, ...]

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The CA's permitted IP subtrees: the loopback networks and each other address."""
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(LOOPBACK_NETWORKS)
        for ip in self.ips:
            if not any(ip in net for net in nets):
                nets.append(ipaddress.ip_network(ip))
        return nets


def certificate_names(settings: Settings) -> CertificateNames:
    """``localhost``, 127.0.0.1, ::1, the configured host names and the listen addresses; a host
    name that is an address literal counts as an address. Wildcard listen addresses are left out.
    In address mode the zone and ``*.<zone>`` too (the runs' own host names)."""
    dns = ["localhost"]
    ips: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for name in (settings.hostname, *settings.public_hostnames):
        name = name.strip().lower().rstrip(".")
        if _ip_literal(name) is None and name and _a_label(name) not in dns:
            dns.append(_a_label(name))
    zone = settings.endpoints.zone.strip().lower().rstrip(".")
    if zone and settings.endpoints.prefix:  # the runs' own host names, <label>.<zone>
        for name in (_a_label(zone), "*." + _a_label(zone)):
            if name not in dns:
                dns.append(name)
    for text in (settings.hostname, *settings.public_hostnames, *settings.listen):
        ip = _ip_literal(text)
        if ip is not None and not ip.is_unspecified and ip not in ips:
            ips.append(ip)
    return CertificateNames(tuple(dns), tuple(ips))


def _ip_literal(text: str) -> IPAddress | None:
    """``text`` as an address (``[::1]`` too), or None when it is a name."""
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


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


def allow_legacy_versions(ctx: ssl.SSLContext) -> bool:
    """Let ``ctx`` accept TLS 1.0 and 1.1 as well (``tls_fallback``: serve what a client falls
    back to). OpenSSL 3 needs security level 0 for them (SHA-1 signatures); its server side
    still answers a ``TLS_FALLBACK_SCSV`` below its highest version with
    ``inappropriate_fallback``. False when the local OpenSSL has no TLS 1.0 (then TLS 1.2 is
    the lowest served)."""
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if not ssl.HAS_TLSv1:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    return True


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
    return _generated(settings, now or dt.datetime.now(dt.UTC))


def _generated(settings: Settings, now: dt.datetime) -> ServerCertificates:
    """The test PKI in ``DATA_DIR/tls``: created, kept, replaced or reissued as needed."""
    directory = settings.data_dir / "tls"
    certs = ServerCertificates(
        directory / "server.pem", directory / "server.key", directory / "ca.pem"
    )
    names = certificate_names(settings)
    keep = settings.tls.keep_ca_key
    if not (certs.cert.is_file() and certs.key.is_file() and certs.ca and certs.ca.is_file()):
        _create_all(directory, certs, names, keep, now)
        return certs
    assert certs.ca is not None
    ca_cert, server_cert = _read_cert(certs.ca), _read_cert(certs.cert)
    old = _address_as_dns_name(ca_cert) or _address_as_dns_name(server_cert)
    if old:
        log.warning(
            "replacing the test CA and server certificate in %s: the chain names %s as a DNS "
            "name, which Thunderbird and other clients on mozilla::pkix reject; trust the new %s",
            directory,
            old,
            certs.ca,
        )
        _create_all(directory, certs, names, keep, now)
        return certs
    problem = _needs_renewal(server_cert, names, now)
    if problem:
        _reissue(certs, ca_cert, names, problem, now)
    return certs


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read {path}: {exc}") from None


def _address_as_dns_name(cert: x509.Certificate) -> str:
    """The first DNS name in ``cert``'s SAN or name constraints that is an address literal."""
    dns: list[str] = []
    for ext in cert.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            dns += ext.value.get_values_for_type(x509.DNSName)
        elif isinstance(ext.value, x509.NameConstraints):
            for subtrees in (ext.value.permitted_subtrees, ext.value.excluded_subtrees):
                dns += [n.value for n in subtrees or () if isinstance(n, x509.DNSName)]
    return next((name for name in dns if _ip_literal(name) is not None), "")


def _needs_renewal(cert: x509.Certificate, names: CertificateNames, now: dt.datetime) -> str:
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    missing = sorted(set(names.dns) - set(san.get_values_for_type(x509.DNSName)))
    missing += sorted(
        str(ip) for ip in set(names.ips) - set(san.get_values_for_type(x509.IPAddress))
    )
    return f"does not name {', '.join(missing)}" if missing else ""


def _reissue(
    certs: ServerCertificates,
    ca_cert: x509.Certificate,
    names: CertificateNames,
    problem: str,
    now: dt.datetime,
) -> None:
    """A new server certificate under the kept CA key, or a warning saying what to do."""
    assert certs.ca is not None
    directory = certs.ca.parent
    ca_key_path = directory / "ca.key"
    unpermitted = _not_permitted(ca_cert, names)
    if ca_key_path.is_file() and not unpermitted:
        log.info("reissuing the server certificate: %s", problem)
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{ca_key_path} is not an EC key")
        _issue_server(certs, ca_cert, ca_key, names, now)
        return
    why = (
        f"the test CA's name constraints do not permit {', '.join(unpermitted)}"
        if unpermitted
        else "the CA key was not kept"
    )
    log.warning(
        "server certificate %s: %s; %s, so it cannot be reissued: "
        "delete %s to create a new test CA (clients must trust the new ca.pem)",
        certs.cert,
        problem,
        why,
        directory,
    )


def _not_permitted(ca_cert: x509.Certificate, names: CertificateNames) -> list[str]:
    """The names and addresses the CA's permitted subtrees leave out (RFC 5280 matching)."""
    try:
        ext = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    permitted = ext.permitted_subtrees or []
    domains = [n.value.lower().lstrip(".") for n in permitted if isinstance(n, x509.DNSName)]
    nets = [
        n.value
        for n in permitted
        if isinstance(n, x509.IPAddress)
        and isinstance(n.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
    ]
    out = [
        name for name in names.dns if not any(name == d or name.endswith("." + d) for d in domains)
    ]
    out += [str(ip) for ip in names.ips if not any(ip in net for net in nets)]
    return out


def _create_all(
    directory: Path,
    certs: ServerCertificates,
    names: CertificateNames,
    keep: bool,
    now: dt.datetime,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    # the attack certificates (``net.attack_certs``) were issued by the CA being replaced
    shutil.rmtree(directory / ATTACK_DIR, ignore_errors=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _make_ca(ca_key, names, now)
    _issue_server(certs, ca_cert, ca_key, names, now)
    if keep:
        _write_private(directory / "ca.key", _key_pem(ca_key))
    else:  # a key left from a replaced CA must not pass for this one's
        (directory / "ca.key").unlink(missing_ok=True)
    assert certs.ca is not None
    _write_atomic(certs.ca, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("created a test CA %s%s", certs.ca, " (key in ca.key)" if keep else "")


def _make_ca(
    key: ec.EllipticCurvePrivateKey, names: CertificateNames, now: dt.datetime
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailtls test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mailtls test CA for {names.dns[-1]}"[:64]),
        ]
    )
    constraints = x509.NameConstraints(
        permitted_subtrees=[
            *(x509.DNSName(name) for name in names.dns if not name.startswith("*.")),
            *(x509.IPAddress(net) for net in names.networks()),
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
    names: CertificateNames,
    now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cn = (names.dns[1] if len(names.dns) > 1 else "localhost")[:64]  # clients match the SAN
    san = x509.SubjectAlternativeName(
        [*(x509.DNSName(name) for name in names.dns), *(x509.IPAddress(ip) for ip in names.ips)]
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
