"""Tests of IMAP command framing and parsing: ``CommandReader`` over a ``LineBuffer`` and
``parse_command`` (tags, atoms, quoted strings, literals, lists, bounds, garbage)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mailtls.protocols.base import Limits, LineBuffer
from mailtls.protocols.imap_parse import (
    Atom,
    BadCommand,
    Command,
    CommandReader,
    Complete,
    Group,
    Literal,
    LiteralTooBig,
    LiteralWanted,
    Overlong,
    RawCommand,
    ReaderItem,
    String,
    astring,
    head,
    nstring,
    parse_command,
)

LIMITS = Limits()


def read_all(data: bytes, limits: Limits = LIMITS) -> list[ReaderItem]:
    buf = LineBuffer(limits.line_bytes)
    reader = CommandReader(limits)
    buf.feed(data)
    items = []
    while (item := reader.next(buf)) is not None:
        items.append(item)
    return items


def parse(text: str) -> Command | BadCommand:
    items = read_all(text.encode() + b"\r\n")
    assert len(items) == 1 and isinstance(items[0], Complete)
    return parse_command(items[0].raw)


def command(text: str) -> Command:
    parsed = parse(text)
    assert isinstance(parsed, Command), parsed
    return parsed


# --- tokens ------------------------------------------------------------------------------------


def test_atoms_quoted_strings_and_nil() -> None:
    cmd = command('a1 login "us\\"er" pa\\ss NIL')
    assert cmd == Command("a1", "LOGIN", (String(b'us"er'), Atom("pa\\ss"), Atom("NIL")))
    assert astring(cmd.args[0]) == b'us"er'
    assert nstring(cmd.args[2]) is None
    assert nstring(cmd.args[0]) == 'us"er'


def test_nested_lists_and_fetch_sections() -> None:
    cmd = command("a2 UID FETCH 1:*,5 (UID FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.1024>)")
    assert cmd.name == "UID"
    assert cmd.args[:2] == (Atom("FETCH"), Atom("1:*,5"))
    assert cmd.args[2] == Group(
        (Atom("UID"), Atom("FLAGS"), Atom("BODY.PEEK[HEADER.FIELDS (From To)]<0.1024>"))
    )
    flags = command("a3 STORE 1 +FLAGS (\\Seen \\Deleted)")
    assert flags.args[2] == Group((Atom("\\Seen"), Atom("\\Deleted")))
    empty = command('a4 LIST () "" *')
    assert empty.args == (Group(()), String(b""), Atom("*"))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('a1 LOGIN "unterminated', "unterminated quoted string"),
        ('a1 LOGIN "bad \\x escape"', "bad escape in quoted string"),
        ("a1 NOOP (a (b)", "unbalanced parentheses"),
        ("a1 NOOP a)", "unbalanced parentheses"),
        ('a1 NOOP "a"b', "missing space between arguments"),
        ("a1 NOOP x\x00y", "control character"),
        ("a1 FETCH 1 BODY[TEXT", "unbalanced brackets"),
        ("a1 NOOP {3}x", "bad literal"),
        ("a1 NOOP " + "(" * 40 + ")" * 40, "lists nested too deeply"),
    ],
)
def test_syntax_errors_keep_the_tag(line: str, reason: str) -> None:
    parsed = parse(line)
    assert parsed == BadCommand("a1", parsed.name, reason)


@pytest.mark.parametrize(
    "line", ["", "a1", "a1 123", "a+b NOOP", '"x" NOOP', "AHRlc3QAcGFzcw==", "(a) NOOP"]
)
def test_no_valid_tag_or_command_name_gives_an_untagged_error(line: str) -> None:
    parsed = parse(line)
    assert isinstance(parsed, BadCommand) and parsed.tag is None


def test_head_upper_cases_the_verb_and_checks_the_tag() -> None:
    assert head(b"a1 login x") == ("a1", "LOGIN")
    assert head(b"a{1 noop") == (None, "NOOP")
    assert head(b"x") == ("x", "")


# --- literals ----------------------------------------------------------------------------------


def test_synchronizing_literals_ask_for_continuation_and_assemble() -> None:
    buf = LineBuffer(LIMITS.line_bytes)
    reader = CommandReader(LIMITS)
    buf.feed(b"a1 LOGIN {4}\r\n")
    assert reader.next(buf) == LiteralWanted(4)
    assert reader.busy
    buf.feed(b"us")
    assert reader.next(buf) is None
    buf.feed(b"er {7}\r\n")
    assert reader.next(buf) == LiteralWanted(7)
    buf.feed(b"se\r\nre")  # literal bytes are raw: CRLF inside is data
    assert reader.next(buf) is None
    buf.feed(b"t\r\n")
    item = reader.next(buf)
    assert isinstance(item, Complete)
    assert item.raw == RawCommand(
        (b"a1 LOGIN {4}", b" {7}", b""), (Literal(b"user", 4), Literal(b"se\r\nret", 7))
    )
    assert item.raw.transcript() == "a1 LOGIN {4} {7}"
    assert parse_command(item.raw) == Command(
        "a1", "LOGIN", (String(b"user", literal=True, size=4), String(b"se\r\nret", True, 7))
    )
    assert not reader.busy


def test_non_synchronizing_literals_need_no_continuation() -> None:
    items = read_all(b"a1 LOGIN {4+}\r\nuser {3+}\r\npwd\r\na2 NOOP\r\n")
    assert [type(i) for i in items] == [Complete, Complete]
    first = items[0]
    assert isinstance(first, Complete)
    assert astring(command_of(first).args[1]) == b"pwd"


def command_of(item: ReaderItem) -> Command:
    assert isinstance(item, Complete)
    parsed = parse_command(item.raw)
    assert isinstance(parsed, Command)
    return parsed


def test_literal_over_budget_is_refused() -> None:
    limits = replace(LIMITS, literal_bytes=100)
    (sync,) = read_all(b"a1 LOGIN {101}\r\n", limits)
    assert sync == LiteralTooBig("a1", "LOGIN", 101, True, False, "a1 LOGIN {101}")
    items = read_all(b"a1 LOGIN {60+}\r\n" + b"x" * 60 + b" {60}\r\n", limits)
    assert items == [LiteralTooBig("a1", "LOGIN", 60, True, False, "a1 LOGIN {60+} {60}")]


def test_kept_bytes_are_budgeted_per_command() -> None:
    limits = replace(LIMITS, literal_bytes=100)
    items = read_all(
        b"a1 LOGIN {60+}\r\n" + b"u" * 60 + b" {60+}\r\n" + b"p" * 60 + b"\r\n", limits
    )
    assert len(items) == 1 and isinstance(items[0], LiteralTooBig)
    assert (items[0].size, items[0].synchronizing, items[0].fatal) == (60, False, False)


def test_refused_non_synchronizing_literal_is_skipped_then_reading_resumes() -> None:
    limits = replace(LIMITS, literal_bytes=10)
    data = b"a1 NOOP {50+}\r\n" + b"z" * 50 + b" {5+}\r\nabcde\r\na2 NOOP\r\n"
    items = read_all(data, limits)
    assert isinstance(items[0], LiteralTooBig) and not items[0].fatal
    assert len(items) == 2 and command_of(items[1]).tag == "a2"


def test_skipping_a_refused_literal_keeps_nothing_of_what_follows() -> None:
    """A peer chaining ``{1+}`` literals behind a refused one must not grow the reader."""
    limits = replace(LIMITS, literal_bytes=10)
    buf = LineBuffer(limits.line_bytes)
    reader = CommandReader(limits)
    buf.feed(b"a1 FOO {50+}\r\n" + b"z" * 50)
    assert isinstance(reader.next(buf), LiteralTooBig)
    for _ in range(200):
        buf.feed(b" " + b"y" * 3000 + b" {1+}\r\nz")
        assert reader.next(buf) is None
    assert reader.partial() == "a1 FOO {50+}"
    buf.feed(b"\r\na2 NOOP\r\n")
    item = reader.next(buf)
    assert item is not None and command_of(item).tag == "a2"


def test_non_synchronizing_literal_beyond_the_message_limit_is_fatal() -> None:
    (item,) = read_all(b"a1 APPEND INBOX {99999999999+}\r\n")
    assert isinstance(item, LiteralTooBig) and item.fatal


def test_append_body_is_counted_not_kept() -> None:
    limits = replace(LIMITS, literal_bytes=100, message_bytes=10_000)
    buf = LineBuffer(limits.line_bytes)
    reader = CommandReader(limits)
    buf.feed(b"a1 APPEND INBOX (\\Seen) {5000}\r\n")
    refused = reader.next(buf)  # before login, a body is held to the literal budget
    assert isinstance(refused, LiteralTooBig) and refused.synchronizing
    reader.allow_messages = True
    buf.feed(b"a1 APPEND INBOX (\\Seen) {5000}\r\n")
    assert reader.next(buf) == LiteralWanted(5000)
    for i in range(5):
        buf.feed(b"m" * 1000)
        assert reader.next(buf) is None
        assert reader.in_big_literal == (i < 4)
        assert buf.pending == 0  # consumed as it arrives, never accumulated
    buf.feed(b"\r\n")
    item = reader.next(buf)
    cmd = command_of(item) if item is not None else None
    assert cmd is not None
    assert cmd.args[-1] == String(b"", literal=True, size=5000, discarded=True)
    assert cmd.args[-1].nbytes == 5000 and astring(cmd.args[-1]) is None
    buf.feed(b"a2 APPEND INBOX {10001}\r\n")
    over = reader.next(buf)
    assert isinstance(over, LiteralTooBig) and over.synchronizing and over.size == 10001


def test_over_long_line_is_reported_with_the_tag_of_a_started_command() -> None:
    limits = replace(LIMITS, line_bytes=64)
    items = read_all(b"a1 LOGIN {3+}\r\nabc " + b"x" * 100 + b"\r\na2 NOOP\r\n", limits)
    assert isinstance(items[0], Overlong) and items[0].tag == "a1"
    assert command_of(items[1]).tag == "a2"


def test_too_many_literals_in_one_command_are_refused() -> None:
    data = b"a1 NOOP" + b" {1+}\r\nx" * 40 + b"\r\n"
    items = read_all(data)
    assert any(isinstance(i, LiteralTooBig) for i in items)


def test_random_bytes_never_raise() -> None:
    rng = random.Random(1)
    pieces = [b"a ", b"{2}\r\n", b"{3+}\r\n", b'"', b"\\", b"(", b")", b"[", b"]", b"\r\n", b"\x00"]
    for _ in range(2000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        for item in read_all(data, replace(LIMITS, line_bytes=40)):
            if isinstance(item, Complete):
                parse_command(item.raw)
