"""Retention pruning: identifiers go, verdict facts stay, pruning is idempotent, real store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailtls.retention import prune_once, scrub
from mailtls.store import Store


def test_scrub_removes_identifiers_and_keeps_facts() -> None:
    record = {
        "id": 7,
        "ts": 1.0,
        "type": "command",
        "conn": "c1",
        "client": "198.51.100.23",
        "cport": 50000,
        "line": "MAIL FROM:<alice@example.org>",
        "tls": None,
        "run": "R",
        "step": 2,
    }
    out = scrub(record)
    assert out["client"] == "198.51.100.0/24"
    assert "cport" not in out
    assert out["line"] == "MAIL"
    assert (out["conn"], out["run"], out["step"], out["type"]) == ("c1", "R", 2, "command")
    assert scrub(out) == out


def test_scrub_imap_tag_ehlo_usernames_and_run_records() -> None:
    assert scrub({"line": "a1 LOGIN h:abcd <redacted, 8 bytes>"})["line"] == "a1 LOGIN"
    assert scrub({"type": "client_identified", "value": "laptop.home"})["value"] == "<pruned>"
    assert scrub({"type": "auth", "username": "h:0011223344556677"})["username"] == "<pruned>"
    assert scrub({"type": "auth", "username": "test-abc@x"})["username"] == "test-abc@x"
    assert "addresses" not in scrub({"type": "step_started", "addresses": ["192.0.2.1"]})
    assert scrub({"client": "2001:db8:1:2::5"})["client"] == "2001:db8:1::/48"


def test_scrub_keeps_only_the_verbs_of_a_summary_sample() -> None:
    summary = {
        "type": "connection_summary",
        "client": "203.0.113.77",
        "cport": 4242,
        "lines": ["EHLO bot.example", "AUTH PLAIN <redacted, 40 bytes>", "a1 LOGIN x y"],
        "counts": {"command": 3},
    }
    out = scrub(summary)
    assert out["lines"] == ["EHLO", "AUTH", "a1 LOGIN"]
    assert out["client"] == "203.0.113.0/24" and "cport" not in out
    assert out["counts"] == {"command": 3}


def test_prune_once_rewrites_only_old_records(tmp_path: Path) -> None:
    store = Store(tmp_path, fsync=False)
    try:
        now = time.time()
        store.append(
            {"ts": now - 40 * 86400, "type": "command", "client": "192.0.2.9", "conn": "a"}
        )
        store.append({"ts": now, "type": "command", "client": "192.0.2.10", "conn": "b"})
        assert prune_once(store, 30, now=now) == 1
        old, new = store.query(types=["command"])
        assert old["client"] == "192.0.2.0/24" and old["pruned"]
        assert new["client"] == "192.0.2.10"
        assert prune_once(store, 30, now=now) == 0
    finally:
        store.close()
    journal = (tmp_path / "events.jsonl").read_text()
    assert "192.0.2.9" not in journal


def test_a_failing_prune_is_logged_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    from mailtls.retention import prune_periodically
    from mailtls.store import StoreFull

    caplog.set_level(logging.INFO, "mailtls.retention")
    calls: list[float] = []

    class FullStore:
        def prune(self, older_than: float, transform: object) -> int:
            calls.append(older_than)
            if len(calls) < 4:
                raise StoreFull("cannot compact the journal: No space left on device")
            return 0

    async def run() -> None:
        task = asyncio.create_task(prune_periodically(FullStore(), 30, every=3600, retry=0.01))
        while len(calls) < 4:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(asyncio.wait_for(run(), 10))
    errors = [r for r in caplog.records if "retention pruning failed" in r.getMessage()]
    assert len(errors) == 1 and "No space left" in errors[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)
