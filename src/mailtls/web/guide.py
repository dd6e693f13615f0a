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

ATTACKS = ("t1", "t2", "t3", "t4")
RETRY_CASES = ("t2", "t4")  # the client sees an error and must be told to try once more

TESTCASE_TITLE = {
    "baseline": "Normal connection (no attack)",
    "t1": "Attack 1: encryption offer removed",
    "t2": "Attack 2: encryption start broken",
    "t3": "Attack 3: encryption refused",
    "t4": "Attack 4: encrypted connection broken",
}
SCENARIO_TITLE = {"immediate": "New account", "two_phase": "Existing account"}
TESTCASE_EXPLAIN = {
    "baseline": "The server behaves honestly. This shows how your app connects normally.",
    "t1": (
        "The attacker hides the server's offer to encrypt (STARTTLS: the command that switches "
        "a mail connection to encryption). A safe app refuses to log in without encryption."
    ),
    "t2": (
        "The server agrees to encrypt, but the attacker breaks the start of the encryption. "
        "A safe app gives up; an unsafe one may try again without encryption."
    ),
    "t3": (
        "The attacker answers the request to encrypt with a 'temporarily unavailable' error. "
        "A safe app stops; an unsafe one goes on without encryption."
    ),
    "t4": (
        "Encryption starts, then the attacker interrupts it with an unencrypted error. "
        "A safe app gives up; an unsafe one may try again without encryption."
    ),
}
SCENARIO_EXPLAIN = {
    "immediate": (
        "New account: the attack is active from the first connection. This tests setting up an "
        "account while someone interferes (for example on a public Wi-Fi)."
    ),
    "two_phase": (
        "Existing account: your app first logs in once normally and securely; only then does the "
        "attack start. This tests an account that already worked before."
    ),
}

VERDICT_TEXT: dict[str, tuple[str, str]] = {
    "PASS": (
        "Safe: your app sent its password only over encrypted connections.",
        "Nothing to do.",
    ),
    "FAIL": (
        "Unsafe: your app sent your password WITHOUT encryption while under attack.",
        "In the account settings, set the connection security to 'SSL/TLS' (best) or "
        "'STARTTLS' and make sure unencrypted connections are never allowed. If your app offers "
        "no such setting, consider another app. Change the password of any real account you "
        "used this app with on untrusted networks.",
    ),
    "INCONCLUSIVE": (
        "No clear verdict for this step.",
        "See the reason; you can repeat this test later.",
    ),
    "WARN": (
        "Your app warned you or asked whether to continue without encryption.",
        "Always answer 'no' to such a question: a real attacker causes exactly this prompt. "
        "Safer apps simply refuse.",
    ),
    "NOT_APPLICABLE": (
        "Your app could not connect at all in this step.",
        "Under attack that is safe behaviour: the attacker got nothing.",
    ),
    "SKIPPED": ("You skipped this step.", ""),
}
GOOD_ABORT = (
    "Safe: your app refused to continue without encryption, so the attacker got nothing.",
    "Nothing to do. This is the outcome you want.",
)
BASELINE_NA_ADVICE = (
    "Even without an attack your app could not connect: check the server name, port and user "
    "name in the account settings, then repeat the test."
)
REASON_TEXT = {
    "aborted_after_downgrade": (
        "Good outcome: your app refused to continue without encryption, so the attacker got "
        "nothing."
    ),
    "never_connected": "Your app never connected during this step.",
    "loop": "Your app kept reconnecting without logging in.",
    "binding_mismatch": (
        "A login with your test account came from a connection that was not attached to this "
        "step (another network, or another test running from your address at the same time)."
    ),
    "not_exercised": (
        "The attack never became active: your app did not log in securely first, or did not "
        "connect again afterwards."
    ),
}
FINDING_TEXT = {
    "plaintext_auth": "Password sent without encryption.",
    "tls_auth": "Password sent inside an encrypted connection.",
    "starttls_not_attempted": (
        "Your app is configured without encryption: it logged in without even trying to "
        "encrypt. In the account settings, change the connection security to 'SSL/TLS' or "
        "'STARTTLS' for both receiving and sending."
    ),
    "starttls_disrupted": "The simulated attacker disrupted the encryption.",
    "pipelined_after_starttls": (
        "Your app sent commands before encryption was ready (a sign of careless programming)."
    ),
    "username_plaintext": "Your user name (not the password) was sent without encryption.",
    "user_prompt": "You reported a security warning or prompt.",
    "user_cannot_connect": "You reported that your app could not connect.",
    "report_contradicts_events": (
        "Your answer does not match what the server saw: you said your app could not connect, "
        "but it reached the login. Check your answer; the server's observation counts."
    ),
    "binding_mismatch": "A login came from a connection not attached to this step.",
    "username_misused": (
        "Someone else used your test username with a wrong password (it travels unencrypted "
        "during the tests, so anyone on the path can read it). This does not count as your "
        "app's result."
    ),
    "loop": "Your app reconnected again and again without logging in.",
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
    """One sentence saying what the verdict means, and what to do about it."""
    verdict, reason = step.get("verdict"), step.get("reason")
    if verdict is None:
        return "Not finished yet.", ""
    if verdict == "INCONCLUSIVE" and reason == "aborted_after_downgrade":
        return GOOD_ABORT
    headline, advice = VERDICT_TEXT.get(str(verdict), (str(verdict), ""))
    if verdict == "NOT_APPLICABLE" and step.get("testcase") == "baseline":
        advice = BASELINE_NA_ADVICE
    return headline, advice


def result_rows(
    steps: list[dict[str, Any]], by_step: dict[int, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in steps:
        headline, advice = verdict_text(s)
        tags = [str(f.get("tag")) for f in s.get("findings") or []]
        reason = s.get("reason")
        good = s.get("verdict") == "INCONCLUSIVE" and reason == "aborted_after_downgrade"
        rows.append(
            {
                "n": s["n"],
                "scenario": s["scenario"],
                "testcase": s["testcase"],
                "title": TESTCASE_TITLE.get(s["testcase"], s["testcase"]),
                "state": s["state"],
                "verdict": s.get("verdict"),
                "good": good,
                "headline": headline,
                "reason": None if good else REASON_TEXT.get(str(reason)),
                "advice": advice,
                "findings": [(t, FINDING_TEXT.get(t, t)) for t in dict.fromkeys(tags)],
                "not_encrypted": "starttls_not_attempted" in tags,
                "contradiction": "report_contradicts_events" in tags,
                "transcript": by_step.get(s["n"], []),
            }
        )
    return rows


def summary(steps: list[dict[str, Any]]) -> tuple[str, str]:
    """The overall outcome: (css class, sentence)."""
    verdicts = [s.get("verdict") for s in steps]
    if "FAIL" in verdicts:
        return "bad", "Unsafe: your mail app sent your password without encryption under attack."
    if any(s["state"] in ("pending", "active") for s in steps):
        return "open", "The test is not complete yet."
    if "WARN" in verdicts:
        return "warn", "Careful: your app asked whether to continue without encryption."
    judged = [s for s in steps if s.get("verdict") not in (None, "SKIPPED")]
    if not judged:
        return "open", "No step was completed."
    if all(
        s["verdict"] in ("PASS", "NOT_APPLICABLE")
        or (s["verdict"] == "INCONCLUSIVE" and s.get("reason") == "aborted_after_downgrade")
        for s in judged
    ):
        return "good", "Safe: your mail app kept your password encrypted in every step."
    return "open", "No password was sent without encryption, but some steps gave no clear answer."
