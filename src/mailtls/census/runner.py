"""Execute a profile: send its queries one after the other and keep every answer.

A failure of one query (timeout or server error after retries, a rejected query) is recorded
and the census goes on; a *fatal* failure (invalid key, plan or quota limit, network unreachable)
or several failures in a row stop it, and so does Ctrl-C; the queries not sent are recorded as
skipped. The counts already obtained are always kept.

Must not import: rich, matplotlib, ``requests``/``shodan`` (the counter is passed in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from mailtls.census.client import CensusApiError
from mailtls.census.model import CensusRun, Count, Failure, QueryResult
from mailtls.census.profiles import Profile

MAX_FAILURES_IN_A_ROW = 3


class Counter(Protocol):
    def count(self, query: str, facets: Mapping[str, int] | None = None) -> Count: ...


Progress = Callable[[int, int, str], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def run_census(
    profile: Profile,
    counter: Counter,
    facets: Sequence[str] = (),
    top: int = 10,
    *,
    progress: Progress | None = None,
    now: Callable[[], datetime] = _utcnow,
    max_failures_in_a_row: int = MAX_FAILURES_IN_A_ROW,
) -> CensusRun:
    started = now()
    queries = profile.queries
    facet_sizes = {name: top for name in facets}
    results: dict[str, QueryResult] = {}
    stopped: Failure | None = None
    in_a_row = 0
    for index, query in enumerate(queries):
        if stopped is not None:
            results[query] = QueryResult(
                query, None, Failure.SKIPPED, f"not sent: the census stopped ({stopped})"
            )
            continue
        if progress is not None:
            progress(index + 1, len(queries), query)
        try:
            results[query] = QueryResult(query, counter.count(query, facet_sizes))
            in_a_row = 0
            continue
        except CensusApiError as exc:
            results[query] = QueryResult(query, None, exc.failure, exc.message)
            failure = exc.failure
        except KeyboardInterrupt:  # keep what was counted; the CLI reports and exits 130
            results[query] = QueryResult(query, None, Failure.INTERRUPTED, "interrupted")
            stopped = Failure.INTERRUPTED
            continue
        in_a_row += 1
        if failure.fatal or in_a_row >= max_failures_in_a_row:
            stopped = failure
    return CensusRun(
        profile=profile.name,
        profile_version=profile.version,
        started=started,
        finished=now(),
        facets=tuple(facets),
        top=top,
        bases=profile.bases,
        results=results,
        stopped=stopped,
    )
