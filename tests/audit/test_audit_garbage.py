"""Garbage in, no crash out: seeded random config text through every parser and check."""

from __future__ import annotations

import random

import pytest
from audit_helpers import dovecot_findings, dovecot_text, postfix, postfix_findings

from mailtls.audit.effective import service_summary, smtp_services

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyz_0123456789 \t\n\n\n=={}}{#$$(){}<>!\"'\\:,./-[]*?"
    "smtpd_tls_security_level smtpd_sasl_auth_enable inet smtpd -o ssl port remote protocol "
    "inet_listener service 127.0.0.1 10.0.0.0/8 ::1 é\u202e\x1b"
)
WORDS = [
    "smtpd_tls_security_level = ",
    "smtp inet n - y - - smtpd ",
    "submission inet n - y - - smtpd -o ",
    "  -o { ",
    "${",
    "$(",
    "remote 10.0.0.0/8 {\n",
    "protocol imap {\n",
    "service imap-login {\n inet_listener imap {\n port = ",
    "login_trusted_networks = ",
    "}\n",
    "!include_try x\n",
    "ssl = ",
]


def noise(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 60)):
        if rng.random() < 0.3:
            parts.append(rng.choice(WORDS))
        else:
            parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 20))))
    return "".join(parts)


@pytest.mark.timeout(60)
def test_random_text_never_crashes() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        main_cf, master_cf, dove = noise(rng), noise(rng), noise(rng)
        try:
            inst = postfix(main_cf, master_cf)
            postfix_findings(inst)
            for svc in smtp_services(inst):
                service_summary(svc)
            dovecot_findings(dovecot_text(dove))
            dovecot_findings(dovecot_text(dove), "2.4")
        except Exception as exc:  # report the seed that broke it
            raise AssertionError(f"seed {seed}: {exc!r}") from exc
