"""The auditor's only I/O: read config files (bounded, text only) and run postconf/doveconf.

Everything else in ``mailtls.audit`` works on the ``SourceText`` values returned here. Files are
read with a size limit and refused when they contain NUL bytes; commands run with a timeout and a
bounded output. Nothing here interprets configuration.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from mailtls.audit.model import AuditError, CommandFailed, SourceText, UnreadableError

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
COMMAND_TIMEOUT = 30.0
POSTCONF_CANDIDATES = ("postconf", "/usr/sbin/postconf")
DOVECONF_CANDIDATES = ("doveconf", "/usr/bin/doveconf", "/usr/sbin/doveconf")


def read_text(path: str | Path, limit: int = MAX_FILE_BYTES) -> SourceText:
    """Read a config file as text; AuditError when missing, not a file, too large or binary."""
    label = str(path)
    try:
        with open(path, "rb") as fh:
            if not os.path.isfile(path):
                raise AuditError(f"{label}: not a regular file")
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise AuditError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise AuditError(f"{label}: is a directory, not a file") from None
    except PermissionError:
        raise UnreadableError(
            f"{label}: permission denied (run as a user who can read it)"
        ) from None
    except OSError as exc:
        raise AuditError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise AuditError(f"{label}: larger than {limit // (1024 * 1024)} MiB; not a config file")
    if b"\x00" in data:
        raise AuditError(f"{label}: contains NUL bytes; a binary file, not a config file")
    return SourceText(label, data.decode("utf-8", errors="replace"))


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def is_dir(path: str | Path) -> bool:
    return os.path.isdir(path)


def expand_glob(pattern: str) -> list[str]:
    """Paths matching a Dovecot include pattern, sorted (Dovecot includes globs in sorted order)."""
    if not glob.has_magic(pattern):
        return [pattern] if os.path.exists(pattern) else []
    return sorted(glob.glob(pattern))


def find_program(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
        if os.path.isabs(name) and os.access(name, os.X_OK):
            return name
    return None


def run_command(argv: list[str], label: str, timeout: float = COMMAND_TIMEOUT) -> SourceText:
    """Run a config-printing command; its stdout as ``SourceText``. AuditError when it fails."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise AuditError(f"{argv[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise AuditError(f"{label}: timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise AuditError(f"{label}: cannot run: {exc.strerror or exc}") from None
    if len(proc.stdout) > MAX_OUTPUT_BYTES:
        raise AuditError(f"{label}: output larger than {MAX_OUTPUT_BYTES} bytes")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        detail = err[-1] if err else f"exit status {proc.returncode}"
        raise CommandFailed(f"{label}: failed: {detail}")
    return SourceText(label, proc.stdout.decode("utf-8", errors="replace"))


def postconf(flags: list[str], config_dir: str | None = None) -> SourceText:
    """Run ``postconf [-c DIR] FLAGS`` (e.g. ``-n``, ``-M``, ``-P``, ``-d``)."""
    program = find_program(POSTCONF_CANDIDATES)
    if program is None:
        raise AuditError("postconf: not installed")
    argv = [program] + (["-c", config_dir] if config_dir else []) + flags
    where = f" -c {config_dir}" if config_dir else ""
    return run_command(argv, f"postconf{where} {' '.join(flags)}")


def doveconf(config_file: str | None = None) -> SourceText:
    """Run ``doveconf [-c FILE] -n``."""
    program = find_program(DOVECONF_CANDIDATES)
    if program is None:
        raise AuditError("doveconf: not installed")
    argv = [program] + (["-c", config_file] if config_file else []) + ["-n"]
    where = f" -c {config_file}" if config_file else ""
    return run_command(argv, f"doveconf{where} -n")
