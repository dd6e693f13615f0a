"""The event store: the JSONL journal (the record) and its SQLite index (DESIGN §7).

``Store(data_dir)`` owns ``DATA_DIR/events.jsonl`` and ``DATA_DIR/index.sqlite3``:
- ``append(record)`` gives the record the next id (continuing after a restart) and a ``ts`` when
  it has none, hands one JSON line to the kernel (``os.write`` on an ``O_APPEND`` descriptor)
  before returning, calls the subscribers, and queues the record for the index. ``fdatasync`` is
  group-committed by a thread at most every ``sync_interval`` (``fsync=False`` disables it).
  ``append_many(records)`` does the same for several records with one ``os.write`` (all or
  none). Lines are encoded by ``orjson`` when it is installed, else by ``json`` (``encoding``).
- The index holds ``id``, ``ts``, ``type``, ``run``, ``step``, ``conn``, ``code`` as columns and
  the whole record as JSON; a thread ingests queued records every ~200 ms, in batches. A query
  never waits for that backlog: it reads the index, then filters the queued rows in memory, so
  it sees every earlier append. The queue is bounded (``index_queue`` rows): beyond it the store
  *spills*: the backlog waits in the journal and the indexer reads it back from there (while
  spilled, a query sees the unindexed records that name a run or a code; the others once
  indexed). ``flush()`` indexes everything now. The index has a high-water mark (last id,
  journal offset, journal inode) and is rebuilt from the journal when it is missing, corrupt,
  ahead or of another file (also ``rebuild(data_dir)``). An index error is logged once (with its
  cause) and retried with a growing delay; the records wait in the journal meanwhile.
- A full disk raises ``StoreFull`` (a ``StoreError`` and an ``OSError`` with ``ENOSPC``).
  Below the free-space floor (``set_low_space(True)``, decided by the caller) records naming
  neither a run nor a session code are dropped and counted (``stats().dropped``).
- Opening cuts a torn last line (``kill -9``) off the journal and logs it; a corrupt line in the
  middle is skipped with a warning and counted, never truncated.
- ``delete_run`` (the run's records, those presenting its code and every record of the
  connections that presented it) and ``prune`` rewrite the journal (atomic rename) and the
  index; when they remove or change records they add one ``store_compacted`` record saying
  how many (so ids keep increasing across restarts even when the newest records were
  removed). They read the whole journal (tens of µs per record): call them from a worker
  thread (``asyncio.to_thread``); appends from the event loop go on meanwhile and are paused
  only for the final swap.
- ``append``/``query`` are thread-safe; subscribers run in the appending thread.
- One process per data directory (``DATA_DIR/store.lock``, an exclusive ``flock``).

Records are flat JSON objects of plain data; client strings are stored as data and never
interpreted (SQL values are bound parameters). Must not import ``mailtls.net``, ``mailtls.web``,
``mailtls.protocols``, ``mailtls.runs`` or anything beyond the standard library (and the
optional ``orjson``).
"""

from mailtls.store.journal import MAX_LINE_BYTES
from mailtls.store.store import (
    COMPACTED_TYPE,
    INDEX_NAME,
    JOURNAL_NAME,
    Store,
    StoreClosedError,
    StoreError,
    StoreFull,
    StoreStats,
    rebuild,
)

__all__ = [
    "COMPACTED_TYPE",
    "INDEX_NAME",
    "JOURNAL_NAME",
    "MAX_LINE_BYTES",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreFull",
    "StoreStats",
    "rebuild",
]
