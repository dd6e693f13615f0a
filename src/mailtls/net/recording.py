"""What a mail connection's records cost, and how those of a connection bound to no run are kept.

A connection bound to a run records every observation when it happens: its transcript is the
run's evidence. A connection bound to no run (bots, scanners, credential stuffers: most of what
a public server sees) is recorded compactly by ``CompactRecorder``: its observations are counted,
the first of each kind that a verdict reads is held in memory, and at its close one
``connection_summary`` record replaces them all (what it got, by whom it was closed, counts by
type, the mechanisms it tried, how many secrets it sent in the clear, a sample of its command
lines as the transcript shows them: redacted). Only two things are written when they happen:

- a login that names a run with a wrong password (the run counts it: ``username_misused``);
- a login with a run's password: the connection belongs to that run's user after all (another
  network), so what was held is written, in order, and everything after it too.

``ConnectionBudget`` counts a connection's observations and the journal bytes of what it wrote
(estimated from the record's strings); past either bound the shell ends the connection with the
protocol's goodbye. Pure bookkeeping on record dicts: no sockets, no clock; imports only
``mailtls.observations``.
"""

from __future__ import annotations

from typing import Any

from mailtls.observations import ConnectionSummarized

Record = dict[str, Any]

# the first record of each of these kinds is held: what a verdict reads when the connection turns
# out to be a run's (mode, capabilities offered, STARTTLS tried, TLS, disruption)
CONTEXT_TYPES = frozenset(
    {
        "connection_opened",
        "capabilities_sent",
        "starttls_requested",
        "starttls_accepted",
        "starttls_refused",
        "starttls_disrupted",
        "pipelined_after_starttls",
        "tls_established",
        "tls_failed",
        "implicit_tls_blocked",
        "username_sent",
    }
)
LINE_CHARS = 120  # a sampled command line is cut to this
MAX_MECHANISMS = 8
RECORD_OVERHEAD = 240  # journal bytes of a record besides its strings (keys, numbers, envelope)
_CLOSED_FIELDS = ("by", "bytes_in", "bytes_out", "duration")


def estimated_bytes(record: Record) -> int:
    """About the journal bytes of ``record``: a fixed overhead plus its top-level strings."""
    return RECORD_OVERHEAD + sum([len(v) for v in record.values() if type(v) is str])


class CompactRecorder:
    """The records of one connection bound to no run (see the module docstring).

    ``take(record)`` returns the records to write now: none while they are only counted, the
    held ones and this one when a login proves a run's password, one summary at the close.
    """

    __slots__ = (
        "_code",
        "_counts",
        "_held",
        "_lines",
        "_mechanisms",
        "_sample",
        "_secrets",
        "promoted",
    )

    def __init__(self, sample_lines: int) -> None:
        self._sample = sample_lines
        self._counts: dict[str, int] = {}
        self._held: dict[str, Record] = {}
        self._lines: list[str] = []
        self._mechanisms: list[str] = []
        self._secrets = 0
        self._code: str | None = None
        self.promoted = False  # a run's password was presented: everything is written

    def take(self, record: Record) -> list[Record]:
        if self.promoted:
            return [record]
        kind = str(record.get("type"))
        self._counts[kind] = self._counts.get(kind, 0) + 1
        if kind == "connection_closed":
            return [self._summary(record)]
        if kind == "auth":
            self._note_auth(record)
        code = record.get("code")
        if kind in ("auth", "username_sent") and isinstance(code, str):
            self._code = self._code or code
            if kind == "auth" and record.get("proof") is True:
                self.promoted = True
                held, self._held = list(self._held.values()), {}
                return [*held, record]
            if kind == "auth":
                return [record]  # the run's username, not its password: the run counts it
        if kind == "command" and len(self._lines) < self._sample:
            line = record.get("line")
            if isinstance(line, str):
                self._lines.append(line[:LINE_CHARS])
        if kind in CONTEXT_TYPES and kind not in self._held:
            self._held[kind] = record
        return []

    def _note_auth(self, record: Record) -> None:
        mechanism = record.get("mechanism")
        if (
            isinstance(mechanism, str)
            and mechanism not in self._mechanisms
            and len(self._mechanisms) < MAX_MECHANISMS
        ):
            self._mechanisms.append(mechanism)
        if record.get("secret_in_clear") is True:
            self._secrets += 1

    def _summary(self, closed: Record) -> Record:
        opened = self._held.get("connection_opened", {})
        summary = ConnectionSummarized(
            security=str(opened.get("security", "")),
            testcase=str(opened.get("testcase", "baseline")),
            by=str(closed.get("by", "")),
            bytes_in=int(closed.get("bytes_in", 0)),
            bytes_out=int(closed.get("bytes_out", 0)),
            duration=float(closed.get("duration", 0.0)),
            counts=dict(self._counts),
            lines=tuple(self._lines),
            mechanisms=tuple(self._mechanisms),
            secrets_in_clear=self._secrets,
            code=self._code,
        )
        record = {k: v for k, v in closed.items() if k not in _CLOSED_FIELDS}
        record.update(summary.as_fields())
        record["type"] = summary.TYPE
        if self._code is None:
            del record["code"]
        return record


class ConnectionBudget:
    """Observations and estimated journal bytes of one connection against their bounds (0: no
    bound). ``passed()`` names the first bound passed (``records`` or ``bytes``), once."""

    __slots__ = ("_exceeded", "_max_bytes", "_max_records", "_tripped", "nbytes", "records")

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self._max_records = max_records
        self._max_bytes = max_bytes
        self.records = 0
        self.nbytes = 0
        self._exceeded: str | None = None
        self._tripped = False

    def observed(self) -> None:
        self.records += 1
        if self._max_records and self.records > self._max_records and not self._tripped:
            self._trip("records")

    def wrote(self, record: Record) -> int:
        """Count a written record; returns its estimated size."""
        size = estimated_bytes(record)
        self.nbytes += size
        if self._max_bytes and self.nbytes > self._max_bytes and not self._tripped:
            self._trip("bytes")
        return size

    def passed(self) -> tuple[str, int] | None:
        """The bound passed and its value, the first time it is asked after passing it."""
        what, self._exceeded = self._exceeded, None
        if what is None:
            return None
        return what, self._max_records if what == "records" else self._max_bytes

    def _trip(self, what: str) -> None:
        self._tripped = True
        self._exceeded = what
