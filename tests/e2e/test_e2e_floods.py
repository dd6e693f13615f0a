"""What one address costs a real ``mailtls serve`` when it floods it without ever logging in to a
run (issue 10's table): data bytes measured before and after, with a small bound asserted.

- 20,000 x ``EHLO a`` on one SMTP connection (160 KB sent): once the connection has used its
  budget it gets ``421``; the whole flood leaves one compact record, not one per command.
- an AUTH bot with random usernames: one summary record per session (no username, not even a
  keyed hash of it, and no per-command record).
- the per-address budget: past it, every new connection from that address gets the protocol's
  goodbye (SMTP 421, IMAP BYE, POP3 -ERR), another address is served as usual, and the budget
  passing is recorded once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import HOST, journal, serving

from conftest import ServeInstance

FLOODER = "127.0.0.9"
BOT = "127.0.0.10"
NEIGHBOUR = "127.0.0.11"


def journal_bytes(inst: ServeInstance) -> int:
    return (inst.data_dir / "events.jsonl").stat().st_size


def data_bytes(inst: ServeInstance) -> int:
    """What the service keeps: its journal and its index, measured after the index writer
    caught up and its write-ahead log was folded into the index file (a passive checkpoint
    from here: the WAL's own size is page churn, reused, not data)."""
    time.sleep(1.0)
    index = inst.data_dir / "index.sqlite3"
    with contextlib.closing(sqlite3.connect(index, timeout=10)) as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return journal_bytes(inst) + index.stat().st_size


def connect(inst: ServeInstance, port: str, source: str) -> socket.socket:
    sock = socket.create_connection((HOST, inst.ports[port]), 10, source_address=(source, 0))
    return sock


def read_all(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    with serving(tmp_path_factory.mktemp("floods") / "var") as server:
        yield server


def summaries(inst: ServeInstance, client: str) -> list[dict[str, Any]]:
    return [r for r in journal(inst) if r.get("client") == client]


@pytest.mark.timeout(60)
def test_20000_ehlo_on_one_connection_cost_one_compact_record(inst: ServeInstance) -> None:
    before_journal, before_data = journal_bytes(inst), data_bytes(inst)
    sock = connect(inst, "smtp_submission", FLOODER)
    with sock:
        assert sock.recv(4096).startswith(b"220 ")
        answers: list[bytes] = []
        reader = threading.Thread(target=lambda: answers.append(read_all(sock)))
        reader.start()  # a flooder that reads its replies (one that does not is cut off sooner)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"EHLO a\r\n" * 20_000)  # 160 KB
        reader.join(30)
        answer = answers[0]
    assert b"421 " in answer  # the protocol's goodbye once the connection used its budget
    assert answer.count(b"250 8BITMIME") < 20_000  # not every EHLO was served
    grew_journal = journal_bytes(inst) - before_journal
    grew_data = data_bytes(inst) - before_data
    records = summaries(inst, FLOODER)
    # one summary, and the address's budget passing (the flood used it up as well)
    assert sorted(r["type"] for r in records) == ["budget_exceeded", "connection_summary"]
    (summary,) = [r for r in records if r["type"] == "connection_summary"]
    assert summary["counts"]["command"] >= 100
    assert summary["counts"]["budget_exceeded"] == 1 and summary["by"] in ("kick", "server")
    assert len(summary["lines"]) <= 8
    # today's main: +15 MB journal, +49 MB journal and index (x305 the bytes sent)
    assert grew_journal < 4_000, grew_journal
    assert grew_data < 256_000, grew_data


def bot_session(inst: ServeInstance, source: str) -> bytes:
    """EHLO, AUTH PLAIN with a random username and password, QUIT; returns the AUTH reply."""
    user, password = secrets.token_hex(6) + "@example.org", secrets.token_hex(8)
    sock = connect(inst, "smtp_submission", source)
    with sock, sock.makefile("rb") as lines:
        lines.readline()
        sock.sendall(b"EHLO bot.example\r\n")
        while (line := lines.readline()).startswith(b"250-"):
            pass
        if not line.startswith(b"250 "):
            return line  # the server said goodbye already
        blob = base64.b64encode(f"\0{user}\0{password}".encode())
        sock.sendall(b"AUTH PLAIN " + blob + b"\r\n")
        reply = lines.readline()
        with contextlib.suppress(OSError):  # after a goodbye the server has closed
            sock.sendall(b"QUIT\r\n")
            lines.readline()
        return reply


@pytest.mark.timeout(60)
def test_an_auth_bot_with_random_usernames_costs_one_small_record_per_session(
    inst: ServeInstance,
) -> None:
    before_journal, before_data = journal_bytes(inst), data_bytes(inst)
    sessions = 40
    for _ in range(sessions):
        assert bot_session(inst, BOT).startswith(b"535 ")
    time.sleep(0.5)  # the last close is recorded after the reply
    per_session = (journal_bytes(inst) - before_journal) / sessions
    per_session_data = (data_bytes(inst) - before_data) / sessions
    records = summaries(inst, BOT)
    assert [r["type"] for r in records] == ["connection_summary"] * sessions
    assert all(r["counts"]["auth"] == 1 and r["mechanisms"] == ["PLAIN"] for r in records)
    assert all("username" not in r and "code" not in r for r in records)
    text = json.dumps(records)
    assert "@example.org" not in text and "h:" not in text  # no username, not even its hash
    # today's main: ~4 KB journal and ~12 KB index per session
    assert per_session < 1_000, per_session
    assert per_session_data < 4_000, per_session_data


def greeting_then_goodbye(inst: ServeInstance, port: str, source: str) -> bytes:
    sock = connect(inst, port, source)
    with sock:
        return read_all(sock, 1 << 16)


@pytest.mark.timeout(90)
def test_an_address_past_its_budget_gets_the_protocols_goodbye(tmp_path: Path) -> None:
    extra = "recording = { address_records = 150, address_window = 30 }"
    with serving(tmp_path / "var", extra) as inst:
        # sessions from one address until its budget is used (each: greeting, EHLO, AUTH)
        replies = [bot_session(inst, FLOODER)]
        while replies[-1].startswith(b"535 ") and len(replies) < 60:
            replies.append(bot_session(inst, FLOODER))
        assert replies[0].startswith(b"535 ") and replies[-1].startswith(b"421 "), replies
        assert 10 < len(replies) < 40  # about 150 records: 8 or 9 a session
        # from now on, a new connection from that address is answered and ended at once
        smtp = greeting_then_goodbye(inst, "smtp_submission", FLOODER)
        assert smtp.startswith(b"220 ") and b"\r\n421 " in smtp
        imap = greeting_then_goodbye(inst, "imap", FLOODER)
        assert b"* BYE too many commands from your address" in imap
        pop3 = greeting_then_goodbye(inst, "pop3", FLOODER)
        assert b"-ERR [SYS/TEMP] too many commands from your address" in pop3
        # another address is served as usual
        assert bot_session(inst, NEIGHBOUR).startswith(b"535 ")
        time.sleep(0.5)  # the last close is recorded after the reply
        passed = [r for r in journal(inst) if r["type"] == "budget_exceeded"]
        assert [(r["client"], r["scope"], r["what"]) for r in passed] == [
            (FLOODER, "address", "records")
        ]
        # the throttled connections are not recorded one by one
        assert len(summaries(inst, FLOODER)) <= len(replies) + 1
        assert len(summaries(inst, NEIGHBOUR)) == 1
