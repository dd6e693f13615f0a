"""Plain-language guidance for each step, verdict and finding (no jargon without an explanation).

Advice is worded by behaviour ("check for new mail"), never by one client's menu labels.
"""

from __future__ import annotations

from typing import Any

TESTCASE_TITLE = {
    "baseline": "Normal connection (no attack)",
    "t1": "Attack 1: encryption offer removed",
    "t2": "Attack 2: encryption start broken",
    "t3": "Attack 3: encryption refused",
    "t4": "Attack 4: encrypted connection broken",
}
TESTCASE_EXPLAIN = {
    "baseline": "The server behaves honestly. This shows how your client connects normally.",
    "t1": (
        "The attacker hides the server's offer to encrypt (STARTTLS: the command that switches "
        "a mail connection to encryption). A safe client refuses to log in without encryption."
    ),
    "t2": (
        "The server agrees to encrypt, but the attacker breaks the encryption handshake. "
        "A safe client gives up; an unsafe one may reconnect without encryption."
    ),
    "t3": (
        "The attacker answers the request to encrypt with a 'temporarily unavailable' error. "
        "A safe client stops; an unsafe one continues without encryption."
    ),
    "t4": (
        "Encryption starts, then the attacker interrupts it with an unencrypted error. "
        "A safe client gives up; an unsafe one may retry without encryption."
    ),
}
SCENARIO_EXPLAIN = {
    "immediate": (
        "The attack is active from the first connection: this tests setting up a new account "
        "while someone is interfering."
    ),
    "two_phase": (
        "Your client first logs in once securely; only then does the attack start. This tests "
        "an account that already worked before."
    ),
}

VERDICT_TEXT = {
    "PASS": (
        "Safe: your client sent its password only over encrypted connections.",
        "Nothing to do.",
    ),
    "FAIL": (
        "Unsafe: your client sent your password WITHOUT encryption while under attack.",
        "Set the account's connection security to 'SSL/TLS' or 'STARTTLS (required)' and "
        "never allow unencrypted connections. If your client offers no such option, consider "
        "another client.",
    ),
    "INCONCLUSIVE": (
        "No verdict could be reached for this step.",
        "See the reason below; you can repeat the step.",
    ),
    "WARN": (
        "Your client warned you or asked whether to continue without encryption.",
        "Always answer 'no' to such a question: a real attacker causes exactly this prompt.",
    ),
    "NOT_APPLICABLE": (
        "Your client could not connect at all in this step.",
        "That is safe behaviour under attack.",
    ),
    "SKIPPED": ("You skipped this step.", ""),
}
REASON_TEXT = {
    "aborted_after_downgrade": (
        "Good outcome: your client refused to continue without encryption, so the attacker "
        "got nothing."
    ),
    "never_connected": "Your client never connected during this step.",
    "loop": "Your client kept reconnecting without logging in.",
    "binding_mismatch": (
        "A login with your test account came from a connection that was not attached to this "
        "step (another network, or another test running from your address)."
    ),
    "not_exercised": (
        "The attack never became active: your client did not log in securely first, or did "
        "not connect again afterwards."
    ),
}
FINDING_TEXT = {
    "plaintext_auth": "Password sent without encryption.",
    "tls_auth": "Password sent inside an encrypted connection.",
    "starttls_not_attempted": (
        "Your client is configured without encryption: it logged in without even trying to "
        "encrypt. Change the account's connection security to 'SSL/TLS' or 'STARTTLS'."
    ),
    "starttls_disrupted": "The attacker disrupted the encryption.",
    "pipelined_after_starttls": (
        "Your client sent commands before encryption was ready (a sign of a sloppy client)."
    ),
    "username_plaintext": "Your user name (not the password) was sent without encryption.",
    "user_prompt": "You reported a security warning or prompt.",
    "user_cannot_connect": "You reported that your client could not connect.",
    "report_contradicts_events": "Your answer does not match what the server observed.",
    "binding_mismatch": "A login came from a connection not attached to this step.",
    "loop": "Your client reconnected repeatedly without logging in.",
}


def step_instructions(scenario: str, testcase: str, protocol: str | None) -> list[str]:
    fetch = "check for new mail"
    out: list[str] = []
    if scenario == "immediate":
        out.append(
            "Add the test account to your mail app now (open 'Account settings' below; if your "
            "app offers to detect the settings automatically, let it)."
        )
        out.append(f"Then {fetch} and send a test message to any address.")
    else:
        out.append(
            "Start from a fresh, secure setup: add the test account with connection security "
            "set to 'STARTTLS' or 'SSL/TLS'."
        )
        out.append(
            f"{fetch.capitalize()} once. This first secure login arms the attack; the page "
            "will say so."
        )
        out.append(f"Then {fetch} again and send a test message to any address.")
    if testcase in ("t2", "t4"):
        out.append(
            "Your client probably shows an error: press 'check mail' and 'send' once more "
            "(clients do not retry by themselves)."
        )
    if testcase != "baseline":
        out.append(
            "If your client warns you or asks whether to continue unencrypted, say so below."
        )
    out.append("When you are done, remove the account from your client before the next step.")
    return out


def milestones(
    step: dict[str, Any], events: list[dict[str, Any]], protocol: str | None
) -> tuple[bool, list[str], list[str]]:
    """Whether the user may finish the step, what has happened, and what is still missing."""
    step_events = [e for e in events if e.get("step") == step["n"]]
    conns: dict[str, set[str]] = {}
    for e in step_events:
        if e.get("type") == "connection_opened" and e.get("conn"):
            conns.setdefault(str(e.get("protocol")), set()).add(str(e["conn"]))
    incoming = protocol or ("imap" if "imap" in conns or "pop3" not in conns else "pop3")
    seen = [f"{len(v)} connection(s) to {k.upper()}" for k, v in sorted(conns.items())]
    missing: list[str] = []
    reports = step.get("reports") or {}
    if reports.get("cannot_connect"):
        return True, seen, missing
    n_in = len(conns.get(incoming, set()))
    needed = 2 if step["testcase"] in ("t2", "t4") else 1
    if n_in < needed:
        if needed == 2 and n_in == 1:
            missing.append(
                f"a second {incoming.upper()} connection: press 'check mail' once more after "
                "the error"
            )
        else:
            missing.append(f"a connection from your client to {incoming.upper()}")
    if step["scenario"] == "two_phase" and not step.get("activated"):
        missing.append("one secure login to arm the attack")
    return not missing, seen, missing
