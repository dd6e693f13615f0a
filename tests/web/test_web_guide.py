"""The plain-language guide as pure functions: milestones, adaptivity, verdict texts, summary;
the share token and the time helpers of the pages."""

from __future__ import annotations

from typing import Any

import pytest

from mailtls.web import guide
from mailtls.web.lookup import share_token
from mailtls.web.pages import clock_text, minutes_left


def step(scenario: str, testcase: str, **extra: Any) -> dict[str, Any]:
    return {"n": 1, "scenario": scenario, "testcase": testcase, "state": "active"} | extra


def opened(conn: str, protocol: str = "imap", active: bool = True, n: int = 1) -> dict[str, Any]:
    return {
        "type": "connection_opened",
        "conn": conn,
        "protocol": protocol,
        "active": active,
        "step": n,
    }


@pytest.mark.parametrize(
    ("the_step", "events", "protocol", "may_finish", "missing"),
    [
        (step("immediate", "t1"), [], "imap", False, "a connection from your app to IMAP"),
        (step("immediate", "t1"), [opened("a")], "imap", True, None),
        (step("immediate", "t2"), [opened("a")], "imap", False, "a second IMAP connection"),
        (step("immediate", "t4"), [opened("a"), opened("b")], "imap", True, None),
        (step("immediate", "t1"), [opened("a", "imap")], "pop3", False, "to POP3"),
        (step("immediate", "t1"), [opened("a", "pop3")], "pop3", True, None),
        (step("immediate", "t1"), [opened("a", n=2)], "imap", False, "to IMAP"),  # other step
        (step("two_phase", "t1"), [opened("a", active=False)], "imap", False, "arm the attack"),
        (
            step("two_phase", "t1", activated=5.0),
            [opened("a", active=False)],
            "imap",
            False,
            "after the attack was armed",
        ),
        (
            step("two_phase", "t1", activated=5.0),
            [opened("a", active=False), opened("b")],
            "imap",
            True,
            None,
        ),
        (
            step("immediate", "t2", reports={"cannot_connect": True}),
            [],
            "imap",
            True,
            None,
        ),
    ],
)
def test_milestones(
    the_step: dict[str, Any],
    events: list[dict[str, Any]],
    protocol: str,
    may_finish: bool,
    missing: str | None,
) -> None:
    progress = guide.milestones(the_step, events, protocol)
    assert progress.may_finish is may_finish
    if missing:
        assert any(missing in m for m in progress.missing), progress.missing
    else:
        assert progress.missing == []


def test_steps_that_cannot_apply_to_an_implicit_tls_client() -> None:
    view = {"steps": [step("immediate", "baseline"), {**step("two_phase", "t1"), "n": 2}]}
    tls_only = [{"type": "connection_opened", "step": 1, "security": "tls"}]
    mixed = [*tls_only, {"type": "connection_opened", "step": 1, "security": "starttls"}]
    assert guide.cannot_apply(view["steps"][1], view, tls_only)
    assert guide.cannot_apply(view["steps"][1], view, mixed) is None
    assert guide.cannot_apply(view["steps"][1], view, []) is None
    t4 = {**step("two_phase", "t4"), "n": 2}
    assert guide.cannot_apply(t4, view, tls_only) is None


def test_verdict_texts() -> None:
    good = guide.verdict_text({"verdict": "INCONCLUSIVE", "reason": "aborted_after_downgrade"})
    assert good[0].startswith("Safe")
    assert "no clear answer" in guide.verdict_text({"verdict": "INCONCLUSIVE", "reason": "loop"})[0]
    na = guide.verdict_text({"verdict": "NOT_APPLICABLE", "testcase": "baseline"})
    assert "check the server name" in na[1]
    assert "safe" in guide.verdict_text({"verdict": "NOT_APPLICABLE", "testcase": "t1"})[1]
    for verdict in ("PASS", "FAIL", "WARN", "SKIPPED"):
        assert guide.verdict_text({"verdict": verdict})[0]
    notes = guide.finding_notes(
        {"findings": [{"tag": "starttls_not_attempted"}, {"tag": "tls_auth"}]}
    )
    assert len(notes) == 1 and "configured without encryption" in notes[0]  # no raw tag


def test_live_lines_drop_immediate_repeats_and_other_steps() -> None:
    events = [
        {"id": 1, "step": 1, "conn": "a", "summary": "offered"},
        {"id": 2, "step": 1, "conn": "a", "summary": "offered"},
        {"id": 3, "step": 2, "conn": "b", "summary": "other step"},
        {"id": 4, "step": 1, "conn": "a", "type": "command"},
        {"id": 5, "step": 1, "conn": "c", "summary": "offered"},
    ]
    assert [e["id"] for e in guide.live_lines(events, 1)] == [1, 5]


def test_next_step_prefers_the_active_one() -> None:
    steps = [
        {"n": 1, "state": "finished"},
        {"n": 2, "state": "pending"},
        {"n": 3, "state": "active"},
    ]
    assert guide.next_step(steps)["n"] == 3  # type: ignore[index]
    assert guide.next_step(steps, after=3) is None


def test_share_token_is_one_way_and_long() -> None:
    token = share_token("owner-token")
    assert token == share_token("owner-token") != share_token("owner-token2")
    assert len(token) == 32 and "owner" not in token


def test_time_helpers() -> None:
    assert clock_text(0) == "00:00 UTC"
    assert clock_text(None) == "—"
    assert minutes_left(1000.0, now=1000.0 - 61) == 2
    assert minutes_left(1000.0, now=2000.0) == 0
    assert minutes_left(None) == 0


def test_instructions_say_what_to_do_by_behaviour() -> None:
    t2 = " ".join(guide.step_instructions("immediate", "t2", "imap"))
    assert "once more" in t2 and "remove the account" in t2
    fresh = " ".join(guide.step_instructions("two_phase", "t1", "pop3"))
    assert "fresh, secure setup" in fresh
    assert "once more" not in " ".join(guide.step_instructions("immediate", "t1", "imap"))
