"""Presentation: peer strings escaped in the terminal, CSV cells safe for spreadsheets."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from rich.console import Console

from mailtls.census.model import CensusRun, Count, FacetBucket, Failure, QueryResult
from mailtls.census.profiles import get_profile
from mailtls.census.render import CAVEATS, fmt_share, render_table, to_csv, to_json

EVIL = "\x1b[2J[red]Evil Org[/red]"


def make_run() -> CensusRun:
    p = get_profile("loose")
    facets = {"org": (FacetBucket(EVIL, 3), FacetBucket("=HYPERLINK(1)", 2))}
    results = {q: QueryResult(q, Count(5, facets)) for q in p.queries}
    failed = p.queries[-1]
    results[failed] = QueryResult(failed, None, Failure.SERVER_ERROR, "boom \x1b[31m")
    when = datetime(2026, 11, 29, tzinfo=UTC)
    return CensusRun("loose", 1, when, when, ("org",), 10, p.bases, results)


def test_table_escapes_peer_strings_and_states_caveats() -> None:
    out = io.StringIO()
    render_table(make_run(), Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert "\x1b" not in text
    assert "[red]Evil Org[/red]" in text  # shown literally, not interpreted as markup
    assert "\\x1b" in text
    assert "Partial census" in text and "server_error" in text
    for caveat in CAVEATS:
        assert caveat.split(":")[0][:40] in text.replace("\n", " ")


def test_csv_neutralises_formulas() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(make_run()))))
    values = {r["value"] for r in rows if r["kind"] == "base_facet"}
    assert "'=HYPERLINK(1)" in values
    assert any(r["kind"] == "failed_query" for r in rows)


def test_json_carries_caveats_and_failures() -> None:
    doc = to_json(make_run(), "/tmp/x.json")
    assert doc["caveats"] == list(CAVEATS)
    assert doc["failures"][0]["failure"] == "server_error"
    assert doc["complete"] is False and doc["saved_to"] == "/tmp/x.json"


def test_share_format() -> None:
    assert fmt_share(None) == "n/a"
    assert fmt_share(0.12345) == "12.3 %"
