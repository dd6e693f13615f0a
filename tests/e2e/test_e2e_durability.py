"""Durability of the event journal: ``kill -9`` during a burst of sessions, restart, compare.

Several stdlib clients (SMTP, IMAP, POP3, in the clear and over STARTTLS) run concurrently
against a real ``mailtls serve``; each remembers, by its local port, every greeting it received
and every login the server accepted. The server is killed with SIGKILL in the middle of the
burst, a torn last line is appended to the journal (a write cut short), and the server restarts
on the same data folder. Then: the torn tail is cut off (and logged) and every line of the
journal is JSON; for every greeting a client received there is a ``connection_opened`` event and
for every accepted login an ``auth`` event (the journal line is handed to the kernel before the
reply); the run and its step survive; and the SQLite index equals one rebuilt from the journal.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import poplib
import shutil
import signal
import smtplib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    CLIENT_ERRORS,
    HOST,
    Api,
    Run,
    journal,
    smtp_client,
    tags,
    tls_context,
    verdict,
)

from conftest import ServeInstance, start_serve
from mailtls.store import INDEX_NAME, JOURNAL_NAME, rebuild

Seen = list[tuple[str, int]]  # (protocol, client port)


def one_session(
    inst: ServeInstance, protocol: str, tls: bool, run: Run, greeted: Seen, authed: Seen
) -> None:
    user, password = run.username, run.password
    ctx = tls_context(inst)
    if protocol == "smtp":
        s = smtplib.SMTP(HOST, inst.port_for(user, "smtp_submission"), timeout=5)
        assert s.sock is not None
        cport = s.sock.getsockname()[1]
        try:
            greeted.append((protocol, cport))
            s.ehlo()
            if tls:
                s.starttls(context=ctx)
                s.ehlo()
            s.login(user, password)
            authed.append((protocol, cport))
            s.quit()
        finally:
            s.close()
    elif protocol == "imap":
        m = imaplib.IMAP4(HOST, inst.port_for(user, "imap"), timeout=5)
        try:
            greeted.append((protocol, m.sock.getsockname()[1]))
            if tls:
                m.starttls(ssl_context=ctx)
            m.login(user, password)
            authed.append((protocol, m.sock.getsockname()[1]))
            m.logout()
        finally:
            with contextlib.suppress(OSError):  # logout closed it already
                m.shutdown()
    else:
        p = poplib.POP3(HOST, inst.port_for(user, "pop3"), timeout=5)
        try:
            greeted.append((protocol, p.sock.getsockname()[1]))
            if tls:
                p.stls(context=ctx)
            p.user(user)
            p.pass_(password)
            authed.append((protocol, p.sock.getsockname()[1]))
            p.quit()
        finally:
            p.close()


def table(db_path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(
            "SELECT id, ts, type, run, step, conn, code, record FROM events ORDER BY id"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.timeout(90)
def test_kill_9_during_a_burst_loses_no_answered_event(tmp_path: Path) -> None:
    data = tmp_path / "var"
    inst = start_serve(data)
    try:
        api = Api(inst)
        run = api.create(("immediate", "baseline"))
        api.start(run)
        greeted: Seen = []
        authed: Seen = []
        stop = threading.Event()

        def worker(k: int) -> None:
            i = k
            while not stop.is_set():
                protocol = ("smtp", "imap", "pop3")[i % 3]
                try:
                    one_session(inst, protocol, (i // 3) % 2 == 1, run, greeted, authed)
                except CLIENT_ERRORS:
                    if inst.proc.poll() is not None:
                        return
                i += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while len(authed) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(t.is_alive() for t in threads)
        inst.proc.send_signal(signal.SIGKILL)  # in the middle of the burst
        inst.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in threads)
        api.close()
        assert len(authed) >= 30 and {p for p, _ in authed} == {"smtp", "imap", "pop3"}
    finally:
        stop.set()
        inst.stop(signal.SIGKILL)

    journal = data / JOURNAL_NAME
    with journal.open("ab") as f:  # a write cut short by the kill
        f.write(b'{"id": 999999999, "type": "connection_opened", "conn": "tor')

    again = start_serve(data, ports=inst.ports)
    try:
        api = Api(again)
        step = api.step(run)
        assert step["state"] == "active"
        # the restarted server records on: one more session, then a verdict from all of them
        one_session(again, "imap", True, run, [], [])
        finished = api.finish(run)  # half the burst logged in without STARTTLS
        assert (finished["verdict"], finished["reason"]) == ("FAIL", "plaintext_auth")
        assert {"tls_auth", "starttls_not_attempted"} <= tags(finished)
        api.close()
    finally:
        assert again.stop() == 0
    assert "torn" in again.output()
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    ids = [r["id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert 999999999 not in ids
    # connections that never logged in are reduced in API views (no client port): use the record
    opened = {(r["protocol"], r["cport"]) for r in records if r["type"] == "connection_opened"}
    logins = {
        (r["protocol"], r["cport"])
        for r in records
        if r["type"] == "auth" and r.get("outcome") == "success"
    }
    assert set(greeted) <= opened, set(greeted) - opened
    assert set(authed) <= logins, set(authed) - logins

    live = table(data / INDEX_NAME)
    assert [row[0] for row in live] == ids
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("store.lock"))
    for name in os.listdir(copy):
        if name.startswith(INDEX_NAME):
            (copy / name).unlink()
    rebuild(copy)
    assert table(copy / INDEX_NAME) == live


@pytest.mark.timeout(60)
def test_run_state_survives_kill_9(tmp_path: Path) -> None:
    """Runs, step starts (bindings) and two_phase activations are journalled too: after a
    ``kill -9`` the restarted server still attacks the activated step, and a step started later
    keeps its binding across another kill."""
    data = tmp_path / "var"
    first = start_serve(data)
    try:
        api = Api(first)
        run = api.create(("two_phase", "t1"), ("immediate", "t3"))
        api.start(run)
        assert smtp_client(first, run.username, run.password, False) == "tls-login"  # activates
        activated = api.step(run)["activated"]
        assert activated is not None
        api.close()
    finally:
        first.stop(signal.SIGKILL)
    second = start_serve(data, ports=first.ports)
    try:
        api = Api(second)
        step = api.step(run)
        assert (step["state"], step["activated"]) == ("active", activated)
        assert smtp_client(second, run.username, run.password, False) == "plain-login"  # t1 is on
        assert verdict(api.finish(run)) == ("FAIL", "plaintext_auth")
        api.start(run, 2)
        api.close()
    finally:
        second.stop(signal.SIGKILL)
    third = start_serve(data, ports=first.ports)
    try:
        api = Api(third)
        api.get(run)
        # t3 refuses
        assert smtp_client(third, run.username, run.password, False).startswith("stopped:")
        step = api.finish(run, 2)
        assert verdict(step) == ("INCONCLUSIVE", "aborted_after_downgrade")
        assert step["protocols"]["smtp"]["connections"] == 1
        api.close()
    finally:
        assert third.stop() == 0


@pytest.mark.timeout(60)
def test_a_deletion_cut_short_is_finished_at_restart(tmp_path: Path) -> None:
    """``DELETE /api/runs/ID`` journals ``run_deleted`` first, then rewrites the journal without
    the run's records. A ``kill -9`` between the two (seen with a few thousand records: the run
    answered 404 after the restart while all its records, usernames and addresses included, were
    still in the journal) must not leave the data behind: the restarted server finishes the
    deletion. The crash state is written here directly: the journal with the ``run_deleted``
    record appended and nothing compacted."""
    data = tmp_path / "var"
    first = start_serve(data)
    try:
        api = Api(first)
        gone = api.create(("immediate", "t1"))
        keep = api.create(("immediate", "baseline"))
        api.start(gone)
        assert smtp_client(first, gone.username, gone.password, False) == "plain-login"
        api.start(keep)
        assert smtp_client(first, keep.username, keep.password, False) == "tls-login"
        api.close()
    finally:
        assert first.stop() == 0
    last = journal(first)[-1]["id"]
    now = time.time()
    deleted = {"id": last + 1, "ts": now, "type": "run_deleted", "run": gone.id, "at": now}
    with (data / JOURNAL_NAME).open("a") as f:
        f.write(json.dumps(deleted) + "\n")

    def of_gone(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r.get("run") == gone.id or r.get("code") == gone.code]

    second = start_serve(data, ports=first.ports)
    try:
        api = Api(second)
        assert api.http.get(f"{api.base}/runs/{gone.id}").status_code == 404
        assert api.step(keep)["state"] == "active"
        deadline = time.monotonic() + 5
        while of_gone(journal(second)) and time.monotonic() < deadline:
            time.sleep(0.1)
        api.close()
    finally:
        assert second.stop() == 0
    records = journal(second)
    assert not of_gone(records), f"{len(of_gone(records))} records of the deleted run remain"
    assert any(r.get("run") == keep.id for r in records)
    assert gone.username.encode() not in (data / JOURNAL_NAME).read_bytes()
