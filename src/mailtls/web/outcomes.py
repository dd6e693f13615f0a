"""The web app's vocabulary for people: one label and one colour per outcome, one entry per test
case and per finding.

Every page (step, run, results, stepper) shows a step's outcome through ``outcome_of``, so the
secure refusal is the same green "Safe: it stopped" everywhere and nothing that is not safe is
ever green. Internal names (verdict codes, reason and finding tags, scenario ids) appear only in
a page's technical details and in the exports.

Adding a test case or a finding is one entry in ``TESTCASES`` or ``FINDINGS``; the results page,
its advice and the step pages read them from here. Pure data and functions; imports nothing of
the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str  # CSS class ``o-<key>`` (its colour) and ``data-outcome``
    label: str  # the words on the badge, on every page
    meaning: str  # one sentence for the step's box
    rank: int  # the worst outcome has the highest rank
    resisted: bool = False  # under attack: the attacker got no password


OUTCOMES: dict[str, Outcome] = {
    o.key: o
    for o in (
        Outcome("fail", "Unsafe", "Your app sent your password WITHOUT encryption.", 70),
        Outcome(
            "warn",
            "Warned",
            "Your app warned you or asked whether to continue without encryption.",
            60,
        ),
        Outcome("unclear", "No clear answer", "This step gave no clear answer.", 50),
        Outcome(
            "noconnect",
            "Could not connect",
            "Your app could not connect at all in this step.",
            40,
            resisted=True,
        ),
        Outcome(
            "stopped",
            "Safe: it stopped",
            "Safe: your app refused to continue without encryption, so the attacker got nothing.",
            20,
            resisted=True,
        ),
        Outcome(
            "pass",
            "Safe",
            "Safe: your app sent its password only over encrypted connections.",
            10,
            resisted=True,
        ),
        Outcome(
            "notapplicable",
            "Does not apply",
            "This test does not apply to how your app connects; the server behaved normally.",
            8,
        ),
        Outcome("skipped", "Skipped", "You skipped this step.", 5),
        Outcome("open", "Not finished", "This step is not finished yet.", 0),
    )
}
SECURE_REFUSAL = "aborted_after_downgrade"
NOT_APPLICABLE_CASE = "testcase_not_applicable"
_BY_VERDICT = {
    "FAIL": "fail",
    "WARN": "warn",
    "INCONCLUSIVE": "unclear",
    "NOT_APPLICABLE": "noconnect",
    "PASS": "pass",
    "SKIPPED": "skipped",
}


def outcome_of(verdict: Any, reason: Any = None) -> Outcome:
    """The outcome people see for a verdict (and its reason: the secure refusal, a case that
    does not apply)."""
    if verdict == "INCONCLUSIVE" and reason == SECURE_REFUSAL:
        return OUTCOMES["stopped"]
    if verdict == "NOT_APPLICABLE" and reason == NOT_APPLICABLE_CASE:
        return OUTCOMES["notapplicable"]
    return OUTCOMES[_BY_VERDICT.get(str(verdict), "open")]


def step_outcome(step: Mapping[str, Any]) -> Outcome:
    if step.get("state") == "skipped" and not step.get("verdict"):
        return OUTCOMES["skipped"]
    return outcome_of(step.get("verdict"), step.get("reason"))


@dataclass(frozen=True, slots=True)
class TestcaseText:
    title: str  # "Attack 1: encryption offer removed"
    explain: str  # what the simulated attacker does, for a non-expert
    attack: bool = True  # False for the honest baseline
    retry: bool = False  # the client sees an error and is asked to try once more


TESTCASES: dict[str, TestcaseText] = {
    "baseline": TestcaseText(
        "Normal connection (no attack)",
        "The server behaves honestly. This shows how your app connects normally.",
        attack=False,
    ),
    "t1": TestcaseText(
        "Attack 1: encryption offer removed",
        "The attacker hides the server's offer to encrypt (STARTTLS: the command that switches "
        "a mail connection to encryption). A safe app refuses to log in without encryption.",
    ),
    "t2": TestcaseText(
        "Attack 2: encryption start broken",
        "The server agrees to encrypt, but the attacker breaks the start of the encryption. "
        "A safe app gives up; an unsafe one may try again without encryption.",
        retry=True,
    ),
    "t3": TestcaseText(
        "Attack 3: encryption refused",
        "The attacker answers the request to encrypt with a 'temporarily unavailable' error. "
        "A safe app stops; an unsafe one goes on without encryption.",
    ),
    "t4": TestcaseText(
        "Attack 4: encrypted connection broken",
        "Encryption starts, then the attacker interrupts it with an unencrypted error. "
        "A safe app gives up; an unsafe one may try again without encryption.",
        retry=True,
    ),
    "starttls_required": TestcaseText(
        "Extra attack: encryption offer removed from a careful server",
        "The server itself refuses logins without encryption, but the attacker hides its offer "
        "to encrypt. A safe app stops; an unsafe one sends the password anyway, before the "
        "server can refuse it.",
    ),
    "preauth": TestcaseText(
        "Extra attack: already logged in (IMAP PREAUTH)",
        "The attacker greets your app as if it were already logged in, so that it never "
        "switches on encryption; the attacker could then read and change your mail. A safe app "
        "disconnects.",
    ),
    **{
        name: TestcaseText(
            f"Extra attack: {what}",
            "Encryption is offered honestly, but the server shows a certificate (its proof of "
            f"identity) that {why}: exactly what an attacker in the middle could show. A safe app "
            "refuses to go on; an unsafe one sends your password to whoever is listening.",
        )
        for name, what, why in (
            ("cert_selfsigned", "self-made certificate", "nobody vouches for"),
            ("cert_expired", "expired certificate", "has expired"),
            ("cert_wronghost", "certificate for another server", "names another server"),
            (
                "cert_unknown_ca",
                "certificate from an unknown authority",
                "no trusted authority issued",
            ),
        )
    },
    "inject": TestcaseText(
        "Extra attack: forged answer slipped in",
        "Just as encryption starts, the attacker slips in a forged answer, as if from the "
        "server. A safe app ignores everything that arrived before encryption.",
    ),
    "tls_fallback": TestcaseText(
        "Extra attack: older encryption forced",
        "The attacker makes your app's first attempt to encrypt fail, as a broken network "
        "would, and watches whether it tries again with an older, weaker version of the "
        "encryption (TLS 1.0 or 1.1). A safe app stays with a modern version, or marks its "
        "retry so that the server can refuse it.",
        retry=True,
    ),
}


def testcase_text(name: str) -> TestcaseText:
    return TESTCASES.get(name) or TestcaseText(name, "", attack=name != "baseline")


SCENARIOS = {
    "immediate": (
        "New account",
        "New account: the attack is active from the first connection. This tests setting up an "
        "account while someone interferes (for example on a public Wi-Fi).",
    ),
    "two_phase": (
        "Existing account",
        "Existing account: your app first logs in once normally and securely; only then does the "
        "attack start. This tests an account that already worked before.",
    ),
}


@dataclass(frozen=True, slots=True)
class FindingText:
    text: str  # what it means, in plain words
    advice: str = ""  # the key of an entry in ``ADVICE``, said once per protocol
    shown: bool = True  # listed under the step's details (False: the outcome already says it)


FINDINGS: dict[str, FindingText] = {
    "plaintext_auth": FindingText("Password sent without encryption.", "encrypt", shown=False),
    "tls_auth": FindingText("Password sent inside an encrypted connection.", shown=False),
    "starttls_not_attempted": FindingText(
        "Your app is configured without encryption: it logged in without even trying to encrypt.",
        "configured_plain",
    ),
    "starttls_disrupted": FindingText(
        "The simulated attacker disrupted the encryption.", shown=False
    ),
    "pipelined_after_starttls": FindingText(
        "Your app sent commands before encryption was ready (a sign of careless programming).",
        "report_bug",
    ),
    "username_plaintext": FindingText(
        "Your user name (not the password) was sent without encryption."
    ),
    "user_prompt": FindingText("You reported a security warning or prompt.", "prompt"),
    "user_cannot_connect": FindingText("You reported that your app could not connect."),
    "report_contradicts_events": FindingText(
        "Your answer does not match what the server saw: you said your app could not connect, "
        "but it reached the login. Check your answer; the server's observation counts."
    ),
    "binding_mismatch": FindingText("A login came from a connection not attached to this step."),
    "username_misused": FindingText(
        "Someone else used your test username with a wrong password (it travels unencrypted "
        "during the tests, so anyone on the path can read it). This does not count as your "
        "app's result."
    ),
    "loop": FindingText("Your app reconnected again and again without logging in."),
    "credentials_before_530": FindingText(
        "Your app sent its password with the very first login line, before the server could "
        "answer that encryption is required (SMTP 530).",
        "encrypt",
    ),
    "ignored_logindisabled": FindingText(
        "Your app logged in although the server announced LOGINDISABLED (no login without "
        "encryption).",
        "encrypt",
    ),
    "preauth_plaintext": FindingText(
        "Your app opened or changed mailboxes in a session that was never encrypted (IMAP "
        "PREAUTH).",
        "encrypt",
    ),
    "accepted_bad_certificate": FindingText(
        "Your app sent its password over an encrypted connection whose certificate an attacker "
        "could have made: the attacker would have your password.",
        "certificates",
    ),
    "rejected_bad_certificate": FindingText(
        "Your app refused the bad certificate (the safe outcome)."
    ),
    "version_fallback": FindingText(
        "After one failed attempt your app fell back to an old encryption version (TLS 1.0 or "
        "1.1) and sent its password there: an attacker can force that and attack the weaker "
        "encryption.",
        "tls_versions",
    ),
    "fallback_without_scsv": FindingText(
        "After one failed attempt your app tried again with an older encryption version, "
        "without marking the retry (TLS_FALLBACK_SCSV) so that the server could refuse it."
    ),
    "response_injection": FindingText(
        "Your app used a forged answer sent in the clear right before encryption started "
        "(STARTTLS response injection).",
        "report_bug",
    ),
}


def finding_text(tag: str) -> FindingText:
    return FINDINGS.get(tag) or FindingText(tag.replace("_", " ").capitalize() + ".")


REASONS = {
    SECURE_REFUSAL: (
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
    NOT_APPLICABLE_CASE: (
        "This test does not apply to this protocol; the server behaved normally for it."
    ),
    "credentials_before_530": (
        "Unsafe: your app sent its password before the server could say that encryption is "
        "required."
    ),
    "ignored_logindisabled": (
        "Unsafe: the server said 'no login without encryption', and your app sent the password "
        "anyway."
    ),
    "preauth_plaintext": (
        "Unsafe: your app used a mailbox session without encryption; an attacker could read "
        "and change your mail."
    ),
    "response_injection": (
        "Unsafe: your app believed a forged answer that was slipped in before encryption started."
    ),
}

# Advice, said once per protocol on the results page (``{what}``: "receiving mail (IMAP)").
ADVICE = {
    "encrypt": (
        "For {what}, set the connection security to 'SSL/TLS' (best) or 'STARTTLS', and make "
        "sure your app never falls back to an unencrypted connection. If it offers no such "
        "setting, consider another app, and change the password of any real account you used "
        "with it on networks you do not trust."
    ),
    "configured_plain": (
        "For {what}, your app is set up without any encryption. Change the connection security "
        "to 'SSL/TLS' (best) or 'STARTTLS'."
    ),
    "prompt": (
        "Your app asked whether to continue without encryption. Always answer 'no': a real "
        "attacker causes exactly this question. Safer apps simply refuse."
    ),
    "report_bug": (
        "Your app sends commands before encryption is ready: tell its makers (it is the "
        "pattern behind STARTTLS command injection)."
    ),
    "certificates": (
        "For {what}, your app accepts certificates it should refuse. Turn on certificate "
        "checking (often 'verify certificates' or 'accept invalid certificates: off'), and never "
        "confirm a certificate warning on a network you do not trust."
    ),
    "tls_versions": (
        "For {what}, your app accepts old encryption versions. Set its minimum TLS version to "
        "1.2 if it has such a setting, or update it."
    ),
    "baseline_noconnect": (
        "Even without an attack your app could not connect: check the server name, port and "
        "user name in the account settings, then repeat the test."
    ),
}
PROTOCOL_WHAT = {
    "imap": "receiving mail (IMAP)",
    "pop3": "receiving mail (POP3)",
    "smtp": "sending mail (SMTP)",
}
