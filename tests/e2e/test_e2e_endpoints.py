"""Exact binding through each run's own endpoints (issue 11), against a real ``mailtls serve``.

- two runs started from one address at the same time, their clients on that address too: each
  verdict comes from its own connections only;
- the browser on 127.0.0.1, the mail client on ::1: the first connection already runs under
  the attack;
- address mode: a client resolving the run's host name through the embedded DNS (dnspython's
  resolver pointed at it; 127.0.x.0/24 stands in for a routed IPv6 prefix) lands on the run;
- pool exhaustion is a 503 (JSON and page); a restart keeps a run's endpoints; they are
  released after the grace period, and a login with another run's account on a run's endpoint
  is a mismatch for that other run.
"""

from __future__ import annotations

import random
import smtplib
import socket
import ssl
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver
import httpx
import pytest
from e2e_helpers import (
    CLIENT_ERRORS,
    CLIENT_TIMEOUT,
    Api,
    journal,
    serving,
    smtp_client,
    verdict,
)

from conftest import ServeInstance, free_ports, start_serve

pytestmark = pytest.mark.timeout(90)


def own_conns(inst: ServeInstance, run_id: str) -> set[str]:
    return {
        str(r["conn"])
        for r in journal(inst)
        if r.get("type") == "connection_opened" and r.get("run") == run_id
    }


def test_two_runs_from_one_address_at_once_keep_their_own_verdicts(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as inst:
        api = Api(inst)
        attacked, honest = api.create(("immediate", "t1")), api.create(("immediate", "baseline"))
        api.start(attacked)
        api.start(honest)  # from the same address, right after: nothing is taken over
        results: dict[str, str] = {}

        def opportunistic() -> None:
            results["t1"] = smtp_client(inst, attacked.username, attacked.password, False)

        def strict() -> None:
            results["baseline"] = smtp_client(inst, honest.username, honest.password, True)

        threads = [threading.Thread(target=opportunistic), threading.Thread(target=strict)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == {"t1": "plain-login", "baseline": "tls-login"}
        a, b = api.finish(attacked), api.finish(honest)
        assert verdict(a) == ("FAIL", "plaintext_auth")
        assert verdict(b) == ("PASS", "tls_auth")
        assert a["binding"] == b["binding"] == "endpoint" and not a["collisions"]
        for run in (attacked, honest):
            opened = [e for e in api.events(run) if e["type"] == "connection_opened"]
            assert len(opened) == 1 and opened[0]["binding"]["source"] == "endpoint"
            auths = [e for e in api.events(run) if e["type"] == "auth"]
            assert {e["code"] for e in auths} == {run.code}
        assert not own_conns(inst, attacked.id) & own_conns(inst, honest.id)
        page = api.http.get(attacked.result_url).text  # the result page says how it was bound
        assert "own servers (exact)" in page
        api.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_browser_on_ipv4_client_on_ipv6_first_connection_is_attacked(tmp_path: Path) -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    with serving(tmp_path / "var", 'listen = ["127.0.0.1", "::1"]') as inst:
        api = Api(inst)
        run = api.create(("immediate", "t1"))
        api.start(run)  # the browser: 127.0.0.1
        port = inst.port_for(run.username, "smtp_submission")
        with smtplib.SMTP("::1", port, timeout=CLIENT_TIMEOUT) as s:  # the client: ::1
            s.ehlo()
            assert not s.has_extn("starttls")  # t1 from the very first connection
            s.login(run.username, run.password)
        step = api.finish(run)
        assert verdict(step) == ("FAIL", "plaintext_auth")
        assert step["protocols"]["smtp"]["connections"] == 1
        opened = [e for e in api.events(run) if e["type"] == "connection_opened"]
        assert opened[0]["client"] == "::1" and opened[0]["binding"]["source"] == "endpoint"
        api.close()


def test_a_client_resolving_the_runs_host_name_lands_on_the_run(tmp_path: Path) -> None:
    net = f"127.{random.randrange(20, 250)}.{random.randrange(1, 250)}.0/24"
    dns_port = free_ports(1)[0]
    zone = "t.mailtls.test"
    config = f'[dns]\nport = {dns_port}\nweb_addresses = ["127.0.0.1"]\n'
    with serving(tmp_path / "var", config, endpoints={"prefix": net, "zone": zone}) as inst:
        api = Api(inst)
        run = api.create(("immediate", "t1"))
        api.start(run)
        host = run.view["account"]["servers"]["imap"][0]["host"]
        assert host.endswith("." + zone) and run.view["account"]["binding"] == "endpoint"
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = dns_port
        resolver.lifetime = 5
        address = resolver.resolve(host, "A")[0].to_text()
        assert address.startswith(net.rsplit(".", 2)[0] + ".")
        srv = resolver.resolve(f"_imap._tcp.{host}", "SRV")[0]
        assert srv.target.to_text().rstrip(".") == host and srv.port == inst.ports["imap"]
        assert resolver.resolve(f"_pop3._tcp.{host}", "SRV")[0].port == inst.ports["pop3"]
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve(f"nosuchrun.{zone}", "A")
        # over TCP too, and a name outside the zone is refused
        answer = dns.query.tcp(dns.message.make_query(host, "A"), "127.0.0.1", 5, dns_port)
        assert answer.answer[0][0].to_text() == address
        outside = dns.query.udp(
            dns.message.make_query("example.org", "A"), "127.0.0.1", 5, dns_port
        )
        assert outside.rcode() == dns.rcode.REFUSED
        with socket.create_connection((address, srv.port), timeout=CLIENT_TIMEOUT) as sock:
            greeting = sock.recv(4096)
            assert b"STARTTLS" not in greeting  # t1 on the run's own address
        login = smtp_login(address, inst.ports["smtp_submission"], run.username, run.password)
        assert login == "plain-login"
        step = api.finish(run)
        assert verdict(step) == ("FAIL", "plaintext_auth")
        opened = [e for e in api.events(run) if e["type"] == "connection_opened"]
        assert {e["binding"]["source"] for e in opened} == {"endpoint"}
        # a baseline run: its own address, and the test CA's certificate names its host name
        honest = api.create(("immediate", "baseline"))
        api.start(honest)
        name = honest.view["account"]["servers"]["smtp"][0]["host"]
        where = resolver.resolve(name, "A")[0].to_text()
        assert where != address
        ctx = ssl.create_default_context(cafile=str(inst.ca))
        with smtplib.SMTP(where, inst.ports["smtp_submission"], timeout=CLIENT_TIMEOUT) as s:
            s.ehlo()
            s._host = name  # smtplib checks the certificate against the name it connected to
            s.starttls(context=ctx)
            s.login(honest.username, honest.password)
        assert verdict(api.finish(honest)) == ("PASS", "tls_auth")
        api.close()


def smtp_login(host: str, port: int, user: str, password: str) -> str:
    try:
        with smtplib.SMTP(host, port, timeout=CLIENT_TIMEOUT) as s:
            s.ehlo()
            tls = s.has_extn("starttls")
            s.login(user, password)
            return "tls-login" if tls else "plain-login"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"


def test_pool_exhaustion_is_a_503_never_shared_binding(tmp_path: Path) -> None:
    with serving(tmp_path / "var", endpoints={"max_runs": 2}) as inst:
        api = Api(inst)
        api.create(("immediate", "t1"))
        api.create(("immediate", "t1"))
        resp = httpx.post(f"{inst.url}/api/runs", json={"plan": "guided"}, timeout=10)
        assert resp.status_code == 503, resp.text
        assert "endpoints are in use" in resp.json()["detail"]
        assert resp.headers["retry-after"].isdigit()
        with httpx.Client(base_url=inst.url, timeout=10) as web:
            page = web.get("/")
            token = page.cookies.get("mailtls_csrf", "")
            form = web.post("/start", data={"protocol": "imap", "mode": "guided", "csrf": token})
        assert form.status_code == 503, form.text[:500]
        assert "endpoints are in use" in form.text
        api.close()


def test_restart_keeps_a_runs_endpoints(tmp_path: Path) -> None:
    data = tmp_path / "var"
    first = start_serve(data)
    try:
        api = Api(first)
        run = api.create(("immediate", "t1"))
        api.close()
    finally:
        first.stop()
    config = (data / "mailtls.toml").read_text()
    pool_first = int(config.split("port_first = ", 1)[1].split("\n", 1)[0])
    pool = {"port_first": pool_first, "port_last": pool_first + 999}
    second = start_serve(data, ports=first.ports, endpoints=pool)
    try:
        api = Api(second)
        view = api.get(run)
        assert view["account"] == run.view["account"]
        api.start(run)
        second.remember(view)
        assert smtp_client(second, run.username, run.password, False) == "plain-login"
        assert verdict(api.finish(run)) == ("FAIL", "plaintext_auth")
        api.close()
    finally:
        second.stop()


def test_release_after_grace_and_another_runs_login_is_its_mismatch(tmp_path: Path) -> None:
    with serving(tmp_path / "var", "[binding]\ngrace_seconds = 1.0\n") as inst:
        api = Api(inst)
        mine, other = api.create(("immediate", "t1")), api.create(("immediate", "baseline"))
        api.start(mine)
        api.start(other)
        port = inst.port_for(mine.username, "smtp_submission")
        # the other run's account on my endpoint: mine serves t1, the login is not its evidence
        assert smtp_login("127.0.0.1", port, other.username, other.password) == "plain-login"
        theirs = api.finish(other)
        assert verdict(theirs) == ("INCONCLUSIVE", "binding_mismatch")
        assert api.finish(mine)["verdict"] != "FAIL"  # no login with my account at all
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if api.get(mine)["account"]["binding"] == "address":
                break
            time.sleep(0.5)
        assert api.get(mine)["account"]["binding"] == "address"  # given back
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        api.close()
