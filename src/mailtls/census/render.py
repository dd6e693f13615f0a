"""Presentation of census results: rich tables, JSON and CSV; the honesty caveats live here.

Every string that came from Shodan (facet values such as organisation names, error messages) is
escaped before it reaches the terminal, and CSV cells that a spreadsheet would run as a formula
are neutralised. Nothing here sees the API key.

Must not import: the client, ``requests``/``shodan``, matplotlib.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from mailtls.census.history import Comparison
from mailtls.census.model import (
    BaseResult,
    CensusRun,
    FacetRow,
    IndicatorValue,
    QueryResult,
    evaluate,
)
from mailtls.census.profiles import Profile, Proto
from mailtls.termsafe import escape_markup

CAVEATS: tuple[str, ...] = (
    "Banner keywords are a heuristic, not proof: a server may advertise AUTH before TLS and "
    "still refuse it until STARTTLS (530 5.7.0 Must issue a STARTTLS command first), and a "
    "mechanism listed in an unusual order (AUTH CRAM-MD5 PLAIN) is missed by the phrase search.",
    "Counts are of services (one banner per address and port), not of organisations or "
    "servers: a provider with many addresses counts many times.",
    "Shodan's crawl is partial and a banner can be weeks old; each figure comes from a separate "
    "query on a moving index, and facet counts may be approximate.",
    "A port-25 banner may come from a front end (postscreen, a filter or load balancer) rather "
    "than the mail server behind it.",
    "To verify your own server, run `mailtls probe HOST`; see docs/census.md for every query.",
)


def fmt_count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def fmt_share(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f} %"


def _title(run: CensusRun) -> str:
    when = run.started.strftime("%Y-%m-%d %H:%M UTC")
    return f"mailtls census — profile {run.profile} v{run.profile_version} — Shodan, {when}"


# ---------------------------------------------------------------- table


def _indicator_cell(ind: IndicatorValue) -> str:
    if ind.failed:
        return "[red]failed[/red]"
    return f"{fmt_count(ind.count)}\n[bold]{fmt_share(ind.share)}[/bold]"


def _protocol_table(proto: Proto, results: Sequence[BaseResult]) -> Table:
    columns: dict[str, str] = {}
    for r in results:
        for ind in r.indicators:
            columns.setdefault(ind.spec.key, ind.spec.label)
    table = Table(title=f"{proto.upper()}: services and shares of the base", show_lines=True)
    table.add_column("base")
    table.add_column("services (base)", justify="right")
    for label in columns.values():
        table.add_column(escape_markup(label), justify="right")
    for r in results:
        total = "[red]failed[/red]" if r.total is None else fmt_count(r.total)
        cells = []
        for key in columns:
            value = r.indicator(key)
            cells.append("—" if value is None else _indicator_cell(value))
        table.add_row(escape_markup(r.spec.label), total, *cells)
    return table


def _facet_values(result: BaseResult, name: str) -> list[str]:
    values = [b.value for b in result.facets.get(name, ())]
    for ind in result.indicators:
        for row in ind.facets.get(name, ()):
            if row.value not in values:
                values.append(row.value)
    return values


def _facet_table(result: BaseResult, name: str) -> Table | None:
    values = _facet_values(result, name)
    if not values:
        return None
    base_of = {b.value: b.count for b in result.facets.get(name, ())}
    table = Table(title=f"{escape_markup(result.spec.label)} by {escape_markup(name)}")
    table.add_column(escape_markup(name))
    table.add_column("services", justify="right")
    rows_of: list[dict[str, FacetRow]] = []
    for ind in result.indicators:
        table.add_column(escape_markup(ind.spec.label), justify="right")
        rows_of.append({row.value: row for row in ind.facets.get(name, ())})
    for value in values:
        cells = []
        for rows in rows_of:
            row = rows.get(value)
            if row is None or row.count is None:
                cells.append("?")
            else:
                share = "" if row.share is None else f" ({fmt_share(row.share)})"
                cells.append(f"{fmt_count(row.count)}{share}")
        table.add_row(escape_markup(value), fmt_count(base_of.get(value)), *cells)
    return table


def render_table(run: CensusRun, console: Console, *, show_facets: bool = True) -> None:
    results = evaluate(run)
    console.print(f"[bold]{escape_markup(_title(run))}[/bold]")
    for proto in Proto:
        group = [r for r in results if r.spec.protocol is proto]
        if group:
            console.print(_protocol_table(proto, group))
    if show_facets and run.facets:
        note = "'?': not derivable from the top-N lists; share in brackets: of the same value"
        console.print(f"[dim]Facet breakdown ({note}).[/dim]")
        for r in results:
            for name in run.facets:
                table = _facet_table(r, name)
                if table is not None:
                    console.print(table)
    render_failures(run, console)
    console.print("[bold]Read with care:[/bold]")
    for caveat in CAVEATS:
        console.print(f"  • {escape_markup(caveat)}")


def render_failures(run: CensusRun, console: Console) -> None:
    failed = run.failed
    if not failed:
        return
    answered = run.answered
    console.print(
        f"[bold red]Partial census:[/bold red] {answered} of {len(run.results)} queries "
        f"answered; the counts above that needed a failed query are marked 'failed'."
    )
    for r in failed:
        console.print(
            f"  [red]{escape_markup(str(r.failure))}[/red] {escape_markup(r.query)}: "
            f"{escape_markup(r.message)}"
        )


# ---------------------------------------------------------------- JSON


def _facet_rows_json(rows: Iterable[FacetRow]) -> list[dict[str, Any]]:
    return [{"value": r.value, "count": r.count, "base": r.base, "share": r.share} for r in rows]


def _raw_total(results: Mapping[str, QueryResult], query: str | None) -> int | None:
    found = results.get(query) if query is not None else None
    return None if found is None or found.count is None else found.count.total


def _indicator_json(ind: IndicatorValue, results: Mapping[str, QueryResult]) -> dict[str, Any]:
    """``count`` is ``plus_total - minus_total``: both raw totals are here to check it."""
    return {
        "key": ind.spec.key,
        "label": ind.spec.label,
        "headline": ind.spec.headline,
        "plus_query": ind.spec.plus,
        "plus_total": _raw_total(results, ind.spec.plus),
        "minus_query": ind.spec.minus,
        "minus_total": _raw_total(results, ind.spec.minus),
        "count": ind.count,
        "base": ind.base,
        "share": ind.share,
        "failed_queries": list(ind.failed),
        "facets": {name: _facet_rows_json(rows) for name, rows in ind.facets.items()},
    }


def _query_json(r: QueryResult) -> dict[str, Any]:
    """One query as sent, with Shodan's raw answer (or why there is none)."""
    return {
        "query": r.query,
        "total": None if r.count is None else r.count.total,
        "facets": {}
        if r.count is None
        else {
            name: [{"value": b.value, "count": b.count} for b in buckets]
            for name, buckets in r.count.facets.items()
        },
        "failure": None if r.failure is None else str(r.failure),
    }


def to_json(run: CensusRun, saved_to: str | None = None) -> dict[str, Any]:
    bases = []
    for r in evaluate(run):
        bases.append(
            {
                "id": r.spec.id,
                "protocol": str(r.spec.protocol),
                "port": r.spec.port,
                "product": r.spec.product,
                "label": r.spec.label,
                "query": r.spec.query,
                "total": r.total,
                "failure": None if r.failure is None else str(r.failure),
                "facets": {
                    name: [{"value": b.value, "count": b.count} for b in buckets]
                    for name, buckets in r.facets.items()
                },
                "indicators": [_indicator_json(i, run.results) for i in r.indicators],
            }
        )
    return {
        "tool": "mailtls census",
        "source": "Shodan host/count",
        "profile": run.profile,
        "profile_version": run.profile_version,
        "started": run.started.isoformat(),
        "finished": run.finished.isoformat(),
        "complete": run.complete,
        "stopped": None if run.stopped is None else str(run.stopped),
        "facets": list(run.facets),
        "top": run.top,
        "caveats": list(CAVEATS),
        "bases": bases,
        "queries": [_query_json(r) for r in run.results.values()],
        "failures": [
            {"query": r.query, "failure": str(r.failure), "message": r.message} for r in run.failed
        ],
        "saved_to": saved_to,
    }


# ---------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "kind",
    "base_id",
    "protocol",
    "port",
    "product",
    "indicator",
    "facet",
    "value",
    "count",
    "base_count",
    "share",
    "query",
    "minus_query",
    "error",
)


def _cell(value: object) -> str:
    """A CSV cell; text a spreadsheet would evaluate (=, +, -, @ first) gets a quote."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv_rows(run: CensusRun) -> Iterable[dict[str, object]]:
    for r in evaluate(run):
        spec = r.spec
        common = {"base_id": spec.id, "protocol": spec.protocol, "port": spec.port}
        common["product"] = spec.product
        yield {
            **common,
            "kind": "base",
            "count": r.total,
            "query": spec.query,
            "error": r.failure,
        }
        for name, buckets in r.facets.items():
            for b in buckets:
                yield {
                    **common,
                    "kind": "base_facet",
                    "facet": name,
                    "value": b.value,
                    "count": b.count,
                }
        for ind in r.indicators:
            yield {
                **common,
                "kind": "indicator",
                "indicator": ind.spec.key,
                "count": ind.count,
                "base_count": ind.base,
                "share": ind.share,
                "query": ind.spec.plus,
                "minus_query": ind.spec.minus,
                "error": "failed" if ind.failed else None,
            }
            for name, rows in ind.facets.items():
                for row in rows:
                    yield {
                        **common,
                        "kind": "indicator_facet",
                        "indicator": ind.spec.key,
                        "facet": name,
                        "value": row.value,
                        "count": row.count,
                        "base_count": row.base,
                        "share": row.share,
                    }
    for f in run.failed:
        yield {"kind": "failed_query", "query": f.query, "error": f"{f.failure}: {f.message}"}


def to_csv(run: CensusRun) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _csv_rows(run):
        writer.writerow({col: _cell(row.get(col)) for col in CSV_COLUMNS})
    return out.getvalue()


# ---------------------------------------------------------------- dry run


def dry_run_json(profile: Profile, facets: Sequence[str], top: int) -> dict[str, Any]:
    return {
        "profile": profile.name,
        "profile_version": profile.version,
        "facets": ",".join(f"{name}:{top}" for name in facets) or None,
        "queries": list(profile.queries),
        "bases": [
            {
                "id": b.id,
                "query": b.query,
                "indicators": [
                    {"key": i.key, "plus_query": i.plus, "minus_query": i.minus}
                    for i in b.indicators
                ],
            }
            for b in profile.bases
        ],
    }


def render_dry_run(profile: Profile, facets: Sequence[str], top: int, console: Console) -> None:
    queries = profile.queries
    facet_text = ",".join(f"{name}:{top}" for name in facets) or "none"
    console.print(
        f"Profile {profile.name} v{profile.version}: {len(queries)} host/count queries "
        f"(facets: {escape_markup(facet_text)}), nothing sent."
    )
    for base in profile.bases:
        console.print(f"[bold]{escape_markup(base.label)}[/bold]  {escape_markup(base.query)}")
        for ind in base.indicators:
            formula = f"count({ind.plus})"
            if ind.minus is not None:
                formula += f" - count({ind.minus})"
            console.print(f"    {escape_markup(ind.key)} = {escape_markup(formula)}")
    console.print("Queries in the order sent:")
    for n, q in enumerate(queries, 1):
        console.print(f"  {n:3d}  {escape_markup(q)}", soft_wrap=True)


# ---------------------------------------------------------------- history


def render_history(cmp: Comparison, console: Console) -> None:
    console.print(
        f"[bold]Census history — profile {escape_markup(cmp.profile)}, "
        f"{len(cmp.runs)} run(s)[/bold]"
    )
    if cmp.versions_differ:
        console.print(
            "[yellow]The profile version changed between these runs: the queries differ, "
            "compare with care.[/yellow]"
        )
    table = Table(show_lines=False)
    table.add_column("base")
    table.add_column("indicator")
    for run in cmp.runs:
        flag = "" if run.complete else " (partial)"
        head = run.started.strftime("%Y-%m-%d %H:%M") + f"\nv{run.profile_version}{flag}"
        table.add_column(head, justify="right")
    table.add_column("change", justify="right")
    for s in cmp.series:
        cells = []
        for p in s.points:
            if p is None:
                cells.append("—")
            else:
                cells.append(f"{fmt_share(p.share)}\n{fmt_count(p.count)}/{fmt_count(p.base)}")
        change = "n/a" if s.change is None else f"{100.0 * s.change:+.1f} pp"
        table.add_row(escape_markup(s.label), escape_markup(s.indicator_label), *cells, change)
    console.print(table)


def history_json(cmp: Comparison) -> dict[str, Any]:
    return {
        "profile": cmp.profile,
        "versions_differ": cmp.versions_differ,
        "runs": [
            {
                "started": r.started.isoformat(),
                "profile_version": r.profile_version,
                "complete": r.complete,
            }
            for r in cmp.runs
        ],
        "series": [
            {
                "base_id": s.base_id,
                "label": s.label,
                "indicator": s.indicator,
                "change": s.change,
                "points": [
                    None if p is None else {"count": p.count, "base": p.base, "share": p.share}
                    for p in s.points
                ],
            }
            for s in cmp.series
        ],
    }


def history_csv(cmp: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["started", "profile_version", "base_id", "indicator", "count", "base", "share"]
    )
    for s in cmp.series:
        for run, p in zip(cmp.runs, s.points, strict=True):
            if p is None:
                continue
            writer.writerow(
                [
                    run.started.isoformat(),
                    run.profile_version,
                    _cell(s.base_id),
                    s.indicator,
                    _cell(p.count),
                    _cell(p.base),
                    _cell(p.share),
                ]
            )
    return out.getvalue()
