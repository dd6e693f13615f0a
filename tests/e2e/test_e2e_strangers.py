"""Strangers against a real ``mailtls serve``: only the user's own client decides a verdict.

The test username travels in the clear by design, so anyone on the path can read it. A stranger
who logs in with it and a wrong password, from another address, must not turn the user's step
into FAIL, bind its address to the run or appear in the user's transcript; the user sees it as
its own finding ("someone else used your test username": count and times, no address in the
shareable view). The user's client with the run's password still decides as before.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from e2e_helpers import HOST, Api, Run, imap_client, journal, serving, tags, verdict

from conftest import ServeInstance

STRANGER = "127.0.0.2"


def imap_from(inst: ServeInstance, port: int, source: str) -> tuple[socket.socket, bytes]:
    """An IMAP connection from ``source``; returns it with its greeting line."""
    sock = socket.create_connection((HOST, port), 8, source_address=(source, 0))
    return sock, sock.makefile("rb").readline(4096)


def stranger_login(inst: ServeInstance, port: int, run: Run, password: str) -> bytes:
    """A cleartext IMAP LOGIN from the stranger's address; returns the tagged reply."""
    sock, _ = imap_from(inst, port, STRANGER)
    with sock, sock.makefile("rb") as lines:
        sock.sendall(f'a LOGIN "{run.username}" {password}\r\n'.encode())
        reply = lines.readline(4096)
        sock.sendall(b"b LOGOUT\r\n")
        return reply


@pytest.mark.timeout(90)
@pytest.mark.parametrize("binding", ["endpoint", "address"])
def test_a_stranger_with_the_username_and_a_wrong_password_is_not_the_victims_fail(
    tmp_path: Path, binding: str
) -> None:
    """``endpoint``: the run has its own ports, and the stranger read that port off the wire
    too (its connections are bound to the step); ``address``: shared ports, the run bound to
    the victim's address (the stranger's connections are unbound)."""
    endpoints = None if binding == "endpoint" else {"enabled": False}
    with serving(tmp_path / "var", endpoints=endpoints) as inst:
        api = Api(inst)
        run = api.create(("immediate", "t1"), ("immediate", "t1"))
        port = inst.port_for(run.username, "imap")  # the run's own port, or the shared one
        api.start(run, 1)  # the victim's browser and mail client are on 127.0.0.1
        # twice, over cleartext IMAP, from another address, with a wrong password
        for guess in ("not-the-password", "still-not-it"):
            assert stranger_login(inst, port, run, guess).startswith(b"a NO ")
        step = api.finish(run, 1)
        assert verdict(step)[0] == "INCONCLUSIVE"  # the victim's client never logged in
        assert "username_misused" in tags(step) and "plaintext_auth" not in tags(step)
        assert step["username_misused"]["count"] == 2
        assert len(step["username_misused"]["times"]) == 2
        # the stranger's address never became the run's (no login-address binding)
        assert not [r for r in journal(inst) if r["type"] == "address_bound"]

        # step 2: the stranger again, and the user's own client with the run's password
        api.start(run, 2)
        assert stranger_login(inst, port, run, "a-third-guess").startswith(b"a NO ")
        if binding == "address":  # a stranger's next connection is not attacked: baseline
            sock, greeting = imap_from(inst, port, STRANGER)
            sock.close()
            assert b"STARTTLS" in greeting
        assert imap_client(inst, run.username, run.password, False) == "plain-login"
        step = api.finish(run, 2)
        assert verdict(step) == ("FAIL", "plaintext_auth")
        assert step["username_misused"]["count"] == 1

        events = api.events(run)
        assert not [e for e in events if e.get("client") == STRANGER]
        logins = [e for e in events if e["type"] == "auth"]
        assert [(e["proof"], e["secret_in_clear"]) for e in logins] == [(True, True)]
        texts = api.texts(run)
        assert "Someone else used your test username" in texts["result_page"]
        assert "Someone else used your test username" in texts["share_page"]
        for name in ("share_page", "share_json"):
            assert STRANGER not in texts[name], name
        shared = json.loads(texts["share_json"])
        assert [s["username_misused"]["count"] for s in shared["steps"]] == [2, 1]
        api.close()
