"""Charts: written with the Agg backend, PNG and SVG, labelled, even when nothing was counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailtls.census.history import compare
from mailtls.census.model import CensusRun, Count, QueryResult
from mailtls.census.plot import check_plot_path, plot_history, plot_run
from mailtls.census.profiles import get_profile

T0 = datetime(2026, 11, 29, tzinfo=UTC)


def make_run(profile: str, start: datetime = T0, answered: bool = True) -> CensusRun:
    p = get_profile(profile)
    results = {q: QueryResult(q, Count(7) if answered else None) for q in p.queries}
    return CensusRun(p.name, p.version, start, start, (), 10, p.bases, results)


def test_run_chart_svg_has_title_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.svg"
    assert plot_run(make_run("protocol"), path) == 4  # 25, 587, 143, 110 have indicators
    text = path.read_text()
    assert "2026-11-29" in text and "profile protocol v1" in text and "587 SMTP submission" in text


def test_empty_run_chart_still_written(tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    plot_run(make_run("loose", answered=False), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_history_chart(tmp_path: Path) -> None:
    runs = [make_run("loose"), make_run("loose", T0 + timedelta(days=7))]
    path = tmp_path / "h.svg"
    assert plot_history(compare(runs), path) == 4
    assert "Census history" in path.read_text()


def test_only_png_or_svg() -> None:
    with pytest.raises(ValueError):
        check_plot_path(Path("chart.jpg"))
