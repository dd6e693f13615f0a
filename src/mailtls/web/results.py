"""The results page at a glance: a headline (how many attacks the app resisted, the worst outcome,
one sentence, one colour), then the advice grouped by protocol and said once, then one row per
step whose technical details (verdict codes, tags, scenario ids) stay folded away.

Pure functions over the run view's steps (``RunManager.view``); words come from ``outcomes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailtls.web.outcomes import (
    ADVICE,
    OUTCOMES,
    PROTOCOL_WHAT,
    REASONS,
    SCENARIOS,
    Outcome,
    finding_text,
    step_outcome,
    testcase_text,
)

GENERAL = "general"


@dataclass(frozen=True)
class Headline:
    outcome: Outcome
    sentence: str
    resisted: int
    attacks: int


@dataclass
class AdviceGroup:
    protocol: str  # "imap", "pop3", "smtp" or "general"
    title: str
    items: list[str] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)  # titles of the attacks it failed


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def headline(steps: list[dict[str, Any]]) -> Headline:
    outcomes = [(s, step_outcome(s)) for s in steps]
    judged = [(s, o) for s, o in outcomes if o.key not in ("open", "skipped")]
    attacks = [(s, o) for s, o in judged if testcase_text(s["testcase"]).attack]
    resisted = sum(1 for _s, o in attacks if o.resisted)
    failed = sum(1 for _s, o in attacks if o.key == "fail")
    n = len(attacks)
    open_steps = sum(1 for _s, o in outcomes if o.key == "open")
    if not judged:
        worst = OUTCOMES["open"]
        sentence = "No step was completed yet."
    else:
        worst = max((o for _s, o in judged), key=lambda o: o.rank)
        baseline_broken = any(
            o.key == "noconnect" and not testcase_text(s["testcase"]).attack for s, o in judged
        )
        if worst.resisted and not baseline_broken:
            worst = OUTCOMES["pass"]  # every attack resisted, in whichever safe way: "Safe"
        sentence = _sentence(worst, resisted, failed, n)
    if open_steps and judged:
        sentence += f" {_plural(open_steps, 'step')} still to do."
    return Headline(worst, sentence, resisted, n)


def _sentence(worst: Outcome, resisted: int, failed: int, n: int) -> str:
    of_n = f"{resisted} of {_plural(n, 'attack')}"
    if worst.key == "fail":
        if failed == 0:
            return "Your app sent your password without encryption even without an attack."
        return (
            f"Your app sent your password without encryption in {failed} of {_plural(n, 'attack')}."
        )
    if worst.key == "noconnect":
        return "Your app could not connect even without an attack: check its account settings."
    if n == 0:
        return "Your app connected normally; no attack was tested."
    if worst.key == "warn":
        return f"Your app resisted {of_n}, but asked whether to continue without encryption."
    if resisted == n:
        return "Your app resisted the attack." if n == 1 else f"Your app resisted all {n} attacks."
    return f"Your app resisted {of_n}; the others gave no clear answer."


def advice(steps: list[dict[str, Any]], incoming: str | None) -> list[AdviceGroup]:
    """What to do, per protocol, each piece of advice once."""
    order = [incoming or "imap", "pop3" if incoming != "pop3" else "imap", "smtp", GENERAL]
    groups: dict[str, AdviceGroup] = {}

    def add(protocol: str | None, key: str, attack: str | None = None) -> None:
        proto = protocol if protocol in PROTOCOL_WHAT else GENERAL
        group = groups.get(proto)
        if group is None:
            title = PROTOCOL_WHAT.get(proto, "in general")
            group = groups[proto] = AdviceGroup(proto, title[:1].upper() + title[1:])
        text = ADVICE[key].format(what=PROTOCOL_WHAT.get(proto, "every account"))
        if text not in group.items:
            group.items.append(text)
        if attack and attack not in group.attacks:
            group.attacks.append(attack)

    for s in steps:
        outcome = step_outcome(s)
        scenario = SCENARIOS.get(s["scenario"], (s["scenario"], ""))[0].lower()
        title = f"{testcase_text(s['testcase']).title} ({scenario})"
        per_protocol = s.get("protocols") or {}
        failed = [p for p, r in per_protocol.items() if r.get("verdict") == "FAIL"]
        if outcome.key == "fail":
            for proto in failed or [None]:
                add(proto, "encrypt", title)
        if outcome.key == "noconnect" and s["testcase"] == "baseline":
            add(None, "baseline_noconnect")
        for f in s.get("findings") or []:
            key = finding_text(str(f.get("tag"))).advice
            if key and key != "encrypt":
                add(f.get("protocol"), key)
    return sorted(groups.values(), key=lambda g: order.index(g.protocol))


BINDINGS = {  # how a step's connections were bound (docs/binding.md)
    "endpoint": "this test's own servers (exact)",
    "address": "your network address (shared with anyone behind it)",
}


def rows(
    steps: list[dict[str, Any]], by_step: dict[int, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per step: the outcome in words, and the technical details apart."""
    out: list[dict[str, Any]] = []
    for s in steps:
        outcome = step_outcome(s)
        tags = list(dict.fromkeys(str(f.get("tag")) for f in s.get("findings") or []))
        reason = s.get("reason")
        out.append(
            {
                "n": s["n"],
                "scenario": s["scenario"],
                "scenario_title": SCENARIOS.get(s["scenario"], (s["scenario"], ""))[0],
                "testcase": s["testcase"],
                "title": testcase_text(s["testcase"]).title,
                "state": s["state"],
                "verdict": s.get("verdict"),
                "reason_tag": reason,
                "outcome": outcome,
                "why": None if outcome.key in ("stopped", "pass") else REASONS.get(str(reason)),
                "notes": [finding_text(t).text for t in tags if finding_text(t).shown],
                "tags": tags,
                "protocols": {p: r.get("verdict") for p, r in (s.get("protocols") or {}).items()},
                "binding": BINDINGS.get(str(s.get("binding")), ""),
                "transcript": by_step.get(s["n"], []),
            }
        )
    return out
