"""Census data: parsed Shodan counts, a run's raw results, and the arithmetic on them (pure).

``parse_count`` validates one ``host/count`` response (``total``, ``facets`` as lists of
``{count, value}``); a run (:class:`CensusRun`) keeps the plan it executed and the raw result of
every query, and :func:`evaluate` derives indicator counts, shares (indicator / base) and the facet
breakdown per indicator from those raw counts. Saved runs store raw counts only, so the arithmetic
can be re-done (and fixed) later.

Must not import: the client, the network, rich, matplotlib.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailtls.census.profiles import BaseSpec, IndicatorSpec, Proto

RUN_FORMAT = 1


class MalformedResponse(ValueError):
    """A response that does not have the shape of a ``host/count`` answer."""


class Failure(enum.StrEnum):
    """Why a query got no count. ``fatal`` kinds stop the census: later queries would fail too."""

    INVALID_KEY = "invalid_key"  # 401
    LIMIT = "limit"  # 402/403/429: plan, credits or rate limit
    UNREACHABLE = "unreachable"  # connection refused, DNS, TLS, reset
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"  # 5xx
    REJECTED = "rejected"  # other 4xx, e.g. a query Shodan does not accept
    BAD_RESPONSE = "bad_response"  # not the expected JSON, or too large
    SKIPPED = "skipped"  # not sent because the census stopped
    INTERRUPTED = "interrupted"  # the user pressed Ctrl-C: the census stopped

    @property
    def fatal(self) -> bool:
        return self in (Failure.INVALID_KEY, Failure.LIMIT, Failure.UNREACHABLE)


@dataclass(frozen=True)
class FacetBucket:
    value: str
    count: int


@dataclass(frozen=True)
class Count:
    """One ``host/count`` answer: a total and, per requested facet, the top values."""

    total: int
    facets: Mapping[str, tuple[FacetBucket, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    query: str
    count: Count | None = None
    failure: Failure | None = None
    message: str = ""


def _nonneg_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponse(f"{what} is not a number")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise MalformedResponse(f"{what} is not a whole number")
    if value < 0:
        raise MalformedResponse(f"{what} is negative")
    return int(value)


def parse_count(raw: object, facet_names: Sequence[str] = ()) -> Count:
    """Validate a ``host/count`` JSON document; facets not requested are ignored."""
    if not isinstance(raw, Mapping):
        raise MalformedResponse("the response is not a JSON object")
    if "total" not in raw:
        raise MalformedResponse("the response has no total")
    total = _nonneg_int(raw["total"], "total")
    facets: dict[str, tuple[FacetBucket, ...]] = {}
    raw_facets = raw.get("facets")
    if raw_facets is None:
        raw_facets = {}
    if not isinstance(raw_facets, Mapping):
        raise MalformedResponse("facets is not an object")
    for name in facet_names:
        buckets = raw_facets.get(name, [])
        if not isinstance(buckets, list):
            raise MalformedResponse(f"facet {name} is not a list")
        parsed: list[FacetBucket] = []
        for item in buckets:
            if not isinstance(item, Mapping) or "value" not in item:
                raise MalformedResponse(f"facet {name} has an entry without a value")
            value = item["value"]
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise MalformedResponse(f"facet {name} has a value that is not text")
            parsed.append(FacetBucket(str(value), _nonneg_int(item.get("count"), "facet count")))
        facets[name] = tuple(parsed)
    return Count(total, facets)


def share(count: int | None, base: int | None) -> float | None:
    """``count / base``; ``None`` when either is unknown or the base is empty."""
    if count is None or base is None or base <= 0:
        return None
    return count / base


# ---------------------------------------------------------------- derived figures


@dataclass(frozen=True)
class FacetRow:
    value: str
    count: int | None  # None: not derivable from the top-N lists
    base: int | None  # the base's count for this value, when in the base's top-N list
    share: float | None


@dataclass(frozen=True)
class IndicatorValue:
    spec: IndicatorSpec
    count: int | None
    base: int | None
    share: float | None
    failed: tuple[str, ...]  # queries it needed that got no count
    facets: Mapping[str, tuple[FacetRow, ...]]


@dataclass(frozen=True)
class BaseResult:
    spec: BaseSpec
    total: int | None
    failure: Failure | None
    facets: Mapping[str, tuple[FacetBucket, ...]]
    indicators: tuple[IndicatorValue, ...]

    def indicator(self, key: str) -> IndicatorValue | None:
        return next((i for i in self.indicators if i.spec.key == key), None)

    @property
    def headline(self) -> IndicatorValue | None:
        return next((i for i in self.indicators if i.spec.headline), None)


def _lookup(buckets: Sequence[FacetBucket], top: int) -> Callable[[str], int | None]:
    """A value's count in a top-N list: absent means 0 if the list is complete (shorter than
    ``top``), unknown otherwise (it fell below the cut-off)."""
    counts = {b.value: b.count for b in buckets}
    missing = 0 if len(buckets) < top else None
    return lambda value: counts.get(value, missing)


def _derive_facet(
    plus: Sequence[FacetBucket],
    minus: Sequence[FacetBucket] | None,
    base: Sequence[FacetBucket],
    top: int,
) -> tuple[FacetRow, ...]:
    """Per facet value (the base's values, then the indicator's own): plus(v) - minus(v)."""
    plus_of = _lookup(plus, top)
    minus_of = None if minus is None else _lookup(minus, top)
    base_of = {b.value: b.count for b in base}
    values = list(base_of) + [b.value for b in plus if b.value not in base_of]
    rows: list[FacetRow] = []
    for value in values:
        p = plus_of(value)
        m = 0 if minus_of is None else minus_of(value)
        count = None if p is None or m is None else max(0, p - m)
        b = base_of.get(value)
        rows.append(FacetRow(value, count, b, share(count, b)))
    return tuple(rows)


def _evaluate_indicator(
    spec: IndicatorSpec,
    base_total: int | None,
    base_facets: Mapping[str, tuple[FacetBucket, ...]],
    results: Mapping[str, QueryResult],
    facet_names: Sequence[str],
    top: int,
) -> IndicatorValue:
    plus = results.get(spec.plus)
    minus = None if spec.minus is None else results.get(spec.minus)
    failed = tuple(q for q in spec.queries if (r := results.get(q)) is None or r.count is None)
    count: int | None = None
    facets: dict[str, tuple[FacetRow, ...]] = {}
    if not failed and plus is not None and plus.count is not None:
        minus_count = None if minus is None else minus.count
        # counts come from separate queries on a moving index: a difference can dip below 0
        count = plus.count.total - (0 if minus_count is None else minus_count.total)
        count = max(0, count)
        for name in facet_names:
            facets[name] = _derive_facet(
                plus.count.facets.get(name, ()),
                None if minus_count is None else minus_count.facets.get(name, ()),
                base_facets.get(name, ()),
                top,
            )
    return IndicatorValue(spec, count, base_total, share(count, base_total), failed, facets)


@dataclass(frozen=True)
class CensusRun:
    """What one census sent and got back; saved as JSON under the data folder."""

    profile: str
    profile_version: int
    started: datetime
    finished: datetime
    facets: tuple[str, ...]
    top: int
    bases: tuple[BaseSpec, ...]
    results: Mapping[str, QueryResult]
    stopped: Failure | None = None  # a fatal failure that ended the census early

    @property
    def failed(self) -> tuple[QueryResult, ...]:
        return tuple(r for r in self.results.values() if r.count is None)

    @property
    def complete(self) -> bool:
        return not self.failed and self.stopped is None

    @property
    def answered(self) -> int:
        return sum(1 for r in self.results.values() if r.count is not None)


def evaluate(run: CensusRun) -> tuple[BaseResult, ...]:
    out: list[BaseResult] = []
    for base in run.bases:
        res = run.results.get(base.query)
        total = None if res is None or res.count is None else res.count.total
        base_facets = {} if res is None or res.count is None else dict(res.count.facets)
        indicators = tuple(
            _evaluate_indicator(i, total, base_facets, run.results, run.facets, run.top)
            for i in base.indicators
        )
        failure = None if res is None else res.failure
        out.append(BaseResult(base, total, failure, base_facets, indicators))
    return tuple(out)


# ---------------------------------------------------------------- JSON form of a run


def _count_json(c: Count) -> dict[str, Any]:
    return {
        "total": c.total,
        "facets": {
            name: [{"value": b.value, "count": b.count} for b in buckets]
            for name, buckets in c.facets.items()
        },
    }


def run_to_json(run: CensusRun) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "tool": "mailtls census",
        "profile": run.profile,
        "profile_version": run.profile_version,
        "started": run.started.isoformat(),
        "finished": run.finished.isoformat(),
        "facets": list(run.facets),
        "top": run.top,
        "complete": run.complete,
        "stopped": None if run.stopped is None else str(run.stopped),
        "bases": [
            {
                "id": b.id,
                "protocol": str(b.protocol),
                "port": b.port,
                "product": b.product,
                "label": b.label,
                "query": b.query,
                "indicators": [
                    {
                        "key": i.key,
                        "label": i.label,
                        "plus": i.plus,
                        "minus": i.minus,
                        "headline": i.headline,
                    }
                    for i in b.indicators
                ],
            }
            for b in run.bases
        ],
        "queries": [
            {
                "query": r.query,
                "ok": r.count is not None,
                **(_count_json(r.count) if r.count is not None else {}),
                **(
                    {"failure": str(r.failure), "message": r.message}
                    if r.failure is not None
                    else {}
                ),
            }
            for r in run.results.values()
        ],
    }


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise MalformedResponse(f"{key} is missing or not text")
    return value


def _int(d: Mapping[str, Any], key: str) -> int:
    return _nonneg_int(d.get(key), key)


def _indicator_from_json(d: Any) -> IndicatorSpec:
    if not isinstance(d, Mapping):
        raise MalformedResponse("an indicator is not an object")
    minus = d.get("minus")
    if minus is not None and not isinstance(minus, str):
        raise MalformedResponse("indicator minus is not text")
    return IndicatorSpec(
        _str(d, "key"), _str(d, "label"), _str(d, "plus"), minus, bool(d.get("headline"))
    )


def _base_from_json(d: Any) -> BaseSpec:
    if not isinstance(d, Mapping):
        raise MalformedResponse("a base is not an object")
    product = d.get("product")
    if product is not None and not isinstance(product, str):
        raise MalformedResponse("product is not text")
    indicators = d.get("indicators", [])
    if not isinstance(indicators, list):
        raise MalformedResponse("indicators is not a list")
    try:
        proto = Proto(_str(d, "protocol"))
    except ValueError:
        raise MalformedResponse("unknown protocol") from None
    return BaseSpec(
        id=_str(d, "id"),
        protocol=proto,
        port=_int(d, "port"),
        label=_str(d, "label"),
        query=_str(d, "query"),
        product=product,
        indicators=tuple(_indicator_from_json(i) for i in indicators),
    )


def _result_from_json(d: Any, facet_names: Sequence[str]) -> QueryResult:
    if not isinstance(d, Mapping):
        raise MalformedResponse("a query result is not an object")
    query = _str(d, "query")
    if d.get("ok"):
        return QueryResult(query, parse_count(d, facet_names))
    try:
        failure = Failure(_str(d, "failure"))
    except ValueError:
        raise MalformedResponse("unknown failure kind") from None
    message = d.get("message", "")
    return QueryResult(query, None, failure, message if isinstance(message, str) else "")


def _time(d: Mapping[str, Any], key: str) -> datetime:
    try:
        return datetime.fromisoformat(_str(d, key))
    except ValueError:
        raise MalformedResponse(f"{key} is not a timestamp") from None


def run_from_json(d: Any) -> CensusRun:
    """Rebuild a saved run; raises :class:`MalformedResponse` on anything unexpected."""
    if not isinstance(d, Mapping) or d.get("format") != RUN_FORMAT:
        raise MalformedResponse("not a census run file of a known format")
    facets = d.get("facets", [])
    if not isinstance(facets, list) or not all(isinstance(f, str) for f in facets):
        raise MalformedResponse("facets is not a list of names")
    bases, queries = d.get("bases"), d.get("queries")
    if not isinstance(bases, list) or not isinstance(queries, list):
        raise MalformedResponse("bases or queries missing")
    results = [_result_from_json(q, facets) for q in queries]
    stopped = d.get("stopped")
    try:
        stopped_failure = None if stopped is None else Failure(str(stopped))
    except ValueError:
        raise MalformedResponse("unknown stop reason") from None
    return CensusRun(
        profile=_str(d, "profile"),
        profile_version=_int(d, "profile_version"),
        started=_time(d, "started"),
        finished=_time(d, "finished"),
        facets=tuple(facets),
        top=_int(d, "top"),
        bases=tuple(_base_from_json(b) for b in bases),
        results={r.query: r for r in results},
        stopped=stopped_failure,
    )
