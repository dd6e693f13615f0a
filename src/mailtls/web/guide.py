"""Plain-language guidance: step instructions, milestones, verdict explanations, result rows.

Everything a non-expert reads is worded here, by behaviour ("check for new mail", "send a test
message"), never by one client's menu labels, and without jargon that is not explained on the
spot. The functions are pure: they take the run view (``RunManager.view``) and the run's
visible events (``transcript.visible_events``) and return data for the templates.
Must not import ``mailtls.net``, the store or the run manager.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailtls.web.outcomes import (
    ADVICE,
    FINDINGS,
    REASONS,
    SCENARIOS,
    TESTCASES,
    finding_text,
    step_outcome,
)

# views of the one table in ``outcomes`` (templates read these)
ATTACKS = tuple(name for name, t in TESTCASES.items() if t.attack)
RETRY_CASES = tuple(name for name, t in TESTCASES.items() if t.retry)
TESTCASE_TITLE = {name: t.title for name, t in TESTCASES.items()}
TESTCASE_EXPLAIN = {name: t.explain for name, t in TESTCASES.items()}
SCENARIO_TITLE = {name: title for name, (title, _explain) in SCENARIOS.items()}
SCENARIO_EXPLAIN = {name: explain for name, (_title, explain) in SCENARIOS.items()}
REASON_TEXT = REASONS
FINDING_TEXT = {tag: f.text for tag, f in FINDINGS.items()}
STATE_TEXT = {
    "pending": "to do",
    "active": "in progress",
    "finished": "finished",
    "skipped": "skipped",
}


@dataclass(frozen=True)
class Progress:
    """Milestones of an active step: what happened, what is missing, whether it may finish."""

    checks: list[tuple[str, bool]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    may_finish: bool = False


def step_of(view: dict[str, Any], n: int) -> dict[str, Any] | None:
    for step in view["steps"]:
        if step["n"] == n:
            return dict(step)
    return None


def next_step(steps: list[dict[str, Any]], after: int = 0) -> dict[str, Any] | None:
    """The first step after ``after`` that is still to do (active before pending)."""
    later = [s for s in steps if s["n"] > after and s["state"] in ("active", "pending")]
    active = [s for s in later if s["state"] == "active"]
    todo = active or later
    return todo[0] if todo else None


def step_instructions(scenario: str, testcase: str, protocol: str | None) -> list[str]:
    fetch = "check for new mail"
    out: list[str] = []
    if scenario == "immediate":
        out.append(
            "Add the test account to your mail app now, with the settings below. If your app "
            "offers to find the settings automatically, let it."
        )
        out.append(f"Then {fetch} and send a test message to any address.")
    else:
        out.append(
            "Start from a fresh, secure setup: add the test account with the settings below, "
            "connection security 'STARTTLS' or 'SSL/TLS'."
        )
        out.append(
            f"{fetch.capitalize()} once. This first secure login arms the attack; the page "
            "shows it under 'What we see'."
        )
        out.append(f"Then {fetch} again and send a test message to any address.")
    if testcase in RETRY_CASES:
        out.append(
            "Your app probably shows an error now. Press 'check mail' and 'send' once more: "
            "apps do not retry by themselves, and the second try is what this step tests."
        )
    if testcase != "baseline":
        out.append(
            "If your app warns you or asks whether to continue without encryption, do not "
            "accept; just tell us below."
        )
    if scenario == "immediate":
        out.append(
            "When you finish this step, remove the account from your app, so that nothing it "
            "saved here changes the next step."
        )
    else:
        out.append("When you finish this step, remove the account from your app.")
    return out


def _incoming(protocol: str | None, conns: dict[str, set[str]]) -> str:
    if protocol in ("imap", "pop3"):
        return protocol
    return "pop3" if "pop3" in conns and "imap" not in conns else "imap"


def milestones(
    step: dict[str, Any], events: list[dict[str, Any]], protocol: str | None
) -> Progress:
    """Whether the user may finish the step, and what is seen and still missing.

    A step needs a connection from the client to its incoming protocol (a POP3 user never needs
    IMAP); t2/t4 need a second one (the retry after the error); a two_phase step counts only
    connections made after the attack was armed, and needs that secure login first. The answer
    "my app could not connect" always lets the user finish.
    """
    two_phase = step["scenario"] == "two_phase"
    conns: dict[str, set[str]] = {}
    for e in events:
        if e.get("step") != step["n"] or e.get("type") != "connection_opened" or not e.get("conn"):
            continue
        if two_phase and not e.get("active"):
            continue
        conns.setdefault(str(e.get("protocol")), set()).add(str(e["conn"]))
    incoming = _incoming(protocol, conns)
    name = incoming.upper()
    n_in = len(conns.get(incoming, set()))
    checks: list[tuple[str, bool]] = []
    missing: list[str] = []
    if two_phase:
        armed = bool(step.get("activated"))
        checks.append(("Your app logged in securely once (this arms the attack)", armed))
        if not armed:
            missing.append("one secure login to arm the attack (check for new mail once)")
    after = " after the attack was armed" if two_phase else ""
    checks.append((f"Your app connected to {name}{after}", n_in >= 1))
    if n_in < 1 and not (two_phase and not step.get("activated")):
        missing.append(f"a connection from your app to {name}{after}")
    if step["testcase"] in RETRY_CASES:
        checks.append((f"Your app tried {name} a second time (after the error)", n_in >= 2))
        if n_in < 2:
            missing.append(
                f"a second {name} connection: press 'check mail' once more after the error"
            )
    if conns.get("smtp"):
        checks.append(("Your app connected to the sending server (SMTP)", True))
    reports = step.get("reports") or {}
    if reports.get("cannot_connect"):
        return Progress(checks, [], True)
    return Progress(checks, missing, not missing)


def cannot_apply(
    step: dict[str, Any], view: dict[str, Any], events: list[dict[str, Any]]
) -> str | None:
    """Why this step cannot apply to the user's app, judging by earlier steps (or None)."""
    if step["scenario"] != "two_phase" or step["testcase"] not in ("t1", "t2", "t3"):
        return None
    baseline = {s["n"] for s in view["steps"] if s["testcase"] == "baseline"}
    kinds = {
        e.get("security")
        for e in events
        if e.get("type") == "connection_opened" and e.get("step") in baseline
    }
    if kinds != {"tls"}:
        return None
    return (
        "In the normal step your app used only the always-encrypted ports (SSL/TLS). This "
        "attack targets the switch to encryption on the other ports, which your app does not "
        "use, so it cannot apply. We recommend skipping this step."
    )


def live_lines(events: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The step's events that have a friendly sentence, without immediate repeats."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e.get("step") != n or not e.get("summary"):
            continue
        if out and out[-1].get("summary") == e["summary"] and out[-1].get("conn") == e.get("conn"):
            continue
        out.append(e)
    return out


def transcripts(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per step, the (already privacy-filtered) events of its connections, in order."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if isinstance(e.get("step"), int) and e.get("conn"):
            by_step.setdefault(e["step"], []).append(e)
    return by_step


def verdict_text(step: dict[str, Any]) -> tuple[str, str]:
    """One sentence saying what the step's outcome means, and what to do about it."""
    outcome = step_outcome(step)
    if outcome.key == "open" and not step.get("verdict"):
        return "Not finished yet.", ""
    advice = ""
    if outcome.key == "fail":
        advice = ADVICE["encrypt"].format(what="receiving and sending")
    elif outcome.key == "warn":
        advice = ADVICE["prompt"]
    elif outcome.key == "noconnect":
        advice = (
            ADVICE["baseline_noconnect"]
            if step.get("testcase") == "baseline"
            else "Under attack that is safe behaviour: the attacker got nothing."
        )
    elif outcome.key == "unclear":
        advice = "See the reason; you can repeat this test later."
    elif outcome.key in ("pass", "stopped"):
        advice = "Nothing to do."
    return outcome.meaning, advice


def finding_notes(step: dict[str, Any]) -> list[str]:
    """The plain sentences of a step's findings that its outcome does not already say."""
    tags = dict.fromkeys(str(f.get("tag")) for f in step.get("findings") or [])
    return [finding_text(t).text for t in tags if finding_text(t).shown and t in FINDINGS]
