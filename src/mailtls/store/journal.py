"""The JSONL event journal: one writer, one JSON object per line, the record of what was seen.

Rules of this file:
- Lines are appended with one ``os.write`` on an ``O_APPEND`` descriptor; a failed or short
  write is cut back off (``ftruncate`` to the last known size) so a later line never glues onto
  a fragment.
- Every record is a JSON object with an integer ``id``, strictly increasing along the file.
- Opening recovers from ``kill -9``: a last line without its newline, or a last line that is not
  a record, is reported through ``logging`` and truncated away. Nothing in the middle of the file
  is ever truncated: readers skip a corrupt middle line with a warning and count it.
- ``fdatasync`` is group-committed by ``GroupCommitter``, a thread that syncs at most once per
  interval while there is unsynced data.
- Segments: the file being appended (``events.jsonl``, the *active* segment) is sealed once it
  reaches the store's segment size: synced, then renamed (same inode) to
  ``journal/<seq>.jsonl`` next to it, and a new empty active file takes its place on the same
  descriptor. The whole journal is the sealed segments in ``seq`` order, then the active one
  (``journal_files``); only the active one can have a torn tail.

Only the standard library; must not import anything else from ``mailtls``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line is refused on write and skipped on read
SEGMENTS_DIR = "journal"  # sealed segments, next to the active file
_CHUNK = 64 * 1024


class JournalError(Exception):
    """The journal cannot be opened, written or rewritten (an OS error, named)."""


class JournalFull(JournalError):
    """A write failed because the disk (or the quota) is full."""


class SegmentMoved(Exception):
    """The file at a path is not the segment expected (it was sealed or rewritten meanwhile)."""


Ident = tuple[int, int]  # (device, inode) of one segment file


def sealed_segments(active: Path) -> list[Path]:
    """The sealed segments next to the active file ``active``, oldest first."""
    try:
        entries = list((active.parent / SEGMENTS_DIR).iterdir())
    except FileNotFoundError:
        return []
    return sorted(p for p in entries if p.suffix == ".jsonl" and p.stem.isdigit())


def journal_files(active: Path) -> list[Path]:
    """Every segment of the journal whose active file is ``active``, in record order."""
    return [*sealed_segments(active), active]


def ident_of(path: Path) -> Ident | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def id_ending_at(fd: int, size: int, offset: int) -> int | None:
    """The id of the record whose line ends exactly at ``offset`` (0 for offset 0), or None."""
    if offset == 0:
        return 0
    if offset > size or os.pread(fd, 1, offset - 1) != b"\n":
        return None
    record = parse_record(_line_before(fd, offset)[1])
    return None if record is None else int(record["id"])


def id_ending_in(path: Path, offset: int) -> int | None:
    """``id_ending_at`` for a segment named by its path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return id_ending_at(fd, os.fstat(fd).st_size, offset)
    finally:
        os.close(fd)


def first_record(path: Path) -> dict[str, Any] | None:
    """The first good record of a segment (None when it has none)."""
    for record, _line, _end in read_records(path):
        return record
    return None


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The record in one journal line (newline optional), or None when it is not a record."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    rid = value.get("id")
    if type(rid) is not int or rid < 1:
        return None
    return value


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening the journal found: the last good id and what was cut off the tail."""

    last_id: int
    size: int
    truncated_bytes: int


def _last_newline(fd: int, end: int) -> int:
    """Offset of the last ``\\n`` strictly before ``end``, or -1."""
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def _line_before(fd: int, end: int) -> tuple[int, bytes]:
    """The line that ends with the newline at ``end - 1``: (its start offset, its bytes)."""
    start = _last_newline(fd, end - 1) + 1
    if end - start > MAX_LINE_BYTES:
        return start, b""
    return start, os.pread(fd, end - start, start)


def recover(fd: int, path: Path) -> Recovery:
    """Cut a torn tail off the journal open on ``fd`` and find the last good record id."""
    size = os.fstat(fd).st_size
    cut = 0
    if size and os.pread(fd, 1, size - 1) != b"\n":
        keep = _last_newline(fd, size) + 1
        log.warning(
            "journal %s: last line has no newline (torn write); truncating %d bytes",
            path,
            size - keep,
        )
        cut += size - keep
        size = keep
    if size:
        start, line = _line_before(fd, size)
        if parse_record(line) is None:
            log.warning(
                "journal %s: last line is not a valid record; truncating %d bytes",
                path,
                size - start,
            )
            cut += size - start
            size = start
    if cut:
        os.ftruncate(fd, size)
        os.fsync(fd)
    return Recovery(last_id=_last_id(fd, size, path), size=size, truncated_bytes=cut)


def _last_id(fd: int, size: int, path: Path) -> int:
    end = size
    while end > 0:
        start, line = _line_before(fd, end)
        record = parse_record(line)
        if record is not None:
            rid: int = record["id"]
            return rid
        log.warning("journal %s: corrupt line at offset %d skipped", path, start)
        end = start
    return 0


@dataclass(slots=True)
class ReadStats:
    """Counters filled while reading the journal."""

    records: int = 0
    corrupt: int = 0
    end_offset: int = 0


def read_records(
    path: Path,
    start: int = 0,
    stats: ReadStats | None = None,
    after_id: int = 0,
    ident: Ident | None = None,
    limit: int | None = None,
) -> Iterator[tuple[dict[str, Any], bytes, int]]:
    """Yield ``(record, line_without_newline, end_offset)`` for every good line from ``start``.

    A corrupt line (not JSON, not an object with a positive integer id, an id not above the
    previous one or ``after_id``, longer than ``MAX_LINE_BYTES``) is skipped with a warning and
    counted in ``stats.corrupt``. A last line without a newline is not yielded (a writer may be
    mid-line). ``stats.end_offset`` ends just after the last complete line read (good or corrupt).
    With ``ident``, ``SegmentMoved`` is raised when the file at ``path`` is another one. With
    ``limit``, reading stops at that offset (a file that grows while it is read).
    """
    stats = stats if stats is not None else ReadStats()
    stats.end_offset = start
    last_id = after_id
    try:
        f = path.open("rb")
    except FileNotFoundError:
        if ident is not None:
            raise SegmentMoved(path) from None
        return
    with f:
        if ident is not None:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != ident:
                raise SegmentMoved(path)
        f.seek(start)
        pos = start
        while limit is None or pos < limit:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if not line.endswith(b"\n"):
                if len(line) <= MAX_LINE_BYTES:
                    return  # unterminated tail
                pos += len(line) + _skip_rest_of_line(f)
                stats.end_offset = pos
                stats.corrupt += 1
                log.warning("journal %s: oversized line before offset %d skipped", path, pos)
                continue
            record = parse_record(line)
            if record is None or record["id"] <= last_id:
                stats.corrupt += 1
                log.warning("journal %s: corrupt line at offset %d skipped", path, pos)
                pos += len(line)
                stats.end_offset = pos
                continue
            pos += len(line)
            last_id = record["id"]
            stats.records += 1
            stats.end_offset = pos
            yield record, line[:-1], pos


def _skip_rest_of_line(f: Any) -> int:
    skipped = 0
    while True:
        part: bytes = f.readline(_CHUNK)
        skipped += len(part)
        if not part or part.endswith(b"\n"):
            return skipped


class Journal:
    """The open journal file: appends, size tracking, sync, and swapping in a rewritten file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {exc.strerror}") from None
        self.recovery = recover(self.fd, path)
        self.size = self.recovery.size
        self.last_id = self.recovery.last_id
        for segment in reversed(sealed_segments(path) if not self.last_id else []):
            fd = os.open(segment, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.last_id = _last_id(fd, os.fstat(fd).st_size, segment)
            finally:
                os.close(fd)
            if self.last_id:
                break

    def identity(self) -> tuple[int, int]:
        """(device, inode) of the current journal file: changes when a rewrite is swapped in."""
        st = os.fstat(self.fd)
        return st.st_dev, st.st_ino

    def write(self, data: bytes) -> None:
        """Hand ``data`` (whole lines) to the kernel; on failure cut the fragment and raise."""
        try:
            n = os.write(self.fd, data)
            while n < len(data):  # only on ENOSPC-like conditions; never leave a fragment
                more = os.write(self.fd, data[n:])
                if not more:
                    raise OSError(errno.EIO, "the kernel accepted no bytes")
                n += more
        except OSError as exc:
            self._cut_back()
            error = JournalFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else JournalError
            raise error(f"cannot write journal {self.path}: {exc.strerror}") from None
        self.size += n

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self.fd, self.size)
        except OSError as exc:
            log.error("journal %s: cannot cut a failed write back: %s", self.path, exc.strerror)

    def id_ending_at(self, offset: int) -> int | None:
        """The id of the record whose line ends exactly at ``offset`` (0 for offset 0), or None."""
        return id_ending_at(self.fd, self.size, offset)

    def rotate(self) -> Path:
        """Seal the active file as the next ``journal/<seq>.jsonl`` and start an empty one on
        the same descriptor number; returns the sealed segment's path."""
        directory = self.path.parent / SEGMENTS_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        existing = sealed_segments(self.path)
        target = directory / f"{int(existing[-1].stem) + 1 if existing else 1:08d}.jsonl"
        os.fsync(self.fd)
        os.rename(self.path, target)  # the same inode: readers holding it read on
        sync_directory(directory)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        new_fd = os.open(self.path, flags, 0o600)
        try:
            os.dup2(new_fd, self.fd)
        finally:
            os.close(new_fd)
        sync_directory(self.path.parent)
        self.size = 0
        return target

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def swap(self, new_path: Path) -> None:
        """Atomically replace the journal with ``new_path`` (complete, synced) and follow it.

        The descriptor number stays the same (``dup2``), so a thread syncing it concurrently
        never touches a closed or reused descriptor.
        """
        new_fd = os.open(new_path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.replace(new_path, self.path)
            sync_directory(self.path.parent)
            os.dup2(new_fd, self.fd)
        finally:
            os.close(new_fd)
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some filesystems cannot sync a directory
            raise
    finally:
        os.close(fd)


class GroupCommitter:
    """A thread that ``fdatasync``s the journal at most once per ``interval`` while dirty.

    ``mark_dirty()`` is the hot-path call: a flag test and, when the thread sleeps, one
    ``Event.set``. A record appended at time t is durable by about t + interval + sync time.
    A failed sync is logged (never retried as if it had worked) and counted.
    """

    def __init__(self, sync: Callable[[], None], interval: float) -> None:
        self._sync = sync
        self._interval = interval
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # one sync at a time (thread vs. close/flush)
        self.syncs = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="journal-fsync", daemon=True)
        self._thread.start()

    def mark_dirty(self) -> None:
        if not self._dirty.is_set():
            self._dirty.set()

    def sync_now(self) -> None:
        with self._lock:
            self._dirty.clear()
            self._do_sync()

    def _do_sync(self) -> None:
        try:
            self._sync()
            self.syncs += 1
        except OSError as exc:
            self.errors += 1
            log.error("journal fdatasync failed: %s", exc.strerror)

    def _run(self) -> None:
        last = 0.0
        while True:
            self._dirty.wait()
            delay = last + self._interval - time.monotonic()
            if self._stopping.wait(delay) if delay > 0 else self._stopping.is_set():
                return  # close() makes the final sync
            with self._lock:
                self._dirty.clear()
                self._do_sync()
            last = time.monotonic()

    def close(self) -> None:
        """Stop the thread, then sync once more (everything written so far becomes durable)."""
        self._stopping.set()
        self._dirty.set()
        self._thread.join()
        self.sync_now()
