"""TLS facts for the probe: client contexts, certificate checks, legacy protocol versions.

- ``verifying_context(cafile)``: chain verification against the system store or ``--cafile``
  (host name checked separately by ``hostname_matches`` so that each failure is its own finding).
- ``lenient_context()``: no verification, to keep probing a server whose certificate fails.
- ``legacy_context(version)``: exactly one version (TLS 1.0 or 1.1) with the local security level
  lowered for that check only; ``can_offer(version)`` asks the local OpenSSL, with memory BIOs and
  no network, whether it can build such a ClientHello at all (if not, the check is "not tested").
- ``cert_facts(der, host, now)``: subject, SANs, days to expiry, host name match (pure).

Imports only ``ssl``, ``ipaddress``, ``cryptography`` and the standard library.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import ssl
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID


class Legacy(enum.Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    NOT_TESTED = "not tested"


LEGACY_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
}


def verifying_context(cafile: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    else:
        ctx.load_default_certs()
    return ctx


def lenient_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def legacy_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = lenient_context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # pinning a deprecated version is the point of this check
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def can_offer(version: ssl.TLSVersion) -> bool:
    """Whether the local OpenSSL builds a ClientHello for exactly ``version`` (no network)."""
    try:
        ctx = legacy_context(version)
        obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.pending > 0
    except (ssl.SSLError, ValueError):
        return False
    return False


@dataclass(frozen=True)
class CertFacts:
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_after: str
    days_left: int
    hostname_ok: bool

    @property
    def expired(self) -> bool:
        return self.days_left < 0


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    # RFC 6125: the wildcard stands for exactly one left-most label
    head, _, rest = host.partition(".")
    return bool(head) and rest == pattern[2:] and "." in rest


def hostname_matches(cert: x509.Certificate, host: str) -> bool:
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    return any(_dns_match(n, host) for n in san.get_values_for_type(x509.DNSName))


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)[:20]


def _cn(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def cert_facts(der: bytes, host: str, now: dt.datetime) -> CertFacts | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    not_after = cert.not_valid_after_utc
    return CertFacts(
        subject=_cn(cert.subject),
        issuer=_cn(cert.issuer),
        names=_names(cert),
        not_after=not_after.isoformat(),
        days_left=(not_after - now).days,
        hostname_ok=hostname_matches(cert, host),
    )
