"""The server's secret key (``DATA_DIR/secret.key``) and the values derived from it with HMAC.

The key keys the username hashes of unknown logins, and derives each run's account password and
result-link token from the run id, so none of those is ever stored. Only this module reads or
writes the key file. It must not import anything else of mailtls.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "secret.key"
KEY_BYTES = 32


class KeyFileError(ValueError):
    """The key file exists but cannot be used (wrong size, unreadable)."""


def load_or_create_key(data_dir: Path) -> bytes:
    """Return the 32-byte key in ``data_dir/secret.key``, creating it (mode 0600) when missing.

    The file is written under a temporary name and linked into place, so a concurrent start or a
    crash never leaves a short key behind.
    """
    data_dir = Path(data_dir)
    path = data_dir / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another start won the race: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) != KEY_BYTES:
        raise KeyFileError(f"{path} must hold exactly {KEY_BYTES} bytes, found {len(data)}")
    return data


def derive(key: bytes, label: str, message: str | bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key``, domain-separated by ``label``."""
    if isinstance(message, str):
        message = message.encode("utf-8", "surrogatepass")
    return hmac.new(key, label.encode("ascii") + b"\0" + message, hashlib.sha256).digest()
