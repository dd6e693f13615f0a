"""``docs/testcases.md`` is tested against the code.

- every ```` ```transcript <protocol> <testcase> [implicit] ```` block is replayed through the real
  protocol core: client lines and events go in, the server lines must come out exactly as
  written, in order, with nothing else;
- every reply line quoted inline on the page must be a line the replayed transcripts produced;
- the "at a glance" table must match the policy objects, the timing table the settings defaults;
- the implicit-TLS behaviour is checked end to end through the real I/O shell (``MailServer``);
- every protocol x test case pair has at least one transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from protocols_kit import authenticator

from mailtls.net.listeners import MailServer
from mailtls.net.pki import ensure_certificates
from mailtls.net.types import ListenerSpec
from mailtls.observations import AuthAttempted
from mailtls.protocols.base import (
    ClientHelloReceived,
    Close,
    Command,
    Connected,
    Core,
    DataReceived,
    Event,
    Kicked,
    PortRole,
    ReadClientHello,
    Record,
    Send,
    SendRaw,
    SessionContext,
    StartTls,
    Timeout,
    TlsEstablished,
    TlsInfo,
)
from mailtls.protocols.imap import ImapCore
from mailtls.protocols.pop3 import Pop3Core
from mailtls.protocols.smtp import SmtpCore
from mailtls.runs.types import Binding
from mailtls.settings import Settings
from mailtls.testcases import STANDARD, TESTCASES, VALID_CERTIFICATE, AfterTls, ImplicitTls

DOC = Path(__file__).resolve().parents[2] / "docs" / "testcases.md"
HOSTNAME = "mail.example.test"
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
CORES: dict[str, tuple[Callable[[SessionContext], Core], PortRole]] = {
    "smtp": (SmtpCore, PortRole.SUBMISSION),
    "imap": (ImapCore, PortRole.IMAP),
    "pop3": (Pop3Core, PortRole.POP3),
}
FENCE = re.compile(r"^```transcript (\w+) (\w+)( implicit)?\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Transcript:
    protocol: str
    testcase: str
    implicit: bool
    lines: tuple[str, ...]
    index: int

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.protocol}-{self.testcase}" + ("-implicit" * self.implicit)


@cache
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def transcripts() -> list[Transcript]:
    return [
        Transcript(m[1], m[2], bool(m[3]), tuple(m[4].splitlines()), i)
        for i, m in enumerate(FENCE.finditer(doc()))
    ]


class Replay:
    """Feeds one transcript to a core and checks the server's output line by line."""

    def __init__(self, t: Transcript) -> None:
        factory, role = CORES[t.protocol]
        ctx = SessionContext(
            policy=TESTCASES[t.testcase],
            role=role,
            hostname=HOSTNAME,
            domain="example.test",
            authenticator=authenticator,
            implicit_tls=t.implicit,
        )
        self.core = factory(ctx)
        self.out: deque[tuple[str, str]] = deque()  # ("S" | "S (raw)", line)
        self.seen: list[Command] = []  # commands since the last input
        self.produced: list[str] = []

    def feed(self, event: Event) -> None:
        assert not self.out, f"server lines not in the transcript: {list(self.out)}"
        self.seen = self.core.handle(event)
        for cmd in self.seen:
            if isinstance(cmd, Send | SendRaw):
                kind = "S" if isinstance(cmd, Send) else "S (raw)"
                for text in cmd.data.decode("utf-8").split("\r\n")[:-1]:
                    self.out.append((kind, text))
                    self.produced.append(text)

    def expect(self, kind: str, text: str) -> None:
        assert self.out, f"expected {kind}: {text!r}, the server sent nothing more"
        assert self.out.popleft() == (kind, text)

    def event(self, name: str) -> None:
        if name == "handshake":
            assert StartTls() in self.seen, "no StartTls before the handshake"
            self.feed(TlsEstablished(TLS))
        elif name == "client hello":
            assert ReadClientHello() in self.seen, "no ReadClientHello before the ClientHello"
            self.feed(ClientHelloReceived(517, True))
        elif name == "timeout":
            self.feed(Timeout())
        elif name.startswith("kicked: "):
            self.feed(Kicked(name.removeprefix("kicked: ")))
        elif name == "closed":
            assert not self.out, f"server lines not in the transcript: {list(self.out)}"
            assert any(isinstance(c, Close) for c in self.seen), "the server did not close"
        else:
            raise AssertionError(f"unknown event {name!r}")


def replay(t: Transcript) -> list[str]:
    """Replay a transcript; returns every line the server produced."""
    r = Replay(t)
    lines = list(t.lines)
    implicit = bool(lines) and lines[0] == "== implicit tls =="
    assert implicit == t.implicit, "'implicit' in the fence and '== implicit tls ==' go together"
    r.feed(Connected(TLS if implicit else None))
    for line in lines[implicit:]:
        if line.startswith("S (raw): "):
            r.expect("S (raw)", line.removeprefix("S (raw): "))
        elif line.startswith("S: "):
            r.expect("S", line.removeprefix("S: "))
        elif line.startswith("C: "):
            r.feed(DataReceived(line.removeprefix("C: ").encode() + b"\r\n"))
        elif line.startswith("== ") and line.endswith(" =="):
            r.event(line[3:-3])
        else:
            raise AssertionError(f"unreadable transcript line {line!r}")
    assert not r.out, f"server lines not in the transcript: {list(r.out)}"
    return r.produced


@pytest.mark.parametrize("t", transcripts(), ids=lambda t: t.name)
def test_transcript_is_what_the_core_does(t: Transcript) -> None:
    replay(t)


# the cases played by the I/O shell alone (the certificate, the TLS fall-back): their protocol
# lines are the baseline's
SHELL_CASES = [tc for tc in TESTCASES if tc.startswith("cert_") or TESTCASES[tc].tls_fallback()]


def test_every_protocol_and_testcase_has_a_transcript() -> None:
    covered = {(t.protocol, t.testcase) for t in transcripts()}
    applicable = {
        (p, tc)
        for p in CORES
        for tc in TESTCASES
        if p in TESTCASES[tc].protocols and tc not in SHELL_CASES
    }
    assert covered == applicable  # the shell's cases replay the baseline's (below)


@pytest.mark.parametrize("testcase", SHELL_CASES)
def test_certificate_cases_talk_like_the_baseline(testcase: str) -> None:
    """The page says the protocol lines of a certificate case (and of ``tls_fallback``) are
    the baseline's: every baseline transcript replays unchanged under it (the certificate and
    the alert are the shell's part)."""
    baseline = [t for t in transcripts() if t.testcase == "baseline"]
    assert {t.protocol for t in baseline} == set(CORES)
    for t in baseline:
        replay(replace(t, testcase=testcase))


# --- inline reply lines ---------------------------------------------------------------------------

REPLY = re.compile(
    r"^(\+OK|-ERR|\* (OK|NO|BAD|BYE|CAPABILITY)\b|[2-5]\d\d[ -]|[a-z]\d+ (OK|NO|BAD) )"
)
TAG = re.compile(r"^[a-z]\d+ (?=(OK|NO|BAD) )")


def inline_quotes(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [" ".join(q.split()) for q in re.findall(r"`([^`]+)`", prose)]


def untag(line: str) -> str:
    return TAG.sub("<tag> ", line)


def test_every_quoted_reply_line_is_produced_by_a_core() -> None:
    produced = {untag(line) for t in transcripts() for line in replay(t)}
    quoted = [q for q in inline_quotes(doc()) if REPLY.match(q)]
    assert len(quoted) > 20, "the reply lines were not found on the page"
    missing = [q for q in quoted if untag(q) not in produced]
    assert not missing, f"quoted on the page but never produced: {missing}"


# --- tables ---------------------------------------------------------------------------------------


def table_rows(header: str) -> list[list[str]]:
    """The cells of the table that starts with the line ``header`` (separator row skipped)."""
    lines = doc().splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def first_code(cell: str) -> str:
    found = re.search(r"`([^`]+)`", cell)
    assert found, f"no value in {cell!r}"
    return found[1]


def test_at_a_glance_table_matches_the_policies() -> None:
    rows = table_rows("| | baseline | t1 | t2 | t3 | t4 |")
    methods = {first_code(row[0]) for row in rows}
    assert methods == {"offer_starttls", "on_starttls", "after_tls", "implicit_tls"}
    for row in rows:
        method = first_code(row[0])
        for name, cell in zip(("baseline", "t1", "t2", "t3", "t4"), row[1:], strict=True):
            answer: Any = getattr(TESTCASES[name], method)()
            expected = ("yes" if answer else "no") if isinstance(answer, bool) else answer.value
            assert first_code(cell) == expected, f"{method} for {name}"


def test_certificate_table_matches_the_policies() -> None:
    names = ("cert_selfsigned", "cert_expired", "cert_wronghost", "cert_unknown_ca")
    rows = table_rows("| | " + " | ".join(names) + " |")
    assert {first_code(row[0]) for row in rows} == {"certificate", "offer_starttls", "implicit_tls"}
    for row in rows:
        method = first_code(row[0])
        for name, cell in zip(names, row[1:], strict=True):
            answer: Any = getattr(TESTCASES[name], method)()
            if isinstance(answer, bool):
                answer = "yes" if answer else "no"
            assert first_code(cell) == getattr(answer, "value", answer), f"{method} for {name}"


def test_fallback_table_matches_the_policy() -> None:
    rows = table_rows("| | tls_fallback |")
    assert {first_code(row[0]) for row in rows} == {
        "tls_fallback",
        "offer_starttls",
        "implicit_tls",
    }
    for method_cell, cell in rows:
        answer: Any = getattr(TESTCASES["tls_fallback"], first_code(method_cell))()
        expected = ("yes" if answer else "no") if isinstance(answer, bool) else answer.value
        assert first_code(cell) == expected, method_cell


def test_beyond_t1_t4_table_matches_the_policies() -> None:
    names = ("starttls_required", "preauth", "inject")
    rows = table_rows("| | starttls_required | preauth | inject |")
    methods = {first_code(row[0]) for row in rows}
    assert methods == {
        "protocols",
        "offer_starttls",
        "plaintext_login",
        "preauth",
        "inject_response",
        "implicit_tls",
    }
    assert set(names) == set(TESTCASES) - set(STANDARD) - set(SHELL_CASES)
    for row in rows:
        method = first_code(row[0])
        for name, cell in zip(names, row[1:], strict=True):
            policy = TESTCASES[name]
            if method == "protocols":
                assert set(first_code(cell).split()) == policy.protocols
                continue
            answer: Any = getattr(policy, method)()
            expected = ("yes" if answer else "no") if isinstance(answer, bool) else answer.value
            assert first_code(cell) == expected, f"{method} for {name}"


def test_timing_table_matches_the_settings_defaults() -> None:
    rows = table_rows("| what | setting | default |")
    assert len(rows) >= 8
    settings = Settings()
    for _what, setting, default in rows:
        value: Any = settings
        for part in first_code(setting).split("."):
            value = getattr(value, part)
        number = re.fullmatch(r"(\d+(?:\.\d+)?) s", default)
        assert number, f"unreadable default {default!r}"
        assert float(value) == float(number[1]), setting


def test_default_block_style_is_the_documented_one() -> None:
    documented = re.search(r"`(\w+)` \(default", doc())
    assert documented and documented[1] == Settings().tls.blocked_style.value


# --- prose claims about the disrupted state ------------------------------------------------------

PLAIN = "AHRlc3QtYWJjMTIzAHNlY3JldA=="
STARTTLS_LINE = {"smtp": "STARTTLS", "imap": "a1 STARTTLS", "pop3": "STLS"}
LOGIN_LINES = {
    "smtp": f"AUTH PLAIN {PLAIN}\r\n",
    "imap": "a3 LOGIN test-abc123 secret\r\n",
    "pop3": "USER test-abc123\r\nPASS secret\r\n",
}


@pytest.mark.parametrize(
    ("protocol", "testcase"),
    [
        *[(p, tc) for p in ("smtp", "imap", "pop3") for tc in ("t2", "t4")],
    ],
)
def test_plaintext_login_in_the_disrupted_state_is_in_the_clear(
    protocol: str, testcase: str
) -> None:
    """The page says: a plaintext AUTH/LOGIN/PASS in the disrupted state is recorded as a login
    whose secret was sent in the clear (after t4 the shell reads raw TCP, TLS is abandoned)."""
    r = Replay(Transcript(protocol, testcase, False, (), 0))

    def feed(event: Event) -> None:
        r.out.clear()
        r.feed(event)

    feed(Connected())
    if protocol == "smtp":
        feed(DataReceived(b"EHLO client.example\r\n"))
    feed(DataReceived(STARTTLS_LINE[protocol].encode() + b"\r\n"))
    if testcase == "t2":
        feed(ClientHelloReceived(517, True))
    else:
        feed(TlsEstablished(TLS))
        feed(DataReceived(b"a2 NOOP\r\n" if protocol == "imap" else b"NOOP\r\n"))
    feed(DataReceived(LOGIN_LINES[protocol].encode()))
    assert not r.out, "the disrupted state answered"
    attempts = [
        c.observation
        for c in r.seen
        if isinstance(c, Record) and isinstance(c.observation, AuthAttempted)
    ]
    assert [(a.secret_in_clear, a.outcome) for a in attempts] == [(True, "disrupted")]


# --- implicit-TLS ports, through the real I/O shell --------------------------------------------


@contextlib.asynccontextmanager
async def implicit_server(
    tmp_path: Path, testcase: str
) -> AsyncIterator[tuple[MailServer, Path, list[dict[str, Any]]]]:
    """The three cores on implicit-TLS listeners, every connection bound to ``testcase``."""
    settings = Settings(data_dir=tmp_path)
    settings = replace(
        settings,
        hostname=HOSTNAME,
        limits=replace(settings.limits, disrupted_seconds=0.5),
        tls=replace(settings.tls, blocked_seconds=0.5),
    )
    certs = ensure_certificates(settings)
    assert certs.ca is not None
    records: list[dict[str, Any]] = []

    def binder(ip: str, local: tuple[str, int]) -> Binding:
        return Binding("run1", 1, testcase, "immediate", "address", True)

    server = MailServer(
        settings,
        certs=certs,
        binder=binder,
        authenticator=authenticator,
        sink=records.append,
        core_factories={p: factory for p, (factory, _role) in CORES.items()},
        specs=[ListenerSpec(p, p, role, 0, True) for p, (_f, role) in CORES.items()],
    )
    await server.start()
    try:
        yield server, certs.ca, records
    finally:
        await server.close(grace=0.5)


FIRST_COMMAND = {
    "smtp": b"EHLO client.example\r\n",
    "imap": b"a1 CAPABILITY\r\n",
    "pop3": b"CAPA\r\n",
}


def implicit_client(
    port: int, ca: Path, protocol: str, maximum: ssl.TLSVersion | None = None
) -> tuple[bytes, str]:
    """Connect with TLS, read the greeting, send a first command; (greeting, what happened)."""
    context = ssl.create_default_context(cafile=str(ca))
    if maximum is not None:
        context.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=HOSTNAME)
        except (ssl.SSLError, OSError) as exc:
            return b"", f"no handshake: {type(exc).__name__}"
        with tls:
            greeting = tls.recv(4096)
            tls.sendall(FIRST_COMMAND[protocol])
            try:
                answer = tls.recv(4096)
            except ssl.SSLError:
                return greeting, "cleartext inside TLS"
            return greeting, "answered" if answer else "closed"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("testcase", list(TESTCASES))
async def test_implicit_tls_ports_as_documented(tmp_path: Path, testcase: str) -> None:
    async with implicit_server(tmp_path, testcase) as (server, ca, records):
        for protocol in CORES:
            port = server.port(protocol)
            greeting, outcome = await asyncio.wait_for(
                asyncio.to_thread(implicit_client, port, ca, protocol), timeout=20
            )
            policy = TESTCASES[testcase].serving(protocol)  # the baseline where n/a
            if policy.certificate() != VALID_CERTIFICATE:  # a verifying client refuses it
                assert greeting == b"" and "SSLCertVerificationError" in outcome, protocol
            elif policy.tls_fallback():  # an alert; a retry that offers less is served
                assert (greeting, outcome) == (b"", "no handshake: SSLError"), protocol
                greeting, outcome = await asyncio.wait_for(
                    asyncio.to_thread(implicit_client, port, ca, protocol, ssl.TLSVersion.TLSv1_2),
                    timeout=20,
                )
                assert greeting and outcome == "answered", protocol
            elif policy.implicit_tls() is ImplicitTls.BLOCK:  # blocked: silence, then close
                assert (greeting, outcome) == (b"", "no handshake: SSLEOFError"), protocol
            elif policy.after_tls() is AfterTls.DISRUPT_FIRST_COMMAND:
                assert greeting and outcome == "cleartext inside TLS", protocol
            else:
                assert greeting and outcome == "answered", protocol
        blocked = [r["style"] for r in records if r["type"] == "implicit_tls_blocked"]
        disrupted = [r["stage"] for r in records if r["type"] == "starttls_disrupted"]
        policies = [TESTCASES[testcase].serving(p) for p in CORES]
        assert blocked == ["silence"] * sum(p.implicit_tls() is ImplicitTls.BLOCK for p in policies)
        assert disrupted == (["session"] * 3 if testcase == "t4" else [])
        offers = [
            (r["answer"], r["highest"]) for r in records if r["type"] == "client_hello_offered"
        ]
        expected = [("alert", "TLSv1.3"), ("served", "TLSv1.2")] * 3
        assert offers == (expected if testcase == "tls_fallback" else [])
        if testcase == "tls_fallback":
            served = [r["version"] for r in records if r["type"] == "tls_established"]
            assert served == ["TLSv1.2"] * 3
