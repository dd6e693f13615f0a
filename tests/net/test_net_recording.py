"""The cost of a connection's records: compact recording of connections bound to no run, the
per-connection budget and the per-address budget (``net/recording.py``, ``net/limits.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from net_testkit import Journal, make_settings, no_binding, start_server

from mailtls.net.limits import AddressBudget
from mailtls.net.recording import (
    RECORD_OVERHEAD,
    CompactRecorder,
    ConnectionBudget,
    estimated_bytes,
)

ENVELOPE = {"conn": "c1", "protocol": "smtp", "client": "203.0.113.5", "run": None, "tls": None}


def rec(type_: str, **fields: Any) -> dict[str, Any]:
    return {**ENVELOPE, "ts": 1.0, "type": type_, **fields}


def opened() -> dict[str, Any]:
    return rec("connection_opened", security="starttls", testcase="baseline", active=False)


def closed() -> dict[str, Any]:
    return rec("connection_closed", by="client", bytes_in=300, bytes_out=900, duration=0.5)


def auth(code: str | None, proof: bool, *, clear: bool = True) -> dict[str, Any]:
    return rec(
        "auth",
        mechanism="PLAIN",
        username="test-x" if code else "h:0123",
        code=code,
        tls=not clear,
        secret_sent=True,
        secret_in_clear=clear,
        outcome="failure",
        proof=proof,
    )


def test_a_bot_session_is_one_summary_record() -> None:
    c = CompactRecorder(sample_lines=2)
    written = c.take(opened())
    for i in range(50):
        written += c.take(rec("command", line=f"EHLO bot{i}", tls=False))
        written += c.take(rec("client_identified", kind="ehlo", value=f"bot{i}"))
        written += c.take(rec("capabilities_sent", starttls_offered=True, auth_mechanisms=[]))
    written += c.take(auth(None, False))  # a random username: nothing names a run
    assert written == []
    (summary,) = c.take(closed())
    assert summary["type"] == "connection_summary"
    assert summary["client"] == "203.0.113.5" and summary["conn"] == "c1"
    assert (summary["security"], summary["testcase"], summary["by"]) == (
        "starttls",
        "baseline",
        "client",
    )
    assert summary["counts"] == {
        "connection_opened": 1,
        "command": 50,
        "client_identified": 50,
        "capabilities_sent": 50,
        "auth": 1,
        "connection_closed": 1,
    }
    assert list(summary["lines"]) == ["EHLO bot0", "EHLO bot1"]  # the sample is bounded
    assert list(summary["mechanisms"]) == ["PLAIN"] and summary["secrets_in_clear"] == 1
    assert "code" not in summary and "username" not in summary


def test_a_wrong_password_for_a_runs_username_is_written_when_it_happens() -> None:
    c = CompactRecorder(sample_lines=8)
    c.take(opened())
    wrong = auth("abcdefghjk", False)
    assert c.take(wrong) == [wrong]  # the run manager counts it: username_misused
    (summary,) = c.take(closed())
    assert summary["code"] == "abcdefghjk"  # so that deleting the run removes this one too


def test_the_runs_password_makes_the_connection_record_fully() -> None:
    c = CompactRecorder(sample_lines=8)
    first = opened()
    caps = rec("capabilities_sent", starttls_offered=True, auth_mechanisms=[], tls=False)
    c.take(first)
    c.take(rec("command", line="EHLO phone", tls=False))
    c.take(caps)
    c.take(rec("capabilities_sent", starttls_offered=True, auth_mechanisms=[], tls=False))
    login = auth("abcdefghjk", True)
    # what a verdict reads of the connection comes first, in order, then the login
    assert c.take(login) == [first, caps, login]
    later = rec("command", line="QUIT", tls=False)
    assert c.take(later) == [later]
    end = closed()
    assert c.take(end) == [end]  # no summary: the connection has its full record from here


def test_estimated_bytes_grow_with_the_strings() -> None:
    small = rec("command", line="x", tls=False)
    large = rec("command", line="x" * 500, tls=False)
    assert estimated_bytes(large) - estimated_bytes(small) == 499
    assert estimated_bytes(small) > RECORD_OVERHEAD


def test_connection_budget_reports_the_first_bound_passed_once() -> None:
    budget = ConnectionBudget(max_records=3, max_bytes=0)
    for _ in range(3):
        budget.observed()
    assert budget.passed() is None
    budget.observed()
    assert budget.passed() == ("records", 3)
    budget.observed()
    assert budget.passed() is None  # said once
    by_bytes = ConnectionBudget(max_records=0, max_bytes=RECORD_OVERHEAD * 2)
    for _ in range(3):
        by_bytes.wrote(rec("command", line="", tls=False))
    assert by_bytes.passed() == ("bytes", RECORD_OVERHEAD * 2)
    unlimited = ConnectionBudget(0, 0)
    for _ in range(10_000):
        unlimited.observed()
    assert unlimited.passed() is None


def test_address_budget_over_a_window() -> None:
    budget = AddressBudget(records=10, nbytes=0, window=60.0)
    assert budget.charge("198.51.100.1", 10, 0, now=0.0) is None
    assert budget.charge("198.51.100.1", 1, 0, now=1.0) == ("records", 10, True)
    assert budget.charge("198.51.100.1", 1, 0, now=2.0) == ("records", 10, False)
    assert budget.over("198.51.100.1", now=59.0) == "records"
    assert budget.over("198.51.100.2", now=59.0) is None  # another address
    assert budget.over("198.51.100.1", now=60.0) is None  # the window ended
    assert budget.charge("198.51.100.1", 5, 0, now=61.0) is None


def test_address_budget_keys_ipv6_by_prefix_and_skips_exempt_networks() -> None:
    budget = AddressBudget(records=0, nbytes=100, window=10.0, exempt=["192.0.2.0/24"])
    assert budget.charge("2001:db8:1:2::1", 0, 60, now=0.0) is None
    assert budget.charge("2001:db8:1:2::ffff", 0, 60, now=0.0) == ("bytes", 100, True)
    assert budget.charge("2001:db8:1:3::1", 0, 60, now=0.0) is None  # another /64
    assert budget.charge("192.0.2.7", 0, 10**9, now=0.0) is None  # a lab's load generator


def test_address_budget_keeps_a_bounded_number_of_windows() -> None:
    budget = AddressBudget(records=5, nbytes=0, window=60.0, max_addresses=100)
    for i in range(1000):
        budget.charge(f"10.0.{i // 250}.{i % 250}", 1, 0, now=float(i) / 1000)
    assert len(budget._windows) <= 100


# --- through the real I/O shell -------------------------------------------------------------


async def _lines_after(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # greeting
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 20), 5)  # until the server closes
    finally:
        writer.close()


async def test_a_bound_connection_records_fully_until_its_budget_then_the_goodbye(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    settings = replace(settings, recording=replace(settings.recording, bound_records=20))
    journal = Journal()
    server = await start_server(settings, journal)
    try:
        answer = await _lines_after(server.port("mini"), b"NOOP\r\n" * 100)
        assert answer.endswith(b"421 kicked\r\n") and answer.count(b"250 NOOP") == 100
        await journal.wait_for("connection_closed")
        assert len(journal.of("command")) == 100  # the whole read was recorded, then it ended
        (passed,) = journal.of("budget_exceeded")
        assert (passed["scope"], passed["what"], passed["limit"]) == ("connection", "records", 20)
        assert journal.of("session_kicked")[0]["reason"] == "too many commands on this connection"
    finally:
        await server.close()


async def test_an_unbound_connection_through_the_shell_is_one_summary(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    journal = Journal()
    server = await start_server(settings, journal, binder=no_binding)
    try:
        answer = await _lines_after(server.port("mini"), b"EHLO x\r\n" * 50 + b"QUIT\r\n")
        assert answer.endswith(b"221 bye\r\n")
        (summary,) = await journal.wait_for("connection_summary")
        assert journal.types() == ["connection_summary"]
        assert summary["counts"]["command"] == 51 and summary["by"] == "server"
        assert list(summary["lines"]) == ["EHLO x"] * 8
        assert summary["client"] == "127.0.0.1" and summary["binding"] is None
    finally:
        await server.close()
