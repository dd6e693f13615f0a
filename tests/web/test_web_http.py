"""The web app over plain HTTP (what a browser without JavaScript sends), against a real
``mailtls serve``: CSRF, security headers, account auto-configuration, the shareable view,
deletion, rate limiting, and the guided flow's server-side rules."""

from __future__ import annotations

import imaplib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from web_kit import form_token, imap_session, smtp_session, tls_context

from conftest import ServeInstance

pytestmark = pytest.mark.timeout(60)

AUTODISCOVER = (
    '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{email}'
    "</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/"
    "autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>"
    "</Autodiscover>"
)


@dataclass
class WebRun:
    id: str
    user: str
    password: str
    result: str  # the owner's result page URL


class Browserless:
    """A cookie-keeping HTTP client that uses the pages the way a browser without JS does."""

    def __init__(self, inst: ServeInstance) -> None:
        self.inst = inst
        self.http = httpx.Client(base_url=inst.url, timeout=10.0)
        self.token = form_token(self.http.get("/").text)

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.token, **fields})

    def create(self, mode: str = "guided", **fields: str) -> WebRun:
        resp = self.post("/start", mode=mode, **fields)
        assert resp.status_code == 303, resp.text
        run_id = resp.headers["location"].rsplit("/", 1)[1]
        view = self.http.get(f"/api/runs/{run_id}").json()
        self.inst.remember(view)
        account = view["account"]
        return WebRun(run_id, account["username"], account["password"], view["links"]["result"])

    def step(self, run: WebRun, n: int, action: str, **fields: str) -> httpx.Response:
        return self.post(f"/run/{run.id}/step/{n}/{action}", **fields)

    def verdict(self, run: WebRun, n: int) -> str | None:
        view = self.http.get(f"/api/runs/{run.id}").json()
        verdict: str | None = next(s for s in view["steps"] if s["n"] == n)["verdict"]
        return verdict


@pytest.fixture
def web(serve: ServeInstance) -> Iterator[Browserless]:
    client = Browserless(serve)
    yield client
    client.http.close()


def test_forms_without_the_token_are_refused(web: Browserless, serve: ServeInstance) -> None:
    assert web.http.post("/start", data={"mode": "guided"}).status_code == 403
    assert web.http.post("/start", data={"mode": "guided", "csrf": "x" * 43}).status_code == 403
    with httpx.Client(base_url=serve.url) as stranger:  # the token, but not the cookie
        assert stranger.post("/start", data={"csrf": web.token}).status_code == 403
    run = web.create()
    for path in (f"/run/{run.id}/step/1/start", f"/run/{run.id}/delete"):
        resp = web.http.post(path, data={})
        assert resp.status_code == 403, path
        assert "Reload the page" in resp.text
    assert web.http.get(f"/run/{run.id}").status_code == 200  # not deleted
    assert web.step(run, 1, "start").status_code == 303


def _no_inline_code(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "<style" not in html and " style=" not in html, "inline style"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"


def test_security_headers_and_no_inline_code(web: Browserless, serve: ServeInstance) -> None:
    landing = web.http.get("/")
    csp = landing.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert landing.headers["x-frame-options"] == "DENY"
    _no_inline_code(landing.text)
    run = web.create()
    web.step(run, 1, "start")
    result = web.http.get(run.result)
    share_path = re.search(r'href="(/s/[^"]+)"', result.text)
    assert share_path
    for path in (
        f"/run/{run.id}",
        f"/run/{run.id}/step/1",
        f"/run/{run.id}/step/2",
        run.result,
        run.result + ".json",
        run.result + ".csv",
        share_path.group(1),
    ):
        resp = web.http.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["cache-control"] == "no-store", path
        assert "noindex" in resp.headers["x-robots-tag"], path
        assert resp.headers["referrer-policy"] == "no-referrer", path
        if resp.headers["content-type"].startswith("text/html"):
            _no_inline_code(resp.text)


def _autoconfig(web: Browserless, email: str) -> httpx.Response:
    return web.http.get("/mail/config-v1.1.xml", params={"emailaddress": email})


def _autodiscover(web: Browserless, email: str) -> httpx.Response:
    return web.http.post(
        "/autodiscover/autodiscover.xml",
        content=AUTODISCOVER.format(email=email),
        headers={"content-type": "text/xml"},
    )


def test_autoconfig_and_autodiscover_point_at_the_servers(
    web: Browserless, serve: ServeInstance
) -> None:
    ports = serve.ports
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        resp = web.http.get(path, params={"emailaddress": "someone@mailtls.test"})
        assert resp.status_code == 200
        root = ET.fromstring(resp.content)
        servers = {
            (s.get("type"), int(s.findtext("port") or 0)): s.findtext("socketType")
            for s in root.iter()
            if s.tag in ("incomingServer", "outgoingServer")
        }
        assert servers[("imap", ports["imap"])] == "STARTTLS"
        assert servers[("imap", ports["imap_tls"])] == "SSL"
        assert servers[("pop3", ports["pop3"])] == "STARTTLS"
        assert servers[("pop3", ports["pop3_tls"])] == "SSL"
        assert servers[("smtp", ports["smtp_submission"])] == "STARTTLS"
        assert servers[("smtp", ports["smtp_tls"])] == "SSL"
        assert ("smtp", ports["smtp_mx"]) not in servers
    resp = _autodiscover(web, "someone@mailtls.test")
    assert resp.status_code == 200
    found = {
        p.findtext("{*}Type"): (int(p.findtext("{*}Port") or 0), p.findtext("{*}Encryption"))
        for p in ET.fromstring(resp.content).iter()
        if p.tag.endswith("}Protocol")
    }
    assert found["IMAP"] == (ports["imap"], "TLS")  # Autodiscover's "TLS" is STARTTLS
    assert found["POP3"] == (ports["pop3"], "TLS")
    assert found["SMTP"] == (ports["smtp_submission"], "TLS")
    # a run's username: its own endpoints, in all three formats
    run = web.create(protocol="imap")
    own = serve.ports_for(run.user)
    assert own["imap"] != ports["imap"]
    xml = web.http.get("/mail/config-v1.1.xml", params={"emailaddress": run.user}).text
    assert f"<port>{own['imap']}</port>" in xml and f"<port>{own['imap_tls']}</port>" in xml
    assert (
        f"<port>{own['smtp_submission']}</port>" in xml and "<port>" + str(ports["imap"]) not in xml
    )
    assert f"<Port>{own['imap']}</Port>" in _autodiscover(web, run.user).text
    profile = web.http.get(f"/run/{run.id}/account.mobileconfig").content
    assert f"<integer>{own['imap']}</integer>".encode() in profile


def test_autoconfig_is_404_while_an_immediate_attack_step_is_active(web: Browserless) -> None:
    run = web.create()  # guided: 1 baseline, 2..5 immediate t1..t4, 6..9 two_phase t1..t4
    web.step(run, 1, "start")
    assert _autoconfig(web, run.user).status_code == 200
    assert web.step(run, 1, "skip").status_code == 303
    assert web.step(run, 2, "start").status_code == 303
    assert _autoconfig(web, run.user).status_code == 404
    assert _autodiscover(web, run.user).status_code == 404
    assert _autoconfig(web, "someone-else@mailtls.test").status_code == 200
    web.step(run, 2, "skip")
    assert _autoconfig(web, run.user).status_code == 200
    for n in (3, 4, 5):
        web.step(run, n, "skip")
    web.step(run, 6, "start")  # two_phase: the account setup itself is not attacked
    assert _autoconfig(web, run.user).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'<!DOCTYPE a [<!ENTITY b "cccc">]><a>&b;</a>', 400),
        (b"<!DOCTYPE a SYSTEM 'file:///etc/passwd'><a/>", 400),
        (b"<a>" + b"x" * 40_000 + b"</a>", 413),
        (b"\x00\xff not xml", 400),
        (b"<Autodiscover><Request/></Autodiscover>", 400),
    ],
)
def test_autodiscover_refuses_entities_and_big_bodies(
    web: Browserless, body: bytes, status: int
) -> None:
    resp = web.http.post("/autodiscover/autodiscover.xml", content=body)
    assert resp.status_code == status


def test_shareable_view_hides_identifiers(web: Browserless, serve: ServeInstance) -> None:
    run = web.create(mode="single", scenario="immediate", testcase="baseline")
    web.step(run, 1, "start")
    ident = "ident-from-the-client.example"
    assert imap_session(serve, run.user, run.password, client_id=ident) == "tls-login"
    assert smtp_session(serve, run.user, run.password, ehlo=ident) == "tls-login"
    assert web.step(run, 1, "finish").status_code == 303
    owner = web.http.get(run.result).text
    assert ident in owner and "127.0.0.1" in owner and run.user in owner
    share_path = re.search(r'href="(/s/[^"]+)"', owner)
    assert share_path
    token = run.result.rsplit("/", 1)[1]
    code = run.user.split("@")[0].removeprefix("test-")
    for path in (share_path.group(1), share_path.group(1) + ".json", share_path.group(1) + ".csv"):
        shared = web.http.get(path)
        assert shared.status_code == 200, path
        for secret in (ident, "127.0.0.1", code, token, run.id, run.password):
            assert secret not in shared.text, (path, secret)
    assert "PASS" in web.http.get(share_path.group(1)).text
    assert "Delete" not in web.http.get(share_path.group(1)).text
    assert web.http.get(run.result, params={"share": "1"}).status_code == 303
    assert len(token) >= 22 and code not in token  # >= 128 bits, not the session code


def test_answers_map_to_verdicts_and_contradictions_show(
    web: Browserless, serve: ServeInstance
) -> None:
    run = web.create(mode="single", scenario="immediate", testcase="t1")
    web.step(run, 1, "start")
    assert imap_session(serve, run.user, run.password) == "plain-login"
    web.step(run, 1, "report", prompt_shown="no", cannot_connect="yes")
    page = web.http.get(f"/run/{run.id}/step/1").text
    assert "does not match what the server saw" in page
    web.step(run, 1, "finish")
    assert web.verdict(run, 1) == "FAIL"  # FAIL always wins
    result = web.http.get(run.result).text
    assert "does not match what the server saw" in result
    assert "report_contradicts_events" in result


def test_finish_waits_for_the_retry_in_t2(web: Browserless, serve: ServeInstance) -> None:
    run = web.create(mode="single", scenario="immediate", testcase="t2")
    web.step(run, 1, "start")
    refused = web.step(run, 1, "finish")
    assert refused.status_code == 409
    assert "second IMAP connection" in refused.text
    assert imap_session(serve, run.user, run.password, strict=True).startswith("stopped")
    assert web.step(run, 1, "finish").status_code == 409
    assert imap_session(serve, run.user, run.password, strict=True).startswith("stopped")
    assert web.step(run, 1, "finish").status_code == 303
    assert web.verdict(run, 1) == "INCONCLUSIVE"
    assert "refused to continue without encryption" in web.http.get(run.result).text


def test_pop3_user_never_needs_imap(web: Browserless, serve: ServeInstance) -> None:
    run = web.create(protocol="pop3")
    web.step(run, 1, "start")
    page = web.http.get(f"/run/{run.id}/step/1").text
    assert "connection from your app to POP3" in page and "to IMAP" not in page
    assert "Receiving (POP3)" in page and "Receiving (IMAP)" not in page


def test_delete_my_data(web: Browserless, serve: ServeInstance) -> None:
    run = web.create(mode="single", scenario="immediate", testcase="baseline")
    web.step(run, 1, "start")
    assert imap_session(serve, run.user, run.password) == "tls-login"
    resp = web.post(f"/run/{run.id}/delete")
    assert resp.status_code == 200 and "deleted" in resp.text
    for path in (run.result, f"/run/{run.id}", f"/api/runs/{run.id}/events"):
        assert web.http.get(path).status_code == 404, path


def test_run_creation_is_rate_limited(web: Browserless) -> None:
    codes = [web.post("/start", mode="guided").status_code for _ in range(25)]
    assert codes[0] == 303
    assert 429 in codes
    assert "Too many tests" in web.post("/start", mode="guided").text


def test_implicit_tls_client_is_told_to_skip_steps_that_cannot_apply(
    web: Browserless, serve: ServeInstance
) -> None:
    run = web.create()
    web.step(run, 1, "start")
    with imaplib.IMAP4_SSL(
        "127.0.0.1",
        serve.port_for(run.user, "imap_tls"),
        ssl_context=tls_context(serve),
        timeout=6,
    ) as m:
        m.login(run.user, run.password)
    assert web.step(run, 1, "finish").status_code == 303
    assert web.verdict(run, 1) == "PASS"
    for n in (2, 3, 4, 5):
        web.step(run, n, "skip")
    for n in (6, 7, 8):
        page = web.http.get(f"/run/{run.id}/step/{n}").text
        assert "cannot apply" in page and "Skip this step (recommended)" in page, n
    assert "cannot apply" not in web.http.get(f"/run/{run.id}/step/9").text


def test_event_positions_out_of_range_are_client_errors(web: Browserless) -> None:
    """A huge ``after`` or ``Last-Event-ID`` (or one in non-ASCII digits) is the client's
    mistake: never a 500 from the store (SQLite integers are 64-bit) or from ``int()``."""
    run = web.create()
    events = f"/api/runs/{run.id}/events"
    assert web.http.get(events, params={"after": str(10**30)}).status_code == 422
    assert web.http.get(events, params={"after": "-1"}).status_code == 422
    for last in (b"9" * 30, b"9" * 5000, "\u00b2".encode("latin-1")):
        headers = {b"accept": b"text/event-stream", b"last-event-id": last}
        with web.http.stream("GET", events, headers=headers) as resp:
            assert resp.status_code == 200, last
            first = next(resp.iter_lines())
            assert first.startswith(("id: ", ": keep-alive")), first


def test_request_bodies_are_bounded(web: Browserless) -> None:
    """Forms and JSON are read whole into memory: a body above the bound is refused (413)
    before any of it is parsed, declared or sent chunked."""
    big = "x" * (2 * 1024 * 1024)
    assert web.http.post("/start", data={"csrf": web.token, "protocol": big}).status_code == 413
    assert web.http.post("/api/runs", json={"plan": "guided", "x": big}).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"y" * 32768

    resp = web.http.post(
        "/api/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413
    assert web.post("/start", mode="guided").status_code == 303  # small bodies still pass


# --- the cases beyond T1-T4 ---------------------------------------------------------------------


def test_the_guided_flow_offers_the_more_tests_after_the_nine_steps(web: Browserless) -> None:
    assert 'name="more"' in web.http.get("/").text
    nine = web.http.get(f"/api/runs/{web.create().id}").json()["steps"]
    imap = web.http.get(f"/api/runs/{web.create(more='yes').id}").json()["steps"]
    pop3 = web.http.get(f"/api/runs/{web.create(more='yes', protocol='pop3').id}").json()["steps"]
    assert len(nine) == 9 and imap[:9] == nine
    more = ["starttls_required", "preauth", "inject", *CERT_CASES, "tls_fallback"]
    assert [s["testcase"] for s in imap[9:]] == more
    assert [s["testcase"] for s in pop3[9:]] == [c for c in more if c != "preauth"]
    page = web.http.get(f"/run/{web.create(more='yes').id}").text
    assert "Extra attack: encryption offer removed from a careful server" in page


CERT_CASES = ["cert_selfsigned", "cert_expired", "cert_wronghost", "cert_unknown_ca"]


@pytest.mark.parametrize(
    "testcase", ["starttls_required", "preauth", "inject", *CERT_CASES, "tls_fallback"]
)
def test_the_single_test_page_and_the_api_accept_the_more_tests(
    web: Browserless, testcase: str
) -> None:
    assert f'value="{testcase}"' in web.http.get("/").text
    run = web.create(mode="single", scenario="immediate", testcase=testcase)
    assert web.http.get(f"/api/runs/{run.id}").json()["steps"][0]["testcase"] == testcase
    resp = web.http.post(
        "/api/runs", json={"steps": [{"scenario": "immediate", "testcase": testcase}]}
    )
    assert resp.status_code == 201, resp.text


def test_the_api_lists_where_each_case_applies(web: Browserless) -> None:
    cases = {c["name"]: c for c in web.http.get("/api/testcases").json()}
    assert cases["starttls_required"]["protocols"] == ["imap", "smtp"]  # POP3: not applicable
    assert cases["preauth"]["protocols"] == ["imap"]
    assert cases["t1"]["standard"] and not cases["inject"]["standard"]
    resp = web.http.post("/api/runs", json={"plan": "more"})
    assert resp.status_code == 201
    steps = [s["testcase"] for s in resp.json()["steps"]]
    assert steps == ["starttls_required", "preauth", "inject", *CERT_CASES, "tls_fallback"]
