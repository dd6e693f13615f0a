"""``mailtls census`` end to end against the fake Shodan API: outputs, history, every failure."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from census_fakeshodan import CORPUS, Banner, FakeShodan, Reply, closed_port_url, serve

from mailtls.census.profiles import get_profile
from mailtls.cli import main

KEY = "cli0key0123456789abcdef0123456789"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShodan]:
    monkeypatch.setenv("SHODAN_API_KEY", KEY)
    monkeypatch.delenv("SHODAN_API_URL", raising=False)
    with serve(CORPUS) as server:
        yield server


def census(fake_url: str, data_dir: Path, *args: str) -> int:
    return main(
        ["census", "--api-url", fake_url, "--rate", "100", "--backoff", "0",
         "--data-dir", str(data_dir), *args]
    )  # fmt: skip


def run_json(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any]]:
    code = census(fake.url, tmp_path, "--format", "json", *args)
    return code, json.loads(capsys.readouterr().out)


def indicator(doc: dict[str, Any], base_id: str, key: str) -> dict[str, Any]:
    base = next(b for b in doc["bases"] if b["id"] == base_id)
    return next(i for i in base["indicators"] if i["key"] == key)


def total(doc: dict[str, Any], base_id: str) -> int | None:
    return next(b["total"] for b in doc["bases"] if b["id"] == base_id)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("base_id", "key", "count", "base"),
    [
        ("smtp-587", "plaintext_auth", 3, 5),
        ("smtp-587", "starttls", 3, 5),
        ("smtp-587", "no_starttls", 2, 5),
        ("smtp-587", "plaintext_auth_without_starttls", 1, 5),
        ("smtp-587", "neither_starttls_nor_auth", 1, 5),
        ("smtp-25", "plaintext_auth", 1, 2),  # the nginx banner is not in the protocol base
        ("imap-143", "plaintext_auth", 2, 4),
        ("imap-143", "login_not_disabled", 3, 4),
        ("imap-143", "no_starttls", 2, 4),
        ("imap-143", "plaintext_auth_without_starttls", 1, 4),
        ("imap-143", "neither_starttls_nor_auth", 1, 4),
        ("pop3-110", "plaintext_auth", 2, 3),
        ("pop3-110", "plaintext_auth_without_starttls", 1, 3),
        ("pop3-110", "neither_starttls_nor_auth", 0, 3),
    ],
)
def test_protocol_profile_counts_and_shares(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    base_id: str,
    key: str,
    count: int,
    base: int,
) -> None:
    code, doc = run_json(fake, tmp_path, capsys)
    assert code == 0
    ind = indicator(doc, base_id, key)
    assert (ind["count"], ind["base"]) == (count, base)
    assert ind["share"] == pytest.approx(count / base)
    assert doc["complete"] is True and doc["profile"] == "protocol"
    assert fake.queries == list(get_profile("protocol").queries)
    assert Path(doc["saved_to"]).is_file()


def test_loose_and_product_profiles(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, loose = run_json(fake, tmp_path, capsys, "--profile", "loose")
    assert code == 0
    assert total(loose, "smtp-25") == 3
    assert indicator(loose, "smtp-25", "plaintext_auth")["share"] == pytest.approx(1 / 3)
    assert total(loose, "pop3-995") == 1
    code, product = run_json(fake, tmp_path, capsys, "--profile", "product")
    assert code == 0
    assert total(product, "smtp-587-postfix") == 2
    assert indicator(product, "smtp-587-postfix", "plaintext_auth")["count"] == 1
    assert indicator(product, "smtp-587-microsoft-exchange", "plaintext_auth")["count"] == 0
    assert indicator(product, "imap-143-dovecot", "plaintext_auth")["count"] == 1
    assert indicator(product, "pop3-110-courier", "plaintext_auth")["count"] == 1
    assert total(product, "imap-993-cyrus") == 0


def test_facet_breakdown_per_indicator(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(fake, tmp_path, capsys, "--facets", "country,org", "--top", "5")
    assert code == 0
    assert fake.requests[0]["facets"] == "country:5,org:5"
    rows = {
        r["value"]: r for r in indicator(doc, "smtp-587", "plaintext_auth")["facets"]["country"]
    }
    assert (rows["DE"]["count"], rows["DE"]["base"], rows["DE"]["share"]) == (1, 2, 0.5)
    assert (rows["US"]["count"], rows["US"]["base"]) == (1, 2)
    assert (rows["FR"]["count"], rows["FR"]["share"]) == (1, 1.0)
    orgs = {r["value"]: r["count"] for r in indicator(doc, "smtp-587", "starttls")["facets"]["org"]}
    assert orgs == {"Hoster A": 2, "Hoster B": 0, "Hoster C": 1}  # B: absent, list complete


def test_table_output(fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert census(fake.url, tmp_path, "--facets", "country") == 0
    out, err = capsys.readouterr()
    assert "profile protocol v1" in out
    assert "60.0 %" in out  # SMTP 587: 3 of 5 advertise AUTH PLAIN/LOGIN
    assert "neither STARTTLS nor AUTH" in out
    assert "by country" in out
    assert "mailtls probe" in out and "not of organisations" in out
    assert "run saved to" in err


def test_csv_output(fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert census(fake.url, tmp_path, "--format", "csv", "--facets", "country") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    row = next(
        r
        for r in rows
        if r["kind"] == "indicator"
        and r["base_id"] == "imap-143"
        and r["indicator"] == "plaintext_auth"
    )
    assert (row["count"], row["base_count"], row["share"]) == ("2", "4", "0.500000")
    assert row["query"] == 'port:143 "IMAP4rev1" "CAPABILITY" -"LOGINDISABLED"'
    assert any(r["kind"] == "indicator_facet" and r["value"] == "DE" for r in rows)
    assert any(
        r["kind"] == "base" and r["base_id"] == "pop3-995" and r["count"] == "0" for r in rows
    )


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    chart = tmp_path / f"census{suffix}"
    assert census(fake.url, tmp_path, "--profile", "product", "--plot", str(chart)) == 0
    data = chart.read_bytes()
    assert len(data) > 2000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        text = data.decode()
        assert "<svg" in text and "plaintext auth" in text and "profile product v1" in text
        assert "Postfix 587" in text
    assert "chart written" in capsys.readouterr().err


def test_history_across_two_runs(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert census(fake.url, tmp_path, "--format", "json") == 0
    # between the runs, two more 587 services without any AUTH appear in the index
    new = "220 z ESMTP Postfix\r\n250-z\r\n250 STARTTLS"
    fake.corpus.extend([Banner(587, new, "Postfix smtpd")] * 2)
    assert census(fake.url, tmp_path, "--format", "json") == 0
    capsys.readouterr()
    assert len(list((tmp_path / "census").glob("census-*.json"))) == 2
    assert main(["census", "history", "--data-dir", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["runs"]) == 2
    series = next(s for s in doc["series"] if s["base_id"] == "smtp-587")
    assert series["indicator"] == "plaintext_auth"
    assert [p["share"] for p in series["points"]] == pytest.approx([3 / 5, 3 / 7])
    assert series["change"] == pytest.approx(3 / 7 - 3 / 5)
    chart = tmp_path / "history.png"
    args = ["census", "history", "--data-dir", str(tmp_path), "--plot", str(chart)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "-17.1 pp" in out and "60.0 %" in out and "42.9 %" in out
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert main(["census", "history", "--data-dir", str(tmp_path), "--indicator", "all"]) == 0
    assert "neither STARTTLS nor AUTH" in capsys.readouterr().out


def test_history_skips_damaged_files_and_needs_runs(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["census", "history", "--data-dir", str(tmp_path)]) == 2
    assert "no saved census runs" in capsys.readouterr().err
    assert census(fake.url, tmp_path, "--no-save", "--format", "json") == 0
    assert not (tmp_path / "census").exists()
    assert census(fake.url, tmp_path, "--format", "csv") == 0
    (tmp_path / "census" / "census-broken.json").write_text("{not json")
    (tmp_path / "census" / "census-other.json").write_text('{"format": 1}')
    capsys.readouterr()
    assert main(["census", "history", "--data-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("skipped") == 2
    assert "Traceback" not in err
    assert "60.0 %" in out
    assert main(["census", "history", "--data-dir", str(tmp_path), "--indicator", "bogus"]) == 2


def test_dry_run_needs_no_key_and_sends_nothing(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHODAN_API_KEY")
    assert census(fake.url, tmp_path, "--dry-run", "--profile", "product") == 0
    out = capsys.readouterr().out
    for q in get_profile("product").queries:
        assert q in out
    assert census(fake.url, tmp_path, "--dry-run", "--format", "json", "--facets", "asn") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["queries"] == list(get_profile("protocol").queries)
    assert doc["facets"] == "asn:10"
    assert fake.requests == []
    assert not (tmp_path / "census").exists()


def test_no_key(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHODAN_API_KEY")
    assert census(fake.url, tmp_path) == 3
    assert "no Shodan API key" in capsys.readouterr().err
    assert fake.requests == []


def test_key_file(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHODAN_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text("\n  filekey0123456789abcdef  \nsecond line\n")
    assert census(fake.url, tmp_path, "--key-file", str(key_file), "--format", "csv") == 0
    assert {r["key"] for r in fake.requests} == {"filekey0123456789abcdef"}
    for content, code in ((b"", 2), (b"has space inside\n", 2), (b"\xff\xfe", 2), (b"k" * 5000, 2)):
        key_file.write_bytes(content)
        assert census(fake.url, tmp_path, "--key-file", str(key_file)) == code
    assert census(fake.url, tmp_path, "--key-file", str(tmp_path / "missing")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "has space" not in err


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, 4, "refused the API key"),
        (402, 5, "plan, query-credit or rate limit"),
        (403, 5, "plan, query-credit or rate limit"),
        (429, 5, "too many requests"),
    ],
)
def test_fatal_statuses_stop_with_their_exit_code(
    fake: FakeShodan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: int,
    words: str,
) -> None:
    fake.always = Reply(status, json.dumps({"error": "nope"}).encode())
    assert census(fake.url, tmp_path, "--retries", "1") == code
    err = capsys.readouterr().err
    assert words in err
    assert len(fake.requests) == (2 if status == 429 else 1)  # stopped at the first query
    assert not (tmp_path / "census").exists()  # nothing answered, nothing saved


def test_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHODAN_API_KEY", KEY)
    assert census(closed_port_url(), tmp_path) == 3
    err = capsys.readouterr().err
    assert "could not be reached" in err and "connection refused" in err


def test_partial_census_keeps_counts_and_names_failed_queries(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = 'port:587 "220" "250" "STARTTLS"'
    slow = 'port:110 "+OK" "CAPA" "USER"'
    fake.by_query[broken] = Reply(500, b'{"error": "Internal error"}')
    fake.by_query[slow] = Reply(delay=1.0)
    code = census(fake.url, tmp_path, "--format", "json", "--retries", "1", "--timeout", "0.3")
    assert code == 7
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["complete"] is False and doc["stopped"] is None
    failures = {f["query"]: f["failure"] for f in doc["failures"]}
    assert failures == {broken: "server_error", slow: "timeout"}
    assert fake.queries.count(broken) == 2  # retried once
    assert indicator(doc, "smtp-587", "starttls")["count"] is None
    assert indicator(doc, "smtp-587", "plaintext_auth")["count"] == 3  # unaffected, kept
    assert "partial census: 2 of 25 queries failed" in err
    saved = json.loads(Path(doc["saved_to"]).read_text())
    assert saved["complete"] is False
    assert {q["query"] for q in saved["queries"] if not q["ok"]} == {broken, slow}


def test_fatal_failure_midway_keeps_what_it_got(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.script.extend([Reply()] * 6 + [Reply(403, b'{"error": "Access denied"}')])
    assert census(fake.url, tmp_path, "--format", "json") == 5
    doc = json.loads(capsys.readouterr().out)
    assert doc["stopped"] == "limit"
    kinds = [f["failure"] for f in doc["failures"]]
    assert kinds[0] == "limit" and set(kinds[1:]) == {"skipped"} and len(kinds) == 25 - 6
    assert len(fake.requests) == 7
    assert total(doc, "smtp-25") == 2
    assert Path(doc["saved_to"]).is_file()


def test_too_many_failures_in_a_row_stop_the_census(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.always = Reply(502, b"<html>bad gateway</html>")
    assert census(fake.url, tmp_path, "--retries", "0") == 7
    assert len(fake.requests) == 3
    assert "partial census" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--top", "0"],
        ["--facets", "country;rm -rf"],
        ["--facets", "country,country"],
        ["--plot", "chart.pdf"],
        ["--rate", "0"],
        ["--retries", "99"],
        ["--timeout", "-1"],
        ["--api-url", "http://api.example.org"],
        ["--api-url", "not a url"],
    ],
)
def test_bad_arguments_are_usage_errors(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert census(fake.url, tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailtls: error:") and "Traceback" not in err
    assert fake.requests == []


def test_json_carries_every_query_sent_with_its_raw_total(
    fake: FakeShodan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(fake, tmp_path, capsys)
    assert code == 0
    sent = set(fake.queries)
    listed = {q["query"]: q["total"] for q in doc["queries"]}
    assert set(listed) == sent
    assert all(isinstance(t, int) for t in listed.values())
    derived = 0
    for base in doc["bases"]:
        for ind in base["indicators"]:
            assert ind["plus_total"] == listed[ind["plus_query"]]
            if ind["minus_query"] is not None:
                derived += 1
                assert ind["minus_total"] == listed[ind["minus_query"]]
                assert ind["count"] == ind["plus_total"] - ind["minus_total"]
    assert derived > 0  # the "minus" queries behind the derived indicators are all there
