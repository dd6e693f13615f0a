"""Tests of the IMAP session mail store: LIST wildcard matching, names, the mailbox tree, and
the ``MailStore`` outcomes (commands given as parsed ``Command`` values)."""

from __future__ import annotations

import time

import pytest

from mailtls.protocols.imap_mailboxes import (
    MAX_MAILBOXES,
    Mailboxes,
    MailStore,
    Outcome,
    canonical,
    matches,
    quote,
    sequence_set,
    uidvalidity,
    valid_name,
)
from mailtls.protocols.imap_parse import Atom, Command, Group, String


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "INBOX", True),
        ("*", "Archive/2024", True),
        ("%", "Archive/2024", False),
        ("%", "Archive", True),
        ("Archive/%", "Archive/2024", True),
        ("Archive/%", "Archive/2024/Q1", False),
        ("Archive/*", "Archive/2024/Q1", True),
        ("A*4", "Archive/2024", True),
        ("A%4", "Archive/2024", False),
        ("inbox", "INBOX", True),
        ("InBox/%", "INBOX/Sub", True),
        ("sent", "Sent", False),
        ("", "INBOX", False),
        ("S%t", "Sent", True),
        ("*%*%", "Sent", True),
        ("Se", "Sent", False),
        ("%/%", "Archive/2024", True),
    ],
)
def test_list_wildcards(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_pathological_patterns_stay_fast() -> None:
    name = "a" * 200
    start = time.perf_counter()
    for _ in range(100):
        assert not matches("*a" * 400 + "b", name)
        assert not matches("%a" * 400 + "b", name)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Sent", "Sent"),
        (b"inbox", "INBOX"),
        (b"Inbox/Sub/", "INBOX/Sub"),
        (b"", None),
        (b"a*b", None),
        (b"a%b", None),
        (b"/lead", None),
        (b"dou//ble", None),
        (b"ctl\x01", None),
        ("caf\u00e9".encode(), None),
        (b"x" * 201, None),
    ],
)
def test_valid_names(raw: bytes, expected: str | None) -> None:
    assert valid_name(raw) == expected


def test_quote_uses_atoms_when_possible() -> None:
    assert quote("Sent") == "Sent"
    assert quote("My Mail") == '"My Mail"'
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert quote("NIL") == '"NIL"'
    assert quote("") == '""'
    assert canonical("iNbOx") == "INBOX"


def test_uidvalidity_is_stable_and_nonzero() -> None:
    assert uidvalidity("INBOX") == uidvalidity("INBOX") > 0
    assert uidvalidity("INBOX") != uidvalidity("Sent")


def test_tree_create_delete_and_bounds() -> None:
    boxes = Mailboxes()
    assert boxes.create("a/b/c") is None
    assert boxes.exists("a") and boxes.exists("a/b")
    assert boxes.attributes("a") == ["\\HasChildren"]
    assert boxes.create("a/b/c") == "[ALREADYEXISTS] Mailbox already exists"
    assert boxes.delete("a/b") == "[INUSE] Mailbox has children, delete them first"
    assert boxes.delete("a/b/c") is None and boxes.delete("a/b") is None
    assert boxes.delete("Trash") == "[CANNOT] This mailbox cannot be deleted"
    assert boxes.delete("nope") == "[NONEXISTENT] Mailbox doesn't exist"
    for i in range(MAX_MAILBOXES):
        if boxes.create(f"m{i}") is not None:
            break
    assert boxes.create("one-more") == "[LIMIT] Too many mailboxes"


def test_listing_orders_inbox_first_and_marks_special_use() -> None:
    boxes = Mailboxes()
    found = boxes.listing("", ["*"], subscribed=False, special_only=False)
    assert [name for _, name in found] == ["INBOX", "Drafts", "Sent", "Trash"]
    assert found[2] == (["\\HasNoChildren", "\\Sent"], "Sent")
    special = boxes.listing("", ["*"], subscribed=False, special_only=True)
    assert [name for _, name in special] == ["Drafts", "Sent", "Trash"]
    boxes.subscribe("Gone", on=True)
    subscribed = boxes.listing("", ["G*"], subscribed=True, special_only=False)
    assert subscribed == [(["\\NonExistent"], "Gone")]


def cmd(name: str, *args: Atom | String | Group) -> Command:
    return Command("t", name, args)


def test_store_select_append_uidnext() -> None:
    store = MailStore()
    append = store.run(cmd("APPEND", Atom("Drafts"), String(b"", True, 42, discarded=True)))
    assert append == Outcome(
        "OK", f"[APPENDUID {uidvalidity('Drafts')} 1] Append completed", (), 42
    )
    selected = store.run(cmd("SELECT", Atom("Drafts")))
    assert selected.status == "OK" and "* OK [UIDNEXT 2] Predicted next UID" in selected.untagged
    assert store.selected == "Drafts" and not store.read_only
    assert store.run(cmd("EXAMINE", Atom("nope"))).status == "NO"
    assert store.selected is None


@pytest.mark.parametrize(
    "command",
    [
        cmd("SELECT"),
        cmd("CREATE", Group(())),
        cmd("LIST", Atom("x")),
        cmd("STATUS", Atom("INBOX"), Atom("MESSAGES")),
        cmd("APPEND", Atom("INBOX")),
        cmd("APPEND", Atom("INBOX"), Atom("a"), Atom("b"), String(b"x")),
        cmd("ENABLE"),
        cmd("FETCH", Atom("0"), Atom("FLAGS")),
        cmd("UID", Atom("MOVE"), Atom("1"), Atom("Trash")),
        cmd("EXPUNGE", Atom("1")),
        cmd("SEARCH"),
    ],
)
def test_store_syntax_errors_are_bad(command: Command) -> None:
    assert MailStore().run(command).status == "BAD"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1", True),
        ("1:*", True),
        ("*", True),
        ("1,3:5,7:*", True),
        ("0", False),
        ("1,", False),
        (":", False),
        ("a", False),
        ("1:2:3", False),
        ("", False),
    ],
)
def test_sequence_sets(text: str, ok: bool) -> None:
    assert sequence_set(Atom(text)) is ok
