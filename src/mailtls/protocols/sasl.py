"""SASL exchanges shared by SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH (sans-IO).

The core owns framing (``334``/``+`` continuation lines, base64 on the wire is handled here);
an exchange takes the client's base64 lines and returns a ``Challenge`` to send, a ``Finished``
with the username, whether the secret-carrying message was sent and the ``Credential`` for the
authenticator, or ``Aborted`` (``*`` cancel or malformed input). The credential is handed over
once, for the authenticator's answer, and never kept, logged or recorded: observations get only
the secret's length, so that a transcript can show ``<redacted, 24 bytes>``.

Mechanisms: PLAIN and LOGIN (always), CRAM-MD5 (offered only after TLS; the digest is checked
against the run's password), XOAUTH2 and OAUTHBEARER (recognised, never advertised, always refused
after the exchange).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field

from mailtls.protocols.base import Credential

PRE_TLS_MECHANISMS = ("PLAIN", "LOGIN")
TLS_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
RECOGNISED = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"})


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this (raw bytes; the core base64-encodes) as a continuation."""

    data: bytes
    username_so_far: str | None = None  # LOGIN: the username arrived, secret still to come


@dataclass(frozen=True, slots=True)
class Finished:
    username: str
    secret_sent: bool
    secret_bytes: int
    always_fail: bool = False  # XOAUTH2/OAUTHBEARER: refuse whatever the username
    # what the authenticator checks (not kept: the flow drops the step after asking)
    credential: Credential | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Aborted:
    reason: str  # "cancelled" | "malformed"
    username: str | None = None  # LOGIN cancelled after the username


Step = Challenge | Finished | Aborted

OAUTH_ERROR = b'{"status":"invalid_token","scope":"mail","schemes":"Bearer"}'


def _b64decode(text: str) -> bytes | None:
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class SaslExchange:
    """One exchange. Call ``start(initial)`` once, then ``respond(line)`` per client line."""

    def __init__(self, mechanism: str, hostname: str = "localhost") -> None:
        self.mechanism = mechanism.upper()
        self._hostname = hostname
        self._stage = 0
        self._username: str | None = None
        self._challenge = b""  # CRAM-MD5: the challenge sent (a server nonce, not a secret)

    def start(self, initial: str | None) -> Step:
        """``initial`` is the base64 initial response as sent (``=`` for empty), or None."""
        if self.mechanism == "CRAM-MD5":
            if initial is not None:
                return Aborted("malformed")
            token = f"<{secrets.randbits(48)}.{secrets.randbits(20)}@{self._hostname}>"
            self._challenge = token.encode()
            return Challenge(self._challenge)
        if initial is None:
            if self.mechanism == "LOGIN":
                return Challenge(b"Username:")
            return Challenge(b"")
        return self.respond(initial)

    def respond(self, line: str) -> Step:
        if line.strip() == "*":
            return Aborted("cancelled", self._username)
        raw = _b64decode(line)
        if raw is None:
            return Aborted("malformed", self._username)
        handler = getattr(self, "_" + self.mechanism.replace("-", "_").lower())
        step: Step = handler(raw)
        self._stage += 1
        return step

    # --- mechanisms -------------------------------------------------------------------------

    def _plain(self, raw: bytes) -> Step:
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return Aborted("malformed")
        user = _text(parts[1])
        credential = Credential(user, password=parts[2])
        return Finished(user, True, len(parts[2]), credential=credential)

    def _login(self, raw: bytes) -> Step:
        if self._stage == 0:
            self._username = _text(raw)
            return Challenge(b"Password:", username_so_far=self._username)
        user = self._username or ""
        return Finished(user, True, len(raw), credential=Credential(user, password=raw))

    def _cram_md5(self, raw: bytes) -> Step:
        user, _, digest = raw.rpartition(b" ")
        if not user or not digest:
            return Aborted("malformed")
        name = _text(user)
        credential = Credential(name, challenge=self._challenge, response=digest)
        return Finished(name, True, len(digest), credential=credential)

    def _xoauth2(self, raw: bytes) -> Step:
        if self._stage == 0:
            user = ""
            for field in raw.split(b"\x01"):
                if field.startswith(b"user="):
                    user = _text(field[5:])
            self._username = user
            return Challenge(OAUTH_ERROR, username_so_far=user)
        return Finished(self._username or "", secret_sent=True, secret_bytes=0, always_fail=True)

    def _oauthbearer(self, raw: bytes) -> Step:
        if self._stage == 0:
            user = ""
            gs2, _, _rest = raw.partition(b"\x01")
            for item in gs2.split(b","):
                if item.startswith(b"a="):
                    user = _text(item[2:]).replace("=2C", ",").replace("=3D", "=")
            self._username = user
            return Challenge(OAUTH_ERROR, username_so_far=user)
        return Finished(self._username or "", secret_sent=True, secret_bytes=0, always_fail=True)


def redacted(verb: str, mechanism: str | None, nbytes: int) -> str:
    """The transcript form of a secret-carrying line."""
    head = f"{verb} {mechanism}" if mechanism else verb
    return f"{head} <redacted, {nbytes} bytes>"
