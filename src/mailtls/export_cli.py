"""``mailtls export``: the event journal as JSONL, all of it or one run's, for archives and labs.

Reads the journal's segments directly, oldest first (``journal/*.jsonl``, then ``events.jsonl``;
read-only; safe while ``mailtls serve`` runs: segments are append-only and compaction replaces
one by an atomic rename). A torn last line is never emitted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mailtls.cli import CannotRun, UserError
from mailtls.store import JOURNAL_NAME
from mailtls.store.journal import journal_files, read_records


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export the event journal (all, or one run) as JSONL",
        description=(
            "Write the event journal, one JSON object per line, to standard output or a file: "
            "all of it, or one run's records. Safe while `mailtls serve` runs (read-only)."
        ),
        epilog="exit codes: 0 ok, 2 no journal or no such run, 3 cannot write, "
        "141 output closed (e.g. `| head`)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var"),
        metavar="DIR",
        help="the service's data folder (default ./var)",
    )
    p.add_argument("--run", metavar="RUN_ID", help="only this run's records")
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here instead of standard output"
    )
    p.set_defaults(func=run)


def _records(path: Path) -> Iterator[tuple[dict[str, Any], bytes, int]]:
    """Every record of the journal whose active segment is ``path``: the sealed segments
    (``journal/``) in order, then the active one."""
    for segment in journal_files(path):
        yield from read_records(segment)


def _run_code(path: Path, run_id: str) -> str | None:
    for record, _line, _end in _records(path):
        if record.get("type") == "run_created" and record.get("run") == run_id:
            code = record.get("code")
            return str(code) if code else None
    return None


def export(path: Path, out: IO[bytes], run_id: str | None = None) -> int:
    code = _run_code(path, run_id) if run_id else None
    if run_id and code is None:
        raise UserError(f"no run {run_id!r} in {path}")
    count = 0
    for record, line, _end in _records(path):
        if run_id and not _belongs(record, run_id, code):
            continue
        out.write(line + b"\n")
        count += 1
    return count


def _belongs(record: dict[str, Any], run_id: str, code: str | None) -> bool:
    return record.get("run") == run_id or (code is not None and record.get("code") == code)


def run(args: argparse.Namespace) -> int:
    path = args.data_dir / JOURNAL_NAME
    if not path.exists():
        raise UserError(f"no event journal at {path} (is --data-dir right?)")
    if args.run and _run_code(path, args.run) is None:
        raise UserError(f"no run {args.run!r} in {path}")  # before any output file is touched
    if args.output:
        try:
            out = args.output.open("wb")
        except OSError as exc:
            raise CannotRun(f"cannot write {args.output}: {exc.strerror or exc}") from None
        with out:
            count = export(path, out, args.run)
    else:
        count = export(path, sys.stdout.buffer, args.run)
        sys.stdout.flush()
    print(json.dumps({"exported": count}), file=sys.stderr)
    return 0
