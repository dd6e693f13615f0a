"""Shared vocabulary of the auditor: where a value came from, and the errors of the audit.

Pure data; imports nothing from the rest of ``mailtls.audit``.
"""

from __future__ import annotations

from dataclasses import dataclass


class AuditError(Exception):
    """The audit cannot go on (unreadable named file, binary or huge input, include loop)."""


class CommandFailed(AuditError):
    """postconf/doveconf ran and refused the configuration (non-zero exit); the message ends with
    the tool's own last error line."""


class UnreadableError(AuditError):
    """A file exists but could not be read (permissions): audit the rest, say what was skipped."""


@dataclass(frozen=True)
class Origin:
    """Where a value was defined: a config file or a capture of runtime output, 1-based line."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Setting:
    """One ``name = value`` definition; ``origin`` None means a built-in default."""

    name: str
    value: str
    origin: Origin | None = None


@dataclass(frozen=True)
class SourceText:
    """Text of a config file or of captured command output, with the label used in findings."""

    label: str
    text: str
