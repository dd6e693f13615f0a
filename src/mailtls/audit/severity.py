"""The auditor's severity rules: one table (exposure -> severity) and one function that applies it.

A check names *what is exposed* (an ``Exposure``) and *who can reach it* (a ``Reach``); it never
picks a severity itself. So AUTH before STARTTLS is the same severity on port 25, on 587 and on
IMAP, and a loopback-only listener is ``info`` whatever the exposure. docs/audit.md shows this
table; a test keeps the two equal. Pure data; imports only ``mailtls.findings``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from mailtls.findings import Severity


class Exposure(enum.Enum):
    """What a client, a peer or an on-path attacker can get, stated once for every service."""

    CREDENTIALS_CLEARTEXT_ONLY = "credentials-cleartext-only"
    CREDENTIALS_BEFORE_TLS = "credentials-before-tls"
    CLIENT_TLS_NOT_OFFERED = "client-tls-not-offered"
    PLAINTEXT_ON_IMPLICIT_TLS_PORT = "plaintext-on-implicit-tls-port"
    RELAY_TLS_NOT_OFFERED = "relay-tls-not-offered"
    TRUSTED_PUBLIC_NETWORK = "trusted-public-network"
    SSLV3_ALLOWED = "sslv3-allowed"
    WEAK_CIPHERS = "weak-ciphers"
    SERVICE_FAILS = "service-fails"
    CLIENT_TLS_OPTIONAL = "client-tls-optional"
    OLD_TLS_ALLOWED = "old-tls-allowed"
    SESSION_BEFORE_TLS = "session-before-tls"
    MANDATORY_TLS_ON_MX = "mandatory-tls-on-mx"
    WEAK_CIPHERS_OPPORTUNISTIC_RELAY = "weak-ciphers-opportunistic-relay"
    OLD_TLS_OPPORTUNISTIC_RELAY = "old-tls-opportunistic-relay"
    LOGIN_BEFORE_TLS_SAME_HOST = "login-before-tls-same-host-only"


class Reach(enum.Enum):
    """Who can connect to the service the finding is about."""

    PUBLIC = "public"  # any network the listener is bound on
    INTERNAL = "internal"  # smtpd restricted to a private mynetworks
    LOOPBACK = "loopback"  # this host only (loopback listener, ``local 127.0.0.1 { }``)


SEVERITY: Mapping[Exposure, Severity] = {
    Exposure.CREDENTIALS_CLEARTEXT_ONLY: Severity.CRITICAL,
    Exposure.CREDENTIALS_BEFORE_TLS: Severity.HIGH,
    Exposure.CLIENT_TLS_NOT_OFFERED: Severity.HIGH,
    Exposure.PLAINTEXT_ON_IMPLICIT_TLS_PORT: Severity.HIGH,
    Exposure.RELAY_TLS_NOT_OFFERED: Severity.MEDIUM,
    Exposure.TRUSTED_PUBLIC_NETWORK: Severity.MEDIUM,
    Exposure.SSLV3_ALLOWED: Severity.MEDIUM,
    Exposure.WEAK_CIPHERS: Severity.MEDIUM,
    Exposure.SERVICE_FAILS: Severity.MEDIUM,
    Exposure.CLIENT_TLS_OPTIONAL: Severity.LOW,
    Exposure.OLD_TLS_ALLOWED: Severity.LOW,
    Exposure.SESSION_BEFORE_TLS: Severity.LOW,
    Exposure.MANDATORY_TLS_ON_MX: Severity.LOW,
    Exposure.WEAK_CIPHERS_OPPORTUNISTIC_RELAY: Severity.LOW,
    Exposure.OLD_TLS_OPPORTUNISTIC_RELAY: Severity.INFO,
    Exposure.LOGIN_BEFORE_TLS_SAME_HOST: Severity.INFO,
}
CAP: Mapping[Reach, Severity] = {
    Reach.PUBLIC: Severity.CRITICAL,
    Reach.INTERNAL: Severity.LOW,
    Reach.LOOPBACK: Severity.INFO,
}


def severity(exposure: Exposure, reach: Reach = Reach.PUBLIC) -> Severity:
    """The one severity rule: the exposure's severity, capped by who can reach the service."""
    return min(SEVERITY[exposure], CAP[reach])
