"""Store durability: fdatasync is group-committed by a thread, close() syncs, fsync=False never."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailtls.store import JOURNAL_NAME, Store


class SyncSpy:
    """Wraps the real os.fdatasync; records (monotonic time, file size) of every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.calls: list[tuple[float, int]] = []
        self.threads: list[str] = []
        self._real: Callable[[int], None] = os.fdatasync
        self._fail = fail
        monkeypatch.setattr(os, "fdatasync", self)

    def __call__(self, fd: int) -> None:
        self.calls.append((time.monotonic(), os.fstat(fd).st_size))
        self.threads.append(threading.current_thread().name)
        if self._fail:
            raise OSError(errno.EIO, "Input/output error")
        self._real(fd)


@pytest.mark.timeout(30)
def test_group_commit_under_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SyncSpy(monkeypatch)
    interval = 0.05
    with Store(tmp_path, fsync=True, sync_interval=interval) as store:
        start = time.monotonic()
        appends = 0
        while time.monotonic() - start < 0.6:
            store.append({"type": "load", "n": appends})
            appends += 1
        elapsed = time.monotonic() - start
        time.sleep(interval * 3)
        during = list(spy.calls)
    assert set(spy.threads[: len(during)]) == {"journal-fsync"}  # never on the appending thread
    assert appends > 20 * len(during)  # many appends per fdatasync
    assert 0.6 / interval / 3 <= len(during) <= elapsed / interval + 3
    starts = [t for t, _ in during]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= interval * 0.95  # at most one sync per interval
    assert max(gaps[:-1]) <= interval + 0.25  # and one per interval while dirty (lag bound)
    assert during[-1][1] == (tmp_path / JOURNAL_NAME).stat().st_size  # the tail became durable


def test_idle_store_does_not_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SyncSpy(monkeypatch)
    with Store(tmp_path, fsync=True, sync_interval=0.01) as store:
        store.append({"type": "one"})
        deadline = time.monotonic() + 5
        while not spy.calls and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        assert len(spy.calls) == 1  # nothing new, no sync


@pytest.mark.timeout(10)
def test_close_syncs_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SyncSpy(monkeypatch)
    store = Store(tmp_path, fsync=True, sync_interval=30.0)  # the thread would wait 30 s
    store.append({"type": "first"})
    time.sleep(0.05)
    for i in range(10):
        store.append({"type": "more", "n": i})
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    before = len(spy.calls)
    t0 = time.monotonic()
    store.close()
    assert time.monotonic() - t0 < 2  # close does not wait for the interval
    assert len(spy.calls) == before + 1
    assert spy.calls[-1][1] == size


def test_fsync_false_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SyncSpy(monkeypatch)
    with Store(tmp_path, fsync=False) as store:
        for i in range(100):
            store.append({"type": "x", "n": i})
        time.sleep(0.1)
    assert spy.calls == []


def test_sync_errors_are_logged_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    SyncSpy(monkeypatch, fail=True)
    with caplog.at_level(logging.ERROR), Store(tmp_path, sync_interval=0.01) as store:
        store.append({"type": "x"})
        for _ in range(500):
            if store.stats().sync_errors:
                break
            time.sleep(0.01)
        assert store.stats().sync_errors >= 1
        assert store.append({"type": "still works"})["id"] == 2
    assert "fdatasync failed" in caplog.text
