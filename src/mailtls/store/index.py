"""The SQLite index of the journal: a disposable, rebuildable copy for queries.

One table ``events``: the indexed columns ``id`` (primary key), ``ts``, ``type``, ``run``,
``step``, ``conn``, ``code`` (each set only when the record holds a value of the right type:
``run``, ``conn``, ``code``, ``type`` strings, ``step`` an integer, ``ts`` a number) and
``record``, the journal line itself (all fields, as JSON). Table ``meta`` holds the high-water
mark: the last ingested id, the journal byte offset just after it, and the identity
(device, inode) of the journal file it refers to. When any of these disagrees with the journal,
the index is rebuilt.

Not thread-safe by itself: the owner serialises calls (``Store`` holds one lock around them).
Values are always bound as SQL parameters; client strings are never interpreted.
Only the standard library; must not import anything else from ``mailtls``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

Row = tuple[int, Any, Any, Any, Any, Any, Any, str]
"""(id, ts, type, run, step, conn, code, record-json) as inserted."""

RawRow = tuple[int, Any, Any, Any, Any, Any, Any, str | bytes]
"""A row as captured at append time: unchecked columns, the journal line as bytes or text."""

_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts REAL,
    type TEXT,
    run TEXT,
    step INTEGER,
    conn TEXT,
    code TEXT,
    record TEXT NOT NULL
);
CREATE INDEX events_run ON events (run, step) WHERE run IS NOT NULL;
CREATE INDEX events_conn ON events (conn) WHERE conn IS NOT NULL;
CREATE INDEX events_code ON events (code) WHERE code IS NOT NULL;
CREATE INDEX events_type ON events (type);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_INSERT = "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Mark:
    """High-water mark: everything up to ``last_id`` (ending at ``offset``) of file (dev, ino)."""

    last_id: int = 0
    offset: int = 0
    dev: int = 0
    ino: int = 0


def _text(value: Any) -> str | None:
    return storable(value) if type(value) is str else None


def storable(text: str) -> str:
    """``text`` as SQLite can hold it: lone surrogates (undecodable client bytes) become
    ``\\udcXX`` escapes. Query values go through the same function, so they still match."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def row_of(record: dict[str, Any], text: str) -> Row:
    """The index row of a record whose journal line (without newline) is ``text``."""
    get = record.get
    return clean_row(
        (
            record["id"],
            get("ts"),
            get("type"),
            get("run"),
            get("step"),
            get("conn"),
            get("code"),
            text,
        )
    )


def clean_row(raw: RawRow) -> Row:
    """A row whose column values are kept only when of the column's type (strings storable)."""
    rid, ts, type_, run, step, conn, code, text = raw
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return (
        rid,
        ts if type(ts) in (int, float) else None,
        _text(type_),
        _text(run),
        step if type(step) is int else None,
        _text(conn),
        _text(code),
        text,
    )


def index_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rebuilt_reason = ""  # why open() started from empty ("" when the index was fine)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            log.warning("index %s is unreadable (%s); rebuilding it from the journal", path, exc)
            self.rebuilt_reason = "corrupt"
            for f in index_files(path):
                f.unlink(missing_ok=True)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        if fresh:  # client data: owner-only, like the journal (SQLite gives -wal/-shm the same)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # the journal is the record, not the index
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if not fresh:
                    log.warning("index %s has schema %s; rebuilding it", self.path, version)
                    self.rebuilt_reason = "schema"
                self._create(db)
            db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute("BEGIN")
        db.execute("DROP TABLE IF EXISTS events")
        db.execute("DROP TABLE IF EXISTS meta")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    # --- high-water mark ---------------------------------------------------------------------

    def mark(self) -> Mark:
        values = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return Mark(
            last_id=values.get("last_id", 0),
            offset=values.get("offset", 0),
            dev=values.get("dev", 0),
            ino=values.get("ino", 0),
        )

    def _set_mark(self, mark: Mark) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [
                ("last_id", mark.last_id),
                ("offset", mark.offset),
                ("dev", mark.dev),
                ("ino", mark.ino),
            ],
        )

    # --- writes (each one transaction) --------------------------------------------------------

    def reset(self, mark: Mark) -> None:
        """Forget every row (before a rebuild)."""
        with self._transaction():
            self._db.execute("DELETE FROM events")
            self._set_mark(mark)

    def insert(self, rows: Sequence[Row], mark: Mark) -> None:
        with self._transaction():
            self._db.executemany(_INSERT, rows)
            self._set_mark(mark)

    def rewrite(self, removed: Iterable[int], changed: Sequence[Row], mark: Mark) -> None:
        """Apply a journal compaction: delete ``removed`` ids, replace ``changed`` rows."""
        with self._transaction():
            self._db.executemany("DELETE FROM events WHERE id = ?", ((i,) for i in removed))
            self._db.executemany(_INSERT, changed)
            self._set_mark(mark)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # --- reads --------------------------------------------------------------------------------

    def select(
        self,
        *,
        run: str | None = None,
        step: int | None = None,
        conns: list[str] | None = None,
        code: str | None = None,
        types: list[str] | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[str]:
        """The JSON text of matching records, ordered by id (all filters must hold)."""
        where = ["id > ?"]
        params: list[Any] = [after_id]
        for column, value in (("run", run), ("step", step), ("code", code)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(storable(value) if isinstance(value, str) else value)
        for column, values in (("conn", conns), ("type", types)):
            if values is not None:
                if not values:
                    return []
                where.append(f"{column} IN (SELECT value FROM json_each(?))")
                items = [storable(v) if isinstance(v, str) else v for v in values]
                params.append(json.dumps(items, ensure_ascii=False))
        sql = f"SELECT record FROM events WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        return [text for (text,) in self._db.execute(sql, params)]

    def count(self) -> int:
        n: int = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
        return n

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA optimize")
        except sqlite3.Error as exc:
            log.debug("index optimize failed: %s", exc)
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (disk full): keep the cause visible, not this
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
