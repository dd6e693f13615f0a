"""IMAP client dialogue for the probe: greeting, CAPABILITY, dummy LOGIN/AUTHENTICATE, STARTTLS.

Tagged replies are awaited with a bound on untagged lines. When ``LOGINDISABLED`` is advertised
the probe still sends ``LOGIN`` (with the fake user) to see whether the server honours it.
Imports only ``conn``, ``classify`` and ``dialogue``.
"""

from __future__ import annotations

from mailtls.probe.classify import (
    AuthOutcome,
    Caps,
    classify_imap_auth,
    imap_caps_from_line,
)
from mailtls.probe.conn import MAX_LINES, Conn, ProbeFailure
from mailtls.probe.dialogue import DummyCredentials, LoginResult, StarttlsReply, Stopwatch


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r\n")


class ImapDialogue:
    name = "imap"
    starttls_command = "STARTTLS"

    def __init__(self) -> None:
        self.counter = 0
        self.greeting_caps: Caps | None = None

    def tag(self) -> str:
        self.counter += 1
        return f"p{self.counter}"

    def read_tagged(
        self, conn: Conn, tag: str, timeout: float | None = None
    ) -> tuple[str, str, list[str]]:
        """(status, rest of the tagged line, untagged lines)."""
        untagged: list[str] = []
        while len(untagged) < MAX_LINES:
            line = _text(conn.read_line(timeout))
            head, _, rest = line.partition(" ")
            if head == tag:
                status, _, text = rest.partition(" ")
                return status.upper(), text, untagged
            if head == "+":
                return "+", rest, untagged
            untagged.append(line)
        raise ProbeFailure("protocol", f"more than {MAX_LINES} untagged lines")

    def greet(self, conn: Conn) -> str:
        line = _text(conn.read_line())
        upper = line.upper()
        if upper.startswith("* BYE"):
            raise ProbeFailure("protocol", f"the server refused the session: {line}")
        if not (upper.startswith("* OK") or upper.startswith("* PREAUTH")):
            raise ProbeFailure("protocol", "the server's greeting is not IMAP")
        self.greeting_caps = imap_caps_from_line(line)
        return line

    def capabilities(self, conn: Conn) -> Caps:
        tag = self.tag()
        conn.send(f"{tag} CAPABILITY\r\n".encode())
        _status, _, untagged = self.read_tagged(conn, tag)
        for line in untagged:
            caps = imap_caps_from_line(line)
            if caps is not None:
                return caps
        return self.greeting_caps or Caps()

    def login(self, conn: Conn, caps: Caps, creds: DummyCredentials, wait: float) -> LoginResult:
        tag = self.tag()
        if "PLAIN" in caps.mechanisms and not caps.login_disabled:
            mech = "AUTHENTICATE PLAIN"
            watch = Stopwatch()
            if "SASL-IR" in (w.upper() for w in caps.raw):
                conn.send(
                    f"{tag} AUTHENTICATE PLAIN {creds.plain_response()}\r\n".encode(),
                    shown=f"{tag} AUTHENTICATE PLAIN <dummy credentials redacted>",
                )
                status, text, _ = self.read_tagged(conn, tag, wait)
            else:
                conn.send(f"{tag} AUTHENTICATE PLAIN\r\n".encode())
                status, text, _ = self.read_tagged(conn, tag)
                if status == "+":
                    watch = Stopwatch()
                    conn.send(
                        f"{creds.plain_response()}\r\n".encode(),
                        shown="<dummy credentials redacted>",
                    )
                    status, text, _ = self.read_tagged(conn, tag, wait)
        else:
            mech = "LOGIN"
            watch = Stopwatch()
            conn.send(
                f'{tag} LOGIN "{creds.user}" "{creds.password}"\r\n'.encode(),
                shown=f"{tag} LOGIN {creds.user} <dummy password redacted>",
            )
            status, text, _ = self.read_tagged(conn, tag, wait)
        if status == "+":
            conn.send(b"*\r\n")
            status, text, _ = self.read_tagged(conn, tag)
            return LoginResult(mech, AuthOutcome.UNCLASSIFIED, f"{tag} {status} {text}", 0.0)
        outcome = classify_imap_auth(status, text, caps.login_disabled)
        return LoginResult(mech, outcome, f"{tag} {status} {text}", watch.seconds())

    def requires_tls(self, conn: Conn) -> bool | None:
        return None

    def starttls(self, conn: Conn, inject: bool) -> StarttlsReply:
        tag = self.tag()
        payload = f"{tag} STARTTLS\r\n"
        if inject:
            payload += f"{self.tag()} NOOP\r\n"
        conn.send(payload.encode())
        status, text, _ = self.read_tagged(conn, tag)
        return StarttlsReply(status == "OK", f"{tag} {status} {text}")

    def quit(self, conn: Conn) -> None:
        try:
            tag = self.tag()
            conn.send(f"{tag} LOGOUT\r\n".encode())
            self.read_tagged(conn, tag, 2.0)
        except ProbeFailure:
            pass
