"""Store.append_many: one journal write for several records, ids in order, all or none;
the JSON line encoder (json or orjson) gives lines json reads back to the same record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mailtls.store import JOURNAL_NAME, Store
from mailtls.store import encoding as enc


def lines(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (data_dir / JOURNAL_NAME).read_bytes().splitlines()]


def test_append_many_numbers_records_in_order_with_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    with Store(tmp_path, fsync=False) as store:
        store.append({"type": "first"})
        records: list[dict[str, Any]] = [
            {"type": "command", "conn": "c1", "line": f"L{i}"} for i in range(3)
        ]
        monkeypatch.setattr(os, "write", counting_write)
        store.append_many(records)
        monkeypatch.undo()
        assert [r["id"] for r in records] == [2, 3, 4]
        assert all(isinstance(r["ts"], float) for r in records)
        assert len(writes) == 1 and writes[0].count(b"\n") == 3
        on_disk = lines(tmp_path)
        assert [r["id"] for r in on_disk] == [1, 2, 3, 4]
        assert on_disk[1:] == records
        assert [r["line"] for r in store.query(conns=["c1"])] == ["L0", "L1", "L2"]
        store.append({"type": "after"})
        assert store.query(types=["after"])[0]["id"] == 5


def test_append_many_is_all_or_none(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        store.append({"type": "a"})
        with pytest.raises(TypeError):
            store.append_many([{"type": "ok"}, {"type": "bad", "value": object()}])
        store.append_many([])
        store.append({"type": "b"})
        assert [(r["id"], r["type"]) for r in lines(tmp_path)] == [(1, "a"), (2, "b")]


def test_append_many_delivers_to_subscribers_in_id_order(tmp_path: Path) -> None:
    seen: list[int] = []
    with Store(tmp_path, fsync=False) as store:
        store.subscribe(lambda r: seen.append(r["id"]))
        store.append_many([{"type": "x"} for _ in range(4)])
    assert seen == [1, 2, 3, 4]


def test_index_offsets_stay_right_across_a_batch_and_a_reopen(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        store.append_many([{"type": "x", "line": "é" * i} for i in range(5)])
        store.flush()
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == ""
        assert [r["line"] for r in store.query(types=["x"])] == ["é" * i for i in range(5)]


@pytest.mark.parametrize(
    "record",
    [
        {"ts": 1.5, "type": "t", "s": "plain", "n": 3, "b": True, "none": None},
        {"ts": 2.0, "s": "EHLO \udcff\udcfe"},  # undecodable client bytes (lone surrogates)
        {"ts": 3.0, "s": "naïve ☃", "tup": ("a", "b"), "nested": {"k": [1, 2]}},
        {"ts": 4.0, "big": 2**70, "neg": -(2**63) - 1},
        {"ts": 5.0, 7: "int key"},
    ],
)
def test_encoded_line_reads_back_as_json_encodes_it(record: dict[str, Any]) -> None:
    line, ts = enc.encode_line(9, record)
    expected = json.loads(json.dumps({"id": 9, **record}))
    assert json.loads(line) == expected
    assert ts == record["ts"]
    assert line.startswith(b'{"id":9,')


def test_encoded_line_adds_ts_and_drops_a_stale_id() -> None:
    line, ts = enc.encode_line(4, {"id": 99, "ts": None, "type": "t"})
    assert json.loads(line) == {"id": 4, "ts": ts, "type": "t"}
    assert isinstance(ts, float)
    assert enc.encode_line(5, {})[0].startswith(b'{"id":5,"ts":')


def test_str_subclasses_are_encoded_as_json_does() -> None:
    from enum import StrEnum

    class Color(StrEnum):
        RED = "red"

    line, _ = enc.encode_line(1, {"ts": 1.0, "c": Color.RED})
    assert json.loads(line)["c"] == "red"
