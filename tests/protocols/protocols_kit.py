"""What the protocol-core tests share: the one test account and a fake authenticator.

The authenticator knows only ``test-abc123`` (with or without ``@mailtls.test``, any case) and
accepts it with one of the tests' canary passwords (``PASSWORDS``; CRAM-MD5 digests of them
too), checked as the run manager checks a run's password; that username with another secret is
named (``code``) but not proven. Every other username is a keyed-hash-like ``h:`` digest.
"""

from __future__ import annotations

import base64
import hashlib

from mailtls.protocols.base import AuthDecision, Credential
from mailtls.runs.proof import presents

USER = "test-abc123"
CODE = "abc123"
DOMAIN = "mailtls.test"
# the test account's passwords: the canaries the core tests send, and docs/testcases.md's
PASSWORDS = ("Canary-Pa55w0rd-7f3e9", "Canary-Pa55w0rd-51e8", "Canary-Pa55w0rd-xyzzy", "secret")


def hashed(username: str) -> str:
    return "h:" + hashlib.sha256(username.encode()).hexdigest()[:16]


def authenticator(credential: Credential) -> AuthDecision:
    name = credential.username.strip().lower()
    if name in (USER, f"{USER}@{DOMAIN}"):
        proof = any(presents(password, credential) for password in PASSWORDS)
        return AuthDecision(proof, USER, CODE, proof)
    return AuthDecision(False, hashed(credential.username), None)


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()
