"""Dovecot config reading: comments, quotes, continuation, sections, includes, loops."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_helpers import FIXTURES, dovecot_file, dovecot_text

from mailtls.audit.dovecot import Reader, parse_dovecot
from mailtls.audit.model import AuditError, SourceText
from mailtls.audit.sources import expand_glob, read_text


def values(text: str) -> dict[str, str]:
    return {a.key: a.value for a in dovecot_text(text).assigns if not a.path}


def test_hash_is_a_comment_anywhere_outside_quotes() -> None:
    got = values('a = x # c\nb = "x # not a comment" # c\nc = y#z\n  # whole line\n')
    assert got == {"a": "x", "b": "x # not a comment", "c": "y"}


def test_backslash_continues_a_line() -> None:
    cfg = dovecot_text("auth_mechanisms = plain \\\n   login\nx = 1\n")
    assert [(a.key, a.value, a.origin.line) for a in cfg.assigns] == [
        ("auth_mechanisms", "plain login", 1),
        ("x", "1", 3),
    ]


def test_sections_nest_and_record_their_path() -> None:
    cfg = dovecot_text(
        "remote 10.0.0.0/8 {\n  protocol imap {\n    ssl = yes\n  }\n}\n"
        'service imap-login {\n  inet_listener "imap" {\n    port = 0\n  }\n}\n'
    )
    assert [(a.key, a.path) for a in cfg.assigns] == [
        ("ssl", (("remote", "10.0.0.0/8"), ("protocol", "imap"))),
        ("port", (("service", "imap-login"), ("inet_listener", "imap"))),
    ]


def test_file_value_is_kept_as_a_path_and_never_read() -> None:
    assert values("ssl_key = </etc/ssl/private/secret.key\n") == {
        "ssl_key": "</etc/ssl/private/secret.key"
    }


def test_dollar_reference_uses_the_value_so_far() -> None:
    assert values("protocols = imap\nprotocols = $protocols pop3\n")["protocols"] == "imap pop3"


def test_includes_are_relative_sorted_and_order_decides() -> None:
    cfg = dovecot_file(FIXTURES / "dovecot23" / "include_order" / "dovecot.conf")
    names = [Path(f).name for f in cfg.files]
    assert names == ["dovecot.conf", "10-auth.conf", "20-override.conf", "local.conf"]
    last = cfg.root_value("disable_plaintext_auth")
    assert last is not None and last.value == "yes"
    assert last.origin.file.endswith("20-override.conf") and last.origin.line == 2
    assert cfg.root_value("login_greeting").value == "Mail # not a comment"  # type: ignore[union-attr]
    assert cfg.root_value("ssl").value == "required"  # type: ignore[union-attr]
    assert cfg.root_value("auth_mechanisms").value == "plain login"  # type: ignore[union-attr]


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("!include b.conf\n")
    (tmp_path / "b.conf").write_text("x = 1\n!include a.conf\n")
    with pytest.raises(AuditError, match="include loop"):
        parse_dovecot(read_text(tmp_path / "a.conf"), Reader(read=read_text, glob=expand_glob))


def test_missing_include_is_an_error_but_include_try_is_not(tmp_path: Path) -> None:
    reader = Reader(read=read_text, glob=expand_glob)
    (tmp_path / "a.conf").write_text("!include_try nothere.conf\nx = 1\n")
    assert parse_dovecot(read_text(tmp_path / "a.conf"), reader).assigns[0].key == "x"
    (tmp_path / "b.conf").write_text("!include nothere.conf\n")
    with pytest.raises(AuditError, match="does not exist"):
        parse_dovecot(read_text(tmp_path / "b.conf"), reader)


def test_include_glob_without_matches_is_an_error_but_include_try_is_not(tmp_path: Path) -> None:
    """As doveconf: ``!include conf.d/*.conf`` matching nothing is "No matches", a fatal error."""
    reader = Reader(read=read_text, glob=expand_glob)
    (tmp_path / "a.conf").write_text("!include_try none-*.conf\nx = 1\n")
    assert parse_dovecot(read_text(tmp_path / "a.conf"), reader).assigns[0].key == "x"
    (tmp_path / "b.conf").write_text("!include none-*.conf\n")
    with pytest.raises(AuditError, match="no file matches"):
        parse_dovecot(read_text(tmp_path / "b.conf"), reader)


def test_doveconf_header_gives_the_version_and_hidden_values_parse() -> None:
    cfg = parse_dovecot(
        SourceText(
            "capture",
            "# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf\n"
            "ssl_key = # hidden, use -P to show it\n",
        )
    )
    assert cfg.version_hint == "2.3"
    assert cfg.assigns[0].value == ""


def test_garbage_lines_warn_and_do_not_crash() -> None:
    cfg = dovecot_text("}\nwhat is this\nx = 1\n")
    assert len(cfg.warnings) == 2
    assert cfg.assigns[0].key == "x"
