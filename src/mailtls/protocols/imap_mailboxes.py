"""The simulated mailbox tree of one IMAP session: INBOX plus SPECIAL-USE Sent, Drafts, Trash.

Every mailbox is empty and stays empty (APPEND only advances ``UIDNEXT``). CREATE, DELETE and
(UN)SUBSCRIBE change only this session's view, bounded by ``MAX_MAILBOXES``. LIST/LSUB patterns
(``*`` and ``%``, with a reference) are matched by a bit-parallel automaton, linear in the name
length, so no pattern can make the server work hard.

Must not import: ``imap``, ``asyncio``, ``socket``, ``ssl``.
"""

from __future__ import annotations

import re
import zlib

DELIMITER = "/"
INBOX = "INBOX"
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash"}
MAX_MAILBOXES = 64
MAX_NAME = 200
MAX_PATTERN = 1000
_ATOM_NAME = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|}~\[]+\Z")


def quote(text: str) -> str:
    """An IMAP astring for a server-chosen or validated name (atom when possible)."""
    if _ATOM_NAME.match(text) and text.upper() != "NIL":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def valid_name(raw: bytes) -> str | None:
    """A mailbox name the client may use: 7-bit, no controls, no wildcards, bounded."""
    if not raw or len(raw) > MAX_NAME:
        return None
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(ch < " " or ch == "\x7f" or ch in "*%" for ch in name):
        return None
    name = name.rstrip(DELIMITER)
    if not name or name.startswith(DELIMITER) or DELIMITER * 2 in name:
        return None
    return canonical(name)


def canonical(name: str) -> str:
    """INBOX is case-insensitive, also as the first level of a hierarchy."""
    first, sep, rest = name.partition(DELIMITER)
    return INBOX + sep + rest if first.upper() == INBOX else name


def uidvalidity(name: str) -> int:
    """Stable across sessions, so that clients keep their (empty) caches."""
    return (zlib.crc32(name.encode()) & 0x3FFFFFFF) | 1


def _collapse(pattern: str) -> str:
    """Adjacent wildcards: ``*`` wins over ``%``; ``**`` and ``%%`` are one."""
    out: list[str] = []
    for ch in pattern:
        if out and ch in "*%" and out[-1] in "*%":
            out[-1] = "*" if "*" in (ch, out[-1]) else "%"
        else:
            out.append(ch)
    return "".join(out)


def matches(pattern: str, name: str) -> bool:
    """LIST wildcard match: ``*`` matches anything, ``%`` anything but the delimiter."""
    is_inbox = name == INBOX or name.startswith(INBOX + DELIMITER)
    if is_inbox and pattern[: len(INBOX)].upper() == INBOX:
        pattern = INBOX + pattern[len(INBOX) :]
    pattern = _collapse(pattern)
    if len(pattern) > MAX_PATTERN:
        return False
    star = pct = 0
    literal: dict[str, int] = {}
    for i, ch in enumerate(pattern):
        if ch == "*":
            star |= 1 << i
        elif ch == "%":
            pct |= 1 << i
        else:
            literal[ch] = literal.get(ch, 0) | 1 << i
    wild = star | pct
    state = 1 | ((1 & wild) << 1)
    for ch in name:
        loop = star | (pct if ch != DELIMITER else 0)
        state = ((state & literal.get(ch, 0)) << 1) | (state & loop)
        state |= (state & wild) << 1
        if not state:
            return False
    return bool(state >> len(pattern) & 1)


class Mailboxes:
    """This session's mailboxes: name -> special-use attribute, plus subscriptions and UIDNEXT."""

    __slots__ = ("_boxes", "_subscribed", "_uidnext")

    def __init__(self) -> None:
        self._boxes: dict[str, str | None] = {INBOX: None, **SPECIAL_USE}
        self._subscribed = set(self._boxes)
        self._uidnext: dict[str, int] = {}

    def exists(self, name: str) -> bool:
        return name in self._boxes

    def uidnext(self, name: str) -> int:
        return self._uidnext.get(name, 1)

    def appended(self, name: str) -> int:
        """A message was appended (and discarded): its UID."""
        uid = self.uidnext(name)
        self._uidnext[name] = uid + 1
        return uid

    def create(self, name: str) -> str | None:
        """Create ``name`` and its missing parents; the NO reply text on failure."""
        if name in self._boxes:
            return "[ALREADYEXISTS] Mailbox already exists"
        parts = name.split(DELIMITER)
        new = [DELIMITER.join(parts[: i + 1]) for i in range(len(parts))]
        new = [n for n in new if n not in self._boxes]
        if len(self._boxes) + len(new) > MAX_MAILBOXES:
            return "[LIMIT] Too many mailboxes"
        for n in new:
            self._boxes[n] = None
        return None

    def delete(self, name: str) -> str | None:
        if name == INBOX or name in SPECIAL_USE:
            return "[CANNOT] This mailbox cannot be deleted"
        if name not in self._boxes:
            return "[NONEXISTENT] Mailbox doesn't exist"
        if self._has_children(name):
            return "[INUSE] Mailbox has children, delete them first"
        del self._boxes[name]
        self._subscribed.discard(name)
        return None

    def subscribe(self, name: str, on: bool) -> None:
        if on:
            if len(self._subscribed) < MAX_MAILBOXES:
                self._subscribed.add(name)
        else:
            self._subscribed.discard(name)

    def _has_children(self, name: str) -> bool:
        prefix = name + DELIMITER
        return any(n.startswith(prefix) for n in self._boxes)

    def attributes(self, name: str) -> list[str]:
        attrs = ["\\HasChildren" if self._has_children(name) else "\\HasNoChildren"]
        special = self._boxes.get(name)
        if special:
            attrs.append(special)
        return attrs

    def listing(
        self, reference: str, patterns: list[str], subscribed: bool, special_only: bool
    ) -> list[tuple[list[str], str]]:
        """(attributes, name) for LIST/LSUB, in a stable order."""
        names = self._subscribed if subscribed else self._boxes
        out: list[tuple[list[str], str]] = []
        for name in sorted(names, key=lambda n: (n != INBOX, n)):
            if special_only and not self._boxes.get(name):
                continue
            if any(matches(reference + pattern, name) for pattern in patterns):
                exists = name in self._boxes
                out.append((self.attributes(name) if exists else ["\\NonExistent"], name))
        return out
