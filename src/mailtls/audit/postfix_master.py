"""Postfix ``master.cf`` (and ``postconf -M`` / ``-P`` output): text in, service entries out.

An entry is 8 fields (service, type, private, unpriv, chroot, wakeup, maxproc, command) followed by
arguments; continuation lines start with whitespace and comment lines inside an entry do not end
it (same reader as main.cf). ``-o name=value``, ``-oname=value`` and ``-o { name = value }`` are
per-service overrides of main.cf. When several entries share service name and type, the last one
is the one that counts. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from mailtls.audit.model import Origin, Setting, SourceText
from mailtls.audit.postfix_main import logical_segments


@dataclass(frozen=True)
class MasterEntry:
    service: str
    type: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: tuple[str, ...]
    overrides: tuple[Setting, ...]
    origin: Origin

    @property
    def key(self) -> str:
        """``service/type``, as postconf names it (``submission/inet``)."""
        return f"{self.service}/{self.type}"

    def override_map(self) -> dict[str, Setting]:
        """Overrides by name; a later ``-o`` for the same name wins, as with getopt."""
        return {s.name: s for s in self.overrides}


@dataclass(frozen=True)
class MasterConfig:
    source: str
    entries: tuple[MasterEntry, ...]
    warnings: tuple[str, ...] = ()

    def effective_entries(self) -> list[MasterEntry]:
        """One entry per ``service/type``: the last definition, in first-seen order."""
        last: dict[str, MasterEntry] = {}
        for entry in self.entries:
            last.pop(entry.key, None)
            last[entry.key] = entry
        return list(last.values())

    def find(self, service: str, type_: str) -> MasterEntry | None:
        found = None
        for entry in self.entries:
            if entry.service == service and entry.type == type_:
                found = entry
        return found


def tokens(line: str) -> Iterator[tuple[int, str]]:
    """(offset, token) pairs: split on whitespace; ``{`` runs to its matching ``}``."""
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "{":
            level, j = 0, i
            while j < n:
                if line[j] == "{":
                    level += 1
                elif line[j] == "}":
                    level -= 1
                    if level == 0:
                        break
                j += 1
            yield i, line[i : j + 1]
            i = j + 1
            continue
        j = i
        while j < n and not line[j].isspace():
            j += 1
        yield i, line[i:j]
        i = j


def _override(text: str, origin: Origin) -> Setting | None:
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        return None
    return Setting(name.strip(), value.strip(), origin)


def parse_entry(segments: list[tuple[int, str]], label: str) -> MasterEntry | str:
    """One logical master.cf entry (its physical pieces) -> entry, or a warning text."""
    line = ""
    starts: list[tuple[int, int]] = []  # (offset in the joined line, physical line number)
    for number, piece in segments:
        if line:
            line += " "
        starts.append((len(line), number))
        line += piece
    origin = Origin(label, segments[0][0])

    def line_at(offset: int) -> int:
        return max(n for start, n in starts if start <= offset)

    parts = list(tokens(line))
    if len(parts) < 8:
        return f"{origin}: master.cf entry has {len(parts)} fields, needs at least 8; ignored"
    fields, args = [t for _, t in parts[:8]], parts[8:]
    overrides: list[Setting] = []
    i = 0
    while i < len(args):
        offset, arg = args[i]
        text: str | None = None
        if arg == "-o" and i + 1 < len(args):
            offset, text = args[i + 1]
            i += 1
        elif arg.startswith("-o") and len(arg) > 2:
            text = arg[2:]
        i += 1
        if text is not None:
            setting = _override(text, Origin(label, line_at(offset)))
            if setting is not None:
                overrides.append(setting)
    service, type_, private, unpriv, chroot, wakeup, maxproc, command = fields
    return MasterEntry(
        service,
        type_,
        private,
        unpriv,
        chroot,
        wakeup,
        maxproc,
        command,
        tuple(t for _, t in args),
        tuple(overrides),
        origin,
    )


def parse_master(source: SourceText) -> MasterConfig:
    entries: list[MasterEntry] = []
    warnings: list[str] = []
    for segments in logical_segments(source.text):
        parsed = parse_entry(segments, source.label)
        if isinstance(parsed, str):
            warnings.append(parsed)
        else:
            entries.append(parsed)
    return MasterConfig(source.label, tuple(entries), tuple(warnings))


_P_LINE = re.compile(r"^(?P<service>\S+)/(?P<type>[a-z]+)/(?P<name>[^\s=]+)\s*=\s?(?P<value>.*)$")


def parse_postconf_p(source: SourceText) -> Mapping[str, list[Setting]]:
    """``postconf -P`` output: ``service/type/name = value`` -> overrides per ``service/type``."""
    out: dict[str, list[Setting]] = {}
    for number, raw in enumerate(source.text.splitlines(), start=1):
        m = _P_LINE.match(raw.strip())
        if m is None:
            continue
        key = f"{m['service']}/{m['type']}"
        out.setdefault(key, []).append(
            Setting(m["name"], m["value"].strip(), Origin(source.label, number))
        )
    return out


def apply_postconf_p(master: MasterConfig, overrides: Mapping[str, list[Setting]]) -> MasterConfig:
    """Use ``-P`` lines (exact line numbers) as the overrides of each unique ``service/type``."""
    last_index: dict[str, int] = {e.key: i for i, e in enumerate(master.entries)}
    count: dict[str, int] = {}
    for e in master.entries:
        count[e.key] = count.get(e.key, 0) + 1
    entries = list(master.entries)
    for key, settings in overrides.items():
        # -P merges the overrides of duplicate entries; then -M's own list is the precise one
        if key in last_index and count[key] == 1:
            i = last_index[key]
            entries[i] = replace(entries[i], overrides=tuple(settings))
    return MasterConfig(master.source, tuple(entries), master.warnings)
