"""Unit tests of the web helpers that need no server: client address, rate limit, autoconfig
formats, the privacy filter of transcripts."""

from __future__ import annotations

import plistlib
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from starlette.requests import Request

from mailtls.web.api import ApiContext
from mailtls.web.autoconfig import (
    AutodiscoverError,
    ServerSet,
    autodiscover_response,
    mobileconfig,
    mozilla_autoconfig,
    parse_autodiscover_request,
)
from mailtls.web.clientaddr import client_address, parse_networks
from mailtls.web.ratelimit import RateLimiter
from mailtls.web.transcript import visible_events

SERVERS = ServerSet("mail.example.org", "example.org", 143, 993, 110, 995, 587, 465)


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.5", "1.2.3.4", [], "203.0.113.5"),  # no trusted proxy: header ignored
        ("127.0.0.1", "198.51.100.7", ["127.0.0.1"], "198.51.100.7"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", ["127.0.0.1"], "198.51.100.7"),  # spoofed left
        ("127.0.0.1", "198.51.100.7, 10.0.0.2", ["127.0.0.1", "10.0.0.0/8"], "198.51.100.7"),
        ("203.0.113.9", "198.51.100.7", ["127.0.0.1"], "203.0.113.9"),  # untrusted peer
        ("127.0.0.1", "not-an-ip", ["127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", "2001:db8::1", ["127.0.0.1"], "2001:db8::1"),
    ],
)
def test_client_address(peer: str, xff: str, trusted: list[str], expected: str) -> None:
    assert client_address(peer, xff, parse_networks(trusted)) == expected


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    now[0] += 1.0
    assert limiter.allow("a")


class _PausingKey(str):
    """A key whose second hashing in the thread named ``first`` (the write of its bucket, after
    the read) pauses that thread, at most 0.5 s, until another thread has asked the limiter:
    it opens the window between a bucket's read and write, where the web app's worker threads
    and its event loop meet."""

    hashes_in_first = 0
    paused = threading.Event()
    other_done = threading.Event()

    def __hash__(self) -> int:
        if threading.current_thread().name == "first":
            cls = type(self)
            cls.hashes_in_first += 1
            if cls.hashes_in_first == 2:
                cls.paused.set()
                cls.other_done.wait(0.5)
        return str.__hash__(self)


def test_rate_limiter_is_safe_across_threads() -> None:
    """Two concurrent requests from an address whose bucket is empty are both refused (a
    bucket taken out by one thread must not look new, and full, to the other)."""
    limiter = RateLimiter(rate_per_minute=0.001, burst=1, clock=lambda: 0.0)
    key = _PausingKey("203.0.113.5")
    assert limiter.allow(key)
    answers: dict[str, bool] = {}

    def first() -> None:
        answers["first"] = limiter.allow(key)

    def second() -> None:
        answers["second"] = limiter.allow(key)
        _PausingKey.other_done.set()

    t1 = threading.Thread(target=first, name="first")
    t1.start()
    assert _PausingKey.paused.wait(5)
    t2 = threading.Thread(target=second, name="second")
    t2.start()
    t1.join(5)
    t2.join(5)
    assert answers == {"first": False, "second": False}


def test_mozilla_autoconfig_points_at_starttls_ports() -> None:
    root = ET.fromstring(mozilla_autoconfig(SERVERS, "test-abc@example.org"))
    incoming = {
        (s.get("type"), s.findtext("port"), s.findtext("socketType"))
        for s in root.iter("incomingServer")
    }
    assert ("imap", "143", "STARTTLS") in incoming
    assert ("pop3", "110", "STARTTLS") in incoming
    assert ("imap", "993", "SSL") in incoming
    out = [(s.findtext("port"), s.findtext("socketType")) for s in root.iter("outgoingServer")]
    assert out[0] == ("587", "STARTTLS")


def test_autodiscover_round_trip() -> None:
    req = (
        b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
        b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>test-abc@example.org'
        b"</EMailAddress></Request></Autodiscover>"
    )
    email = parse_autodiscover_request(req)
    assert email == "test-abc@example.org"
    root = ET.fromstring(autodiscover_response(SERVERS, email))
    protos = {
        el.findtext("{*}Type"): (el.findtext("{*}Port"), el.findtext("{*}Encryption"))
        for el in root.iter()
        if el.tag.endswith("Protocol")
    }
    assert protos["IMAP"] == ("143", "TLS")
    assert protos["SMTP"] == ("587", "TLS")


@pytest.mark.parametrize(
    "body",
    [
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
        b"<x>" + b"a" * 20000 + b"</x>",
        b"<not-closed>",
        b"<Autodiscover><Request/></Autodiscover>",
        # a DTD in another encoding than UTF-8 is a DTD too (the byte check misses it)
        (
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
            "<x><EMailAddress>&a;@example.org</EMailAddress></x>"
        ).encode("utf-16"),
        (
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "file:///etc/passwd">'
            "<x><EMailAddress>a@example.org</EMailAddress></x>"
        ).encode("utf-16"),
    ],
)
def test_autodiscover_rejects_bad_requests(body: bytes) -> None:
    with pytest.raises(AutodiscoverError):
        parse_autodiscover_request(body)


def test_mobileconfig_is_a_plist_with_the_account() -> None:
    data = plistlib.loads(mobileconfig(SERVERS, "test-abc@example.org", "imap", "abc"))
    account = data["PayloadContent"][0]
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["IncomingMailServerPortNumber"] == 143
    assert account["OutgoingMailServerPortNumber"] == 587


def test_visible_events_hides_strings_of_connections_without_the_code() -> None:
    records = [
        {"id": 1, "conn": "a", "run": "R", "step": 1, "type": "command", "line": "EHLO <x>"},
        {"id": 2, "conn": "a", "run": "R", "type": "auth", "code": "c0de", "username": "test-c0de"},
        {"id": 3, "conn": "b", "run": "R", "type": "client_identified", "value": "neighbour"},
        {"id": 4, "run": "R", "type": "step_started", "addresses": ["192.0.2.1"]},
    ]
    shown = {e["id"]: e for e in visible_events(records, "c0de", run_id="R")}
    assert shown[1]["line"] == "EHLO <x>"  # connection a presented the code later
    assert "value" not in shown[3] and shown[3]["reduced"]
    assert "addresses" not in shown[4]
    shared = {e["id"]: e for e in visible_events(records, "c0de", run_id="R", share=True)}
    assert "line" not in shared[1] and "username" not in shared[2]


def test_visible_events_leave_out_strangers_who_used_the_username() -> None:
    """Only the run's password presents the run: a stranger's wrong password or bare USER
    from an unbound connection is not in the transcript; the user's phone (right password,
    another network) is."""
    auth = {"type": "auth", "code": "c0de", "username": "test-c0de", "run": None}
    records = [
        {"id": 1, "conn": "s", **auth, "proof": False, "client": "203.0.113.9"},
        {"id": 2, "conn": "u", "type": "username_sent", "code": "c0de", "run": None},
        {"id": 3, "conn": "p", **auth, "proof": True, "client": "198.51.100.7"},
        {"id": 4, "conn": "a", "run": "R", "type": "auth", "code": "c0de", "proof": False},
        {"id": 5, "conn": "a", "run": "R", "type": "command", "line": "a1 LOGIN x"},
    ]
    shown = {e["id"]: e for e in visible_events(records, "c0de", run_id="R")}
    # connection a is bound to the run (a dedicated port a stranger can read too), but its only
    # login was a wrong password: left out as well
    assert sorted(shown) == [3]
    assert shown[3]["client"] == "198.51.100.7"
    records += [
        {"id": 6, "conn": "a", "run": "R", "type": "auth", "code": "c0de", "proof": True},
        {"id": 7, "conn": "b", "run": "R", "type": "command", "line": "EHLO x"},
    ]
    shown = {e["id"]: e for e in visible_events(records, "c0de", run_id="R")}
    assert sorted(shown) == [3, 4, 5, 6, 7]  # a mistyped password, then the right one: shown
    assert shown[5]["line"] == "a1 LOGIN x"
    assert shown[7]["reduced"] and "line" not in shown[7]  # bound, never logged in: facts only


def _request(peer: str) -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/", "headers": [], "client": (peer, 1)}
    )


def test_run_creation_limit_counts_an_ipv6_prefix_as_one_address() -> None:
    """An IPv6 client has a /64 to pick addresses from: the creation limit, like the binding,
    keys on the prefix (otherwise every new address gets a full bucket)."""
    limiter = RateLimiter(rate_per_minute=0.001, burst=2)
    ctx = ApiContext(None, None, "http://x", (), limiter, ipv6_prefix=64)  # type: ignore[arg-type]
    assert ctx.creation_allowed(_request("2001:db8:1:2::1"))
    assert ctx.creation_allowed(_request("2001:db8:1:2::2"))
    assert not ctx.creation_allowed(_request("2001:db8:1:2:ffff::3"))
    assert ctx.creation_allowed(_request("2001:db8:1:3::1"))  # another /64
    assert ctx.creation_allowed(_request("198.51.100.7"))


def test_csrf_cookie_is_secure_behind_a_tls_terminating_proxy(tmp_path: Path) -> None:
    """A deployment whose public URL is https gets a Secure cookie even though the reverse
    proxy talks plain HTTP to the app."""
    from fastapi import FastAPI, Response
    from fastapi.testclient import TestClient

    from mailtls.settings import Settings
    from mailtls.web import csrf

    for base_url, secure in (("https://mail.example.org", True), ("", False)):
        app = FastAPI()
        app.state.settings = Settings(data_dir=tmp_path, base_url=base_url)

        @app.get("/")
        def page(request: Request) -> Response:
            csrf.token_for(request)
            response = Response("ok")
            csrf.set_cookie(request, response)
            return response

        cookie = TestClient(app).get("/").headers["set-cookie"]
        assert ("secure" in cookie.lower()) is secure, cookie


def test_the_api_accepts_every_test_case_and_words_each_one() -> None:
    from typing import get_args

    from mailtls.testcases import TESTCASES
    from mailtls.web import guide
    from mailtls.web.api import TestCaseName

    assert set(get_args(TestCaseName)) == set(TESTCASES)
    assert set(guide.TESTCASE_TITLE) == set(guide.TESTCASE_EXPLAIN) == set(TESTCASES)
    for tag in (
        "credentials_before_530",
        "ignored_logindisabled",
        "preauth_plaintext",
        "response_injection",
    ):
        assert tag in guide.FINDING_TEXT and tag in guide.REASON_TEXT


def test_the_more_tests_events_have_a_plain_sentence() -> None:
    from mailtls.web.describe import describe

    for kind in ("preauth_greeted", "preauth_used", "response_injected"):
        assert describe({"type": kind, "protocol": "imap"})
