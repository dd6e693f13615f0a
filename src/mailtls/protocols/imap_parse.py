"""IMAP command framing and parsing (sans-IO): tags, atoms, strings, literals, lists.

Two parts, both pure:

- ``CommandReader`` assembles one command from a ``LineBuffer``. A line that ends in ``{n}``
  (synchronizing) or ``{n+}`` (``LITERAL+``) announces ``n`` raw bytes: the reader asks the core
  for a ``+`` continuation (``LiteralWanted``) when synchronizing, enforces the literal budget
  (``limits.literal_bytes`` kept per command; an ``APPEND`` message up to ``limits.message_bytes``
  is only counted, never buffered), and refuses a literal over budget (``LiteralTooBig``) without
  reading it into memory.
- ``parse_command`` turns the assembled ``RawCommand`` into ``Command(tag, name, args)`` or
  ``BadCommand``. Tokens: ``Atom`` (also NIL, numbers, sequence sets, flags and
  ``BODY[...]<...>`` fetch items), ``String`` (quoted or literal) and ``Group`` (parenthesised).

Nothing here raises on peer input. Must not import: ``imap``, ``smtp``, ``pop3``, ``asyncio``,
``socket``, ``ssl``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailtls.protocols.base import Limits, LineBuffer, LineTooLong

MAX_SEGMENTS = 32  # literals in one command (LOGIN needs 2, APPEND 2-3)
MAX_DEPTH = 16  # nesting of parenthesised lists
_LITERAL_SPEC = re.compile(rb"\{(\d{1,19})(\+?)\}\Z")
# ATOM-CHAR excludes "(" ")" "{" SP CTL "%" "*" quoted-specials and "]"; tags also exclude "+".
_TAG = re.compile(r"[!#$&',\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]{1,64}\Z")


# --- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Atom:
    value: str

    def upper(self) -> str:
        return self.value.upper()


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string or a literal. A discarded literal (APPEND body) keeps only its size."""

    value: bytes
    literal: bool = False
    size: int = 0
    discarded: bool = False

    @property
    def nbytes(self) -> int:
        return self.size if self.discarded else len(self.value)


@dataclass(frozen=True, slots=True)
class Group:
    items: tuple[Token, ...]


Token = Atom | String | Group


def astring(token: Token | None) -> bytes | None:
    """The bytes of an atom or string argument (``None`` for lists, NIL is an atom here)."""
    if isinstance(token, Atom):
        return token.value.encode()
    if isinstance(token, String) and not token.discarded:
        return token.value
    return None


def nstring(token: Token | None) -> str | None:
    """A string or NIL, decoded; ``None`` for NIL (and for anything that is not a string)."""
    if isinstance(token, Atom) and token.upper() != "NIL":
        return token.value
    if isinstance(token, String) and not token.discarded:
        return token.value.decode("utf-8", "replace")
    return None


# --- assembled commands ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes | None  # None: counted and discarded
    size: int


@dataclass(frozen=True, slots=True)
class RawCommand:
    """A command as received: ``lines[i]`` ends with the spec of ``literals[i]``."""

    lines: tuple[bytes, ...]
    literals: tuple[Literal, ...]

    def transcript(self) -> str:
        """The client's lines with literal contents left out (their ``{N}`` spec stays)."""
        return b"".join(self.lines).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Complete:
    raw: RawCommand


@dataclass(frozen=True, slots=True)
class LiteralWanted:
    """A synchronizing literal fits: send ``+ Ready for literal``."""

    size: int


@dataclass(frozen=True, slots=True)
class LiteralTooBig:
    """A literal over budget. Synchronizing: the command is over (the client will not send it).
    Non-synchronizing: its bytes are skipped unread; ``fatal`` when even skipping is refused."""

    tag: str | None
    verb: str
    size: int
    synchronizing: bool
    fatal: bool
    partial: str  # transcript of the command so far


@dataclass(frozen=True, slots=True)
class Overlong:
    tag: str | None
    verb: str
    nbytes: int


ReaderItem = Complete | LiteralWanted | LiteralTooBig | Overlong


def head(line: bytes) -> tuple[str | None, str]:
    """The tag (if valid) and upper-cased command name of a command's first line."""
    parts = line.split(b" ", 2)
    tag = parts[0].decode("ascii", "replace")
    verb = parts[1].decode("ascii", "replace").upper() if len(parts) > 1 else ""
    return (tag if _TAG.match(tag) else None), verb


class CommandReader:
    """Assemble IMAP commands (lines + literals) from a ``LineBuffer`` owned by the core."""

    __slots__ = (
        "allow_messages",
        "_keep",
        "_kept",
        "_lines",
        "_literal_data",
        "_literal_left",
        "_literal_size",
        "_literals",
        "_limits",
        "_skipping",
    )

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.allow_messages = False  # APPEND bodies beyond literal_bytes: only once logged in
        self._reset()

    def _reset(self) -> None:
        self._lines: list[bytes] = []
        self._literals: list[Literal] = []
        self._literal_left: int | None = None
        self._literal_size = 0
        self._literal_data = bytearray()
        self._keep = True
        self._kept = 0
        self._skipping = False  # a refused non-synchronizing literal: swallow the command

    @property
    def busy(self) -> bool:
        """A command is partly received (lines before a literal, or a literal in progress)."""
        return bool(self._lines)

    @property
    def in_big_literal(self) -> bool:
        """An APPEND body too big to keep is being counted."""
        return self._literal_left is not None and not self._keep

    def partial(self) -> str:
        return b"".join(self._lines).decode("utf-8", "replace")

    def abort(self) -> None:
        self._reset()

    def next(self, buf: LineBuffer) -> ReaderItem | None:
        while True:
            if self._literal_left is not None and not self._read_literal(buf):
                return None
            line = buf.next_line()
            if line is None:
                return None
            if isinstance(line, LineTooLong):
                tag, verb = head(self._lines[0]) if self._lines else (None, "")
                self._reset()
                return Overlong(tag, verb, line.nbytes)
            item = self._on_line(line)
            if item is not None:
                return item

    def _read_literal(self, buf: LineBuffer) -> bool:
        assert self._literal_left is not None
        chunk = buf.take(self._literal_left)
        self._literal_left -= len(chunk)
        if self._keep:
            self._literal_data += chunk
        if self._literal_left > 0:
            return False
        if not self._skipping:
            data = bytes(self._literal_data) if self._keep else None
            self._literals.append(Literal(data, self._literal_size))
        self._literal_left = None
        self._literal_data = bytearray()
        return True

    def _on_line(self, line: bytes) -> ReaderItem | None:
        if not self._skipping:  # the lines of a command being skipped are not kept
            self._lines.append(line)
        match = _LITERAL_SPEC.search(line)
        if match is None:
            if self._skipping:
                self._reset()
                return None
            raw = RawCommand(tuple(self._lines), tuple(self._literals))
            self._reset()
            return Complete(raw)
        size, synchronizing = int(match[1]), match[2] != b"+"
        tag, verb = head(self._lines[0])
        if self._skipping:
            if synchronizing or size > self._limits.message_bytes:
                self._reset()  # the client waits for a "+" that never comes: command over
                return None
            self._start_literal(size, keep=False)
            return None
        budget = self._limits.literal_bytes - self._kept
        fits_kept = size <= budget
        fits_counted = (
            self.allow_messages and verb == "APPEND" and size <= self._limits.message_bytes
        )
        if len(self._literals) >= MAX_SEGMENTS or not (fits_kept or fits_counted):
            partial = self.partial()
            fatal = not synchronizing and size > self._limits.message_bytes
            if synchronizing or fatal:
                self._reset()
            else:
                self._skipping = True
                self._start_literal(size, keep=False)
            return LiteralTooBig(tag, verb, size, synchronizing, fatal, partial)
        self._start_literal(size, keep=fits_kept)
        return LiteralWanted(size) if synchronizing else None

    def _start_literal(self, size: int, keep: bool) -> None:
        self._literal_left = size
        self._literal_size = size
        self._keep = keep
        if keep:
            self._kept += size


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str  # upper-case command name
    args: tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class BadCommand:
    tag: str | None
    name: str
    reason: str


class _Syntax(Exception):
    """Internal: a syntax error at the scanner's position (never escapes ``parse_command``)."""


_SPACES = re.compile(rb" *")
# an atom: no CTL, SP, "(", ")", '"', "{"; a "[" opens a section that may hold spaces and lists
_ATOM = re.compile(rb'(?:[^\x00-\x20\x7f()"{\[]|\[[^\]\x00-\x1f\x7f]*\])+')
_QUOTED = re.compile(rb'"((?:[^"\\\x00\r\n]|\\["\\])*)"')
_UNESCAPE = re.compile(rb"\\([\"\\])")


class _Scanner:
    """Tokens of one assembled command; regular expressions do the byte-level work."""

    __slots__ = ("_li", "_line", "_lines", "_literals", "_pos")

    def __init__(self, raw: RawCommand) -> None:
        self._lines = raw.lines
        self._literals = raw.literals
        self._li = 0
        self._line = raw.lines[0]
        self._pos = 0

    def tokens(self, depth: int = 0, closing: bool = False) -> tuple[Token, ...]:
        items: list[Token] = []
        while True:
            spaces = _SPACES.match(self._line, self._pos)
            pos = self._pos = spaces.end() if spaces else self._pos
            if pos >= len(self._line):
                if closing:
                    raise _Syntax("unbalanced parentheses")
                return tuple(items)
            ch = self._line[pos]
            if ch == 0x29:  # ")"
                if not closing:
                    raise _Syntax("unbalanced parentheses")
                self._pos = pos + 1
                return tuple(items)
            if ch == 0x28:  # "("
                if depth >= MAX_DEPTH:
                    raise _Syntax("lists nested too deeply")
                self._pos = pos + 1
                items.append(Group(self.tokens(depth + 1, closing=True)))
            elif ch == 0x22:  # '"'
                items.append(self.quoted())
            elif ch == 0x7B:  # "{"
                items.append(self.literal())
            else:
                items.append(self.atom())
            if self._pos < len(self._line) and self._line[self._pos] not in (0x20, 0x29):
                raise _Syntax("missing space between arguments")

    def quoted(self) -> String:
        match = _QUOTED.match(self._line, self._pos)
        if match is None:
            raise _Syntax(self._quoted_error())
        self._pos = match.end()
        value = match[1]
        return String(_UNESCAPE.sub(rb"\1", value) if b"\\" in value else value)

    def _quoted_error(self) -> str:
        line, pos = self._line, self._pos + 1
        while pos < len(line):
            ch = line[pos]
            if ch == 0x22:
                break
            if ch == 0x5C:
                if pos + 1 >= len(line) or line[pos + 1] not in (0x22, 0x5C):
                    return "bad escape in quoted string"
                pos += 1
            elif ch in (0x00, 0x0D, 0x0A):
                return "control character in quoted string"
            pos += 1
        return "unterminated quoted string"

    def literal(self) -> String:
        match = _LITERAL_SPEC.match(self._line, self._pos)
        if match is None or self._li >= len(self._literals):
            raise _Syntax("bad literal")
        lit = self._literals[self._li]
        self._li += 1
        self._line = self._lines[self._li]
        self._pos = 0
        if lit.data is None:
            return String(b"", literal=True, size=lit.size, discarded=True)
        if b"\x00" in lit.data:
            raise _Syntax("NUL in literal")
        return String(lit.data, literal=True, size=lit.size)

    def atom(self) -> Atom:
        match = _ATOM.match(self._line, self._pos)
        end = match.end() if match is not None else self._pos
        if end < len(self._line):
            ch = self._line[end]
            if ch == 0x5B:
                raise _Syntax("unbalanced brackets")
            if ch < 0x20 or ch == 0x7F:
                raise _Syntax("control character")
        if match is None:
            raise _Syntax("unexpected character")
        self._pos = end
        return Atom(match[0].decode("utf-8", "replace"))


def parse_command(raw: RawCommand) -> Command | BadCommand:
    """Parse one assembled command; never raises."""
    tag, verb = head(raw.lines[0])
    if tag is None:
        return BadCommand(None, verb, "invalid tag")
    if not verb.isalpha() or len(verb) > 32:
        # no command name: the "tag" may be anything (a SASL response sent out of turn), so the
        # reply is untagged and never echoes it
        return BadCommand(None, "", "missing or invalid command name")
    scanner = _Scanner(raw)
    try:
        words = scanner.tokens()
    except _Syntax as exc:
        return BadCommand(tag, verb, str(exc))
    return Command(tag, verb, words[2:])
