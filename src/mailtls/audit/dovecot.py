"""Dovecot configuration (``dovecot.conf`` with includes, or ``doveconf -n`` output) -> a tree.

Follows Dovecot's config parser: ``#`` starts a comment anywhere outside quotes; a trailing
``\\`` continues the line; ``key = value`` (quotes stripped, ``<file`` kept as a path and never
read); ``type [name] {`` opens a section, ``}`` closes it; ``!include`` / ``!include_try`` insert
files at that point (relative to the including file, globs in sorted order), so include order
decides which value wins. ``$name`` in a value is replaced by the value assigned to ``name`` so far
(``protocols = $protocols imap``). File access goes through the ``Reader`` passed in; this module
does no I/O itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailtls.audit.model import AuditError, Origin, SourceText, UnreadableError

MAX_INCLUDE_DEPTH = 20
MAX_FILES = 500
_VERSION_HEADER = re.compile(r"^#\s*(\d+\.\d+)(?:\.\d+)*\S*\s")


@dataclass(frozen=True)
class Assign:
    key: str
    value: str
    origin: Origin
    path: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DovecotConfig:
    """Every assignment in file order, each with the sections enclosing it."""

    source: str
    assigns: tuple[Assign, ...]
    files: tuple[str, ...]
    version_hint: str | None = None
    warnings: tuple[str, ...] = ()

    def root_value(self, key: str) -> Assign | None:
        found = None
        for a in self.assigns:
            if a.key == key and not a.path:
                found = a
        return found


@dataclass
class Reader:
    """File access for includes: ``read(path) -> SourceText`` and ``glob(pattern) -> paths``."""

    read: Callable[[str], SourceText]
    glob: Callable[[str], list[str]]


@dataclass
class _State:
    reader: Reader | None
    assigns: list[Assign] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stack: list[tuple[str, str]] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    version_hint: str | None = None


def parse_dovecot(source: SourceText, reader: Reader | None = None) -> DovecotConfig:
    """Parse a config (following includes through ``reader``) or a ``doveconf -n`` capture."""
    state = _State(reader)
    _parse_text(source, state, depth=0)
    if state.stack:
        kind, name = state.stack[-1]
        state.warnings.append(f"{source.label}: section '{kind} {name}' is not closed at the end")
    return DovecotConfig(
        source.label,
        tuple(state.assigns),
        tuple(state.files),
        state.version_hint,
        tuple(state.warnings),
    )


def _strip_comment(line: str, origin: Origin) -> str:
    i = 0
    while i < len(line):
        ch = line[i]
        if ch in "\"'":
            j = i + 1
            while j < len(line) and line[j] != ch:
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "#":
            return line[:i]
        i += 1
    return line


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return re.sub(r"\\(.)", r"\1", inner)
    return value


def _parse_text(source: SourceText, state: _State, depth: int) -> None:
    label = source.label
    if label in state.chain:
        loop = " -> ".join([*state.chain[state.chain.index(label) :], label])
        raise AuditError(f"include loop: {loop}")
    if depth > MAX_INCLUDE_DEPTH:
        raise AuditError(f"{label}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
    if len(state.files) >= MAX_FILES:
        raise AuditError(f"{label}: more than {MAX_FILES} included files")
    state.files.append(label)
    state.chain.append(label)
    pending = ""
    pending_line = 0
    for number, raw in enumerate(source.text.splitlines(), start=1):
        if depth == 0 and number <= 3 and state.version_hint is None:
            m = _VERSION_HEADER.match(raw)
            if m:
                state.version_hint = m.group(1)
        text = _strip_comment(raw, Origin(label, number)).strip()
        if text.endswith("\\"):
            pending_line = pending_line or number
            pending += text[:-1].rstrip() + " "
            continue
        if pending:
            text, line_no = pending + text, pending_line
            pending, pending_line = "", 0
        else:
            line_no = number
        if text:
            _parse_line(text, Origin(label, line_no), state, depth)
    state.chain.pop()


def _parse_line(text: str, origin: Origin, state: _State, depth: int) -> None:
    if text.startswith("!include"):
        keyword, _, arg = text.partition(" ")
        if keyword in ("!include", "!include_try"):
            _include(_unquote(arg.strip()), keyword == "!include_try", origin, state, depth)
            return
    if text == "}":
        if state.stack:
            state.stack.pop()
        else:
            state.warnings.append(f"{origin}: '}}' without an open section")
        return
    m = re.match(r"([^\s={}]+)\s*=\s*(.*)$", text)
    if m:
        key, value = m.group(1), m.group(2).strip()
        value = _expand(key, _unquote(value), state)
        state.assigns.append(Assign(key, value, origin, tuple(state.stack)))
        return
    if text.endswith("{"):
        head = text[:-1].strip().split(None, 1)
        if head:
            kind = head[0]
            name = _unquote(head[1].strip()) if len(head) > 1 else ""
            state.stack.append((kind, name))
            return
    state.warnings.append(f"{origin}: cannot parse line; ignored")


def _expand(key: str, value: str, state: _State) -> str:
    """``$name`` -> the value assigned to ``name`` so far in this scope. A self-reference with no
    earlier assignment (``protocols = $protocols imap``) starts from the empty value, as on Debian's
    build where the default ``protocols`` is empty; other unknown names stay as written."""
    if "$" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        for a in reversed(state.assigns):
            if a.key == name and a.path == tuple(state.stack):
                return a.value
        return "" if name == key else m.group(0)

    return re.sub(r"\$([a-z_][a-z0-9_]*)", repl, value)


def _include(arg: str, optional: bool, origin: Origin, state: _State, depth: int) -> None:
    if state.reader is None:
        state.warnings.append(f"{origin}: include '{arg}' not followed (no file access)")
        return
    base = os.path.dirname(origin.file)
    pattern = os.path.normpath(arg if os.path.isabs(arg) else os.path.join(base, arg))
    paths = state.reader.glob(pattern)
    if not paths and not optional:  # doveconf: "No matches" for a glob, fatal either way
        if any(ch in arg for ch in "*?["):
            raise AuditError(f"{origin}: no file matches the include {pattern}")
        raise AuditError(f"{origin}: included file {pattern} does not exist")
    for path in paths:
        try:
            included = state.reader.read(path)
        except UnreadableError as exc:
            state.warnings.append(f"{origin}: {exc}; its settings are not audited")
            continue
        except AuditError:
            if optional:
                state.warnings.append(f"{origin}: optional include {path} could not be read")
                continue
            raise
        _parse_text(included, state, depth + 1)
