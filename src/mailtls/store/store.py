"""``Store``: the journal, its group-committed fsync, the SQLite index, subscribers, compaction.

Threads and locks (taken in this order, never the reverse):
- ``_compact_lock``: one compaction (``delete_run``/``prune``) at a time;
- ``_append_lock``: id assignment + journal write + queueing, so ids follow file order;
- ``_db_lock``: every use of the SQLite connection (the indexer thread and callers).
The hot path (``append``) takes only ``_append_lock`` and, for subscribers, ``_notify_lock``.
Two daemon threads: ``journal-fsync`` (``GroupCommitter``) and ``store-indexer`` (moves queued
rows into SQLite every ``index_interval`` seconds). Subscribers are called synchronously by the
appending thread, in id order, outside the other locks; an append made by a subscriber is
delivered after the current record has reached every subscriber.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mailtls.store.encoding import encode_line
from mailtls.store.index import Index, Mark, RawRow, Row, clean_row, index_files, row_of
from mailtls.store.journal import (
    MAX_LINE_BYTES,
    GroupCommitter,
    Ident,
    Journal,
    JournalError,
    JournalFull,
    ReadStats,
    SegmentMoved,
    first_record,
    id_ending_in,
    ident_of,
    journal_files,
    read_records,
    sealed_segments,
    sync_directory,
)

log = logging.getLogger(__name__)

JOURNAL_NAME = "events.jsonl"
INDEX_NAME = "index.sqlite3"
LOCK_NAME = "store.lock"
COMPACTED_TYPE = "store_compacted"
_BATCH = 5000

_encode = json.JSONEncoder(separators=(",", ":")).encode
Subscriber = Callable[[dict[str, Any]], None]
Transform = Callable[[dict[str, Any]], dict[str, Any] | None]


class StoreError(Exception):
    """The store cannot do what was asked (directory in use, disk error, closed)."""


class StoreClosedError(StoreError):
    pass


class StoreFull(StoreError, OSError):
    """The data disk is full (or below the free-space floor): nothing could be recorded now.

    Also an ``OSError`` (``ENOSPC``), so that callers that must not import the store (the mail
    I/O shell) can answer with their protocol's temporary failure."""

    def __init__(self, message: str) -> None:
        OSError.__init__(self, errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class StoreStats:
    last_id: int  # the last id handed out
    pending: int  # appended, not yet in the index
    indexed_id: int  # high-water mark of the index
    syncs: int  # fdatasync calls made by the group committer
    sync_errors: int
    corrupt_lines: int  # corrupt journal lines skipped by the last full or partial read
    truncated_bytes: int  # torn tail cut off when the journal was opened
    index_rebuilt: str  # why the index was rebuilt on open ("" when it was caught up)
    spilled: bool = False  # the index lags beyond its queue: the backlog waits in the journal
    dropped: int = 0  # unbound records not recorded while space was low
    low_space: bool = False


class _DirLock:
    """An exclusive ``flock`` on ``DATA_DIR/store.lock``: one writer per data directory."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / LOCK_NAME
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StoreError(f"{data_dir} is in use by another mailtls store") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class Store:
    """The event store of one data directory (see the package docstring for the semantics)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: bool = True,
        sync_interval: float = 0.05,
        index_interval: float = 0.2,
        reindex: bool = False,
        index_queue: int = 20_000,
        segment_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir_lock = _DirLock(self.data_dir)
        except OSError as exc:
            raise StoreError(f"cannot use data directory {data_dir}: {exc.strerror}") from None
        try:
            self._journal = Journal(self.data_dir / JOURNAL_NAME)
        except (JournalError, OSError) as exc:
            self._dir_lock.release()
            raise StoreError(f"cannot open the journal: {exc}") from None
        try:
            self._segment_step = self._segment_bytes = max(1, segment_bytes)
            self._open(fsync, sync_interval, index_interval, reindex, index_queue)
        except BaseException:
            self._journal.close()
            self._dir_lock.release()
            raise

    def _open(
        self,
        fsync: bool,
        sync_interval: float,
        index_interval: float,
        reindex: bool,
        index_queue: int,
    ) -> None:
        self._next_id = self._journal.last_id + 1
        self._closed = False
        self._append_lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._notify_lock = threading.Lock()
        self._notifying: int | None = None  # thread id delivering the outbox
        self._outbox: deque[dict[str, Any]] = deque()
        self._subscribers: dict[int, Subscriber] = {}
        self._subscriber_keys = itertools.count()
        self._subscriber_list: tuple[Subscriber, ...] = ()
        # (raw row, offset after it, its segment)
        self._pending: deque[tuple[RawRow, int, Ident]] = deque()
        # The index queue is bounded: past ``_queue_cap`` rows the store "spills": new rows wait
        # in the journal only and the indexer reads them back from there; meanwhile the rows
        # that name a run or a code are also kept in ``_tail`` (bounded too) for queries.
        self._queue_cap = max(1, index_queue)
        self._spilled = False
        self._tail: deque[tuple[RawRow, int, Ident]] = deque()
        self._spill_lock = threading.Lock()  # one journal read-back (or compaction) at a time
        self._index_error = ""  # the index error last logged (logged once per streak)
        self._low_space = False  # below the free-space floor: unbound records are dropped
        self._compacting = False  # no segment is sealed during a compaction
        self._dropped = 0
        self._ident = self._journal.identity()
        self._corrupt = 0
        if reindex:
            for f in index_files(self.data_dir / INDEX_NAME):
                f.unlink(missing_ok=True)
        try:
            self._index = Index(self.data_dir / INDEX_NAME)
            self._rebuilt = self._catch_up() or self._index.rebuilt_reason
            self._mark = self._index.mark()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open index {self.data_dir / INDEX_NAME}: {exc}") from None
        self._committer = GroupCommitter(self._journal.sync, sync_interval) if fsync else None
        self._stop = threading.Event()
        self._index_interval = index_interval
        self._indexer = threading.Thread(target=self._index_loop, name="store-indexer", daemon=True)
        self._indexer.start()

    # --- opening: bring the index up to the journal -------------------------------------------

    def _catch_up(self) -> str:
        """Ingest what the index lacks; returns why it started from empty ("" when it did not)."""
        mark = self._index.mark()
        where = next(
            (p for p in journal_files(self._journal.path) if ident_of(p) == (mark.dev, mark.ino)),
            None,
        )
        reason = ""
        if where is None and mark.last_id:
            reason = "journal file replaced"
        elif where is not None and id_ending_in(where, mark.offset) != mark.last_id:
            reason = "index ahead of or inconsistent with the journal"
        elif mark.last_id == 0 and self._index.count():
            reason = "index has rows but no high-water mark"
        if reason:
            log.warning("index %s: %s; rebuilding it from the journal", self._index.path, reason)
        if reason or where is None:
            mark = Mark()
            self._index.reset(mark)
        stats = ReadStats()
        for batch, end, ident in self._journal_batches(mark, stats):
            self._index.insert(batch, Mark(batch[-1][0], end, *ident))
        self._corrupt = stats.corrupt
        if stats.records or stats.corrupt:
            log.info(
                "index %s: ingested %d records from the journal (%d corrupt lines skipped)",
                self._index.path,
                stats.records,
                stats.corrupt,
            )
        return reason

    def _files_after(self, mark: Mark) -> list[tuple[Path, Ident, int]]:
        """The segments holding what follows ``mark``: (path, identity, start offset)."""
        files = [(p, i) for p in journal_files(self._journal.path) if (i := ident_of(p))]
        for n, (path, ident) in enumerate(files):
            if ident == (mark.dev, mark.ino):
                return [(path, ident, mark.offset), *((p, i, 0) for p, i in files[n + 1 :])]
        return [(p, i, 0) for p, i in files]  # a mark of no segment: from the start

    def _journal_batches(
        self,
        mark: Mark,
        stats: ReadStats,
        reached: list[tuple[Ident, int]] | None = None,
        until: tuple[Ident, int] | None = None,
    ) -> Iterator[tuple[list[Row], int, Ident]]:
        """The journal's records after ``mark`` as index rows, in batches with the end offset
        and the segment of their last row. A segment sealed while it is read is followed to
        its new name. ``reached`` gets (segment, offset) of the last complete line read;
        ``until`` (segment, offset) stops there (the active file grows while it is read)."""
        last_id, position = mark.last_id, mark
        files = self._files_after(mark)
        while files:
            path, ident, start = files.pop(0)
            batch: list[Row] = []
            part = ReadStats()
            limit = until[1] if until is not None and until[0] == ident else None
            if limit is not None:
                files = []  # nothing after the bound
            try:
                for record, line, end in read_records(path, start, part, last_id, ident, limit):
                    batch.append(row_of(record, line.decode("utf-8")))
                    last_id = record["id"]
                    if len(batch) >= _BATCH:
                        yield batch, end, ident
                        batch = []
            except SegmentMoved:  # sealed (renamed) before it was opened: look it up again
                files = self._files_after(Mark(last_id, start, *ident))
                continue
            finally:
                stats.records += part.records
                stats.corrupt += part.corrupt
            if batch:
                yield batch, part.end_offset, ident
            position = Mark(last_id, part.end_offset, *ident)
        if reached is not None:
            reached.append(((position.dev, position.ino), position.offset))

    # --- the hot path ---------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Journal ``record`` (setting ``id`` and, when absent, ``ts``), then notify subscribers.

        The line is handed to the kernel before this returns; durability follows within about
        ``sync_interval``. Raises ``StoreError`` when the journal cannot be written (nothing is
        left behind in the file then), ``TypeError``/``ValueError`` for a record that is not
        JSON-serialisable or longer than ``MAX_LINE_BYTES``.
        """
        self.append_many((record,))
        return record

    def append_many(self, records: Sequence[dict[str, Any]]) -> None:
        """``append`` for several records at once, in order, with one ``os.write``: all of them
        or (on any error, raised as ``append`` raises it) none of them reach the journal."""
        if not records:
            return
        with self._append_lock:
            if self._closed:
                raise StoreClosedError("the store is closed")
            if self._low_space:
                kept = [r for r in records if _names_a_run(r)]
                self._dropped += len(records) - len(kept)
                records = kept
                if not records:
                    return
            rid = self._next_id
            lines: list[bytes] = []
            stamps: list[Any] = []
            for record in records:
                line, ts = encode_line(rid + len(lines), record)
                if len(line) >= MAX_LINE_BYTES:
                    raise ValueError(
                        f"record of {len(line)} bytes is longer than the journal allows"
                    )
                lines.append(line)
                stamps.append(ts)
            lines.append(b"")
            start = self._journal.size
            try:
                self._journal.write(b"\n".join(lines))
            except JournalFull as exc:
                raise StoreFull(str(exc)) from None
            except JournalError as exc:
                raise StoreError(str(exc)) from None
            self._next_id = rid + len(records)
            pending = self._pending
            room = 0 if self._spilled else self._queue_cap - len(pending)
            ident = self._ident
            end = start
            for record, line, ts in zip(records, lines, stamps, strict=False):
                record["id"] = rid
                record["ts"] = ts
                end += len(line) + 1
                get = record.get
                # columns are captured now (the caller may reuse the dict), checked by the indexer
                raw = (
                    rid,
                    ts,
                    get("type"),
                    get("run"),
                    get("step"),
                    get("conn"),
                    get("code"),
                    line,
                )
                rid += 1
                if room > 0:
                    room -= 1
                    pending.append((raw, end, ident))
                    continue
                self._spilled = True  # beyond the queue: the journal holds the backlog
                named = raw[3] is not None or raw[6] is not None
                if named and len(self._tail) < self._queue_cap:
                    self._tail.append((raw, end, ident))
            if self._subscriber_list:
                self._outbox.extend(records)
            if self._journal.size >= self._segment_bytes and not self._compacting:
                self._rotate()
        if self._committer is not None:
            self._committer.mark_dirty()
        if self._outbox:
            self._deliver()

    def _deliver(self) -> None:
        if self._notifying == threading.get_ident():
            return  # an append from a subscriber: the running loop below delivers it next
        with self._notify_lock:
            self._notifying = threading.get_ident()
            try:
                while self._outbox:
                    record = self._outbox.popleft()
                    for fn in self._subscriber_list:
                        try:
                            fn(record)
                        except Exception:  # a subscriber's bug must not stop the journal
                            log.exception(
                                "store subscriber %r failed on event %s", fn, record["id"]
                            )
            finally:
                self._notifying = None

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn(record)`` for every later record, in id order. Returns the unsubscribe.

        ``fn`` runs in the appending thread, before ``append`` returns: it must be quick, must
        not modify the record, and must not wait for a lock that an appending thread may hold
        (appends from other threads wait until it returns). It may call ``append``.
        """
        key = next(self._subscriber_keys)
        self._subscribers[key] = fn
        self._subscriber_list = tuple(self._subscribers.values())

        def unsubscribe() -> None:
            if self._subscribers.pop(key, None) is not None:
                self._subscriber_list = tuple(self._subscribers.values())

        return unsubscribe

    # --- the index ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Move every queued record into the index now, including a backlog that waits in the
        journal (a no-op once closed)."""
        with self._db_lock:
            if self._closed:
                return
            self._flush_locked()
        if self._spilled:
            self._read_back()

    def _flush_locked(self, limit: int | None = None) -> int:
        """Index up to ``limit`` queued rows (all when None); returns how many. Holds _db_lock."""
        n = len(self._pending) if limit is None else min(limit, len(self._pending))
        if not n:
            return 0
        batch = [self._pending.popleft() for _ in range(n)]
        rows = [clean_row(raw) for raw, _, _ in batch]
        try:
            self._insert(rows, batch[-1][1], batch[-1][2])
        except StoreError:
            self._pending.extendleft(reversed(batch))
            raise
        return n

    def _insert(self, rows: list[Row], end: int, ident: Ident) -> None:
        mark = Mark(rows[-1][0], end, *ident)
        try:
            self._index.insert(rows, mark)
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"cannot write the index: {exc}") from None
        self._mark = mark

    def _read_back(self, *, hold: str = "") -> None:
        """Index the backlog that waits in the journal (after a spill), then leave spill mode.

        ``hold``: the locks the caller holds: "" none (each batch takes ``_db_lock`` alone and
        the indexer stops early when the store closes: the next open catches up), "spill"
        ``_spill_lock`` (a compaction's start: one pass only, so that a steady flood of appends
        cannot keep it going), "all" the spill, append and db locks (a compaction's final step,
        which reads what is left)."""
        spill = contextlib.nullcontext() if hold else self._spill_lock
        passes = 1 if hold == "spill" else None  # appends go on: one pass, the rest comes later
        with spill:
            while self._spilled and passes != 0:
                passes = None if passes is None else passes - 1
                with contextlib.nullcontext() if hold == "all" else self._db_lock:
                    self._check_open()
                    self._flush_locked()  # the rows queued before the spill come first
                reached: list[tuple[Ident, int]] = []
                started = time.monotonic()
                until = (self._ident, self._journal.size) if hold == "spill" else None
                batches = self._journal_batches(self._mark, ReadStats(), reached, until)
                for rows, end, ident in batches:
                    with contextlib.nullcontext() if hold == "all" else self._db_lock:
                        self._check_open()
                        self._insert(rows, end, ident)
                    if not hold:
                        if self._stop.is_set():
                            return
                        self._yield_gil(started)
                        started = time.monotonic()
                with contextlib.nullcontext() if hold == "all" else self._append_lock:
                    if reached == [(self._ident, self._journal.size)]:
                        self._spilled = False
                        self._tail.clear()

    def _rotate(self) -> None:
        """Seal the active segment (``_append_lock`` held). A failure is logged and tried again
        one segment later; appends go on into the same file meanwhile."""
        try:
            self._journal.rotate()
        except OSError as exc:
            log.error("cannot seal a journal segment (%s); appending on", exc.strerror)
            self._segment_bytes += self._segment_step
            return
        self._segment_bytes = self._segment_step
        self._ident = self._journal.identity()

    def _index_loop(self) -> None:
        delay = self._index_interval
        while not self._stop.wait(delay):
            try:
                self._index_some()
            except StoreClosedError:
                return
            except StoreError as exc:
                if str(exc) != self._index_error:
                    log.error("%s; the records stay in the journal, retrying", exc)
                    self._index_error = str(exc)
                delay = min(5.0, delay * 2)
                continue
            if self._index_error:
                log.info("index writes work again")
                self._index_error = ""
            delay = self._index_interval

    def _index_some(self) -> None:
        """Drain the queue in batches (queries interleave between them), then any spill."""
        while True:
            started = time.monotonic()
            with self._db_lock:
                self._check_open()
                if self._flush_locked(_BATCH) < _BATCH:
                    break
            self._yield_gil(started)
        if self._spilled:
            self._read_back()

    def _yield_gil(self, started: float) -> None:
        """Sleep as long as the last batch worked: a lagging indexer takes at most about half
        of the interpreter from the event loop (its backlog waits in the journal meanwhile)."""
        self._stop.wait(min(0.5, time.monotonic() - started))

    def query(
        self,
        *,
        run: str | None = None,
        step: int | None = None,
        conns: Iterable[str] | None = None,
        code: str | None = None,
        types: Iterable[str] | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Records matching every given filter, ordered by id.

        Sees every earlier append without waiting for the indexer: the index, then the queued
        rows in memory. While the index lags beyond its queue (spilled), the records that wait in
        the journal only are seen when they name a run or a code (a connection's other records
        appear once indexed)."""
        conn_list = _string_list(conns, "conns")
        type_list = _string_list(types, "types")
        with self._db_lock:
            self._check_open()
            try:
                texts = self._index.select(
                    run=run,
                    step=step,
                    conns=conn_list,
                    code=code,
                    types=type_list,
                    after_id=after_id,
                    limit=limit,
                )
            except sqlite3.Error as exc:
                raise StoreError(f"index query failed: {exc}") from None
            indexed = self._mark.last_id
            queued = _snapshot(self._pending)
            tail = _snapshot(self._tail) if self._spilled else []
        out = [json.loads(t) for t in texts]
        if limit is not None and len(out) >= limit:
            return out
        match = _RowFilter(run, step, conn_list, code, type_list, max(after_id, indexed))
        for raw, _, _ in itertools.chain(queued, tail):
            if match(raw):
                out.append(json.loads(raw[7]))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def records_since(self, after_id: int, limit: int | None = None) -> list[dict[str, Any]]:
        """Every record with an id above ``after_id``, in id order (for live streams that
        resume: a stream replays these, then follows ``subscribe``)."""
        return self.query(after_id=after_id, limit=limit)

    def export_jsonl(self, out: BinaryIO, *, run: str | None = None) -> int:
        """Write the (matching) records to ``out`` as JSON lines; returns how many."""
        self.flush()
        written = 0
        after = 0
        while True:
            with self._db_lock:
                self._check_open()
                try:
                    texts = self._index.select(run=run, after_id=after, limit=1000)
                except sqlite3.Error as exc:
                    raise StoreError(f"index query failed: {exc}") from None
            if not texts:
                return written
            out.write("".join(t + "\n" for t in texts).encode())
            written += len(texts)
            after = int(json.loads(texts[-1])["id"])

    # --- free space -----------------------------------------------------------------------------

    @property
    def low_space(self) -> bool:
        return self._low_space

    def set_low_space(self, low: bool) -> None:
        """Below the free-space floor (``low``): records that name neither a run nor a session
        code are dropped (and counted) instead of journalled; run-bound recording goes on."""
        self._low_space = low

    # --- compaction -----------------------------------------------------------------------------

    def delete_run(self, run_id: str, *, code: str | None = None) -> int:
        """Remove the run's records (and, with ``code``, those presenting that session code and
        every record of the connections that presented it, bound or not) from the journal and
        the index; returns how many were removed."""
        conns: set[str] = set()
        if code is not None:
            conns = {c for r in self.query(code=code) if isinstance(c := r.get("conn"), str)}

        def keep(record: dict[str, Any]) -> dict[str, Any] | None:
            if code is not None and record.get("code") == code:
                conn = record.get("conn")
                if isinstance(conn, str):
                    conns.add(conn)  # a connection still open: its later records go too
                return None
            if record.get("run") == run_id or record.get("conn") in conns:
                return None
            return record

        def holding(segments: list[_Segment]) -> list[_Segment]:
            """The sealed segments that hold one of the records to remove (by the index)."""
            ids = [r["id"] for r in self.query(run=run_id)]
            if code is not None:
                ids += [r["id"] for r in self.query(code=code)]
                ids += [r["id"] for r in self.query(conns=sorted(conns))] if conns else []
            return [seg for seg in segments if any(seg.first <= i < seg.after for i in ids)]

        removed, _ = self._compact(keep, "delete_run", holding)
        return removed

    def prune(self, older_than: float, transform: Transform) -> int:
        """Rewrite records with ``ts < older_than`` through ``transform`` (None drops one);
        returns how many records were changed or dropped. Ids are kept."""

        def apply(record: dict[str, Any]) -> dict[str, Any] | None:
            ts = record.get("ts")
            if not isinstance(ts, int | float) or ts >= older_than:
                return record
            result = transform(json.loads(_encode(record)))  # the transform gets its own copy
            if result is None:
                return None
            if result == record:
                return record
            result["id"] = record["id"]
            return result

        def older(segments: list[_Segment]) -> list[_Segment]:
            return [seg for seg in segments if seg.first_ts < older_than]

        removed, changed = self._compact(apply, "prune", older)
        return removed + changed

    def _compact(
        self, decide: Transform, reason: str, choose: Callable[[list[_Segment]], list[_Segment]]
    ) -> tuple[int, int]:
        """Rewrite the journal through ``decide`` (same object: keep, None: drop, other: replace).

        Only the sealed segments ``choose`` picks are read and rewritten, one at a time (each
        needs free space for its own size only; one that does not change is left as it is),
        then the active segment: its bulk is copied while appends go on, the rest with appends
        paused, then the new file is synced and renamed over it, and the index follows. No
        segment is sealed meanwhile. A crash at any point leaves every segment whole; the index
        notices a rewritten segment (inode) and rebuilds.
        """
        marker: dict[str, Any] | None = None
        with self._compact_lock:
            self._check_open()
            self._compacting = True
            tmp = self.data_dir / (JOURNAL_NAME + ".compact")
            result = _Rewrite(decide)
            try:
                with self._spill_lock:
                    self._read_back(hold="spill")  # the index covers the sealed segments
                    with self._db_lock:
                        self._flush_locked()
                    for segment in choose(self._segments()):
                        removed, changed = self._rewrite_sealed(segment.path, decide)
                        result.elsewhere[0] += removed
                        result.elsewhere[1] += changed
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                    with os.fdopen(os.open(tmp, flags, 0o600), "wb") as out:
                        end = result.copy(self._journal.path, 0, out, self._journal.size)
                        self._read_back(hold="spill")  # the bulk, with appends going on
                        with self._append_lock, self._db_lock:
                            self._check_open()
                            result.copy(self._journal.path, end, out)
                            marker = self._marker(result, reason, out)
                            out.flush()
                            os.fsync(out.fileno())
                            self._flush_locked()
                            self._read_back(hold="all")  # the index is whole before the swap
                            self._journal.swap(tmp)
                            self._ident = self._journal.identity()
                            self._after_swap(result, marker)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StoreFull(f"cannot compact the journal: {exc.strerror}") from None
                raise StoreError(f"cannot compact the journal: {exc}") from None
            except (JournalError, sqlite3.Error) as exc:
                raise StoreError(f"cannot compact the journal: {exc}") from None
            finally:
                self._compacting = False
                tmp.unlink(missing_ok=True)  # gone already after a successful swap
        if marker is not None:
            self._deliver()
        if result.corrupt:
            log.warning("compaction dropped %d corrupt journal lines", result.corrupt)
        return len(result.removed) + result.elsewhere[0], len(result.changed) + result.elsewhere[1]

    def _segments(self) -> list[_Segment]:
        """The sealed segments with the first id and time of each (and the next one's id)."""
        out: list[_Segment] = []
        for path in sealed_segments(self._journal.path):
            first = first_record(path)
            if first is None:
                continue
            ts = first.get("ts")
            out.append(_Segment(path, int(first["id"]), ts if isinstance(ts, int | float) else 0))
        for seg, nxt in itertools.pairwise(out):
            seg.after = nxt.first
        active = first_record(self._journal.path)
        if out and active is not None:
            out[-1].after = int(active["id"])
        return out

    def _rewrite_sealed(self, path: Path, decide: Transform) -> tuple[int, int]:
        """Rewrite one sealed segment through ``decide`` when that changes it (``_spill_lock``
        held: no read-back reads it meanwhile); the index follows."""
        part = _Rewrite(decide)
        tmp = path.with_name(path.name + ".compact")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            with os.fdopen(os.open(tmp, flags, 0o600), "wb") as out:
                part.copy(path, 0, out)
                if not part.removed and not part.changed:
                    return 0, 0
                out.flush()
                os.fsync(out.fileno())
            if tmp.stat().st_size:
                os.replace(tmp, path)
            else:
                path.unlink()  # nothing left in it
            sync_directory(path.parent)
            with self._db_lock:
                self._check_open()
                self._index.rewrite(part.removed, part.changed, self._mark)
        finally:
            tmp.unlink(missing_ok=True)
        if part.corrupt:
            log.warning("compaction dropped %d corrupt lines of %s", part.corrupt, path.name)
        return len(part.removed), len(part.changed)

    def _marker(self, result: _Rewrite, reason: str, out: BinaryIO) -> dict[str, Any] | None:
        """A record saying what the compaction did; it also keeps ids increasing after a restart
        when the newest records were removed."""
        removed = len(result.removed) + result.elsewhere[0]
        changed = len(result.changed) + result.elsewhere[1]
        if not removed and not changed:
            return None
        rid = self._next_id
        marker: dict[str, Any] = {
            "id": rid,
            "ts": time.time(),
            "type": COMPACTED_TYPE,
            "reason": reason,
            "removed": removed,
            "changed": changed,
        }
        text = _encode(marker)
        out.write((text + "\n").encode())
        result.last_id = rid
        result.marker_row = row_of(marker, text)
        return marker

    def _after_swap(self, result: _Rewrite, marker: dict[str, Any] | None) -> None:
        size = self._journal.size
        if marker is not None:
            self._next_id = marker["id"] + 1
            if self._subscriber_list:
                self._outbox.append(dict(marker))
        changed = list(result.changed)
        if result.marker_row is not None:
            changed.append(result.marker_row)
        last_id = self._journal.id_ending_at(size)
        self._mark = Mark(last_id or 0, size, *self._ident)
        self._index.rewrite(result.removed, changed, self._mark)

    # --- lifecycle ------------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        indexed = self._mark.last_id if not self._closed else 0
        return StoreStats(
            last_id=self._next_id - 1,
            pending=len(self._pending),
            indexed_id=indexed,
            syncs=self._committer.syncs if self._committer else 0,
            sync_errors=self._committer.errors if self._committer else 0,
            corrupt_lines=self._corrupt,
            truncated_bytes=self._journal.recovery.truncated_bytes,
            index_rebuilt=self._rebuilt,
            spilled=self._spilled,
            dropped=self._dropped,
            low_space=self._low_space,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def close(self) -> None:
        """Index everything, sync the journal one last time, stop the threads. Idempotent."""
        with self._append_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._indexer.join()
        with self._db_lock:
            try:
                self._flush_locked()  # the queue is bounded; a spilled backlog waits for next open
            except StoreError as exc:
                log.error("%s; the index will catch up from the journal on next open", exc)
            self._index.close()
        if self._committer is not None:
            self._committer.close()
        self._journal.close()
        self._dir_lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Rewrite:
    """State of one compaction pass: what was removed, what changed, corrupt lines dropped."""

    def __init__(self, decide: Transform) -> None:
        self.decide = decide
        self.removed: list[int] = []
        self.changed: list[Row] = []
        self.corrupt = 0
        self.last_id = 0
        self.marker_row: Row | None = None
        self.elsewhere = [0, 0]  # removed, changed in sealed segments

    def copy(self, path: Path, start: int, out: BinaryIO, limit: int | None = None) -> int:
        """Copy complete lines from ``start`` (up to ``limit``) through ``decide``; returns the
        offset reached."""
        stats = ReadStats()
        for record, line in _records(path, start, stats, self.last_id, limit):
            self.last_id = record["id"]
            new = self.decide(record)
            if new is None:
                self.removed.append(record["id"])
            elif new is record:
                out.write(line + b"\n")
            else:
                text = _encode(new)
                out.write((text + "\n").encode())
                self.changed.append(row_of(new, text))
        self.corrupt += stats.corrupt
        return stats.end_offset


def _records(
    path: Path, start: int, stats: ReadStats, after_id: int, limit: int | None = None
) -> Iterator[tuple[dict[str, Any], bytes]]:
    for record, line, _ in read_records(path, start, stats, after_id=after_id, limit=limit):
        yield record, line


class _RowFilter:
    """The index's ``select`` filters, applied to queued raw rows (same columns, same types)."""

    __slots__ = ("after", "code", "conns", "run", "step", "types")

    def __init__(
        self,
        run: str | None,
        step: int | None,
        conns: list[str] | None,
        code: str | None,
        types: list[str] | None,
        after: int,
    ) -> None:
        self.run, self.step, self.code, self.after = run, step, code, after
        self.conns = None if conns is None else frozenset(conns)
        self.types = None if types is None else frozenset(types)

    def __call__(self, raw: RawRow) -> bool:
        rid, _ts, type_, run, step, conn, code, _line = raw
        if rid <= self.after:
            return False
        if self.run is not None and (type(run) is not str or run != self.run):
            return False
        if self.step is not None and (type(step) is not int or step != self.step):
            return False
        if self.code is not None and (type(code) is not str or code != self.code):
            return False
        if self.conns is not None and (type(conn) is not str or conn not in self.conns):
            return False
        return self.types is None or (type(type_) is str and type_ in self.types)


@dataclass(slots=True)
class _Segment:
    """A sealed segment: its ids are ``first`` <= id < ``after``; ``first_ts`` its first time."""

    path: Path
    first: int
    first_ts: float
    after: float = float("inf")


def _snapshot(rows: deque[tuple[RawRow, int, Ident]]) -> list[tuple[RawRow, int, Ident]]:
    """A copy of a deque another thread appends to (``list`` copies it without releasing the
    GIL; the retry only guards against an interpreter that would)."""
    for _ in range(100):
        try:
            return list(rows)
        except RuntimeError:
            continue
    return []


def _names_a_run(record: dict[str, Any]) -> bool:
    """Whether a record stays recorded below the free-space floor: run records, events of
    run-bound connections, and events presenting a session code."""
    return record.get("run") is not None or record.get("code") is not None


def _string_list(values: Iterable[str] | None, name: str) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be an iterable of strings, not a single string")
    return list(values)


def rebuild(data_dir: Path) -> StoreStats:
    """Drop the index of ``data_dir`` and rebuild it from the journal (the store must be closed
    elsewhere: this takes the directory lock)."""
    with Store(Path(data_dir), fsync=False, reindex=True) as store:
        return store.stats()
