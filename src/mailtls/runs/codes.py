"""Session codes and account names: ``test-<CODE>@<domain>``.

A session code is 10 characters from a lowercase alphabet without look-alikes (no ``0 o 1 l i``),
about 49 bits: enough that codes of open runs are not guessed by a bot, short enough to type. The
code travels in the clear inside usernames during the tests, so nothing secret is ever derived from
it (the run id, password and result token are independent of it).

Usernames that do not name a run are never stored: ``hash_username`` reduces them to a keyed hash.
Imports only ``mailtls.runs.keys``.
"""

from __future__ import annotations

import secrets

from mailtls.runs.keys import derive

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
CODE_LENGTH = 10
ACCOUNT_PREFIX = "test-"
_MAX_USERNAME = 320  # longer input cannot be one of our account names
_ALPHABET_SET = frozenset(ALPHABET)


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def is_code(text: str) -> bool:
    return len(text) == CODE_LENGTH and all(ch in _ALPHABET_SET for ch in text)


def account_username(code: str, domain: str) -> str:
    return f"{ACCOUNT_PREFIX}{code}@{domain}"


def parse_code(username: str) -> str | None:
    """The session code in ``test-<CODE>`` or ``test-<CODE>@anything`` (case-insensitive)."""
    if len(username) > _MAX_USERNAME:
        return None
    local = username.strip().split("@", 1)[0].lower()
    if not local.startswith(ACCOUNT_PREFIX):
        return None
    code = local[len(ACCOUNT_PREFIX) :]
    return code if is_code(code) else None


def hash_username(key: bytes, username: str) -> str:
    """A keyed hash (``h:`` + 16 hex digits) standing in for a username that is not ours.

    The username is normalised (surrounding whitespace, case) so that one account maps to one
    hash; without the key nobody can test a guess against it.
    """
    normalised = username.strip().lower()
    return "h:" + derive(key, "username", normalised).hex()[:16]
