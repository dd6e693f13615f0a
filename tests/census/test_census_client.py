"""The Shodan client wrapper against the local fake API: shapes, errors, retries, bounds, pacing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from census_fakeshodan import CORPUS, FakeShodan, Reply, closed_port_url, serve

from mailtls.census.client import (
    CensusApiError,
    RateLimiter,
    Redactor,
    RetryPolicy,
    ShodanCounter,
    check_api_url,
)
from mailtls.census.model import Failure

KEY = "testkey0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeShodan]:
    with serve(CORPUS) as server:
        yield server


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def counter(url: str, sleeps: Sleeps | None = None, **kw: object) -> ShodanCounter:
    kw.setdefault("rate", 0)
    kw.setdefault("retry", RetryPolicy(attempts=2, base_delay=0.5, max_delay=4.0))
    return ShodanCounter(KEY, api_url=url, sleep=sleeps or Sleeps(), **kw)  # type: ignore[arg-type]


def test_count_with_facets_parses_the_real_shape(fake: FakeShodan) -> None:
    with counter(fake.url) as c:
        result = c.count("port:587", {"country": 2, "org": 10})
    assert result.total == 5
    assert [(b.value, b.count) for b in result.facets["country"]] == [("DE", 2), ("US", 2)]
    assert sum(b.count for b in result.facets["org"]) == 5
    sent = fake.requests[-1]
    assert sent["path"] == "/shodan/host/count"
    assert sent["query"] == "port:587"
    assert sent["facets"] == "country:2,org:10"
    assert sent["key"] == KEY


def test_base_url_from_environment(fake: FakeShodan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHODAN_API_URL", fake.url)
    with ShodanCounter(KEY, rate=0) as c:
        assert c.count('port:110 "USER"').total == 2
    assert c.api_url == fake.url


@pytest.mark.parametrize(
    ("status", "failure", "requests"),
    [
        (401, Failure.INVALID_KEY, 1),
        (402, Failure.LIMIT, 1),
        (403, Failure.LIMIT, 1),
        (429, Failure.LIMIT, 3),  # retried (rate limit) then given up
        (500, Failure.SERVER_ERROR, 3),
        (502, Failure.SERVER_ERROR, 3),
        (503, Failure.SERVER_ERROR, 3),
        (400, Failure.REJECTED, 1),
        (302, Failure.BAD_RESPONSE, 1),
    ],
)
def test_error_statuses_map_to_failures(
    fake: FakeShodan, status: int, failure: Failure, requests: int
) -> None:
    body = json.dumps({"error": f"error {status} from server"}).encode()
    headers = (("Location", fake.url + "/elsewhere"),) if status == 302 else ()
    fake.always = Reply(status, body, headers)
    with counter(fake.url) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert err.value.failure is failure
    assert err.value.status == status
    assert len(fake.requests) == requests
    assert str(status) in str(err.value)


def test_server_message_is_shown_escaped(fake: FakeShodan) -> None:
    fake.always = Reply(401, json.dumps({"error": "Invalid API key\x1b[31m"}).encode())
    with counter(fake.url) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert "Invalid API key" in err.value.message
    assert "\x1b" not in err.value.message


def test_a_5xx_without_json_and_a_json_5xx_without_error_are_failures(fake: FakeShodan) -> None:
    # the library would return {"total": 3} from a 503 as if it were a count
    fake.script.extend([Reply(503, b'{"total": 3}'), Reply(500, b"<html>oops</html>")])
    fake.always = Reply(503, b'{"total": 3}')
    retry = RetryPolicy(attempts=1, base_delay=0)
    with counter(fake.url, retry=retry) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert err.value.failure is Failure.SERVER_ERROR


def test_transient_errors_are_retried_with_backoff(fake: FakeShodan) -> None:
    fake.script.extend([Reply(502, b"bad gateway"), Reply(429, b'{"error": "Rate limit"}')])
    sleeps = Sleeps()
    with counter(fake.url, sleeps) as c:
        assert c.count("port:993").total == 1
    assert len(fake.requests) == 3
    assert sleeps.calls == [0.5, 1.0]  # base, doubled


def test_retry_after_is_honoured_but_capped(fake: FakeShodan) -> None:
    fake.script.extend(
        [Reply(429, b"{}", (("Retry-After", "7"),)), Reply(503, b"{}", (("Retry-After", "9999"),))]
    )
    sleeps = Sleeps()
    with counter(fake.url, sleeps) as c:
        c.count("port:993")
    assert sleeps.calls == [7.0, 60.0]


def test_timeout_is_retried_then_reported(fake: FakeShodan) -> None:
    fake.always = Reply(delay=1.0)
    with counter(fake.url, timeout=(1.0, 0.2)) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert err.value.failure is Failure.TIMEOUT
    assert len(fake.requests) == 3


def test_slow_drip_body_hits_the_whole_body_deadline(fake: FakeShodan) -> None:
    body = json.dumps({"total": 1, "pad": "x" * 300}).encode()  # about 20 pieces, 0.1 s apart
    fake.always = Reply(200, body, drip=0.1)
    retry = RetryPolicy(attempts=0)
    slow = counter(fake.url, retry=retry, timeout=(1.0, 0.3))
    with slow as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert err.value.failure is Failure.TIMEOUT


def test_unreachable_is_not_retried() -> None:
    sleeps = Sleeps()
    with counter(closed_port_url(), sleeps) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert err.value.failure is Failure.UNREACHABLE
    assert "refused" in err.value.message
    assert sleeps.calls == []


def test_oversized_body_is_refused(fake: FakeShodan) -> None:
    fake.always = Reply(200, b'{"total": 1, "pad": "' + b"x" * 5000 + b'"}')
    with counter(fake.url, max_bytes=1000) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    assert err.value.failure is Failure.BAD_RESPONSE
    assert "larger" in err.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"error": "Invalid search query"}',
        b'{"matches": []}',
        b'{"total": -1}',
        b'{"total": "many"}',
        b"[1, 2]",
        b'{"total": 3, "facets": {"country": [{"count": 1}]}}',
        b'{"total": 3, "facets": {"country": "DE"}}',
    ],
)
def test_malformed_200_bodies_are_bad_responses(fake: FakeShodan, body: bytes) -> None:
    fake.always = Reply(200, body)
    with counter(fake.url) as c, pytest.raises(CensusApiError) as err:
        c.count("port:25", {"country": 5})
    assert err.value.failure is Failure.BAD_RESPONSE
    assert len(fake.requests) == 1


def test_rate_limiter_spaces_requests() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(rate=2.0, clock=lambda: now[0], sleep=sleep)
    limiter.wait()  # first request: no wait
    now[0] += 0.1
    limiter.wait()
    limiter.wait()
    assert slept == pytest.approx([0.4, 0.5])


def test_counter_paces_real_requests(fake: FakeShodan) -> None:
    sleeps = Sleeps()
    with counter(fake.url, sleeps, rate=1.0) as c:
        c.count("port:25")
        c.count("port:587")
    assert len(sleeps.calls) == 1 and 0.9 < sleeps.calls[0] <= 1.0


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.shodan.io", True),
        ("http://127.0.0.1:8080/", True),
        ("http://localhost:1", True),
        ("http://api.shodan.io", False),
        ("ftp://api.shodan.io", False),
        ("api.shodan.io", False),
    ],
)
def test_api_url_check(url: str, ok: bool) -> None:
    if ok:
        assert check_api_url(url) == url.rstrip("/")
    else:
        with pytest.raises(ValueError):
            check_api_url(url)


def test_log_filter_lives_as_long_as_the_client(fake: FakeShodan) -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    before = list(logger.filters)
    with counter(fake.url):
        assert len(logger.filters) == len(before) + 1
    assert logger.filters == before


def test_redactor_hides_key_and_key_parameters() -> None:
    r = Redactor(["s3cr3t"])
    assert r("GET /x?query=a&key=s3cr3t HTTP/1.1") == "GET /x?query=a&key=[REDACTED] HTTP/1.1"
    assert r("key=other&x=1") == "key=[REDACTED]&x=1"
    assert "s3cr3t" not in r("token s3cr3t in text")
