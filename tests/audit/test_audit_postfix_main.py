"""main.cf reading: comments, continuation, last wins, $name expansion."""

from __future__ import annotations

from mailtls.audit.model import SourceText
from mailtls.audit.postfix_main import expand, logical_lines, parse_main


def parse(text: str) -> dict[str, tuple[str, int | None]]:
    cfg = parse_main(SourceText("main.cf", text))
    return {k: (s.value, s.origin.line if s.origin else None) for k, s in cfg.settings.items()}


def test_hash_starts_a_comment_only_at_the_start_of_a_line() -> None:
    got = parse("#a = 1\n  # b = 2\nc = x # y\n")
    assert got == {"c": ("x # y", 3)}


def test_leading_whitespace_continues_and_comment_lines_do_not_end_the_line() -> None:
    text = "list = a,   \n\t b\n# note\n   # indented note\n    c\nnext = 1\n"
    got = parse(text)
    assert got["list"] == ("a, b c", 1)
    assert got["next"] == ("1", 6)


def test_last_definition_wins_with_its_line() -> None:
    got = parse("x = 1\ny = 2\nx = 3\n")
    assert got["x"] == ("3", 3)


def test_text_before_any_definition_that_starts_with_space_is_skipped() -> None:
    assert list(logical_lines("   stray\nx = 1\n")) == [(2, "x = 1")]


def test_bad_line_is_a_warning_not_a_crash() -> None:
    cfg = parse_main(SourceText("main.cf", "this is not a setting\nx = 1\n"))
    assert cfg.warnings and "main.cf:1" in cfg.warnings[0]
    assert cfg.settings["x"].value == "1"


def test_expansion_forms() -> None:
    table = {"a": "A", "b": "$a-${a}-$(a)", "empty": "", "loop": "$loop"}
    look = table.get
    assert expand("$b", look) == "A-A-A"
    assert expand("${a?{yes $a}} ${empty?set}${missing:{unset}}", look) == "yes A unset"
    assert expand("${a?{set}:{unset}}/${empty?{set}:{unset}}", look) == "set/unset"
    assert expand("$$a costs $$", look) == "$a costs $"
    assert expand("x${undefined}y", look) == "xy"
    assert expand("$loop", look) == "$loop"  # a self-reference stops (Postfix: fatal)
