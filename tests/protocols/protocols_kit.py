"""What the protocol-core tests share: the one test account and a fake authenticator.

The authenticator accepts only ``test-abc123`` (with or without ``@mailtls.test``, any case)
and shows every other username as a keyed-hash-like ``h:`` digest, as the run manager does.
"""

from __future__ import annotations

import base64
import hashlib

from mailtls.protocols.base import AuthDecision

USER = "test-abc123"
CODE = "abc123"
DOMAIN = "mailtls.test"


def hashed(username: str) -> str:
    return "h:" + hashlib.sha256(username.encode()).hexdigest()[:16]


def authenticator(username: str) -> AuthDecision:
    name = username.strip().lower()
    if name in (USER, f"{USER}@{DOMAIN}"):
        return AuthDecision(True, USER, CODE)
    return AuthDecision(False, hashed(username), None)


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()
