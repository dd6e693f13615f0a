"""No secret ever persists: canaries through every mechanism of every protocol, then a search.

A canary password and a canary OAuth token travel through every way a client can send them
(SMTP AUTH PLAIN/LOGIN/CRAM-MD5/XOAUTH2/OAUTHBEARER with and without initial response, IMAP
LOGIN as atom, quoted string, synchronising and non-synchronising literal, AUTHENTICATE with and
without SASL-IR, POP3 USER/PASS, APOP, AUTH ...; a malformed initial response; the run's
account with its own password, an unknown user with a canary), in the clear and after STARTTLS
(baseline, t1), in the clear after a t2-disrupted handshake and as the first commands inside a
t4-disrupted session, against a real ``mailtls serve``. Then neither canary, nor any base64
alignment of it, nor the exact base64 blobs sent, nor the CRAM-MD5/APOP digests, appears in any
file under the data folder (journal, SQLite index and its WAL, keys, the server log), before and
after shutdown, nor in any API response about the run (run view, events JSON, the SSE stream,
JSONL export, result page, JSON/CSV export, the shareable view), where the run's password shows
only as the account's own display of it (as often as before any client ran).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_helpers import Api, Run, Wire, serving, tls_context

from conftest import ServeInstance

PASSWORD = "CanaryPw" + secrets.token_hex(12)
TOKEN = "CanaryTok" + secrets.token_hex(12)

Step = bytes | Callable[[bytes], bytes]


def b64(data: str | bytes) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


class Recorder:
    """The password a client sends, and the secret-carrying blobs actually sent, to search for
    them verbatim afterwards."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.blobs: set[bytes] = set()

    def cram(self, user: str) -> Callable[[bytes], bytes]:
        def respond(challenge_line: bytes) -> bytes:
            challenge = base64.b64decode(challenge_line.split()[-1])
            digest = hmac.new(self.password.encode(), challenge, hashlib.md5).hexdigest()
            self.blobs.add(digest.encode())
            answer = b64(f"{user} {digest}")
            self.blobs.add(answer)
            return answer

        return respond

    def secret(self, blob: bytes) -> bytes:
        self.blobs.add(blob)
        return blob


def mechanisms(user: str, rec: Recorder) -> dict[str, tuple[bytes | None, list[Step]]]:
    """name -> (initial response or None, later responses)."""
    plain = rec.secret(b64(f"\0{user}\0{rec.password}"))
    xoauth2 = rec.secret(b64(f"user={user}\x01auth=Bearer {TOKEN}\x01\x01"))
    oauthbearer = rec.secret(b64(f"n,a={user},\x01auth=Bearer {TOKEN}\x01\x01"))
    login_pw = rec.secret(b64(rec.password))
    return {
        "PLAIN+ir": (plain, []),
        "PLAIN": (None, [plain]),
        "LOGIN+ir": (b64(user), [login_pw]),
        "LOGIN": (None, [b64(user), login_pw]),
        "CRAM-MD5": (None, [rec.cram(user)]),
        "XOAUTH2+ir": (xoauth2, []),
        "XOAUTH2": (None, [xoauth2]),
        "OAUTHBEARER+ir": (oauthbearer, []),
        "OAUTHBEARER": (None, [oauthbearer]),
        "PLAIN+garbage": (rec.secret(f"{rec.password}!{TOKEN}".encode()), []),
    }


def sasl(
    wire: Wire,
    start: bytes,
    steps: list[Step],
    reply: Callable[[], bytes],
    is_continuation: Callable[[bytes], bool],
) -> bytes:
    """Send ``start``, answer continuations with ``steps``, then an empty response, then "*"."""
    wire.send(start + b"\r\n")
    answer = reply()
    pending = list(steps)
    for extra in (b"", b"*", b"*"):
        if not is_continuation(answer):
            break
        while pending and is_continuation(answer):
            step = pending.pop(0)
            wire.send((step if isinstance(step, bytes) else step(answer)) + b"\r\n")
            answer = reply()
        if is_continuation(answer):
            wire.send(extra + b"\r\n")
            answer = reply()
    return answer


def smtp_session(
    inst: ServeInstance, tls: bool, mech: str, ir: bytes | None, steps: list[Step]
) -> None:
    with Wire(inst.ports["smtp_submission"]) as w:
        assert w.smtp_reply().startswith(b"220")
        w.send(b"EHLO canary.test\r\n")
        w.smtp_reply()
        if tls:
            w.send(b"STARTTLS\r\n")
            assert w.smtp_reply().startswith(b"220")
            w.upgrade(tls_context(inst))
            w.send(b"EHLO canary.test\r\n")
            w.smtp_reply()
        name = mech.split("+")[0].encode()
        start = b"AUTH " + name + (b" " + ir if ir is not None else b"")
        sasl(w, start, steps, w.smtp_reply, lambda r: r.startswith(b"334"))
        w.send(b"QUIT\r\n")
        w.smtp_reply()


def imap_open(inst: ServeInstance, tls: bool) -> Wire:
    w = Wire(inst.ports["imap"])
    assert w.line().startswith(b"* OK")
    if tls:
        w.send(b"s STARTTLS\r\n")
        assert w.imap_reply(b"s").startswith(b"s OK")
        w.upgrade(tls_context(inst))
    return w


def imap_sasl(
    inst: ServeInstance, tls: bool, mech: str, ir: bytes | None, steps: list[Step]
) -> None:
    with imap_open(inst, tls) as w:
        name = mech.split("+")[0].encode()
        start = b"a AUTHENTICATE " + name + (b" " + ir if ir is not None else b"")
        sasl(w, start, steps, lambda: w.imap_reply(b"a"), lambda r: r.startswith(b"+"))
        w.send(b"z LOGOUT\r\n")
        w.imap_reply(b"z")


def imap_logins(inst: ServeInstance, tls: bool, user: str, rec: Recorder) -> None:
    pw = rec.password.encode()
    u = user.encode()
    forms = [
        b"a LOGIN " + u + b" " + pw + b"\r\n",
        b'a LOGIN "' + u + b'" "' + pw + b'"\r\n',
        b"a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(u), u, len(pw), pw),
    ]
    for form in forms:
        with imap_open(inst, tls) as w:
            w.send(form)
            w.imap_reply(b"a")
    with imap_open(inst, tls) as w:  # synchronising literals: wait for each "+"
        w.send(b"a LOGIN {%d}\r\n" % len(u))
        assert w.imap_reply(b"a").startswith(b"+")
        w.send(u + b" {%d}\r\n" % len(pw))
        assert w.imap_reply(b"a").startswith(b"+")
        w.send(pw + b"\r\n")
        w.imap_reply(b"a")


def pop3_open(inst: ServeInstance, tls: bool) -> Wire:
    w = Wire(inst.ports["pop3"])
    assert w.line().startswith(b"+OK")
    if tls:
        w.send(b"STLS\r\n")
        assert w.line().startswith(b"+OK")
        w.upgrade(tls_context(inst))
    return w


def pop3_sasl(
    inst: ServeInstance, tls: bool, mech: str, ir: bytes | None, steps: list[Step]
) -> None:
    with pop3_open(inst, tls) as w:
        name = mech.split("+")[0].encode()
        start = b"AUTH " + name + (b" " + ir if ir is not None else b"")
        sasl(w, start, steps, w.line, lambda r: r.startswith(b"+ ") or r.rstrip() == b"+")
        w.send(b"QUIT\r\n")
        w.line()


def pop3_user_pass(inst: ServeInstance, tls: bool, user: str, rec: Recorder) -> None:
    with pop3_open(inst, tls) as w:
        w.send(f"USER {user}\r\nPASS {rec.password}\r\n".encode())  # pipelined
        w.line()
        w.line()
    with pop3_open(inst, tls) as w:
        digest = rec.secret(hashlib.md5(f"<1.2@x>{rec.password}".encode()).hexdigest().encode())
        w.send(b"APOP " + user.encode() + b" " + digest + b"\r\n")
        w.line()


def client_hello(inst: ServeInstance) -> bytes:
    """The first flight of a real TLS client (what t2 reads before answering in cleartext)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(inst).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


STARTTLS = {
    "smtp": b"EHLO canary.test\r\nSTARTTLS\r\n",
    "imap": b"s STARTTLS\r\n",
    "pop3": b"STLS\r\n",
}
PORTS = {"smtp": "smtp_submission", "imap": "imap", "pop3": "pop3"}


def disrupted_lines(user: str, rec: Recorder) -> dict[str, list[list[bytes]]]:
    """Secret-carrying lines a client may send after a disrupted STARTTLS (t2: in the clear,
    t4: as its first commands inside TLS), per protocol."""
    plain = rec.secret(b64(f"\0{user}\0{rec.password}"))
    xoauth2 = rec.secret(b64(f"user={user}\x01auth=Bearer {TOKEN}\x01\x01"))
    pw = rec.password.encode()
    u = user.encode()
    return {
        "smtp": [
            [b"AUTH PLAIN " + plain],
            [b"AUTH LOGIN " + b64(u), b64(pw)],
            [b"EHLO canary.test", b"AUTH XOAUTH2 " + xoauth2],
        ],
        "imap": [
            [b"a AUTHENTICATE PLAIN " + plain],
            [b'a LOGIN "' + u + b'" "' + pw + b'"'],
            [b"i ID NIL", b"a LOGIN " + u + b" " + pw],
        ],
        "pop3": [[b"USER " + u, b"PASS " + pw], [b"AUTH PLAIN " + plain]],
    }


def disrupted_sessions(inst: ServeInstance, testcase: str, user: str, rec: Recorder) -> None:
    hello = client_hello(inst)
    for protocol, scripts in disrupted_lines(user, rec).items():
        for lines in scripts:
            with Wire(inst.port_for(user, PORTS[protocol]), timeout=3) as w:
                w.line()
                w.send(STARTTLS[protocol])
                while not w.line().startswith((b"220 ", b"s OK", b"+OK")):
                    pass
                if testcase == "t2":  # the handshake is answered in the clear; go on in it
                    w.send(hello)
                    w.line()
                    w.send(b"".join(line + b"\r\n" for line in lines))
                else:  # t4: the commands inside TLS are answered outside it
                    w.upgrade(tls_context(inst))
                    w.send(b"".join(line + b"\r\n" for line in lines))
                time.sleep(0.05)


def implicit_tls_sessions(inst: ServeInstance, user: str, rec: Recorder) -> None:
    """PLAIN with an initial response and the login commands on the implicit-TLS ports."""
    plain = rec.secret(b64(f"\0{user}\0{rec.password}"))
    pw = rec.password.encode()
    scripts = {
        "smtp_tls": b"EHLO canary.test\r\nAUTH PLAIN " + plain + b"\r\nQUIT\r\n",
        "imap_tls": b'a LOGIN "' + user.encode() + b'" "' + pw + b'"\r\nz LOGOUT\r\n',
        "pop3_tls": b"USER " + user.encode() + b"\r\nPASS " + pw + b"\r\nQUIT\r\n",
    }
    for listener, script in scripts.items():
        with Wire(inst.ports[listener]) as w:
            w.upgrade(tls_context(inst))
            w.line()
            w.send(script)
            while w.line():
                pass


def forms_of(canary: str) -> list[bytes]:
    """The canary and every base64 alignment of it (as found inside any longer blob)."""
    raw = canary.encode()
    out = [raw, raw.hex().encode(), b64(raw)]
    for shift in range(3):
        encoded = b64(b"\0" * shift + raw)
        out.append(encoded[4 if shift else 0 : -4])
        out.append(base64.urlsafe_b64encode(b"\0" * shift + raw)[4 if shift else 0 : -4])
    return out


def leaks(haystack: bytes, needles: list[bytes]) -> list[bytes]:
    low = haystack.lower()
    return [n for n in needles if n in haystack or n.lower() in low]


def scan_files(root: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hits = leaks(path.read_bytes(), needles)
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def exercise_everything(inst: ServeInstance, user: str, rec: Recorder, tls_too: bool) -> None:
    for tls in (False, True) if tls_too else (False,):
        for mech, (ir, steps) in mechanisms(user, rec).items():
            smtp_session(inst, tls, mech, ir, steps)
            imap_sasl(inst, tls, mech, ir, steps)
            pop3_sasl(inst, tls, mech, ir, steps)
        imap_logins(inst, tls, user, rec)
        pop3_user_pass(inst, tls, user, rec)
    if tls_too:
        implicit_tls_sessions(inst, user, rec)


@pytest.mark.timeout(150)
def test_canaries_never_persist_or_show(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with serving(data, endpoints={"enabled": False}) as inst:  # raw wire sessions, shared ports
        api = Api(inst)
        run: Run = api.create(
            ("immediate", "baseline"), ("immediate", "t1"), ("immediate", "t2"), ("immediate", "t4")
        )
        # the run's own client sends the run's password (only that is evidence for the run);
        # the account view shows it to the user, so count it there before any client ran
        shown_before = {name: text.count(run.password) for name, text in api.texts(run).items()}
        ours, other = Recorder(run.password), Recorder(PASSWORD)
        for n in (1, 2):  # baseline: in the clear and after STARTTLS; t1: in the clear only
            api.start(run, n)
            exercise_everything(inst, run.username, ours, tls_too=n == 1)
            exercise_everything(inst, "somebody-else@example.org", other, tls_too=n == 1)
            api.finish(run, n)
        for n, testcase in ((3, "t2"), (4, "t4")):
            api.start(run, n)
            disrupted_sessions(inst, testcase, run.username, ours)
            step = api.finish(run, n)
            # t2: what follows the broken handshake in the clear leaks; t4: inside TLS it did not
            expected = ("FAIL", "plaintext_auth") if testcase == "t2" else ("PASS", "tls_auth")
            assert (step["verdict"], step["reason"]) == expected
            assert "starttls_disrupted" in {f["tag"] for f in step["findings"]}
        canaries = forms_of(PASSWORD) + forms_of(run.password) + forms_of(TOKEN)
        blobs = ours.blobs | other.blobs
        needles = canaries + sorted(blobs)
        # the alignments alone find every base64 blob that carried a canary (the search works)
        for blob in blobs:
            try:
                decoded = base64.b64decode(blob, validate=True)
            except ValueError:
                decoded = b""
            if any(c.encode() in decoded for c in (PASSWORD, run.password, TOKEN)):
                assert leaks(b"x" + blob, canaries), blob
        events = api.wait_events(run, lambda ev: sum(e["type"] == "auth" for e in ev) >= 40)
        auths = [e for e in events if e["type"] == "auth"]
        assert len(auths) >= 40, len(auths)  # the sessions really authenticated
        mechs = {a["mechanism"] for a in auths}
        assert mechs >= {"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"}, mechs
        assert any(a["tls"] for a in auths) and any(a["secret_in_clear"] for a in auths)
        assert {a["listener"] for a in auths} >= {"smtp_tls", "imap_tls", "pop3_tls"}
        texts = api.texts(run)
        assert "event: auth" in texts["sse"] and "plaintext_auth" in texts["json"]
        assert (
            texts["export_jsonl"].count('"type": "auth"')
            + texts["export_jsonl"].count('"type":"auth"')
            >= 40
        )
        for name, text in texts.items():
            # the account's own display of its password, and nothing more
            assert text.count(run.password) == shown_before.get(name, 0), name
            assert not leaks(text.replace(run.password, "").encode(), needles), name
        assert not scan_files(data, needles)
        api.close()
    assert not scan_files(data, needles)  # also what shutdown flushed
    log = inst.output()
    assert "mailtls serving" in log
    assert not leaks(log.encode(), needles)
