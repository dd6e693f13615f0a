"""The test zone's answers: dnspython builds the query and reads the answer."""

from __future__ import annotations

from dataclasses import replace

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from mailtls import settings as cfg
from mailtls.dnszone import Zone, ZoneConfig
from mailtls.runs.endpoints import EndpointPool, kinds_for

CONF = replace(
    cfg.Settings(),
    endpoints=cfg.Endpoints(prefix="2001:db8:1:2::/64", zone="t.example"),
    dns=cfg.Dns(port=53, web_addresses=("192.0.2.80",), mail_addresses=("192.0.2.25",)),
)


def zone() -> tuple[Zone, str]:
    pool = EndpointPool(CONF)
    run = pool.plan("r1", kinds_for("imap", CONF))
    pool.assign(run)
    return Zone(ZoneConfig.from_settings(CONF), pool.by_label), run.host


def ask(z: Zone, name: str, rdtype: str, max_size: int | None = None) -> dns.message.Message:
    wire = z.respond(dns.message.make_query(name, rdtype).to_wire(), max_size)
    assert wire is not None
    return dns.message.from_wire(wire)


def values(answer: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in answer.answer for rd in rrset]


def test_the_runs_name_and_its_services() -> None:
    z, host = zone()
    a = ask(z, host, "AAAA")
    assert a.flags & dns.flags.AA and values(a) == ["2001:db8:1:2::1"]
    assert values(ask(z, host, "MX")) == [f"10 {host}."]
    assert values(ask(z, f"_imap._tcp.{host}", "SRV")) == [f"0 1 2143 {host}."]
    assert values(ask(z, f"_submissions._tcp.{host}", "SRV")) == [f"0 1 2465 {host}."]
    assert values(ask(z, f"_pop3._tcp.{host}", "SRV")) == ["0 0 0 ."]  # an IMAP run: no POP3
    assert values(ask(z, f"autoconfig.{host}", "A")) == ["192.0.2.80"]
    nodata = ask(z, host, "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority


def test_the_apex_and_what_does_not_exist() -> None:
    z, _ = zone()
    assert values(ask(z, "t.example", "NS")) == ["ns.t.example."]
    assert values(ask(z, "t.example", "MX")) == ["10 t.example."]
    assert values(ask(z, "autodiscover.t.example", "A")) == ["192.0.2.80"]
    assert values(ask(z, "_imaps._tcp.t.example", "SRV")) == ["0 1 2993 t.example."]
    missing = ask(z, "nosuchrun.t.example", "AAAA")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    outside = ask(z, "example.org", "A")
    assert outside.rcode() == dns.rcode.REFUSED and not outside.flags & dns.flags.AA
    assert ask(z, "t.example", "ANY").rcode() == dns.rcode.NOTIMP


def test_garbage_gets_no_answer_and_responses_are_never_answered() -> None:
    z, host = zone()
    assert z.respond(b"\x00" * 3) is None
    assert z.respond(b"\xff" * 40) is None
    response = dns.message.make_response(dns.message.make_query(host, "A"))
    assert z.respond(response.to_wire()) is None


def test_udp_answers_never_exceed_what_the_query_allows() -> None:
    many = tuple(f"2001:db8::{i:x}" for i in range(1, 60))  # 59 AAAA: about 1,700 bytes
    conf = replace(CONF, dns=replace(CONF.dns, web_addresses=many))
    z = Zone(ZoneConfig.from_settings(conf), lambda label: None)
    plain = z.respond(dns.message.make_query("autoconfig.t.example", "AAAA").to_wire(), 1232)
    assert plain is not None and len(plain) <= 512  # no EDNS: 512 bytes, truncated
    assert dns.message.from_wire(plain).flags & dns.flags.TC
    query = dns.message.make_query("autoconfig.t.example", "AAAA", use_edns=0, payload=4096)
    edns = z.respond(query.to_wire(), 1232)
    assert edns is not None and len(edns) <= 1232  # EDNS: at most what we allow, here TC too
    full = z.respond(query.to_wire(), None)  # TCP: whole
    assert full is not None and len(values(dns.message.from_wire(full))) == 59
