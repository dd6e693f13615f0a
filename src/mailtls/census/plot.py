"""Charts of census results with matplotlib's Agg backend (no display needed): PNG or SVG.

``plot_run``: one group of bars per base (port, or product and port) with the share of services
advertising plaintext authentication before TLS, of those without STARTTLS, and of those that
advertise plaintext auth *and* no STARTTLS; the base size is written under each label. The title
names the profile and the date, a footnote carries the main caveat. ``plot_history``: the share
of one indicator over the saved runs, one line per base.

Must not import: the client, rich.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from mailtls.census.history import Comparison
from mailtls.census.model import CensusRun, evaluate
from mailtls.census.render import fmt_count

FORMATS = (".png", ".svg")
BARS = (
    ("plaintext_auth", "advertises plaintext auth before TLS"),
    ("no_starttls", "no STARTTLS / STLS"),
    ("plaintext_auth_without_starttls", "plaintext auth and no STARTTLS"),
)
FOOTNOTE = (
    "Shodan host/count; counts of services, not organisations; banner keywords are a "
    "heuristic (a server may still refuse AUTH before TLS). See docs/census.md."
)


def check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"the plot file must end in {' or '.join(FORMATS)}")


def _save(fig: Figure, path: Path) -> None:
    check_plot_path(path)
    fig.savefig(path, format=path.suffix.lower().lstrip("."), dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_run(run: CensusRun, path: Path) -> int:
    """Write the bar chart; returns the number of bases plotted (0: an empty, labelled chart).

    Horizontal bars, so that labels such as "Microsoft Exchange 587" stay readable however
    many bases a profile has; the first base is at the top.
    """
    results = [r for r in evaluate(run) if r.indicators]
    labels = [f"{r.spec.label} (n={fmt_count(r.total)})" for r in results]
    height = max(3.5, 0.55 * len(results) + 2.5)
    fig, ax = plt.subplots(figsize=(9.0, height), layout="constrained")
    width = 0.8 / len(BARS)
    for n, (key, legend) in enumerate(BARS):
        ys, xs = [], []
        for i, r in enumerate(results):
            ind = r.indicator(key)
            if ind is not None and ind.share is not None:
                ys.append(i + (n - (len(BARS) - 1) / 2) * width)
                xs.append(100.0 * ind.share)
        bars = ax.barh(ys, xs, height=width, label=legend)
        if n == 0:
            ax.bar_label(bars, fmt="%.1f %%", fontsize=7, padding=2)
    ax.set_yticks(range(len(results)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the base (%)")
    ax.set_xlim(0, 110)
    when = run.started.strftime("%Y-%m-%d")
    partial = "" if run.complete else " (partial: some queries failed)"
    ax.set_title(
        f"Mail services advertising plaintext auth before TLS\n"
        f"Shodan, {when}, profile {run.profile} v{run.profile_version}{partial}"
    )
    if not results:
        ax.text(0.5, 0.5, "no base with indicators", ha="center", transform=ax.transAxes)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 * 5 / height), ncol=3)
    ax.grid(axis="x", alpha=0.3)
    fig.supxlabel(FOOTNOTE, fontsize=7, wrap=True)
    _save(fig, path)
    return len(results)


def _days(when: datetime) -> float:
    """matplotlib's date number: days since its default epoch, 1970-01-01 UTC."""
    return when.timestamp() / 86400.0


def plot_history(cmp: Comparison, path: Path, indicator: str = "plaintext_auth") -> int:
    """Write the share of ``indicator`` per base over the runs; returns the number of lines."""
    fig, ax = plt.subplots(figsize=(8.0, 5.0), layout="constrained")
    lines = 0
    for s in cmp.series:
        if s.indicator != indicator:
            continue
        pts = [
            (d, 100.0 * p.share)
            for d, p in zip(cmp.dates, s.points, strict=True)
            if p is not None and p.share is not None
        ]
        if not pts:
            continue
        ax.plot([_days(d) for d, _ in pts], [v for _, v in pts], marker="o", label=s.label)
        lines += 1
    ax.set_ylabel(f"share of the base (%): {indicator}")
    ax.set_title(
        f"Census history, profile {cmp.profile}: {indicator}\n"
        f"{cmp.dates[0]:%Y-%m-%d} to {cmp.dates[-1]:%Y-%m-%d}, {len(cmp.runs)} run(s)"
    )
    if lines:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "no shares to plot", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    ax.xaxis_date()
    fig.autofmt_xdate()
    fig.supxlabel(FOOTNOTE, fontsize=7, wrap=True)
    _save(fig, path)
    return lines
