"""Hostile input against a running ``mailtls serve``: every abuse ends in a protocol error or a
timeout, and the server keeps serving everyone else.

The server runs with short deadlines so the suite stays fast: ``limits.line_seconds = 2``
(absolute deadline for one partial line), ``limits.max_errors = 5`` (error budget per
connection), ``tls.handshake_seconds = 2``, ``connections.per_ip = 30``, and 2 s for how long
the attacks hold a connection (``limits.silence_after_refusal``, ``limits.disrupted_seconds``,
``tls.blocked_seconds``). After every test a well-behaved client still completes a STARTTLS
login (fixture ``still_serving``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import resource
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from e2e_helpers import (
    Api,
    Wire,
    api,  # noqa: F401 (the module's fixtures)
    connect,
    imap_client,
    read_all,
    read_until,
    serving,
    tls_context,
    wait_journal,
)

from conftest import ServeInstance

LINE_SECONDS = 2.0
HANDSHAKE_SECONDS = 2.0
HOLD_SECONDS = 2.0  # t3 silence after refusal, t2/t4 disrupted hold, blocked implicit TLS
MAX_ERRORS = 5
PER_IP = 30
GREETINGS = {"smtp_mx": b"220 ", "imap": b"* OK", "pop3": b"+OK"}
ERRORS = {
    "smtp_mx": (b"5", b"4"),
    "imap": (b"* BAD", b"a BAD", b"* BYE", b"a NO"),
    "pop3": (b"-ERR",),
}


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    extra = (
        f"[tls]\nhandshake_seconds = {HANDSHAKE_SECONDS}\nblocked_seconds = {HOLD_SECONDS}\n"
        f"[connections]\nper_ip = {PER_IP}\n"
    )
    limits: dict[str, float | int] = {
        "line_seconds": LINE_SECONDS,
        "max_errors": MAX_ERRORS,
        "silence_after_refusal": HOLD_SECONDS,
        "disrupted_seconds": HOLD_SECONDS,
    }
    # shared ports and address binding: the hostile sessions are raw wire dialogues
    root = tmp_path_factory.mktemp("e2e-hostile") / "var"
    with serving(root, extra, limits, endpoints={"enabled": False}) as server:
        yield server


@pytest.fixture
def still_serving(inst: ServeInstance, api: Api) -> Iterator[None]:
    yield
    assert inst.proc.poll() is None, inst.output()[-3000:]
    run = api.create(("immediate", "baseline"))
    api.start(run)
    started = time.monotonic()
    assert imap_client(inst, run.username, run.password, False) == "tls-login"
    assert time.monotonic() - started < 3
    assert api.finish(run)["verdict"] == "PASS"


def greeted(inst: ServeInstance, listener: str, timeout: float = 5) -> Wire:
    w = Wire(inst.ports[listener], timeout=timeout)
    first = w.smtp_reply() if listener.startswith("smtp") else w.line()
    assert first.startswith(GREETINGS[listener]), first
    return w


def is_error(listener: str, data: bytes) -> bool:
    return any(line.startswith(ERRORS[listener]) for line in data.splitlines() if line.strip())


def ends_within(w: Wire, seconds: float) -> tuple[bytes, float]:
    """Read until the server closes; return what came and how long it took (bounded)."""
    started = time.monotonic()
    w.sock.settimeout(seconds)
    rest = w.buf + read_all(w.sock)
    w.buf = b""
    return rest, time.monotonic() - started


pytestmark = pytest.mark.usefixtures("still_serving")

LISTENERS = ("smtp_mx", "imap", "pop3")
COMMAND = {"smtp_mx": b"NOOP", "imap": b"a NOOP", "pop3": b"CAPA"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_over_long_line(inst: ServeInstance, listener: str) -> None:
    with greeted(inst, listener) as w:
        w.send(COMMAND[listener] + b" " + b"A" * 100_000 + b"\r\n")
        reply = w.line()
        assert is_error(listener, reply), reply[:300]
        assert len(reply) < 512  # the line is not echoed back
        w.send(COMMAND[listener] + b"\r\n")  # the rest of the long line was skipped
        follow = w.smtp_reply() if listener.startswith("smtp") else w.line()
        assert follow == b"" or not is_error(listener, follow), follow


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_nul_bytes_and_bare_line_endings(inst: ServeInstance, listener: str) -> None:
    with greeted(inst, listener) as w:
        w.send(COMMAND[listener] + b"\0\0garbage\r\n")
        reply = w.line()
        assert is_error(listener, reply), reply
        w.send(COMMAND[listener] + b"\r")  # a bare CR is not a line end: nothing happens
        w.sock.settimeout(0.5)
        assert w.line() == b""
        w.sock.settimeout(5)
        w.send(b"\n")  # ... until the LF comes (CRLF or bare LF end a command line)
        reply = w.smtp_reply() if listener.startswith("smtp") else w.line()
        assert reply and not is_error(listener, reply), reply


@pytest.mark.timeout(30)
def test_smtp_smuggling_sequences_do_not_end_data(inst: ServeInstance, api: Api) -> None:
    run = api.create(("immediate", "baseline"))
    api.start(run)
    with greeted(inst, "smtp_mx") as w:
        w.send(b"EHLO smuggler.example\r\n")
        assert w.smtp_reply().startswith(b"250")
        w.send(b"MAIL FROM:<a@example.net>\r\n")
        assert w.smtp_reply().startswith(b"250")
        w.send(b"RCPT TO:<someone@mailtls.test>\r\n")
        assert w.smtp_reply().startswith(b"250")
        w.send(b"DATA\r\n")
        assert w.smtp_reply().startswith(b"354")
        smuggled = b"MAIL FROM:<smuggled@example.net>\r\nRCPT TO:<x@mailtls.test>\r\nDATA\r\n"
        for ending in (
            b"\n.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\0.\r\n",
        ):
            w.send(b"text" + ending + smuggled + b"more\r\n")
        w.sock.settimeout(1.0)
        assert w.line() == b""  # still inside DATA: nothing was answered
        w.sock.settimeout(5)
        w.send(b"\r\n.\r\n")
        assert w.smtp_reply().startswith(b"250")
        w.send(b"QUIT\r\n")
        assert w.smtp_reply().startswith(b"221")
    closed = wait_journal(inst, run, lambda rs: any(r["type"] == "connection_closed" for r in rs))
    lines = [str(r["line"]) for r in closed if r["type"] == "command"]
    assert not any("smuggled" in line.lower() for line in lines), lines
    assert sum(line.upper().startswith("MAIL FROM") for line in lines) == 1
    api.finish(run)


PIPELINED = {
    "smtp_mx": (b"EHLO x\r\n", b"STARTTLS\r\nAUTH PLAIN AHVAcA==\r\n", b"220"),
    "imap": (b"", b"s STARTTLS\r\na LOGIN injected pw\r\n", b"s OK"),
    "pop3": (b"", b"STLS\r\nUSER injected\r\n", b"+OK"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_commands_pipelined_after_starttls_are_discarded(
    inst: ServeInstance, api: Api, listener: str
) -> None:
    run = api.create(("immediate", "baseline"))
    api.start(run)
    hello, burst, ready = PIPELINED[listener]
    with greeted(inst, listener) as w:
        if hello:
            w.send(hello)
            w.smtp_reply()
        w.send(burst)
        reply = w.smtp_reply() if listener.startswith("smtp") else w.imap_reply(b"s")
        assert reply.startswith(ready), reply
        w.upgrade(tls_context(inst))  # nothing pipelined is answered inside TLS
        probe = {"smtp_mx": b"NOOP\r\n", "imap": b"n NOOP\r\n", "pop3": b"CAPA\r\n"}[listener]
        w.send(probe)
        answer = w.smtp_reply() if listener.startswith("smtp") else w.imap_reply(b"n")
        assert answer.startswith((b"250", b"n OK", b"+OK")), answer
    records = wait_journal(inst, run, lambda rs: any(r["type"] == "connection_closed" for r in rs))
    types = [r["type"] for r in records]
    assert "pipelined_after_starttls" in types
    # a pipelined credential did cross the wire in the clear: recorded as such, never executed
    for r in records:
        if r["type"] == "auth":
            assert (r["tls"], r["secret_in_clear"], r["outcome"]) == (False, True, "refused")
        if r["type"] == "command" and r["tls"]:
            assert r["line"].split()[-1].upper() in ("NOOP", "CAPA"), r
    step = api.finish(run)
    assert "pipelined_after_starttls" in {f["tag"] for f in step["findings"]}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "command", [b"a LOGIN {999999999}", b"a APPEND INBOX {999999999}", b"a LOGIN {999999999+}"]
)
def test_huge_imap_literal_is_refused(inst: ServeInstance, command: bytes) -> None:
    with greeted(inst, "imap") as w:
        w.send(command + b"\r\n")
        reply = w.imap_reply(b"a")
        assert not reply.startswith(b"+"), reply  # no go-ahead for a gigabyte
        assert is_error("imap", reply) or reply == b"", reply
        with contextlib.suppress(OSError):  # LITERAL+ cannot be skipped: BYE and close
            w.send(b"b NOOP\r\n")
        follow = w.imap_reply(b"b")
        assert b"b OK" in follow or (follow == b"" and b"BYE" in reply), (reply, follow)


def starttls_wire(inst: ServeInstance, listener: str) -> Wire:
    w = greeted(inst, listener)
    if listener == "smtp_mx":
        w.send(b"EHLO x\r\nSTARTTLS\r\n")
        w.smtp_reply()
        assert w.smtp_reply().startswith(b"220")
    elif listener == "imap":
        w.send(b"s STARTTLS\r\n")
        assert w.imap_reply(b"s").startswith(b"s OK")
    else:
        w.send(b"STLS\r\n")
        assert w.line().startswith(b"+OK")
    return w


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_garbage_instead_of_a_client_hello(inst: ServeInstance, listener: str) -> None:
    with starttls_wire(inst, listener) as w:
        w.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(2000))
        data, took = ends_within(w, HANDSHAKE_SECONDS + 5)
        assert took < HANDSHAKE_SECONDS + 4
        assert b"HTTP" not in data


@pytest.mark.timeout(30)
def test_garbage_on_the_implicit_tls_port(inst: ServeInstance) -> None:
    with Wire(inst.ports["imap_tls"]) as w:
        w.send(b"\x16\x03\x01\x00\x05hello" + os.urandom(500))
        _data, took = ends_within(w, HANDSHAKE_SECONDS + 5)
        assert took < HANDSHAKE_SECONDS + 4


@pytest.mark.timeout(30)
@pytest.mark.parametrize("partial", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
@pytest.mark.parametrize("listener", LISTENERS)
def test_stalled_handshake_is_cut_off(inst: ServeInstance, listener: str, partial: bytes) -> None:
    with starttls_wire(inst, listener) as w:
        w.send(partial)
        _data, took = ends_within(w, HANDSHAKE_SECONDS + 6)
        assert took < HANDSHAKE_SECONDS + 3, took


@pytest.mark.timeout(30)
def test_stalled_handshake_on_implicit_tls(inst: ServeInstance) -> None:
    with Wire(inst.ports["pop3_tls"]) as w:
        _data, took = ends_within(w, HANDSHAKE_SECONDS + 6)
        assert took < HANDSHAKE_SECONDS + 3, took


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_one_byte_per_second_hits_the_line_deadline(inst: ServeInstance, listener: str) -> None:
    """The deadline is absolute: bytes that keep trickling in do not extend it."""
    with greeted(inst, listener) as w:
        started = time.monotonic()
        closed = False
        for byte in COMMAND[listener] + b" and a very slow rest of the line\r\n":
            try:
                w.send(bytes([byte]))
            except OSError:
                closed = True
                break
            w.sock.settimeout(1.0)
            try:
                chunk = w.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if chunk == b"" or is_error(listener, chunk):
                closed = True
                break
        took = time.monotonic() - started
        assert closed, "the trickle was never cut off"
        assert took < LINE_SECONDS + 3, took


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_error_budget_closes_the_connection(inst: ServeInstance, listener: str) -> None:
    with greeted(inst, listener) as w:
        bad = {"smtp_mx": b"XYZZY\r\n", "imap": b"a XYZZY\r\n", "pop3": b"XYZZY\r\n"}[listener]
        w.send(bad * (MAX_ERRORS + 5))
        data, took = ends_within(w, 5)
        assert took < 4
        replies = [line for line in data.splitlines() if line.strip()]
        assert MAX_ERRORS <= len(replies) <= MAX_ERRORS + 1, replies  # then it hangs up
        assert all(is_error(listener, line) for line in replies), replies


@pytest.mark.timeout(30)
def test_per_ip_connection_limit(inst: ServeInstance) -> None:
    source = "127.0.77.1"
    held: list[socket.socket] = []
    try:
        for _ in range(PER_IP):
            sock = connect(inst.ports["pop3"], timeout=5, source=source)
            held.append(sock)
            assert read_until(sock, b"\r\n").startswith(b"+OK")
        extra = connect(inst.ports["imap"], timeout=5, source=source)
        held.append(extra)
        extra_data = read_all(extra)  # refused: a short refusal or a bare close
        assert not extra_data.startswith(b"* OK"), extra_data
        other = connect(inst.ports["imap"], timeout=5, source="127.0.77.2")
        held.append(other)
        assert read_until(other, b"\r\n").startswith(b"* OK")  # others are served
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)  # the slots come back
    again = connect(inst.ports["imap"], timeout=5, source=source)
    with again:
        assert read_until(again, b"\r\n").startswith(b"* OK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(90)
def test_thousand_idle_connections(inst: ServeInstance, api: Api) -> None:
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    listeners = ("smtp_mx", "imap", "pop3", "imap_tls")
    before = rss_kib(inst.proc.pid)
    idle: list[socket.socket] = []
    try:
        for i in range(count):
            source = f"127.0.{100 + i // 25}.{1 + i % 25}"  # 25 per address: below the limit
            idle.append(connect(inst.ports[listeners[i % 4]], timeout=10, source=source))
        for i, sock in enumerate(idle):
            if listeners[i % 4] != "imap_tls":
                assert read_until(sock, b"\r\n") != b"", i
        tls_idle = [
            tls_context(inst).wrap_socket(
                connect(inst.ports["imap_tls"], timeout=10, source=f"127.0.99.{1 + i}"),
                server_hostname="localhost",
            )
            for i in range(20)
        ]
        idle += tls_idle
        grown = rss_kib(inst.proc.pid) - before
        run = api.create(("immediate", "baseline"))
        api.start(run)
        started = time.monotonic()
        assert imap_client(inst, run.username, run.password, False) == "tls-login"
        assert time.monotonic() - started < 2  # a newcomer is served at once
        assert api.finish(run)["verdict"] == "PASS"
        print(f"server RSS grew by {grown} KiB for {count} plaintext + 20 TLS idle connections")
        assert grown < 48 * 1024, f"{grown} KiB for {count} idle connections"
    finally:
        for sock in idle:
            sock.close()
    assert isinstance(tls_idle[0], ssl.SSLSocket)


def trickle_until_cut(w: Wire, data: bytes, listener: str, seconds: float) -> tuple[bool, float]:
    """Send ``data`` one byte per second (none when empty: a stall) until the server answers
    with an error or closes; return (cut, time taken), giving up after ``seconds``."""
    started = time.monotonic()
    pending = list(data)
    w.sock.settimeout(1.0)
    while time.monotonic() - started < seconds:
        try:
            if pending:
                w.send(bytes([pending.pop(0)]))
            chunk = w.sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return True, time.monotonic() - started
        if chunk == b"" or is_error(listener, chunk):
            return True, time.monotonic() - started
    return False, time.monotonic() - started


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "body", [b"a body line that never ends " * 2, b""], ids=["trickle", "stall"]
)
def test_smtp_data_partial_body_line_hits_the_line_deadline(
    inst: ServeInstance, body: bytes
) -> None:
    """Inside DATA too, a body line that does not end within ``limits.line_seconds`` is cut off
    (an absolute per-line deadline), so a body trickling in one byte per second cannot hold the
    connection and a stalled partial body line does not wait the whole idle timeout."""
    with greeted(inst, "smtp_mx") as w:
        w.send(b"EHLO slow.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@mailtls.test>\r\n")
        w.send(b"DATA\r\n")
        for _ in range(3):
            w.smtp_reply()
        assert w.smtp_reply().startswith(b"354")
        w.send(b"Subject: slow\r\n\r\npartial")
        cut, took = trickle_until_cut(w, body, "smtp_mx", LINE_SECONDS + 6)
        assert cut, f"a partial DATA line was still open after {took:.0f} s"
        assert took < LINE_SECONDS + 3, took


@pytest.mark.timeout(30)
@pytest.mark.parametrize("after_login", [False, True], ids=["login-literal", "append-literal"])
def test_imap_literal_trickle_hits_the_line_deadline(
    inst: ServeInstance, api: Api, after_login: bool
) -> None:
    run = api.create(("immediate", "baseline"))
    api.start(run)
    with greeted(inst, "imap") as w:
        if after_login:
            w.send(f'l LOGIN "{run.username}" {run.password}\r\n'.encode())
            assert w.imap_reply(b"l").startswith(b"l OK")
            w.send(b"a APPEND INBOX {1000}\r\n")
        else:
            w.send(b"a LOGIN {500}\r\n")
        assert w.imap_reply(b"a").startswith(b"+")
        cut, took = trickle_until_cut(w, b"x" * 30, "imap", LINE_SECONDS + 6)
        assert cut and took < LINE_SECONDS + 3, took
    api.finish(run)


@pytest.mark.timeout(30)
def test_smtp_whole_transaction_in_one_write(inst: ServeInstance) -> None:
    """PIPELINING: every command of a transaction in one segment gets its reply, in order."""
    with greeted(inst, "smtp_mx") as w:
        w.send(
            b"EHLO pipe.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@mailtls.test>\r\n"
            b"RCPT TO:<c@elsewhere.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
            b"RSET\r\nNOOP\r\nQUIT\r\n"
        )
        codes = [w.smtp_reply()[:3] for _ in range(8)]
        assert codes[:3] == [b"250", b"250", b"250"]
        assert codes[3].startswith(b"5")  # no relaying to other domains
        assert codes[4:] == [b"354", b"250", b"250", b"250"]  # DATA, end of data, RSET, NOOP
        assert w.smtp_reply().startswith(b"221")


AUTH_ATTEMPT = {
    "smtp_mx": b"AUTH PLAIN " + base64.b64encode(b"\0nobody@example.org\0guess") + b"\r\n",
    "imap": b"a LOGIN nobody@example.org guess\r\n",
    "pop3": b"USER nobody@example.org\r\nPASS guess\r\n",
}
AUTH_FAILED = {"smtp_mx": b"535 ", "imap": b"a NO ", "pop3": b"-ERR [AUTH]"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_password_guessing_is_cut_off(inst: ServeInstance, listener: str) -> None:
    """Three failed logins (``limits.max_auth_failures``), then a final line and the close."""
    with greeted(inst, listener) as w:
        if listener == "smtp_mx":
            w.send(b"EHLO guesser.example\r\n")
            w.smtp_reply()
        w.send(AUTH_ATTEMPT[listener] * 6)
        data, took = ends_within(w, 8)
        assert took < 5
        replies = [line for line in data.splitlines() if line and line != b"+OK"]
        assert [r.startswith(AUTH_FAILED[listener]) for r in replies] == [True] * 3 + [False]
        assert is_error(listener, replies[-1]), replies


def client_hello(inst: ServeInstance) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(inst).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("testcase", ["t2", "t3", "t4"])
@pytest.mark.parametrize("listener", LISTENERS)
def test_attacked_connections_are_held_only_for_a_bound(
    inst: ServeInstance, api: Api, listener: str, testcase: str
) -> None:
    """A client that goes silent after the attack (refused STARTTLS, broken handshake, broken
    session) is closed after the configured hold, never kept forever."""
    run = api.create(("immediate", testcase))
    api.start(run)
    with greeted(inst, listener) as w:
        if listener == "smtp_mx":
            w.send(b"EHLO x\r\nSTARTTLS\r\n")
            w.smtp_reply()
            reply = w.smtp_reply()
        elif listener == "imap":
            w.send(b"s STARTTLS\r\n")
            reply = w.imap_reply(b"s")
        else:
            w.send(b"STLS\r\n")
            reply = w.line()
        refused = not reply.startswith((b"220 ", b"s OK", b"+OK"))
        assert refused == (testcase == "t3"), reply
        if testcase == "t2":
            w.send(client_hello(inst))
            assert not w.line().startswith(b"\x16")  # a cleartext line instead of a ServerHello
        if testcase == "t4":
            w.upgrade(tls_context(inst))
            w.send(b"n NOOP\r\n" if listener == "imap" else b"NOOP\r\n")
            # the reply comes in the clear outside TLS: read the TCP stream itself
            with socket.socket(fileno=os.dup(w.sock.fileno())) as raw:
                raw.settimeout(HOLD_SECONDS + 6)
                started = time.monotonic()
                data = read_all(raw)
                took = time.monotonic() - started
            # after the session tickets (TLS records), one cleartext line (454 / * BAD / -ERR)
            assert data.endswith(b"TLS not available due to temporary reason\r\n"), data
        else:
            _data, took = ends_within(w, HOLD_SECONDS + 6)
        assert took < HOLD_SECONDS + 3, took
    api.finish(run)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", ["smtp_tls", "imap_tls", "pop3_tls"])
def test_blocked_implicit_tls_port_closes_after_the_bound(
    inst: ServeInstance, api: Api, listener: str
) -> None:
    run = api.create(("immediate", "t1"))
    api.start(run)
    with Wire(inst.ports[listener]) as w:
        w.send(client_hello(inst))
        data, took = ends_within(w, HOLD_SECONDS + 6)
        assert data == b""  # the attacker's silence
        assert HOLD_SECONDS - 0.5 < took < HOLD_SECONDS + 3, took
    api.finish(run)


SASL_START = {
    "smtp_mx": b"EHLO x\r\nAUTH LOGIN\r\n",
    "imap": b"a AUTHENTICATE PLAIN\r\n",
    "pop3": b"AUTH PLAIN\r\n",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listener", LISTENERS)
def test_over_long_sasl_response(inst: ServeInstance, listener: str) -> None:
    with greeted(inst, listener) as w:
        w.send(SASL_START[listener])
        if listener == "smtp_mx":
            w.smtp_reply()
        assert w.line().startswith((b"334 ", b"+ ")), "no continuation request"
        w.send(b"QUFB" * 30_000 + b"\r\n")
        reply = w.line()
        assert is_error(listener, reply) and len(reply) < 512, reply[:300]
        w.send(COMMAND[listener] + b"\r\n")  # the exchange is over: back to commands
        follow = w.smtp_reply() if listener.startswith("smtp") else w.line()
        assert follow.startswith((b"250", b"a OK", b"+OK")), follow
