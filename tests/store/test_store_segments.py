"""The segmented journal: the active file is sealed into ``journal/<seq>.jsonl`` at the segment
size; reading, rebuilding, exporting and ids span every segment; a compaction rewrites only the
segments it changes (so it needs free space for one segment, not the whole journal)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from mailtls.export_cli import export
from mailtls.store import JOURNAL_NAME, Store, rebuild
from mailtls.store.journal import journal_files, sealed_segments

SEGMENT = 4096


def _fill(store: Store, n: int, **fields: object) -> None:
    for i in range(n):
        store.append({"type": "ehlo", "conn": f"c{i}", "value": "x" * 100, **fields})


def test_segments_are_sealed_at_the_segment_size(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False, segment_bytes=SEGMENT) as store:
        _fill(store, 200)
        sealed = sealed_segments(tmp_path / JOURNAL_NAME)
        assert len(sealed) >= 5
        assert all(p.stat().st_size >= SEGMENT for p in sealed)
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in sealed)
        assert [r["id"] for r in store.query()] == list(range(1, 201))
    ids = [
        json.loads(line)["id"]
        for f in journal_files(tmp_path / JOURNAL_NAME)
        for line in f.read_bytes().splitlines()
    ]
    assert ids == list(range(1, 201))  # every record once, in order, across the segments


def test_ids_the_index_and_export_span_the_segments(tmp_path: Path) -> None:
    n = 0
    with Store(tmp_path, fsync=False, segment_bytes=SEGMENT) as store:
        while n < 60 or (tmp_path / JOURNAL_NAME).stat().st_size:  # stop right after a seal
            _fill(store, 1, run="r1")
            n += 1
    with Store(tmp_path, fsync=False, segment_bytes=SEGMENT) as store:  # ids from a segment
        assert store.append({"type": "later"})["id"] == n + 1
    stats = rebuild(tmp_path)
    assert stats.indexed_id == n + 1 and stats.index_rebuilt == ""
    with Store(tmp_path, fsync=False) as store:
        assert len(store.query(run="r1")) == n
    out = io.BytesIO()
    assert export(tmp_path / JOURNAL_NAME, out) == n + 1


def test_a_backlog_read_back_follows_sealed_segments(tmp_path: Path) -> None:
    store = Store(
        tmp_path, fsync=False, index_interval=3600.0, index_queue=10, segment_bytes=SEGMENT
    )
    with store:
        _fill(store, 300)
        assert store.stats().spilled and len(sealed_segments(tmp_path / JOURNAL_NAME)) > 3
        store.flush()
        assert store.stats().indexed_id == 300 and not store.stats().spilled
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == "" and len(store.query()) == 300


def test_deletion_rewrites_only_the_segments_holding_the_run(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False, segment_bytes=SEGMENT) as store:
        _fill(store, 60)
        store.append({"type": "auth", "run": "gone", "conn": "g1"})
        _fill(store, 60)
        sealed = sealed_segments(tmp_path / JOURNAL_NAME)
        before = {p.name: os.stat(p).st_ino for p in sealed}
        assert store.delete_run("gone") == 1
        after = {p.name: os.stat(p).st_ino for p in sealed_segments(tmp_path / JOURNAL_NAME)}
        changed = [name for name in before if after.get(name) != before[name]]
        assert len(changed) == 1  # one segment rewritten, every other one untouched
        assert store.query(run="gone") == [] and len(store.query(types=["ehlo"])) == 120
    with Store(tmp_path, fsync=False) as store:
        assert store.query(run="gone") == []
        assert store.stats().index_rebuilt == ""


def test_prune_rewrites_old_segments_only(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False, segment_bytes=SEGMENT) as store:
        for i in range(60):
            store.append({"type": "ehlo", "ts": 1000.0 + i, "value": "x" * 100})
        for i in range(60):
            store.append({"type": "ehlo", "ts": 9000.0 + i, "value": "x" * 100})
        sealed = sealed_segments(tmp_path / JOURNAL_NAME)
        inodes = {p.name: os.stat(p).st_ino for p in sealed}

        def scrub(record: dict[str, object]) -> dict[str, object]:
            return {**record, "value": "<pruned>"}

        assert store.prune(2000.0, scrub) == 60
        fresh = [p for p in sealed if json.loads(p.read_bytes().splitlines()[0])["ts"] >= 9000]
        assert fresh and all(os.stat(p).st_ino == inodes[p.name] for p in fresh)
        values = [r["value"] for r in store.query(types=["ehlo"])]
        assert values == ["<pruned>"] * 60 + ["x" * 100] * 60
