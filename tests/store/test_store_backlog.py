"""The index queue is bounded (a lagging index leaves its backlog in the journal, not in RAM) and
a query never waits for the backlog; unbound records are dropped below the free-space floor."""

from __future__ import annotations

import time
from pathlib import Path

from mailtls.store import Store


def _slow_indexer(tmp_path: Path, queue: int) -> Store:
    # an index interval of an hour: nothing is indexed unless a test asks for it
    return Store(tmp_path, fsync=False, index_interval=3600.0, index_queue=queue)


def test_queries_see_queued_records_without_indexing_them(tmp_path: Path) -> None:
    with _slow_indexer(tmp_path, 1000) as store:
        store.append_many([{"type": "noise", "conn": f"c{i}"} for i in range(500)])
        store.append({"type": "auth", "run": "r1", "step": 1, "conn": "c7", "code": "K"})
        assert [r["type"] for r in store.query(run="r1", step=1)] == ["auth"]
        assert [r["id"] for r in store.query(code="K")] == [501]
        assert len(store.query(conns=["c7"])) == 2
        assert len(store.query(types=["noise"], after_id=490, limit=5)) == 5
        stats = store.stats()
        assert stats.pending == 501 and stats.indexed_id == 0  # the query indexed nothing


def test_backlog_beyond_the_queue_waits_in_the_journal(tmp_path: Path) -> None:
    with _slow_indexer(tmp_path, 100) as store:
        store.append_many([{"type": "noise", "conn": f"c{i}"} for i in range(1000)])
        store.append({"type": "auth", "run": "r1", "step": 1, "code": "K"})
        stats = store.stats()
        assert stats.spilled and stats.pending == 100  # memory holds the queue, no more
        assert [r["id"] for r in store.query(run="r1")] == [1001]  # a run's record: seen
        store.flush()  # reads the backlog back from the journal
        stats = store.stats()
        assert not stats.spilled and stats.pending == 0 and stats.indexed_id == 1001
        assert len(store.query(types=["noise"])) == 1000
        store.append({"type": "after"})
        assert store.stats().pending == 1  # queued in memory again


def test_the_indexer_thread_catches_up_a_spilled_backlog(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False, index_interval=0.01, index_queue=50) as store:
        for _ in range(20):
            store.append_many([{"type": "noise"} for _ in range(100)])
        deadline = time.monotonic() + 10
        while (store.stats().indexed_id < 2000 or store.stats().spilled) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        stats = store.stats()
        assert stats.indexed_id == 2000 and not stats.spilled


def test_a_spilled_backlog_is_indexed_on_next_open(tmp_path: Path) -> None:
    with _slow_indexer(tmp_path, 10) as store:
        store.append_many([{"type": "noise"} for _ in range(300)])
        assert store.stats().spilled
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().indexed_id == 300
        assert len(store.query(types=["noise"])) == 300


def test_compaction_during_a_spill_keeps_the_index_whole(tmp_path: Path) -> None:
    with _slow_indexer(tmp_path, 10) as store:
        store.append_many([{"type": "noise", "run": "gone"} for _ in range(50)])
        store.append_many([{"type": "noise", "run": "kept"} for _ in range(50)])
        assert store.stats().spilled
        assert store.delete_run("gone") == 50
        assert not store.stats().spilled
        assert len(store.query(run="kept")) == 50 and store.query(run="gone") == []
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == ""
        assert len(store.query(run="kept")) == 50


def test_below_the_floor_unbound_records_are_dropped_and_counted(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        store.set_low_space(True)
        store.append_many(
            [
                {"type": "ehlo", "conn": "bot"},
                {"type": "auth", "conn": "c2", "run": "r1"},
                {"type": "auth", "conn": "c3", "code": "K"},
            ]
        )
        store.append({"type": "noop", "conn": "bot"})
        stats = store.stats()
        assert stats.dropped == 2 and stats.low_space
        assert [r.get("conn") for r in store.query()] == ["c2", "c3"]
        store.set_low_space(False)
        store.append({"type": "ehlo", "conn": "bot"})
        assert [r.get("conn") for r in store.query()] == ["c2", "c3", "bot"]


def test_deleting_a_run_removes_the_connections_that_presented_its_code(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        store.append({"type": "connection_opened", "conn": "u1", "client": "192.0.2.7"})
        store.append({"type": "username_sent", "conn": "u1", "code": "K", "username": "test-K"})
        store.append({"type": "connection_closed", "conn": "u1"})
        store.append({"type": "connection_opened", "conn": "other"})
        store.append({"type": "run_created", "run": "r1", "code": "K"})
        assert store.delete_run("r1", code="K") == 4
        assert [r["conn"] for r in store.query() if "conn" in r] == ["other"]
