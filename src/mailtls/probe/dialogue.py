"""What every per-protocol client dialogue offers, and the small facts it returns.

``smtp``, ``imap`` and ``pop3`` each implement ``Dialogue`` over a ``Conn``; the session drives
them without knowing which protocol it talks. A dialogue object lives for one connection (IMAP
tags, SMTP's EHLO state). Imports only ``conn`` and ``classify``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Protocol

from mailtls.probe.classify import AuthOutcome, Caps
from mailtls.probe.conn import Conn


@dataclass(frozen=True)
class DummyCredentials:
    """A clearly fake user and a random password; ``repr`` never shows the password."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"DummyCredentials(user={self.user!r}, password=<redacted>)"

    def plain_response(self) -> str:
        raw = b"\0" + self.user.encode() + b"\0" + self.password.encode()
        return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class LoginResult:
    mechanism: str
    outcome: AuthOutcome
    reply: str
    seconds: float


@dataclass(frozen=True)
class StarttlsReply:
    accepted: bool
    reply: str


class Dialogue(Protocol):
    name: str
    starttls_command: str

    def greet(self, conn: Conn) -> str: ...

    def capabilities(self, conn: Conn) -> Caps: ...

    def login(
        self, conn: Conn, caps: Caps, creds: DummyCredentials, wait: float
    ) -> LoginResult: ...

    def requires_tls(self, conn: Conn) -> bool | None: ...

    def starttls(self, conn: Conn, inject: bool) -> StarttlsReply: ...

    def quit(self, conn: Conn) -> None: ...


class Stopwatch:
    """Seconds from the secret-carrying message to the final reply (a slow failure is normal)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 2)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")
