"""The mail store of one IMAP session: INBOX plus SPECIAL-USE Sent, Drafts, Trash, all empty.

``Mailboxes`` is the model; ``MailStore`` runs the commands of the authenticated and selected
states on it (SELECT, LIST, STATUS, APPEND, FETCH, ...) and answers each with an ``Outcome``
(untagged lines, then a tagged OK/NO/BAD) that the core sends. Mailboxes stay empty (APPEND only
advances ``UIDNEXT``). CREATE, DELETE and (UN)SUBSCRIBE change only this session's view, bounded
by ``MAX_MAILBOXES``. LIST/LSUB patterns (``*`` and ``%``, with a reference) are matched by a
bit-parallel automaton, linear in the name length, so no pattern can make the server work hard.

Must not import: ``imap`` (the core), ``asyncio``, ``socket``, ``ssl``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from mailtls.protocols.imap_parse import Atom, Command, Group, String, Token, astring

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


# --- the commands of the authenticated and selected states ------------------------------------

SYSTEM_FLAGS = r"\Answered \Flagged \Deleted \Seen \Draft"
STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE"}
)
_SEQUENCE = re.compile(r"(?:[1-9]\d{0,9}|\*)(?::(?:[1-9]\d{0,9}|\*))?(?:,|\Z)")
NO_MAILBOX = "[NONEXISTENT] Mailbox doesn't exist"
READ_ONLY = "[READ-ONLY] Mailbox is read-only"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a mailbox command answers: untagged lines, then ``<tag> <status> <text>``.

    ``status`` BAD means the client broke the syntax (the core counts it as a protocol error).
    ``message_bytes``: an APPEND body was received (counted, discarded).
    """

    status: str  # "OK" | "NO" | "BAD"
    text: str
    untagged: tuple[str, ...] = ()
    message_bytes: int | None = None


def _ok(text: str, *untagged: str) -> Outcome:
    return Outcome("OK", text, untagged)


def _no(text: str) -> Outcome:
    return Outcome("NO", text)


def _bad(text: str) -> Outcome:
    return Outcome("BAD", text)


def sequence_set(token: Token | None) -> bool:
    if not isinstance(token, Atom) or not token.value or len(token.value) > 1000:
        return False
    text, pos = token.value, 0
    while pos < len(text):
        match = _SEQUENCE.match(text, pos)
        if match is None:
            return False
        pos = match.end()
    return not text.endswith(",")


class MailStore:
    """The commands that work on mailboxes, for one authenticated session.

    ``selected`` is the selected mailbox (the IMAP *selected* state) or ``None``.
    """

    __slots__ = ("_boxes", "read_only", "selected")

    def __init__(self) -> None:
        self._boxes = Mailboxes()
        self.selected: str | None = None
        self.read_only = False

    def run(self, cmd: Command) -> Outcome:
        handler = _HANDLERS[cmd.name]
        return handler(self, cmd)

    def _name(self, token: Token | None) -> str | None:
        raw = astring(token)
        return valid_name(raw) if raw is not None else None

    def _existing(self, token: Token | None) -> str | None:
        name = self._name(token)
        return name if name is not None and self._boxes.exists(name) else None

    # --- authenticated state ----------------------------------------------------------------

    def namespace(self, cmd: Command) -> Outcome:
        return _ok("Namespace completed", f'* NAMESPACE (("" "{DELIMITER}")) NIL NIL')

    def enable(self, cmd: Command) -> Outcome:
        if not cmd.args or not all(isinstance(a, Atom) for a in cmd.args):
            return _bad("ENABLE expects capability names")
        return _ok("Enabled", "* ENABLED")  # none of the extensions ENABLE turns on is offered

    def select(self, cmd: Command) -> Outcome:
        args = cmd.args
        if not args or astring(args[0]) is None or len(args) > 2:
            return _bad(f"{cmd.name} expects a mailbox name")
        self.selected = None  # a failed SELECT leaves no mailbox selected
        name = self._existing(args[0])
        if name is None:
            return _no(NO_MAILBOX)
        examine = cmd.name == "EXAMINE"
        self.selected, self.read_only = name, examine
        permanent = "" if examine else SYSTEM_FLAGS + r" \*"
        code = "[READ-ONLY] Examine" if examine else "[READ-WRITE] Select"
        return _ok(
            f"{code} completed",
            "* 0 EXISTS",
            "* 0 RECENT",
            f"* FLAGS ({SYSTEM_FLAGS})",
            f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted",
            f"* OK [UIDVALIDITY {uidvalidity(name)}] UIDs valid",
            f"* OK [UIDNEXT {self._boxes.uidnext(name)}] Predicted next UID",
        )

    def create(self, cmd: Command) -> Outcome:
        if len(cmd.args) != 1 or astring(cmd.args[0]) is None:
            return _bad("CREATE expects a mailbox name")
        name = self._name(cmd.args[0])
        error = self._boxes.create(name) if name else "[CANNOT] Invalid mailbox name"
        return _no(error) if error else _ok("Create completed")

    def delete(self, cmd: Command) -> Outcome:
        if len(cmd.args) != 1 or astring(cmd.args[0]) is None:
            return _bad("DELETE expects a mailbox name")
        name = self._name(cmd.args[0])
        error = self._boxes.delete(name) if name else NO_MAILBOX
        if error:
            return _no(error)
        if name == self.selected:
            self.selected = None
        return _ok("Delete completed")

    def rename(self, cmd: Command) -> Outcome:
        if len(cmd.args) != 2 or astring(cmd.args[0]) is None or astring(cmd.args[1]) is None:
            return _bad("RENAME expects two mailbox names")
        return _no("[CANNOT] Renaming mailboxes is not supported")

    def subscribe(self, cmd: Command) -> Outcome:
        if len(cmd.args) != 1 or astring(cmd.args[0]) is None:
            return _bad(f"{cmd.name} expects a mailbox name")
        name = self._name(cmd.args[0])
        if name is None:
            return _no(NO_MAILBOX)
        self._boxes.subscribe(name, on=cmd.name == "SUBSCRIBE")
        return _ok(f"{cmd.name.capitalize()} completed")

    def list(self, cmd: Command) -> Outcome:
        """LIST/LSUB, with LIST-EXTENDED selection options and several patterns tolerated."""
        args = list(cmd.args)
        options: set[str] = set()
        first = args[0] if args else None
        if isinstance(first, Group) and cmd.name == "LIST":
            options = {t.upper() for t in first.items if isinstance(t, Atom)}
            del args[0]
        if len(args) == 4 and isinstance(args[2], Atom) and args[2].upper() == "RETURN":
            del args[2:]
        reference = astring(args[0]) if len(args) == 2 else None
        tokens = args[1].items if len(args) == 2 and isinstance(args[1], Group) else args[1:]
        patterns = [astring(t) for t in tokens]
        if reference is None or not patterns or None in patterns:
            return _bad(f"{cmd.name} expects a reference and a mailbox pattern")
        ref = reference.decode("utf-8", "replace")
        texts = [p.decode("utf-8", "replace") for p in patterns if p is not None]
        if texts == [""]:
            root = ref.split(DELIMITER, 1)[0] + DELIMITER if DELIMITER in ref else ""
            return _ok(f"{cmd.name} completed", f'* {cmd.name} (\\Noselect) "/" {quote(root)}')
        lsub = cmd.name == "LSUB"
        found = self._boxes.listing(
            ref, texts, lsub or "SUBSCRIBED" in options, "SPECIAL-USE" in options
        )
        lines = []
        for attrs, name in found:
            if lsub:  # LSUB shows only whether the mailbox can be selected
                attrs = [a for a in attrs if a == "\\NonExistent"]
            shown = " ".join(attrs).replace("\\NonExistent", "\\Noselect")
            lines.append(f'* {cmd.name} ({shown}) "{DELIMITER}" {quote(name)}')
        return _ok(f"{cmd.name} completed", *lines)

    def status(self, cmd: Command) -> Outcome:
        items = cmd.args[1] if len(cmd.args) == 2 else None
        if not isinstance(items, Group) or astring(cmd.args[0]) is None:
            return _bad("STATUS expects a mailbox and a list of items")
        wanted = [t.upper() if isinstance(t, Atom) else "" for t in items.items]
        if not wanted or any(w not in STATUS_ITEMS for w in wanted):
            return _bad("Unknown STATUS item")
        name = self._existing(cmd.args[0])
        if name is None:
            return _no(NO_MAILBOX)
        values = {"UIDNEXT": self._boxes.uidnext(name), "UIDVALIDITY": uidvalidity(name)}
        shown = " ".join(f"{w} {values.get(w, 0)}" for w in dict.fromkeys(wanted))
        return _ok("Status completed", f"* STATUS {quote(name)} ({shown})")

    def append(self, cmd: Command) -> Outcome:
        args = cmd.args
        message = args[-1] if len(args) >= 2 else None
        middle = args[1:-1]
        shapes = len(middle) <= 2 and all(isinstance(t, Group | String) for t in middle)
        if not isinstance(message, String) or astring(args[0]) is None or not shapes:
            return _bad("APPEND expects a mailbox, optional flags and date, and a message")
        name = self._existing(args[0])
        if name is None:
            return Outcome("NO", "[TRYCREATE] Mailbox doesn't exist", (), message.nbytes)
        uid = self._boxes.appended(name)
        text = f"[APPENDUID {uidvalidity(name)} {uid}] Append completed"
        return Outcome("OK", text, (), message.nbytes)

    # --- selected state ---------------------------------------------------------------------

    def check(self, cmd: Command) -> Outcome:
        return _ok("Check completed")

    def close(self, cmd: Command) -> Outcome:
        if cmd.args:
            return _bad(f"{cmd.name} takes no arguments")
        self.selected = None
        return _ok(f"{cmd.name.capitalize()} completed")

    def expunge(self, cmd: Command, uid: bool = False) -> Outcome:
        if len(cmd.args) != int(uid) or (uid and not sequence_set(cmd.args[0])):
            return _bad("Invalid EXPUNGE arguments")
        return _no(READ_ONLY) if self.read_only else _ok("Expunge completed")

    def search(self, cmd: Command, uid: bool = False) -> Outcome:
        if not cmd.args:
            return _bad("SEARCH expects search criteria")
        return _ok("Search completed", "* SEARCH")

    def fetch(self, cmd: Command, uid: bool = False) -> Outcome:
        if len(cmd.args) < 2 or not sequence_set(cmd.args[0]):
            return _bad("FETCH expects a sequence set and data items")
        return _ok("Fetch completed")

    def store(self, cmd: Command, uid: bool = False) -> Outcome:
        if len(cmd.args) < 3 or not sequence_set(cmd.args[0]):
            return _bad("STORE expects a sequence set, a data item and flags")
        return _no(READ_ONLY) if self.read_only else _ok("Store completed")

    def copy(self, cmd: Command, uid: bool = False) -> Outcome:
        if len(cmd.args) != 2 or not sequence_set(cmd.args[0]) or astring(cmd.args[1]) is None:
            return _bad("COPY expects a sequence set and a mailbox")
        if self._existing(cmd.args[1]) is None:
            return _no("[TRYCREATE] Mailbox doesn't exist")
        return _ok("Copy completed")

    def uid(self, cmd: Command) -> Outcome:
        sub = cmd.args[0].upper() if cmd.args and isinstance(cmd.args[0], Atom) else ""
        handler = _UID_HANDLERS.get(sub)
        if handler is None:
            return _bad("Unknown UID command")
        return handler(self, Command(cmd.tag, sub, cmd.args[1:]), True)


AUTHENTICATED_COMMANDS = frozenset(
    {"NAMESPACE", "ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE"}
    | {"UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND"}
)
SELECTED_COMMANDS = frozenset(
    {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "UID"}
)

_HANDLERS: dict[str, Callable[[MailStore, Command], Outcome]] = {
    "NAMESPACE": MailStore.namespace,
    "ENABLE": MailStore.enable,
    "SELECT": MailStore.select,
    "EXAMINE": MailStore.select,
    "CREATE": MailStore.create,
    "DELETE": MailStore.delete,
    "RENAME": MailStore.rename,
    "SUBSCRIBE": MailStore.subscribe,
    "UNSUBSCRIBE": MailStore.subscribe,
    "LIST": MailStore.list,
    "LSUB": MailStore.list,
    "STATUS": MailStore.status,
    "APPEND": MailStore.append,
    "CHECK": MailStore.check,
    "CLOSE": MailStore.close,
    "UNSELECT": MailStore.close,
    "EXPUNGE": MailStore.expunge,
    "SEARCH": MailStore.search,
    "FETCH": MailStore.fetch,
    "STORE": MailStore.store,
    "COPY": MailStore.copy,
    "UID": MailStore.uid,
}
_UID_HANDLERS: dict[str, Callable[[MailStore, Command, bool], Outcome]] = {
    "FETCH": MailStore.fetch,
    "SEARCH": MailStore.search,
    "STORE": MailStore.store,
    "COPY": MailStore.copy,
    "EXPUNGE": MailStore.expunge,
}
