"""Response parsing, share arithmetic, facet derivation and the saved-run JSON form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mailtls.census.model import (
    CensusRun,
    Count,
    FacetBucket,
    Failure,
    MalformedResponse,
    QueryResult,
    evaluate,
    parse_count,
    run_from_json,
    run_to_json,
    share,
)
from mailtls.census.profiles import get_profile, make_base


@pytest.mark.parametrize(
    ("count", "base", "expected"),
    [(25, 100, 0.25), (0, 10, 0.0), (10, 10, 1.0), (5, 0, None), (None, 10, None), (3, None, None)],
)
def test_share(count: int | None, base: int | None, expected: float | None) -> None:
    assert share(count, base) == expected


def test_parse_count_with_facets() -> None:
    raw = {
        "total": 1234,
        "matches": [],
        "facets": {
            "country": [{"count": 800, "value": "DE"}, {"count": 434, "value": "US"}],
            "asn": [{"count": 5, "value": 64500}],
            "org": [],
        },
    }
    c = parse_count(raw, ["country", "asn", "org", "product"])
    assert c.total == 1234
    assert c.facets["country"] == (FacetBucket("DE", 800), FacetBucket("US", 434))
    assert c.facets["asn"] == (FacetBucket("64500", 5),)
    assert c.facets["org"] == ()
    assert c.facets["product"] == ()  # requested, absent: empty list


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {},
        {"total": None},
        {"total": True},
        {"total": 1.5},
        {"total": float("nan")},
        {"total": -3},
        {"total": 1, "facets": []},
        {"total": 1, "facets": {"country": {"DE": 1}}},
        {"total": 1, "facets": {"country": [{"count": 1}]}},
        {"total": 1, "facets": {"country": [{"value": "DE", "count": "x"}]}},
        {"total": 1, "facets": {"country": [{"value": ["DE"], "count": 1}]}},
        {"total": 1, "facets": {"country": ["DE"]}},
    ],
)
def test_parse_count_rejects(raw: Any) -> None:
    with pytest.raises(MalformedResponse):
        parse_count(raw, ["country"])


def _count(total: int, **facets: list[tuple[str, int]]) -> Count:
    facets.setdefault("country", [])
    return Count(
        total, {k: tuple(FacetBucket(v, c) for v, c in rows) for k, rows in facets.items()}
    )


def _run(results: dict[str, Count | None], top: int = 3) -> CensusRun:
    smtp = make_base(587)
    when = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    return CensusRun(
        profile="loose",
        profile_version=1,
        started=when,
        finished=when,
        facets=("country",),
        top=top,
        bases=(smtp,),
        results={
            q: QueryResult(q, c) if c is not None else QueryResult(q, None, Failure.TIMEOUT, "t")
            for q, c in results.items()
        },
    )


BASE = "port:587"
NO_AUTH = 'port:587 -"AUTH PLAIN" -"AUTH LOGIN"'
TLS = 'port:587 "STARTTLS"'
NO_TLS = 'port:587 -"STARTTLS"'
NEITHER = 'port:587 -"STARTTLS" -"AUTH PLAIN" -"AUTH LOGIN"'


def test_evaluate_derives_unions_by_complement() -> None:
    run = _run(
        {
            BASE: _count(1000, country=[("DE", 600), ("US", 300), ("FR", 100)]),
            NO_AUTH: _count(400, country=[("DE", 300), ("US", 100)]),  # complete list (2 < 3)
            TLS: _count(700, country=[("DE", 500), ("US", 150), ("FR", 50)]),
            NO_TLS: _count(300, country=[("US", 150), ("DE", 100), ("FR", 50)]),
            NEITHER: _count(120, country=[("US", 60), ("DE", 40), ("NL", 20)]),  # full: cut off
        }
    )
    (result,) = evaluate(run)
    assert result.total == 1000
    auth = result.indicator("plaintext_auth")
    assert auth is not None and auth.spec.headline
    assert (auth.count, auth.base, auth.share) == (600, 1000, 0.6)
    rows = {r.value: r for r in auth.facets["country"]}
    assert (rows["DE"].count, rows["DE"].base, rows["DE"].share) == (300, 600, 0.5)
    assert rows["FR"].count == 100  # absent from a complete minus list: 100 - 0
    no_tls_auth = result.indicator("plaintext_auth_without_starttls")
    assert no_tls_auth is not None and no_tls_auth.count == 300 - 120
    rows = {r.value: r for r in no_tls_auth.facets["country"]}
    assert rows["US"].count == 90
    assert rows["FR"].count is None  # absent from a cut-off minus list: unknown
    neither = result.indicator("neither_starttls_nor_auth")
    assert neither is not None and neither.share == pytest.approx(0.12)
    starttls = result.indicator("starttls")
    assert starttls is not None and (starttls.count, starttls.share) == (700, 0.7)
    rows = {r.value: r for r in starttls.facets["country"]}
    assert (rows["DE"].count, rows["DE"].base) == (500, 600)


def test_a_failed_query_fails_only_the_indicators_that_need_it() -> None:
    run = _run(
        {BASE: _count(10), NO_AUTH: None, TLS: _count(7), NO_TLS: _count(3), NEITHER: _count(1)}
    )
    (result,) = evaluate(run)
    auth = result.indicator("plaintext_auth")
    assert auth is not None and auth.count is None and auth.failed == (NO_AUTH,)
    tls = result.indicator("starttls")
    assert tls is not None and (tls.count, tls.share) == (7, 0.7)
    assert not run.complete and run.answered == 4


def test_a_moving_index_never_gives_negative_counts() -> None:
    run = _run(
        {
            BASE: _count(10),
            NO_AUTH: _count(12),
            TLS: _count(7),
            NO_TLS: _count(3),
            NEITHER: _count(1),
        }
    )
    auth = evaluate(run)[0].indicator("plaintext_auth")
    assert auth is not None and auth.count == 0


def test_failed_base_gives_no_shares() -> None:
    run = _run(
        {BASE: None, NO_AUTH: _count(1), TLS: _count(7), NO_TLS: _count(3), NEITHER: _count(1)}
    )
    (result,) = evaluate(run)
    assert result.total is None and result.failure is Failure.TIMEOUT
    tls = result.indicator("starttls")
    assert tls is not None and tls.count == 7 and tls.share is None


def test_run_json_round_trip() -> None:
    run = _run(
        {
            BASE: _count(10, country=[("DE", 10)]),
            NO_AUTH: None,
            TLS: _count(7),
            NO_TLS: _count(3),
            NEITHER: _count(1),
        }
    )
    doc = run_to_json(run)
    assert doc["complete"] is False
    back = run_from_json(doc)
    assert back == run
    assert evaluate(back) == evaluate(run)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format=99),
        lambda d: d.pop("bases"),
        lambda d: d.update(started="yesterday"),
        lambda d: d["queries"][0].update(total="x"),
        lambda d: d["queries"][1].update(failure="meteor"),
        lambda d: d["bases"][0].update(protocol="gopher"),
        lambda d: d.update(stopped="meteor"),
        lambda d: d.update(facets="country"),
    ],
)
def test_run_from_json_rejects_damaged_files(mutate: Any) -> None:
    run = _run(
        {BASE: _count(10), NO_AUTH: None, TLS: _count(7), NO_TLS: _count(3), NEITHER: _count(1)}
    )
    doc = run_to_json(run)
    mutate(doc)
    with pytest.raises(MalformedResponse):
        run_from_json(doc)


def test_every_profile_evaluates_with_all_counts() -> None:
    p = get_profile("product")
    when = datetime(2026, 11, 29, tzinfo=UTC)
    results = {q: QueryResult(q, Count(5)) for q in p.queries}
    run = CensusRun("product", p.version, when, when, (), 10, p.bases, results)
    for r in evaluate(run):
        for ind in r.indicators:
            assert ind.count is not None and ind.share is not None and not ind.failed


def test_facet_values_missing_from_lists() -> None:
    run = _run(
        {
            BASE: _count(10, country=[("DE", 6), ("US", 4)]),
            NO_AUTH: _count(6, country=[("DE", 6)]),
            TLS: _count(0),  # empty, hence complete: every value counts 0
            NO_TLS: _count(9, country=[("DE", 5), ("US", 3), ("FR", 1)]),  # cut off at top=3
            NEITHER: _count(4, country=[("US", 3), ("DE", 1)]),
        }
    )
    (result,) = evaluate(run)

    def rows(key: str) -> dict[str, int | None]:
        ind = result.indicator(key)
        assert ind is not None
        return {r.value: r.count for r in ind.facets["country"]}

    assert rows("starttls") == {"DE": 0, "US": 0}
    assert rows("plaintext_auth") == {"DE": 0, "US": 4}
    assert rows("no_starttls") == {"DE": 5, "US": 3, "FR": 1}
    assert rows("plaintext_auth_without_starttls") == {"DE": 4, "US": 0, "FR": 1}
    assert rows("neither_starttls_nor_auth") == {"DE": 1, "US": 3}
