"""Account auto-configuration answers for the service's own domain.

- Mozilla autoconfig (``/mail/config-v1.1.xml``, ``/.well-known/autoconfig/mail/config-v1.1.xml``),
  used by Thunderbird, K-9/Thunderbird for Android, Evolution, ...
- Microsoft Autodiscover (POX, ``POST /autodiscover/autodiscover.xml``), used by Outlook and
  others. Requests are size-bounded and refused when they declare a DTD, so no entity is ever
  expanded.
- An Apple configuration profile (``.mobileconfig``) for iOS/macOS Mail.

All three point at the STARTTLS ports (the ports under test) and describe the implicit-TLS ports
too where the format allows.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass
from xml.sax.saxutils import escape

MAX_AUTODISCOVER_BYTES = 16 * 1024


@dataclass(frozen=True)
class ServerSet:
    hostname: str
    domain: str
    imap: int
    imap_tls: int
    pop3: int
    pop3_tls: int
    smtp_submission: int
    smtp_tls: int


def mozilla_autoconfig(servers: ServerSet, email: str) -> str:
    host = escape(servers.hostname)
    domain = escape(servers.domain)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        f'  <emailProvider id="{domain}">',
        f"    <domain>{domain}</domain>",
        "    <displayName>mailtls self-test</displayName>",
        "    <displayShortName>mailtls</displayShortName>",
    ]

    def server(kind: str, tag: str, port: int, socket_type: str) -> None:
        if not port:
            return
        parts.extend(
            [
                f'    <{tag} type="{kind}">',
                f"      <hostname>{host}</hostname>",
                f"      <port>{port}</port>",
                f"      <socketType>{socket_type}</socketType>",
                "      <username>%EMAILADDRESS%</username>",
                "      <authentication>password-cleartext</authentication>",
                f"    </{tag}>",
            ]
        )

    server("imap", "incomingServer", servers.imap, "STARTTLS")
    server("pop3", "incomingServer", servers.pop3, "STARTTLS")
    server("imap", "incomingServer", servers.imap_tls, "SSL")
    server("pop3", "incomingServer", servers.pop3_tls, "SSL")
    server("smtp", "outgoingServer", servers.smtp_submission, "STARTTLS")
    server("smtp", "outgoingServer", servers.smtp_tls, "SSL")
    parts += ["  </emailProvider>", "</clientConfig>", ""]
    return "\n".join(parts)


class AutodiscoverError(ValueError):
    pass


def parse_autodiscover_request(body: bytes) -> str:
    """Return the EMailAddress of an Autodiscover POX request (no DTDs, bounded size)."""
    if len(body) > MAX_AUTODISCOVER_BYTES:
        raise AutodiscoverError("request too large")
    _refuse_dtd(body)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise AutodiscoverError(f"malformed XML: {exc}") from None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "EMailAddress" and el.text:
            return el.text.strip()[:320]
    raise AutodiscoverError("no EMailAddress in the request")


def _refuse_dtd(body: bytes) -> None:
    """Refuse a document type declaration in whatever encoding the document declares (a byte
    search for ``<!DOCTYPE`` misses a UTF-16 one): expat stops at its start, before any entity
    is declared, so none is ever expanded."""

    def refuse(*_: object) -> None:
        raise AutodiscoverError("DTDs are not accepted")

    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(body, True)
    except xml.parsers.expat.ExpatError as exc:
        raise AutodiscoverError(f"malformed XML: {exc}") from None


def autodiscover_response(servers: ServerSet, email: str) -> str:
    host = escape(servers.hostname)
    login = escape(email)

    def protocol(kind: str, port: int, encryption: str) -> str:
        if not port:
            return ""
        return (
            "      <Protocol>\n"
            f"        <Type>{kind}</Type>\n"
            f"        <Server>{host}</Server>\n"
            f"        <Port>{port}</Port>\n"
            f"        <LoginName>{login}</LoginName>\n"
            "        <DomainRequired>off</DomainRequired>\n"
            "        <SPA>off</SPA>\n"
            f"        <Encryption>{encryption}</Encryption>\n"
            "        <AuthRequired>on</AuthRequired>\n"
            "      </Protocol>\n"
        )

    protocols = (
        protocol("IMAP", servers.imap, "TLS")
        + protocol("POP3", servers.pop3, "TLS")
        + protocol("SMTP", servers.smtp_submission, "TLS")
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
        '  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">\n'
        "    <Account>\n"
        "      <AccountType>email</AccountType>\n"
        "      <Action>settings</Action>\n"
        f"{protocols}"
        "    </Account>\n"
        "  </Response>\n"
        "</Autodiscover>\n"
    )


def mobileconfig(servers: ServerSet, email: str, incoming: str, run_id_hint: str) -> bytes:
    """An unsigned Apple configuration profile with one mail account (STARTTLS ports)."""
    is_pop = incoming == "pop3"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"org.mailtls.account.{run_id_hint}",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadDisplayName": "mailtls test account",
        "EmailAccountDescription": "mailtls self-test",
        "EmailAccountName": "mailtls test",
        "EmailAccountType": "EmailTypePOP" if is_pop else "EmailTypeIMAP",
        "EmailAddress": email,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": servers.hostname,
        "IncomingMailServerPortNumber": servers.pop3 if is_pop else servers.imap,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": email,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": servers.hostname,
        "OutgoingMailServerPortNumber": servers.smtp_submission,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": email,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"org.mailtls.profile.{run_id_hint}",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadDisplayName": "mailtls self-test account",
        "PayloadDescription": "Adds the one-off mailtls test account. Remove it after the test.",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)
