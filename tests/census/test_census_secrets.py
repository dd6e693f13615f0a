"""The API key never leaks: a canary key through every path, with HTTP-library DEBUG logs on.

The key travels in Shodan's query string, so ``urllib3`` logs it at DEBUG and ``requests``
exceptions carry it in their text. The census must keep it out of stdout, stderr, log records,
exception text and chains, saved runs and charts, in success and in every failure mode.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from census_fakeshodan import CORPUS, FakeShodan, Reply, closed_port_url, serve

from mailtls.census.client import CensusApiError, RetryPolicy, ShodanCounter
from mailtls.cli import main

CANARY = "CANARYk3yZ9q8w7e6r5t4y3u2i1o0p"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShodan]:
    monkeypatch.setenv("SHODAN_API_KEY", CANARY)
    with serve(CORPUS) as server:
        yield server


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """DEBUG for the HTTP stack, also printed to stderr as ``logging.basicConfig`` would."""
    caplog.set_level(logging.DEBUG, logger="urllib3")
    caplog.set_level(logging.DEBUG, logger="requests")
    caplog.set_level(logging.DEBUG, logger="mailtls")
    handler = logging.StreamHandler()  # sys.stderr at emit time: captured by capsys
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield caplog
    finally:
        root.removeHandler(handler)


def assert_no_canary(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text


def assert_no_canary_in_files(folder: Path) -> int:
    n = 0
    for path in folder.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
            n += 1
    return n


def census(url: str, tmp_path: Path, *args: str) -> int:
    return main(
        ["census", "--api-url", url, "--rate", "100", "--backoff", "0", "--retries", "1",
         "--data-dir", str(tmp_path / "var"), *args]
    )  # fmt: skip


def test_successful_census_with_every_output(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    for fmt, chart in (("table", "c.png"), ("json", "c.svg"), ("csv", "d.svg")):
        code = census(fake.url, tmp_path, "--format", fmt, "--facets", "country,org",
                      "--plot", str(tmp_path / chart))  # fmt: skip
        assert code == 0
    assert main(["census", "history", "--data-dir", str(tmp_path / "var"), "--format", "json",
                 "--plot", str(tmp_path / "h.svg")]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    # the test means something: the key was sent, and urllib3 did log the request lines
    assert {r["key"] for r in fake.requests} == {CANARY}
    request_lines = [
        r.getMessage() for r in debug_logs.records if "/shodan/host/count?" in r.getMessage()
    ]
    assert request_lines and all("key=[REDACTED]" in line for line in request_lines)
    assert "/shodan/host/count?" in err  # the DEBUG lines reached stderr, redacted
    assert_no_canary(out, err, debug_logs.text, *(r.getMessage() for r in debug_logs.records))
    assert assert_no_canary_in_files(tmp_path) >= 7  # 3 runs + 4 charts


@pytest.mark.parametrize(
    "reply",
    [
        Reply(401, json.dumps({"error": f"Invalid API key {CANARY}"}).encode()),
        Reply(403, f"<html>denied key={CANARY}</html>".encode()),
        Reply(429, json.dumps({"error": f"slow down {CANARY}"}).encode()),
        Reply(500, json.dumps({"error": f"crash at /x?key={CANARY}"}).encode()),
        Reply(200, json.dumps({"error": f"bad query for {CANARY}"}).encode()),
        Reply(200, b'{"total": 1, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'),
        Reply(302, b"", (("Location", f"/elsewhere?key={CANARY}"),)),
    ],
    ids=["401-echo", "403-html", "429", "500-echo", "200-error", "too-large", "redirect"],
)
def test_failure_modes(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
    reply: Reply,
) -> None:
    fake.script.extend([Reply(), Reply()])  # two answers, so a partial run is saved
    fake.always = reply
    code = census(fake.url, tmp_path, "--format", "json", "--plot", str(tmp_path / "p.png"))
    assert code in (4, 5, 7)
    out, err = capsys.readouterr()
    assert json.loads(out)["failures"]
    assert_no_canary(out, err, debug_logs.text)
    assert assert_no_canary_in_files(tmp_path) >= 2  # the partial run and its chart


def test_timeout(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    fake.always = Reply(delay=1.0)
    assert census(fake.url, tmp_path, "--timeout", "0.2", "--retries", "0") == 7
    out, err = capsys.readouterr()
    assert "timeout" in out
    assert_no_canary(out, err, debug_logs.text)


def test_unreachable(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHODAN_API_KEY", CANARY)
    assert census(closed_port_url(), tmp_path) == 3
    out, err = capsys.readouterr()
    assert_no_canary(out, err, debug_logs.text)


@pytest.mark.parametrize("status", [401, 500])
def test_exception_text_and_chain(fake: FakeShodan, status: int) -> None:
    fake.always = Reply(status, json.dumps({"error": f"echo {CANARY}"}).encode())
    retry = RetryPolicy(attempts=0)
    counter = ShodanCounter(CANARY, api_url=fake.url, rate=0, retry=retry)
    with counter as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    exc = err.value
    assert exc.__cause__ is None and exc.__context__ is None
    text = "".join(traceback.format_exception(exc))
    assert "echo [REDACTED]" in str(exc)
    assert_no_canary(str(exc), repr(exc), text, exc.message)


def test_exception_chain_when_unreachable() -> None:
    counter = ShodanCounter(CANARY, api_url=closed_port_url(), rate=0)
    with counter as c, pytest.raises(CensusApiError) as err:
        c.count("port:25")
    exc = err.value
    assert exc.__context__ is None
    assert_no_canary("".join(traceback.format_exception(exc)), repr(exc))


def test_dry_run_and_usage_errors_never_show_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHODAN_API_KEY", CANARY + " with a space")
    assert census("https://api.shodan.io", tmp_path) == 2  # not a plausible key
    key_file = tmp_path / "key"
    key_file.write_text(CANARY + " trailing words\n")
    assert census("https://api.shodan.io", tmp_path, "--key-file", str(key_file)) == 2
    assert census("https://api.shodan.io", tmp_path, "--dry-run") == 0
    out, err = capsys.readouterr()
    assert_no_canary(out, err)
