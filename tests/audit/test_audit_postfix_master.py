"""master.cf reading: fields, continuation, -o forms, last entry wins, ports, postconf -P."""

from __future__ import annotations

from mailtls.audit.effective import split_service
from mailtls.audit.model import SourceText
from mailtls.audit.postfix_master import apply_postconf_p, parse_master, parse_postconf_p

MASTER = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
# a comment inside the entry
  -o syslog_name=postfix/submission
     # an indented one too
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  -osmtpd_tls_auth_only=yes
submission inet n       -       y       -       -       smtpd
  -o smtpd_tls_security_level=encrypt
broken inet n -
"""


def test_entries_overrides_and_last_wins() -> None:
    cfg = parse_master(SourceText("master.cf", MASTER))
    assert [e.key for e in cfg.entries] == ["smtp/inet", "submission/inet", "submission/inet"]
    first = cfg.entries[1]
    assert first.origin.line == 2
    assert first.override_map()["smtpd_client_restrictions"].value == (
        "permit_sasl_authenticated, reject"
    )
    assert first.override_map()["smtpd_tls_auth_only"].value == "yes"
    # each override carries the physical line it was written on
    lines = {s.name: s.origin.line for s in first.overrides if s.origin}
    assert lines == {"syslog_name": 4, "smtpd_client_restrictions": 6, "smtpd_tls_auth_only": 7}
    last = cfg.find("submission", "inet")
    assert last is not None and last.origin.line == 8
    assert [e.key for e in cfg.effective_entries()] == ["smtp/inet", "submission/inet"]
    assert cfg.effective_entries()[1].override_map().keys() == {"smtpd_tls_security_level"}
    assert cfg.warnings and "needs at least 8" in cfg.warnings[0]


def test_service_names_map_to_ports() -> None:
    assert split_service("smtp") == (None, 25)
    assert split_service("submission") == (None, 587)
    assert split_service("smtps") == (None, 465)
    assert split_service("submissions") == (None, 465)
    assert split_service("2525") == (None, 2525)
    assert split_service("127.0.0.1:10025") == ("127.0.0.1", 10025)
    assert split_service("[::1]:submission") == ("::1", 587)
    assert split_service("pickup") == (None, None)


def test_postconf_p_lines_replace_overrides_with_capture_lines() -> None:
    master = parse_master(SourceText("M.txt", "submission inet n - y - - smtpd -o a=1\n"))
    p = parse_postconf_p(SourceText("P.txt", "junk\nsubmission/inet/a = 2\n"))
    applied = apply_postconf_p(master, p)
    setting = applied.entries[0].override_map()["a"]
    assert setting.value == "2"
    assert setting.origin is not None
    assert (setting.origin.file, setting.origin.line) == ("P.txt", 2)
