"""Store: append/query round trip, ids, filters, subscribers, export, records_since, misuse."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from mailtls.store import JOURNAL_NAME, MAX_LINE_BYTES, Store, StoreClosedError, StoreError


def journal_lines(data_dir: Path) -> list[dict[str, Any]]:
    text = (data_dir / JOURNAL_NAME).read_text(encoding="ascii")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def sample(i: int) -> dict[str, Any]:
    return {
        "type": "auth" if i % 3 == 0 else "command",
        "run": f"run{i % 2}",
        "step": i % 4,
        "conn": f"c{i % 5}",
        "line": f"EHLO client-{i}",
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path, fsync=False)
    yield s
    s.close()


def test_append_sets_id_and_ts_and_writes_one_line_before_returning(
    store: Store, tmp_path: Path
) -> None:
    rec = store.append({"type": "connection_opened", "conn": "c1"})
    assert rec["id"] == 1
    assert isinstance(rec["ts"], float)
    # the line is in the file already, without any flush or close
    assert journal_lines(tmp_path) == [rec]
    kept = store.append({"type": "x", "ts": 12.5})
    assert kept["ts"] == 12.5 and kept["id"] == 2


def test_line_shape_id_first_and_odd_records(store: Store, tmp_path: Path) -> None:
    store.append({})
    store.append({"id": 77, "type": "caller set an id"})
    store.append({"type": "x", "ts": None})
    store.append({"type": "y", "ts": 5})
    raw = (tmp_path / JOURNAL_NAME).read_text(encoding="ascii").splitlines()
    assert all(line.startswith('{"id":') for line in raw)
    records = [json.loads(line) for line in raw]
    assert [r["id"] for r in records] == [1, 2, 3, 4]
    assert isinstance(records[0]["ts"], float) and isinstance(records[2]["ts"], float)
    assert records[3]["ts"] == 5 and list(records[3]) == ["id", "type", "ts"]
    assert store.query() == records


def test_query_round_trip_and_filters(store: Store) -> None:
    appended = [store.append(sample(i)) for i in range(40)]
    assert store.query() == appended  # no flush: query must see every append before it
    assert store.query(run="run1") == [r for r in appended if r["run"] == "run1"]
    assert store.query(run="run0", step=2) == [
        r for r in appended if r["run"] == "run0" and r["step"] == 2
    ]
    assert store.query(conns=["c1", "c3"]) == [r for r in appended if r["conn"] in ("c1", "c3")]
    assert store.query(types=["auth"], run="run1") == [
        r for r in appended if r["type"] == "auth" and r["run"] == "run1"
    ]
    assert store.query(after_id=35) == appended[35:]
    assert store.query(after_id=10, limit=3) == appended[10:13]
    assert store.query(conns=[]) == []
    assert store.query(run="nope") == []


def test_query_by_code_finds_auth_on_any_connection(store: Store) -> None:
    store.append({"type": "auth", "run": "r1", "conn": "a", "code": "K7Q2"})
    store.append({"type": "auth", "conn": "b", "code": "K7Q2"})  # bound nowhere
    store.append({"type": "auth", "run": "r1", "conn": "c", "code": "ZZZZ"})
    assert [r["conn"] for r in store.query(code="K7Q2")] == ["a", "b"]


def test_only_well_typed_values_are_indexed(store: Store) -> None:
    rec = store.append({"type": "x", "run": 5, "step": "2", "conn": ["c"], "code": True})
    assert store.query() == [rec]  # kept in full
    assert store.query(run="5") == [] and store.query(step=2) == []
    assert store.query(conns=["c"]) == [] and store.query(code="True") == []


def test_client_strings_are_stored_as_data(store: Store, tmp_path: Path) -> None:
    nasty = "'); DROP TABLE events; --\x1b[31m\r\n\u202e\udcff\x00 %s ?"
    rec = store.append({"type": "client_identified", "value": nasty, "run": nasty, "conn": "?"})
    assert store.query(run=nasty) == [rec]
    assert store.query(conns=["?"]) == [rec]
    raw = (tmp_path / JOURNAL_NAME).read_bytes()
    assert raw.count(b"\n") == 1 and raw.isascii()  # escaped: one line, control chars as \uXXXX


def test_ids_are_monotonic_across_reopen(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as s:
        ids = [s.append(sample(i))["id"] for i in range(5)]
    with Store(tmp_path, fsync=False) as s:
        ids += [s.append(sample(i))["id"] for i in range(5)]
        assert [r["id"] for r in s.query()] == ids
    assert ids == list(range(1, 11))
    assert [r["id"] for r in journal_lines(tmp_path)] == ids


def test_bad_records_raise_without_consuming_an_id(store: Store, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        store.append({"type": "x", "raw": b"bytes"})
    with pytest.raises(ValueError):
        store.append({"type": "x", "big": "a" * MAX_LINE_BYTES})
    assert store.append({"type": "ok"})["id"] == 1
    assert [r["type"] for r in journal_lines(tmp_path)] == ["ok"]


def test_one_store_per_directory_and_closed_store_refuses(tmp_path: Path) -> None:
    s = Store(tmp_path, fsync=False)
    with pytest.raises(StoreError, match="in use"):
        Store(tmp_path, fsync=False)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreClosedError):
        s.append({"type": "x"})
    with pytest.raises(StoreClosedError):
        s.query()
    Store(tmp_path, fsync=False).close()  # the lock was released


def test_single_string_for_conns_is_refused(store: Store) -> None:
    with pytest.raises(TypeError):
        store.query(conns="c1")


def test_subscribers_get_every_record_in_order(store: Store) -> None:
    seen: list[int] = []
    late: list[int] = []

    def chain(rec: dict[str, Any]) -> None:
        seen.append(rec["id"])
        if rec.get("type") == "trigger":  # an append made by a subscriber
            store.append({"type": "derived"})

    store.subscribe(chain)
    store.subscribe(lambda rec: late.append(rec["id"]))
    for i in range(50):
        store.append({"type": "trigger" if i % 10 == 0 else "plain"})
    assert seen == late == list(range(1, 56))


def test_unsubscribe_and_failing_subscriber(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    got: list[int] = []

    def broken(rec: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(broken)
    unsubscribe = store.subscribe(lambda rec: got.append(rec["id"]))
    with caplog.at_level(logging.ERROR):
        store.append({"type": "a"})
    assert "subscriber bug" in caplog.text
    unsubscribe()
    unsubscribe()
    store.append({"type": "b"})
    assert got == [1]


def test_records_since_resumes_a_stream_across_reopen(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as s:
        for i in range(20):
            s.append(sample(i))
    with Store(tmp_path, fsync=False) as s:  # memory empty: served by the index
        assert [r["id"] for r in s.records_since(15)] == [16, 17, 18, 19, 20]
        s.append({"type": "new"})
        assert [r["id"] for r in s.records_since(19)] == [20, 21]
        assert [r["id"] for r in s.records_since(20)] == [21]
        assert s.records_since(21) == []
        copy = s.records_since(20)[0]
        copy["type"] = "changed"
        assert s.records_since(20)[0]["type"] == "new"


def test_export_jsonl(store: Store) -> None:
    appended = [store.append(sample(i)) for i in range(2500)]
    out = io.BytesIO()
    assert store.export_jsonl(out) == 2500
    assert [json.loads(line) for line in out.getvalue().splitlines()] == appended
    out = io.BytesIO()
    n = store.export_jsonl(out, run="run1")
    assert n == 1250
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        r for r in appended if r["run"] == "run1"
    ]


def test_background_indexer_catches_up_without_queries(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False, index_interval=0.02) as s:
        for i in range(10):
            s.append(sample(i))
        done = threading.Event()
        for _ in range(200):
            if s.stats().indexed_id == 10:
                done.set()
                break
            done.wait(0.01)
        assert done.is_set()
        assert s.stats().pending == 0
