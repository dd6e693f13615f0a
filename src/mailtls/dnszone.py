"""Authoritative answers for the test zone (``endpoints.zone``): the wire format by dnspython.

Names of the zone (``Z``; a run's host name is ``<label>.Z``):

| name | records |
|---|---|
| ``Z`` | SOA, NS, and where ``dns.mail_addresses`` are set: A/AAAA, MX, SRV of the shared ports |
| ``ns.Z`` (default NS) | A/AAAA of the responder (``dns.listen``, else the mail addresses) |
| ``autoconfig.Z``, ``autodiscover.Z`` | A/AAAA of the web app (``dns.web_addresses``) |
| ``<label>.Z`` | A or AAAA of the run's own address; MX 10 ``<label>.Z`` |
| ``_imap._tcp.<label>.Z`` ... | SRV to the run's endpoints (``0 0 0 .``: not offered) |
| ``autoconfig.<label>.Z``, ``autodiscover.<label>.Z`` | A/AAAA of the web app |

SRV services: RFC 6186 ``_submission``, ``_imap``, ``_pop3`` and RFC 8314 ``_submissions``,
``_imaps``, ``_pop3s``. Anything else in the zone is NXDOMAIN (with the SOA), a name outside
it REFUSED, a query that is not a standard one-question query FORMERR or NOTIMP, and a message
that does not parse gets no answer. Pure: no I/O, no clock; the runs come in through
``lookup(label)``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mailtls.runs.endpoints import RunEndpoints
from mailtls.settings import Settings

UDP_PAYLOAD = 1232  # the EDNS payload size advertised and honoured (DNS flag day 2020)
PLAIN_UDP = 512
SERIAL = 1

# SRV service label -> listener kind (RFC 6186, RFC 8314)
SRV_KINDS = {
    "_submission": "smtp_submission",
    "_submissions": "smtp_tls",
    "_imap": "imap",
    "_imaps": "imap_tls",
    "_pop3": "pop3",
    "_pop3s": "pop3_tls",
}
WEB_LABELS = ("autoconfig", "autodiscover")

Lookup = Callable[[str], RunEndpoints | None]


@dataclass(frozen=True)
class ZoneConfig:
    zone: str
    ttl: int
    nameservers: tuple[str, ...]
    ns_addresses: tuple[str, ...]
    web_addresses: tuple[str, ...]
    mail_addresses: tuple[str, ...]
    shared_ports: dict[str, int]

    @classmethod
    def from_settings(cls, settings: Settings) -> ZoneConfig:
        zone = settings.endpoints.zone.strip(".").lower()
        dns_conf = settings.dns
        ports = settings.ports
        return cls(
            zone=zone,
            ttl=dns_conf.ttl,
            nameservers=dns_conf.nameservers or (f"ns.{zone}",),
            ns_addresses=dns_conf.listen or dns_conf.mail_addresses,
            web_addresses=dns_conf.web_addresses,
            mail_addresses=dns_conf.mail_addresses,
            shared_ports={kind: getattr(ports, kind) for kind in SRV_KINDS.values()},
        )


class Zone:
    """Answers queries for one zone from its configuration and the runs' endpoints."""

    def __init__(self, config: ZoneConfig, lookup: Lookup) -> None:
        self.config = config
        self.origin = dns.name.from_text(config.zone)
        self._lookup = lookup

    def respond(self, wire: bytes, max_size: int | None = None) -> bytes | None:
        """The answer to one query message; ``max_size`` (UDP) truncates with TC. ``None``:
        not a DNS message, no answer (as servers do for garbage)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        except Exception:  # dnspython raises plain errors too on some garbage
            return None
        if query.flags & dns.flags.QR:
            return None  # a response: never answer one (reflection loops)
        response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        self._fill(query, response)
        if max_size is None:
            return response.to_wire()
        limit = min(max(query.payload, PLAIN_UDP) if query.edns >= 0 else PLAIN_UDP, max_size)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    def _fill(self, query: dns.message.Message, response: dns.message.Message) -> None:
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        if question.rdtype == dns.rdatatype.ANY:
            response.set_rcode(dns.rcode.NOTIMP)
            return
        name = question.name
        if not name.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            response.flags &= ~dns.flags.AA
            return
        records = self._records(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa())
            return
        wanted = [r for r in records if r.rdtype == question.rdtype]
        if not wanted:
            response.authority.append(self._soa())  # NODATA
            return
        response.answer.extend(wanted)

    # --- the zone's data ------------------------------------------------------------------------

    def _records(self, name: dns.name.Name) -> list[dns.rrset.RRset] | None:
        """Every record set of ``name``; ``None`` when the name does not exist."""
        relative = name.relativize(self.origin)
        labels = [label.decode("ascii", "replace").lower() for label in relative.labels]
        c = self.config
        if not labels:
            out = [self._soa(), self._rrset(name, "NS", [f"{n}." for n in c.nameservers])]
            if c.mail_addresses:
                out += self._addresses(name, c.mail_addresses)
                out.append(self._rrset(name, "MX", [f"10 {self.origin}"]))
            return out
        if len(labels) == 1 and labels[0] in WEB_LABELS:
            return self._addresses(name, c.web_addresses)
        if len(labels) == 1 and f"{labels[0]}.{c.zone}" in c.nameservers:
            return self._addresses(name, c.ns_addresses)
        if len(labels) == 2 and labels[0] in SRV_KINDS and labels[1] == "_tcp":
            if not c.mail_addresses:
                return None
            return [self._srv(name, SRV_KINDS[labels[0]], c.shared_ports, self.origin)]
        run = self._lookup(labels[-1])
        if run is None:
            return None
        host = dns.name.from_text(run.host)
        rest = labels[:-1]
        if not rest:
            return [
                *self._addresses(name, (run.address,)),
                self._rrset(name, "MX", [f"10 {host}"]),
            ]
        if len(rest) == 1 and rest[0] in WEB_LABELS:
            return self._addresses(name, c.web_addresses)
        if len(rest) == 2 and rest[0] in SRV_KINDS and rest[1] == "_tcp":
            ports = {e.kind: e.port for e in run}
            return [self._srv(name, SRV_KINDS[rest[0]], ports, host)]
        return None

    def _srv(
        self, name: dns.name.Name, kind: str, ports: dict[str, int], target: dns.name.Name
    ) -> dns.rrset.RRset:
        port = ports.get(kind, 0)
        value = f"0 1 {port} {target}" if port else "0 0 0 ."
        return self._rrset(name, "SRV", [value])

    def _addresses(self, name: dns.name.Name, addresses: Sequence[str]) -> list[dns.rrset.RRset]:
        v4 = [a for a in addresses if a and ipaddress.ip_address(a).version == 4]
        v6 = [a for a in addresses if a and ipaddress.ip_address(a).version == 6]
        out = []
        if v4:
            out.append(self._rrset(name, "A", v4))
        if v6:
            out.append(self._rrset(name, "AAAA", v6))
        return out

    def _soa(self) -> dns.rrset.RRset:
        primary = self.config.nameservers[0]
        value = (
            f"{primary}. hostmaster.{self.config.zone}. {SERIAL} 3600 600 86400 {self.config.ttl}"
        )
        return self._rrset(self.origin, "SOA", [value])

    def _rrset(self, name: dns.name.Name, rdtype: str, values: Sequence[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(name, self.config.ttl, "IN", rdtype, list(values))
