"""Store compaction: delete_run and prune rewrite journal and index, atomically and durably."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from mailtls.store import COMPACTED_TYPE, JOURNAL_NAME, Store
from mailtls.store.journal import journal_files


def journal(data_dir: Path) -> list[dict[str, Any]]:
    """Every record of the journal: its sealed segments, then the active file."""
    files = journal_files(data_dir / JOURNAL_NAME)
    return [json.loads(line) for f in files for line in f.read_bytes().splitlines()]


def fill(store: Store, n: int, ts0: float = 1000.0) -> list[dict[str, Any]]:
    return [
        store.append(
            {
                "ts": ts0 + i,
                "type": "client_identified",
                "run": f"run{i % 3}",
                "conn": f"c{i}",
                "client": f"203.0.113.{i % 250}",
                "value": f"laptop-{i}",
            }
        )
        for i in range(n)
    ]


def test_delete_run_removes_from_journal_and_index_and_survives_reopen(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        records = fill(store, 30)
        store.append({"type": "auth", "conn": "elsewhere", "code": "RUN1CODE"})
        assert store.delete_run("run1", code="RUN1CODE") == 11
        kept = [r for r in records if r["run"] != "run1"]
        after = store.query()
        assert after[:-1] == kept
        marker = after[-1]
        assert marker["type"] == COMPACTED_TYPE and marker["removed"] == 11
        assert store.query(run="run1") == [] and store.query(code="RUN1CODE") == []
        assert journal(tmp_path) == after
        assert (tmp_path / JOURNAL_NAME).stat().st_mode & 0o777 == 0o600
        assert store.append({"type": "next"})["id"] == marker["id"] + 1
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == ""  # the index followed the rewrite
        assert store.query(run="run1") == []
        assert [r["id"] for r in store.query()] == [r["id"] for r in journal(tmp_path)]
    with Store(tmp_path, fsync=False, reindex=True) as store:
        assert store.query(run="run1") == []
        assert store.query(run="run0") == [r for r in records if r["run"] == "run0"]


def test_ids_keep_increasing_after_deleting_the_newest_records(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        store.append({"type": "a", "run": "keep"})
        store.append({"type": "b", "run": "gone"})
        store.append({"type": "c", "run": "gone"})
        assert store.delete_run("gone") == 2
    with Store(tmp_path, fsync=False) as store:
        assert store.append({"type": "d"})["id"] == 5  # 2 and 3 are never handed out again


def test_delete_run_of_unknown_run_changes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 5)
        before = (tmp_path / JOURNAL_NAME).read_bytes()
        assert store.delete_run("nope") == 0
        assert (tmp_path / JOURNAL_NAME).read_bytes() == before


def blank_client(record: dict[str, Any]) -> dict[str, Any] | None:
    if record["run"] == "run2":
        return None
    record["client"] = ""
    record["value"] = record["value"][:3]
    return record


def test_prune_transforms_old_records_only(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        records = fill(store, 30)  # ts 1000..1029
        changed = store.prune(1020.0, blank_client)
        old = [r for r in records if r["ts"] < 1020]
        assert changed == len(old)
        result = store.query()
        assert result[-1]["type"] == COMPACTED_TYPE
        result = result[:-1]
        expected = []
        for r in records:
            if r["ts"] < 1020:
                if r["run"] == "run2":
                    continue
                r = {**r, "client": "", "value": r["value"][:3]}
            expected.append(r)
        assert result == expected
        assert journal(tmp_path)[:-1] == expected
        assert not any("203.0.113" in json.dumps(r) for r in result if r["ts"] < 1020)
        assert store.prune(1020.0, blank_client) == 0  # already pruned: nothing changes
    with Store(tmp_path, fsync=False, reindex=True) as store:
        assert store.query()[:-1] == expected


def test_prune_keeps_ids_even_if_the_transform_changes_them(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 3)

        def renumber(r: dict[str, Any]) -> dict[str, Any]:
            return {**r, "id": 999, "value": ""}

        assert store.prune(5000.0, renumber) == 3
        assert [r["id"] for r in store.query()] == [1, 2, 3, 4]


def test_compaction_while_another_thread_appends(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 5000)
        stop = threading.Event()
        appended: list[dict[str, Any]] = []

        def appender() -> None:
            i = 0
            while not stop.is_set() or i < 200:
                appended.append(store.append({"type": "live", "run": f"run{i % 3}", "n": i}))
                i += 1

        thread = threading.Thread(target=appender)
        thread.start()
        while len(appended) < 10:
            stop.wait(0.001)
        try:
            removed = store.delete_run("run1")
        finally:
            stop.set()
            thread.join()
        lines = journal(tmp_path)
        ids = [r["id"] for r in lines]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        marker = next(r for r in lines if r["type"] == COMPACTED_TYPE)
        assert marker["removed"] == removed
        # every append not of the deleted run is kept, appended during the rewrite or not
        assert {r["id"] for r in appended if r["run"] != "run1"} <= set(ids)
        # the run's records are gone up to the swap; later ones are new records of a live run
        assert all(r["id"] > marker["id"] for r in lines if r.get("run") == "run1")
        assert any(r["run"] == "run1" and r["id"] < marker["id"] for r in appended)
        assert removed > 5000 // 3
        assert store.query() == lines
