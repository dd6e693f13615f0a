"""The results page's words as pure functions: one outcome per verdict (the secure refusal is
green everywhere, nothing unsafe is), the headline, advice grouped by protocol and said once, and
the data-driven tables (every test case, finding and app has its entry)."""

from __future__ import annotations

from typing import Any

import pytest

from mailtls.testcases import TESTCASES as POLICIES
from mailtls.web import results
from mailtls.web.fixes import APPS
from mailtls.web.outcomes import FINDINGS, OUTCOMES, TESTCASES, outcome_of, step_outcome


def step(
    n: int,
    testcase: str,
    verdict: str | None,
    reason: str | None = None,
    protocols: dict[str, str] | None = None,
    findings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "n": n,
        "scenario": "immediate",
        "testcase": testcase,
        "state": "pending" if verdict is None else "finished",
        "verdict": verdict,
        "reason": reason,
        "protocols": {p: {"verdict": v} for p, v in (protocols or {}).items()},
        "findings": findings or [],
    }


def test_one_label_and_colour_per_outcome() -> None:
    labels = [o.label for o in OUTCOMES.values()]
    assert len(labels) == len(set(labels))
    refusal = outcome_of("INCONCLUSIVE", "aborted_after_downgrade")
    assert refusal.key == "stopped" and refusal.resisted and refusal.label.startswith("Safe")
    assert outcome_of("INCONCLUSIVE", "loop").key == "unclear"
    assert outcome_of("FAIL", "plaintext_auth").label == "Unsafe"
    # only safe outcomes are called safe
    for o in OUTCOMES.values():
        assert o.label.startswith("Safe") == (o.key in ("pass", "stopped")), o
    assert step_outcome({"state": "skipped", "verdict": None}).key == "skipped"


def test_every_test_case_of_the_service_has_its_words() -> None:
    for name in POLICIES:
        assert name in TESTCASES, f"add {name!r} to web/outcomes.py TESTCASES"
        assert TESTCASES[name].title and TESTCASES[name].explain


def test_every_app_fix_cites_its_documentation() -> None:
    anchors = [a.anchor for a in APPS]
    assert len(anchors) == len(set(anchors)) and len(APPS) >= 5
    for app in APPS:
        assert app.source.startswith(("https://", "http://")) and app.steps


@pytest.mark.parametrize(
    ("verdicts", "key", "words"),
    [
        ([("baseline", "PASS"), ("t1", "FAIL"), ("t2", "SKIPPED")], "fail", "in 1 of 1 attack"),
        ([("baseline", "PASS"), ("t1", None)], "pass", "1 step still to do"),
        ([("t1", "PASS"), ("t2", "WARN")], "warn", "resisted 1 of 2 attacks"),
        (
            [
                ("t1", "PASS"),
                ("t2", "NOT_APPLICABLE"),
                ("t3", "INCONCLUSIVE:aborted_after_downgrade"),
            ],
            "pass",
            "resisted all 3 attacks",
        ),
        ([("t1", "PASS"), ("t2", "INCONCLUSIVE:never_connected")], "unclear", "no clear answer"),
        ([("t1", "SKIPPED")], "open", "No step was completed"),
        ([("baseline", "FAIL")], "fail", "even without an attack"),
    ],
)
def test_headline(verdicts: list[tuple[str, str | None]], key: str, words: str) -> None:
    steps = []
    for n, (testcase, v) in enumerate(verdicts, 1):
        verdict, _, reason = (v or "").partition(":")
        s = step(n, testcase, verdict or None, reason or None)
        if verdict == "SKIPPED":
            s["state"] = "skipped"
        steps.append(s)
    head = results.headline(steps)
    assert head.outcome.key == key
    assert words in head.sentence


def test_advice_is_grouped_by_protocol_and_said_once() -> None:
    steps = [
        step(1, "baseline", "PASS", protocols={"imap": "PASS", "smtp": "PASS"}),
        step(2, "t1", "FAIL", protocols={"imap": "FAIL", "smtp": "FAIL"}),
        step(3, "t2", "FAIL", protocols={"imap": "FAIL", "smtp": "PASS"}),
        step(4, "t3", "FAIL", protocols={"imap": "FAIL"}),
        step(
            5,
            "t4",
            "WARN",
            findings=[{"tag": "user_prompt", "protocol": None}],
        ),
    ]
    groups = results.advice(steps, "imap")
    assert [g.protocol for g in groups] == ["imap", "smtp", "general"]
    imap, smtp, general = groups
    assert len(imap.items) == 1 and "receiving mail (IMAP)" in imap.items[0]
    assert imap.attacks == [f"{TESTCASES[t].title} (new account)" for t in ("t1", "t2", "t3")]
    assert smtp.attacks == [f"{TESTCASES['t1'].title} (new account)"]
    assert "answer 'no'" in general.items[0]
    text = " ".join(i for g in groups for i in g.items)
    for internal in ("plaintext_auth", "tls_auth", "user_prompt", "two_phase", "immediate"):
        assert internal not in text


def test_rows_keep_tags_for_the_details_only() -> None:
    row = results.rows(
        [
            step(
                1,
                "t1",
                "INCONCLUSIVE",
                "aborted_after_downgrade",
                findings=[{"tag": "starttls_disrupted"}, {"tag": "username_plaintext"}],
            )
        ],
        {},
    )[0]
    assert row["outcome"].key == "stopped" and row["why"] is None
    assert row["tags"] == ["starttls_disrupted", "username_plaintext"]
    assert row["notes"] == [FINDINGS["username_plaintext"].text]
