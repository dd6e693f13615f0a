"""``mailtls census`` and ``mailtls census history``: argument parsing, the key, exit codes.

Exit codes (the README's table): 0 every query answered; 2 usage error; 3 could not run (no API
key, or Shodan unreachable); 4 the key was refused (401);
5 plan, quota or rate limit (402/403/429); 7 partial census (some queries
failed after retries; the counts obtained are kept, saved and shown); 130 interrupted (Ctrl-C).
A census stopped by 3 (unreachable), 4, 5 or Ctrl-C still saves and shows what it got.

Status messages go to stderr; stdout carries only the table, JSON or CSV.
Must not import: anything outside ``mailtls.census`` except ``cli``, ``settings``, ``termsafe``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console

from mailtls.census import history as hist
from mailtls.census.model import CensusRun, Failure
from mailtls.census.profiles import PROFILES, Profile, get_profile
from mailtls.cli import UserError
from mailtls.termsafe import escape_terminal

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_KEY = 3
EXIT_INVALID_KEY = 4
EXIT_LIMIT = 5
EXIT_UNREACHABLE = 3  # could not run, as in every command (README)
EXIT_PARTIAL = 7
EXIT_INTERRUPTED = 130

_STOP_EXIT = {
    Failure.INVALID_KEY: EXIT_INVALID_KEY,
    Failure.LIMIT: EXIT_LIMIT,
    Failure.UNREACHABLE: EXIT_UNREACHABLE,
}
_STOP_ADVICE = {
    Failure.INVALID_KEY: "Shodan refused the API key: check SHODAN_API_KEY or the --key-file.",
    Failure.LIMIT: (
        "Shodan refused for a plan, query-credit or rate limit: filters and facets may need a "
        "paid plan; try later, lower --rate, or drop --facets."
    ),
    Failure.UNREACHABLE: "Shodan could not be reached: check the network, proxy or --api-url.",
}
DEFAULT_PROFILE = "protocol"
_FACET_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,39}$")
MAX_FACETS = 8
MAX_KEY_FILE_BYTES = 4096
ENV_KEY = "SHODAN_API_KEY"


def default_data_dir() -> Path:
    """Same default as ``mailtls serve``: ``$MAILTLS_DATA_DIR`` or ``./var``."""
    env = os.environ.get("MAILTLS_DATA_DIR")
    if env:
        return Path(env)
    from mailtls.settings import Settings

    return Settings().data_dir


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "census",
        help="count Internet mail services that advertise plaintext auth (Shodan)",
        description=(
            "Count Internet mail services that advertise plaintext authentication before TLS, "
            "with Shodan host/count queries (no host data is downloaded). Needs an API key in "
            f"{ENV_KEY} or --key-file. Every query is listed by --dry-run and in docs/census.md."
        ),
        epilog=(
            "exit codes: 0 complete, 2 usage, 3 could not run (no key, Shodan unreachable), 4 key "
            "refused, 5 plan/quota/rate limit, 7 partial, 130 interrupted, 141 output closed"
        ),
    )
    p.add_argument("--profile", choices=sorted(PROFILES), help=f"default: {DEFAULT_PROFILE}")
    p.add_argument("--facets", default="", help="comma list, e.g. product,country,org,asn")
    p.add_argument("--top", type=int, default=10, help="values per facet (default 10)")
    p.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="output on stdout (json: every query with its raw total; default table)",
    )
    p.add_argument("--plot", type=Path, metavar="FILE", help="write a chart (.png or .svg)")
    p.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="runs go to DIR/census/ (default ./var)"
    )
    p.add_argument("--key-file", type=Path, metavar="FILE", help=f"API key file (else ${ENV_KEY})")
    p.add_argument(
        "--api-url", metavar="URL", help="API base URL (default $SHODAN_API_URL or Shodan's)"
    )
    p.add_argument("--rate", type=float, default=1.0, help="requests per second (default 1)")
    p.add_argument("--retries", type=int, default=3, help="retries on timeouts/5xx (default 3)")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay, doubling")
    p.add_argument("--timeout", type=float, default=60.0, help="read timeout in seconds")
    p.add_argument("--dry-run", action="store_true", help="print the queries, send nothing")
    p.add_argument("--no-save", action="store_true", help="do not save the run")
    p.set_defaults(func=run_command)

    sub = p.add_subparsers(dest="census_command", metavar="{history}")
    h = sub.add_parser(
        "history",
        help="how the shares changed between saved runs",
        description="Compare the saved runs of one profile (default: the latest run's).",
        argument_default=argparse.SUPPRESS,
    )
    h.add_argument("--profile", choices=sorted(PROFILES), help="whose saved runs (default: latest)")
    h.add_argument("--indicator", help="one indicator key, or 'all' (default plaintext_auth)")
    h.add_argument("--last", type=int, help="only the last N runs (default 10)")
    h.add_argument("--format", choices=("table", "json", "csv"), help="default table")
    h.add_argument("--plot", type=Path, metavar="FILE", help="write a chart (.png or .svg)")
    h.add_argument("--data-dir", type=Path, metavar="DIR", help="default ./var")
    h.set_defaults(func=history_command)


# ---------------------------------------------------------------- helpers


def _stdout_console() -> Console:
    out: TextIO = sys.stdout
    return Console(file=out, width=None if out.isatty() else 160, soft_wrap=False)


def _err(message: str) -> None:
    print(f"mailtls census: {message}", file=sys.stderr)


def parse_facets(text: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    for name in names:
        if not _FACET_NAME.match(name):
            raise UserError(f"bad facet name {escape_terminal(name)!r}")
    if len(set(names)) != len(names):
        raise UserError("a facet is named twice")
    if len(names) > MAX_FACETS:
        raise UserError(f"at most {MAX_FACETS} facets")
    return names


def load_key(key_file: Path | None) -> str | None:
    """The key from ``key_file`` (first non-empty line) or ``$SHODAN_API_KEY``; never shown."""
    if key_file is None:
        key = os.environ.get(ENV_KEY, "").strip()
        if key and not _plausible_key(key):
            raise UserError(f"${ENV_KEY} does not look like an API key (spaces or control chars)")
        return key or None
    try:
        with key_file.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read the key file {key_file}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UserError(f"the key file {key_file} is too large to hold an API key")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"the key file {key_file} is not text") from None
    key = next((line.strip() for line in lines if line.strip()), "")
    if not key:
        raise UserError(f"the key file {key_file} is empty")
    if not _plausible_key(key):
        raise UserError(f"the key file {key_file} does not hold an API key on its first line")
    return key


def _plausible_key(key: str) -> bool:
    return len(key) <= 256 and all(0x21 <= ord(c) < 0x7F for c in key)


def _check_run_args(args: argparse.Namespace) -> tuple[Profile, tuple[str, ...]]:
    profile = get_profile(args.profile or DEFAULT_PROFILE)
    facets = parse_facets(args.facets)
    if not 1 <= args.top <= 1000:
        raise UserError("--top must be between 1 and 1000")
    if not 0 < args.rate <= 100:
        raise UserError("--rate must be above 0 and at most 100 requests per second")
    if not 0 <= args.retries <= 10:
        raise UserError("--retries must be between 0 and 10")
    if not 0 <= args.backoff <= 300:
        raise UserError("--backoff must be between 0 and 300 seconds")
    if not 0 < args.timeout <= 600:
        raise UserError("--timeout must be above 0 and at most 600 seconds")
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".svg"):
        raise UserError("--plot must name a .png or .svg file")
    return profile, facets


# ---------------------------------------------------------------- census run


def run_command(args: argparse.Namespace) -> int:
    profile, facets = _check_run_args(args)
    console = _stdout_console()
    if args.dry_run:
        from mailtls.census import render

        if args.format == "json":
            print(json.dumps(render.dry_run_json(profile, facets, args.top), indent=2))
        else:
            render.render_dry_run(profile, facets, args.top, console)
        return EXIT_OK
    key = load_key(args.key_file)
    if key is None:
        _err(
            f"no Shodan API key: set {ENV_KEY} or pass --key-file FILE "
            "(--dry-run shows the queries without one)"
        )
        return EXIT_NO_KEY
    run = _execute(args, profile, facets, key)
    return _report(args, run)


def _execute(
    args: argparse.Namespace, profile: Profile, facets: tuple[str, ...], key: str
) -> CensusRun:
    from mailtls.census.client import RetryPolicy, ShodanCounter
    from mailtls.census.runner import run_census

    try:
        counter = ShodanCounter(
            key,
            api_url=args.api_url,
            rate=args.rate,
            retry=RetryPolicy(attempts=args.retries, base_delay=args.backoff),
            timeout=(min(10.0, args.timeout), args.timeout),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    tty = sys.stderr.isatty()

    def progress(n: int, total: int, query: str) -> None:
        if tty:
            print(f"\r[{n}/{total}] {escape_terminal(query)[:100]:<100}", end="", file=sys.stderr)

    with counter:
        run = run_census(profile, counter, facets, args.top, progress=progress)
    if tty:
        print(file=sys.stderr)
    return run


def _report(args: argparse.Namespace, run: CensusRun) -> int:
    from mailtls.census import render

    saved: Path | None = None
    if run.answered and not args.no_save:
        data_dir = args.data_dir or default_data_dir()
        try:
            saved = hist.save_run(data_dir, run)
        except OSError as exc:
            _err(f"cannot save the run under {data_dir}: {exc.strerror}")
    if args.format == "json":
        print(json.dumps(render.to_json(run, None if saved is None else str(saved)), indent=2))
    elif args.format == "csv":
        sys.stdout.write(render.to_csv(run))
    else:
        render.render_table(run, _stdout_console())
    if saved is not None:
        _err(f"run saved to {saved}")
    if args.plot is not None:
        if run.answered:
            from mailtls.census.plot import plot_run

            try:
                plot_run(run, args.plot)
                _err(f"chart written to {args.plot}")
            except OSError as exc:
                _err(f"cannot write the chart {args.plot}: {exc.strerror}")
        else:
            _err("no chart: no query was answered")
    return _exit_code(run)


def _exit_code(run: CensusRun) -> int:
    if run.stopped is Failure.INTERRUPTED:
        _err(f"interrupted: {run.answered} of {len(run.results)} queries answered (kept)")
        return EXIT_INTERRUPTED
    if run.stopped is not None and run.stopped in _STOP_EXIT:
        first = next((r for r in run.failed if r.failure is run.stopped), None)
        detail = f" ({first.message})" if first is not None and first.message else ""
        _err(f"stopped: {_STOP_ADVICE[run.stopped]}{detail}")
        _err(f"{run.answered} of {len(run.results)} queries answered before it stopped")
        return _STOP_EXIT[run.stopped]
    if not run.complete:
        _err(
            f"partial census: {len(run.failed)} of {len(run.results)} queries failed "
            "(listed above); the other counts are kept"
        )
        return EXIT_PARTIAL
    return EXIT_OK


# ---------------------------------------------------------------- history


def history_command(args: argparse.Namespace) -> int:
    from mailtls.census import render

    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    last = getattr(args, "last", None) or 10
    if last < 1:
        raise UserError("--last must be at least 1")
    plot = getattr(args, "plot", None)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise UserError("--plot must name a .png or .svg file")
    indicator = getattr(args, "indicator", None) or "plaintext_auth"
    runs, skipped = hist.load_runs(data_dir)
    for s in skipped:
        _err(f"skipped {s.path}: {escape_terminal(s.reason)}")
    if not runs:
        _err(f"no saved census runs under {hist.census_dir(data_dir)}")
        return EXIT_USAGE
    profile = getattr(args, "profile", None) or runs[-1][1].profile
    chosen = [run for _, run in runs if run.profile == profile][-last:]
    if not chosen:
        _err(f"no saved runs of profile {profile}")
        return EXIT_USAGE
    known = {i.key for run in chosen for b in run.bases for i in b.indicators}
    if indicator != "all" and indicator not in known:
        choices = ", ".join(sorted(known)) or "none"
        raise UserError(f"unknown indicator {indicator!r} (choose from all, {choices})")
    cmp = hist.compare(chosen, None if indicator == "all" else [indicator])
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        print(json.dumps(render.history_json(cmp), indent=2))
    elif fmt == "csv":
        sys.stdout.write(render.history_csv(cmp))
    else:
        render.render_history(cmp, _stdout_console())
    if plot is not None:
        from mailtls.census.plot import plot_history

        try:
            plot_history(cmp, plot, "plaintext_auth" if indicator == "all" else indicator)
            _err(f"chart written to {plot}")
        except OSError as exc:
            _err(f"cannot write the chart {plot}: {exc.strerror}")
    return EXIT_OK
