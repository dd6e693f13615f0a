"""Saved census runs: one JSON file per run under ``<data dir>/census/``, and their comparison.

A file holds the run's timestamps, profile and profile version, the plan (every base and
indicator with its query strings) and the raw counts; it never holds the API key. Files are
written atomically (temporary file + rename). Loading skips files that are not valid runs and
reports them, so one damaged file never hides the others.

Must not import: the client, rich, matplotlib.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailtls.census.model import (
    BaseResult,
    CensusRun,
    MalformedResponse,
    evaluate,
    run_from_json,
    run_to_json,
)

SUBDIR = "census"
MAX_RUN_FILE_BYTES = 64 * 1024 * 1024


def census_dir(data_dir: Path) -> Path:
    return data_dir / SUBDIR


def save_run(data_dir: Path, run: CensusRun) -> Path:
    """Write the run as ``census-<UTC time>-<profile>.json``; returns the path."""
    folder = census_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = run.started.strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"census-{stamp}-{run.profile}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"census-{stamp}-{run.profile}-{n}.json"
    text = json.dumps(run_to_json(run), indent=1, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".census-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


def load_runs(data_dir: Path) -> tuple[list[tuple[Path, CensusRun]], list[Skipped]]:
    """Every readable run, oldest first, and the files that could not be read."""
    folder = census_dir(data_dir)
    runs: list[tuple[Path, CensusRun]] = []
    skipped: list[Skipped] = []
    if not folder.is_dir():
        return runs, skipped
    for path in sorted(folder.glob("census-*.json")):
        try:
            if path.stat().st_size > MAX_RUN_FILE_BYTES:
                raise MalformedResponse("the file is too large")
            doc = json.loads(path.read_text(encoding="utf-8"))
            runs.append((path, run_from_json(doc)))
        except OSError as exc:
            skipped.append(Skipped(path, exc.strerror or "cannot read"))
        except (ValueError, RecursionError) as exc:  # JSON errors, MalformedResponse
            skipped.append(Skipped(path, str(exc) or "not a census run"))
    runs.sort(key=lambda item: item[1].started)
    return runs, skipped


# ---------------------------------------------------------------- comparing runs


@dataclass(frozen=True)
class Point:
    """One indicator of one base in one run."""

    count: int | None
    base: int | None
    share: float | None


@dataclass(frozen=True)
class Series:
    base_id: str
    label: str
    indicator: str
    indicator_label: str
    points: tuple[Point | None, ...]  # one per run; None: the base or indicator was not in it

    @property
    def change(self) -> float | None:
        """Share of the last run minus share of the first run that has one (a fraction)."""
        shares = [p.share for p in self.points if p is not None and p.share is not None]
        if len(shares) < 2:
            return None
        return shares[-1] - shares[0]


@dataclass(frozen=True)
class Comparison:
    profile: str
    runs: tuple[CensusRun, ...]
    series: tuple[Series, ...]

    @property
    def dates(self) -> tuple[datetime, ...]:
        return tuple(r.started for r in self.runs)

    @property
    def versions_differ(self) -> bool:
        return len({r.profile_version for r in self.runs}) > 1


def compare(runs: Sequence[CensusRun], indicators: Sequence[str] | None = None) -> Comparison:
    """Line up the runs (same profile) base by base; ``indicators`` None means every one."""
    if not runs:
        raise ValueError("no runs to compare")
    evaluated: list[dict[tuple[str, str], tuple[BaseResult, Point]]] = []
    order: dict[tuple[str, str], tuple[str, str]] = {}
    for run in runs:
        points: dict[tuple[str, str], tuple[BaseResult, Point]] = {}
        for result in evaluate(run):
            for ind in result.indicators:
                if indicators is not None and ind.spec.key not in indicators:
                    continue
                key = (result.spec.id, ind.spec.key)
                points[key] = (result, Point(ind.count, ind.base, ind.share))
                order.setdefault(key, (result.spec.label, ind.spec.label))
        evaluated.append(points)
    series = []
    for key, (label, ind_label) in order.items():
        pts = tuple(p[1] if (p := ev.get(key)) is not None else None for ev in evaluated)
        series.append(Series(key[0], label, key[1], ind_label, pts))
    return Comparison(runs[0].profile, tuple(runs), tuple(series))
