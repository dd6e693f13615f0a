"""Saved runs: atomic files without secrets, loading that survives damaged files, comparison."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailtls.census.history import compare, load_runs, save_run
from mailtls.census.model import CensusRun, Count, QueryResult
from mailtls.census.profiles import get_profile


def make_run(start: datetime, totals: dict[str, int], profile: str = "loose") -> CensusRun:
    p = get_profile(profile)
    results = {q: QueryResult(q, Count(totals.get(q, 10))) for q in p.queries}
    return CensusRun(p.name, p.version, start, start, (), 10, p.bases, results)


T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NO_AUTH_587 = 'port:587 -"AUTH PLAIN" -"AUTH LOGIN"'


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    run = make_run(T0, {"port:587": 200, NO_AUTH_587: 50})
    path = save_run(tmp_path, run)
    assert path.parent == tmp_path / "census"
    assert path.name == "census-20261101T120000Z-loose.json"
    again = save_run(tmp_path, run)  # same second: a second file, not an overwrite
    assert again != path and again.name.endswith("-2.json")
    assert not list((tmp_path / "census").glob(".census-*"))  # no temporary file left
    runs, skipped = load_runs(tmp_path)
    assert [r for _, r in runs] == [run, run] and skipped == []
    doc = json.loads(path.read_text())
    totals = {q["query"]: q["total"] for q in doc["queries"]}
    assert doc["profile_version"] == 1 and totals["port:587"] == 200


def test_load_skips_what_is_not_a_run(tmp_path: Path) -> None:
    save_run(tmp_path, make_run(T0, {}))
    folder = tmp_path / "census"
    (folder / "census-a.json").write_text("[]")
    (folder / "census-b.json").write_bytes(b"\xff\xfe")
    (folder / "census-c.json").write_text("[" * 100000)
    (folder / "notes.txt").write_text("ignored")
    runs, skipped = load_runs(tmp_path)
    assert len(runs) == 1
    assert sorted(s.path.name for s in skipped) == [
        "census-a.json",
        "census-b.json",
        "census-c.json",
    ]


def test_load_without_folder(tmp_path: Path) -> None:
    assert load_runs(tmp_path / "nothing") == ([], [])


def test_compare_lines_up_runs_and_computes_change() -> None:
    first = make_run(T0, {"port:587": 200, NO_AUTH_587: 50})  # 150/200 = 75 %
    second = make_run(T0 + timedelta(days=30), {"port:587": 250, NO_AUTH_587: 100})  # 60 %
    cmp = compare([first, second], ["plaintext_auth"])
    s = next(s for s in cmp.series if s.base_id == "smtp-587")
    assert [p.share for p in s.points if p is not None] == [0.75, 0.6]
    assert s.change is not None and abs(s.change - (-0.15)) < 1e-9
    assert {x.indicator for x in cmp.series} == {"plaintext_auth"}
    assert not cmp.versions_differ
    everything = compare([first, second])
    assert len({x.indicator for x in everything.series}) == 6
