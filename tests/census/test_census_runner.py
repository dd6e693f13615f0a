"""The census loop: every answer kept, fatal failures and failure streaks stop it, Ctrl-C too."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mailtls.census.client import CensusApiError
from mailtls.census.model import Count, Failure
from mailtls.census.profiles import get_profile
from mailtls.census.runner import run_census

PROFILE = get_profile("loose")


class ScriptedCounter:
    """Answers ``Count(n)`` for the n-th call, or raises what ``failures`` says for that call."""

    def __init__(self, failures: Mapping[int, BaseException] | None = None) -> None:
        self.failures = dict(failures or {})
        self.calls: list[tuple[str, dict[str, int]]] = []

    def count(self, query: str, facets: Mapping[str, int] | None = None) -> Count:
        self.calls.append((query, dict(facets or {})))
        n = len(self.calls)
        if n in self.failures:
            raise self.failures[n]
        return Count(n)


def test_every_query_once_in_order_with_facets() -> None:
    counter = ScriptedCounter()
    seen: list[tuple[int, int]] = []
    run = run_census(
        PROFILE, counter, ("country", "org"), 7, progress=lambda n, t, q: seen.append((n, t))
    )
    assert [q for q, _ in counter.calls] == list(PROFILE.queries)
    assert counter.calls[0][1] == {"country": 7, "org": 7}
    assert run.complete and run.answered == len(PROFILE.queries)
    assert seen[0] == (1, 25) and seen[-1] == (25, 25)
    assert (run.profile, run.profile_version, run.facets, run.top) == (
        "loose",
        1,
        ("country", "org"),
        7,
    )


def test_a_non_fatal_failure_is_recorded_and_the_census_goes_on() -> None:
    counter = ScriptedCounter({3: CensusApiError(Failure.SERVER_ERROR, "server error 500", 500)})
    run = run_census(PROFILE, counter)
    assert len(counter.calls) == 25
    failed = run.failed
    assert len(failed) == 1 and failed[0].failure is Failure.SERVER_ERROR
    assert failed[0].query == PROFILE.queries[2]
    assert run.stopped is None and not run.complete


@pytest.mark.parametrize("failure", [Failure.INVALID_KEY, Failure.LIMIT, Failure.UNREACHABLE])
def test_fatal_failures_stop_and_skip_the_rest(failure: Failure) -> None:
    counter = ScriptedCounter({5: CensusApiError(failure, "no")})
    run = run_census(PROFILE, counter)
    assert len(counter.calls) == 5
    assert run.stopped is failure and run.answered == 4
    kinds = [r.failure for r in run.results.values()]
    assert kinds[4] is failure and set(kinds[5:]) == {Failure.SKIPPED}
    assert len(run.results) == 25


def test_failures_in_a_row_stop_the_census() -> None:
    timeouts = {n: CensusApiError(Failure.TIMEOUT, "timed out") for n in (2, 4, 5, 6)}
    counter = ScriptedCounter(timeouts)
    run = run_census(PROFILE, counter, max_failures_in_a_row=3)
    assert len(counter.calls) == 6  # 2 failed alone, then 4, 5, 6 in a row
    assert run.stopped is Failure.TIMEOUT and run.answered == 2


def test_ctrl_c_keeps_the_counts() -> None:
    counter = ScriptedCounter({4: KeyboardInterrupt()})
    run = run_census(PROFILE, counter)
    assert run.stopped is Failure.INTERRUPTED and run.answered == 3
    assert sum(r.failure is Failure.SKIPPED for r in run.results.values()) == 25 - 4
