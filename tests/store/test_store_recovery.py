"""Store recovery: a real kill -9 mid-append, torn tails, corrupt middle lines, index rebuilds."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from mailtls.store import INDEX_NAME, JOURNAL_NAME, Store, StoreError, rebuild

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from mailtls.store import Store

    data_dir, mode = Path(sys.argv[1]), sys.argv[2]
    store = Store(data_dir, fsync=True, sync_interval=0.01)
    i = 0
    while True:
        rec = store.append({"type": "loop", "run": "r", "pad": "x" * (i % 300)})
        print(rec["id"], flush=True)
        i += 1
        if mode == "torn" and i == 300:
            # what a write cut short by the kill leaves behind: a line without its end
            fd = os.open(data_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND)
            os.write(fd, b'{"id": 301, "type": "loop", "run": "r", "pad": "xxxx')
            print("torn", flush=True)
            time.sleep(60)
    """
)


def run_and_kill(data_dir: Path, mode: str, min_lines: int) -> list[int]:
    """Start a child appending in a loop, SIGKILL it, return the ids it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while len(lines) < min_lines and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.strip() == "torn":
            break
    time.sleep(random.uniform(0, 0.02))  # kill at an arbitrary moment of the loop
    os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL
    lines += rest.split()
    return [int(x) for x in lines if x.isdigit()]


def good_ids(data_dir: Path) -> list[int]:
    raw = (data_dir / JOURNAL_NAME).read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line)["id"] for line in raw.splitlines()]


@pytest.mark.timeout(60)
def test_kill_9_mid_loop_loses_nothing_reported(tmp_path: Path) -> None:
    reported = run_and_kill(tmp_path, "loop", min_lines=2000)
    assert len(reported) >= 2000
    with Store(tmp_path, fsync=False) as store:
        ids = [r["id"] for r in store.query()]
        assert set(reported) <= set(ids)  # every line reported before the kill is there
        assert ids == list(range(1, len(ids) + 1))
        assert store.append({"type": "after"})["id"] == ids[-1] + 1
    assert good_ids(tmp_path) == [*ids, ids[-1] + 1]


@pytest.mark.timeout(60)
def test_kill_9_with_torn_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reported = run_and_kill(tmp_path, "torn", min_lines=10_000)
    assert reported == list(range(1, 301))
    torn_size = (tmp_path / JOURNAL_NAME).stat().st_size
    with caplog.at_level(logging.WARNING), Store(tmp_path, fsync=False) as store:
        assert "torn" in caplog.text
        stats = store.stats()
        assert stats.truncated_bytes == len(b'{"id": 301, "type": "loop", "run": "r", "pad": "xxxx')
        assert [r["id"] for r in store.query()] == reported
        assert store.append({"type": "after"})["id"] == 301
    assert good_ids(tmp_path) == list(range(1, 302))
    assert (tmp_path / JOURNAL_NAME).stat().st_size < torn_size + 200


def write_journal(data_dir: Path, n: int) -> list[dict[str, Any]]:
    with Store(data_dir, fsync=False) as store:
        return [store.append({"type": "t", "run": "r", "n": i}) for i in range(n)]


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id": 99, "type": "t"',  # no newline
        b"\x00" * 4096,  # a zero-filled region (lost data blocks after power loss)
        b"garbage\n",  # complete but not JSON
        b'{"type": "no id"}\n',  # JSON but not a record
        b"\x00\x00\x00\n",
    ],
)
def test_torn_or_invalid_last_line_is_cut(tmp_path: Path, tail: bytes) -> None:
    records = write_journal(tmp_path, 5)
    path = tmp_path / JOURNAL_NAME
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(tail)
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().truncated_bytes == len(tail)
        assert store.query() == records
    assert path.read_bytes() == good


def test_corrupt_middle_line_is_skipped_counted_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = write_journal(tmp_path, 6)
    path = tmp_path / JOURNAL_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"id": 3, "type": "t", "ru\n'  # damaged in the middle
    lines.insert(4, b'{"id": 2, "type": "duplicate id"}\n')  # an id going backwards
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    for f in tmp_path.glob(INDEX_NAME + "*"):
        f.unlink()
    with caplog.at_level(logging.WARNING), Store(tmp_path, fsync=False) as store:
        assert store.stats().corrupt_lines == 2
        assert store.stats().truncated_bytes == 0
        assert [r["id"] for r in store.query()] == [1, 2, 4, 5, 6]
        assert "corrupt line" in caplog.text
        assert store.append({"type": "next"})["id"] == 7
    assert path.stat().st_size > size  # nothing was truncated mid-file
    assert records[5]["id"] == 6


FILTERS: list[dict[str, Any]] = [
    {},
    {"run": "r1"},
    {"run": "r0", "step": 1},
    {"conns": ["c2", "c4"]},
    {"code": "CODE1"},
    {"types": ["auth"], "after_id": 50},
    {"limit": 7, "after_id": 3},
]


def fill(store: Store, n: int) -> None:
    for i in range(n):
        store.append(
            {
                "type": "auth" if i % 4 == 0 else "command",
                "run": f"r{i % 3}",
                "step": i % 2,
                "conn": f"c{i % 6}",
                "code": f"CODE{i % 5}" if i % 4 == 0 else None,
                "line": f"LINE {i}",
            }
        )


def test_rebuild_from_the_journal_equals_the_live_index(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 300)
        live = [store.query(**f) for f in FILTERS]
    stats = rebuild(tmp_path)
    assert stats.index_rebuilt == "" and stats.indexed_id == 300
    with Store(tmp_path, fsync=False) as store:
        assert [store.query(**f) for f in FILTERS] == live
        assert all(live)


def test_index_missing_or_corrupt_is_rebuilt(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 50)
        live = [store.query(**f) for f in FILTERS]
    for f in tmp_path.glob(INDEX_NAME + "*"):
        f.unlink()
    with Store(tmp_path, fsync=False) as store:
        assert [store.query(**f) for f in FILTERS] == live
    (tmp_path / INDEX_NAME).write_bytes(b"this is not a database" * 100)
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == "corrupt"
        assert [store.query(**f) for f in FILTERS] == live


def test_index_behind_catches_up_from_its_high_water_mark(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 40)
    old_index = tmp_path / "old.sqlite3"
    shutil.copy(tmp_path / INDEX_NAME, old_index)
    with Store(tmp_path, fsync=False) as store:
        fill(store, 40)
        live = [store.query(**f) for f in FILTERS]
    shutil.copy(old_index, tmp_path / INDEX_NAME)
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == ""  # caught up, not rebuilt
        assert [store.query(**f) for f in FILTERS] == live


def test_index_ahead_of_journal_is_rebuilt(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 30)
    path = tmp_path / JOURNAL_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:20]))  # the journal lost its last 10 lines (power loss)
    with Store(tmp_path, fsync=False) as store:
        assert "ahead" in store.stats().index_rebuilt
        assert [r["id"] for r in store.query()] == list(range(1, 21))
        assert store.append({"type": "x"})["id"] == 21


def test_replaced_journal_file_is_reindexed(tmp_path: Path) -> None:
    with Store(tmp_path, fsync=False) as store:
        fill(store, 30)
    path = tmp_path / JOURNAL_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b"LINE 5", b"LINE 5 (restored)")
    other = tmp_path / "restored.jsonl"
    other.write_bytes(b"".join(lines))
    os.replace(other, path)  # e.g. restored from a backup: another inode
    with Store(tmp_path, fsync=False) as store:
        assert store.stats().index_rebuilt == "journal file replaced"
        assert store.query(after_id=5, limit=1)[0]["line"] == "LINE 5 (restored)"


FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from mailtls.store import Store, StoreError

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    store = Store(Path(sys.argv[1]), fsync=False)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, hard))
    n = 0
    try:
        while True:
            store.append({"type": "fill", "pad": "y" * 150})
            n += 1
    except StoreError as exc:
        print(n, exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    print(store.append({"type": "after"})["id"])
    store.close()
    """
)


@pytest.mark.timeout(60)
def test_failed_write_leaves_no_fragment(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split("\n")
    appended = int(out[0].split()[0])
    assert "cannot write journal" in out[0]
    assert int(out[1]) == appended + 1  # the failed append consumed no id
    assert good_ids(tmp_path) == list(range(1, appended + 2))  # every line whole


def test_oversized_middle_line_is_skipped(tmp_path: Path) -> None:
    write_journal(tmp_path, 3)
    path = tmp_path / JOURNAL_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1, b'{"id": 2, "junk": "' + b"z" * (5 * 1024 * 1024) + b'"}\n')
    path.write_bytes(b"".join(lines))
    with Store(tmp_path, fsync=False, reindex=True) as store:
        assert store.stats().corrupt_lines == 1
        assert [r["n"] for r in store.query()] == [0, 1, 2]


def test_unusable_data_dir_is_a_store_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StoreError, match="cannot use data directory"):
        Store(not_a_dir, fsync=False)
