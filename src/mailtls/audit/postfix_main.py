"""Postfix ``main.cf`` (and ``postconf -n`` / ``-d`` output): text in, last-wins definitions out.

Rules, as Postfix's own reader applies them: a line whose first non-blank character is ``#`` is a
comment and does not end a logical line; a line that starts with whitespace continues the previous
logical line (joined with one space); a ``#`` after other text is part of the value; the last
definition of a name wins. ``expand`` implements ``$name``, ``${name}``, ``$(name)``,
``${name?value}``, ``${name:value}`` (and the ``{value}`` forms) recursively. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from mailtls.audit.model import Origin, Setting, SourceText

_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # what main.cf accepts as a name
_REF = re.compile(r"[A-Za-z0-9_]+")  # what $name expansion reads (mac_parse)
MAX_EXPANSION_DEPTH = 100


@dataclass(frozen=True)
class MainConfig:
    """Definitions of one main.cf (or capture), last definition per name, plus parse warnings."""

    source: str
    settings: Mapping[str, Setting]
    warnings: tuple[str, ...] = ()
    history: Mapping[str, tuple[Setting, ...]] = field(default_factory=dict)


def logical_segments(text: str) -> Iterator[list[tuple[int, str]]]:
    """Yield each logical line as its physical pieces: (line number, stripped text) pairs.

    Follows Postfix's readllines(): blank lines and lines whose first non-blank character is
    ``#`` are skipped without ending the logical line; a line starting with whitespace continues
    it; whitespace-led text with nothing to continue is dropped (Postfix warns).
    """
    current: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace():
            if current:
                current.append((number, stripped))
            continue
        if current:
            yield current
        current = [(number, raw.rstrip())]
    if current:
        yield current


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (first physical line number, logical line joined with single spaces)."""
    for segments in logical_segments(text):
        yield segments[0][0], " ".join(piece for _, piece in segments)


def parse_main(source: SourceText) -> MainConfig:
    settings: dict[str, Setting] = {}
    history: dict[str, list[Setting]] = {}
    warnings: list[str] = []
    for number, line in logical_lines(source.text):
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            warnings.append(f"{source.label}:{number}: not a 'name = value' line; ignored")
            continue
        setting = Setting(name, value.strip(), Origin(source.label, number))
        settings[name] = setting
        history.setdefault(name, []).append(setting)
    return MainConfig(
        source.label,
        settings,
        tuple(warnings),
        {k: tuple(v) for k, v in history.items()},
    )


Lookup = Callable[[str], str | None]


def expand(value: str, lookup: Lookup, depth: int = 0) -> str:
    """Expand ``$name`` references with ``lookup`` (None: undefined -> empty), recursively."""
    if "$" not in value or depth > MAX_EXPANSION_DEPTH:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 >= len(value):
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt in "({":
            end = _matching(value, i + 1)
            if end < 0:
                out.append(value[i:])
                break
            out.append(_expand_braced(value[i + 2 : end], lookup, depth))
            i = end + 1
        else:
            m = _REF.match(value, i + 1)
            if not m:
                out.append(ch)
                i += 1
                continue
            out.append(_value_of(m.group(0), lookup, depth))
            i = m.end()
    return "".join(out)


def _matching(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (nesting aware), or -1."""
    opening = text[start]
    closing = ")" if opening == "(" else "}"
    level = 0
    for j in range(start, len(text)):
        if text[j] == opening:
            level += 1
        elif text[j] == closing:
            level -= 1
            if level == 0:
                return j
    return -1


def _value_of(name: str, lookup: Lookup, depth: int) -> str:
    raw = lookup(name)
    return "" if raw is None else expand(raw, lookup, depth + 1)


def _expand_braced(inner: str, lookup: Lookup, depth: int) -> str:
    m = _REF.match(inner)
    if m is None:
        # Postfix 3.x expression syntax (${{$a} == {b} ? ...}): not needed for TLS checks
        return "${" + inner + "}"
    name, rest = m.group(0), inner[m.end() :]
    if not rest:
        return _value_of(name, lookup, depth)
    if rest[0] in "?:":
        op, body = rest[0], rest[1:].strip()
        when_set, when_empty = (body, "") if op == "?" else ("", body)
        if body.startswith("{"):
            end = _matching(body, 0)
            if end > 0:
                first, tail = body[1:end].strip(), body[end + 1 :].strip()
                when_set, when_empty = (first, "") if op == "?" else ("", first)
                # ${name?{when set}:{when empty}} (Postfix >= 3.0)
                if op == "?" and tail.startswith(":"):
                    other = tail[1:].strip()
                    if other.startswith("{") and other.endswith("}"):
                        when_empty = other[1:-1].strip()
        chosen = when_set if _value_of(name, lookup, depth) else when_empty
        return expand(chosen, lookup, depth + 1)
    return "${" + inner + "}"
