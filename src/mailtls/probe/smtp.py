"""SMTP client dialogue for the probe: greeting, EHLO, dummy AUTH, MAIL FROM check, STARTTLS.

Replies are read whole (multi-line ``250-``/``250 ``) with a bound on lines. Imports only
``conn``, ``classify`` and ``dialogue``.
"""

from __future__ import annotations

from mailtls.probe.classify import (
    S220_READY,
    S250_OK,
    S334_CONTINUE,
    AuthOutcome,
    Caps,
    classify_smtp_auth,
    parse_ehlo,
    smtp_requires_tls,
)
from mailtls.probe.conn import MAX_LINES, Conn, ProbeFailure
from mailtls.probe.dialogue import DummyCredentials, LoginResult, StarttlsReply, Stopwatch, b64

EHLO_NAME = "mailtls-probe.invalid"
INJECTED = b"NOOP\r\n"


def read_reply(conn: Conn, timeout: float | None = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    while len(lines) < MAX_LINES:
        text = conn.read_line(timeout).decode("utf-8", "replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 3 or not (text[:3].isascii() and text[:3].isdigit()):
            raise ProbeFailure("protocol", "the server's reply is not SMTP")
        if len(text) == 3 or text[3] == " ":
            return int(text[:3]), lines
    raise ProbeFailure("protocol", f"SMTP reply longer than {MAX_LINES} lines")


def reply_text(lines: list[str]) -> str:
    return lines[-1][4:].strip() if lines else ""


class SmtpDialogue:
    name = "smtp"
    starttls_command = "STARTTLS"

    def greet(self, conn: Conn) -> str:
        code, lines = read_reply(conn)
        if code != S220_READY:
            raise ProbeFailure("protocol", f"the server refused the session: {lines[0]}")
        return lines[0]

    def capabilities(self, conn: Conn) -> Caps:
        conn.send(f"EHLO {EHLO_NAME}\r\n".encode())
        code, lines = read_reply(conn)
        if code != S250_OK:
            return Caps(raw=tuple(lines))
        return parse_ehlo(lines)

    def login(self, conn: Conn, caps: Caps, creds: DummyCredentials, wait: float) -> LoginResult:
        advertised = bool(caps.mechanisms)
        if "PLAIN" not in caps.mechanisms and "LOGIN" in caps.mechanisms:
            conn.send(b"AUTH LOGIN\r\n")
            code, lines = read_reply(conn)
            if code == S334_CONTINUE:
                conn.send(f"{b64(creds.user)}\r\n".encode(), shown=f"<user {creds.user}, base64>")
                code, lines = read_reply(conn)
            watch = Stopwatch()
            if code == S334_CONTINUE:
                conn.send(f"{b64(creds.password)}\r\n".encode(), shown="<dummy password redacted>")
                code, lines = read_reply(conn, wait)
            return self._result("AUTH LOGIN", code, lines, advertised, watch)
        watch = Stopwatch()
        conn.send(
            f"AUTH PLAIN {creds.plain_response()}\r\n".encode(),
            shown="AUTH PLAIN <dummy credentials redacted>",
        )
        code, lines = read_reply(conn, wait)
        if code == S334_CONTINUE:
            conn.send(b"*\r\n")
            read_reply(conn)
            return LoginResult("AUTH PLAIN", AuthOutcome.UNCLASSIFIED, lines[-1], watch.seconds())
        return self._result("AUTH PLAIN", code, lines, advertised, watch)

    @staticmethod
    def _result(
        mech: str, code: int, lines: list[str], advertised: bool, watch: Stopwatch
    ) -> LoginResult:
        outcome = classify_smtp_auth(code, reply_text(lines), advertised)
        return LoginResult(mech, outcome, lines[-1], watch.seconds())

    def requires_tls(self, conn: Conn) -> bool | None:
        conn.send(b"MAIL FROM:<>\r\n")
        code, lines = read_reply(conn)
        verdict = smtp_requires_tls(code, reply_text(lines))
        if code == S250_OK:
            conn.send(b"RSET\r\n")
            read_reply(conn)
        return verdict

    def starttls(self, conn: Conn, inject: bool) -> StarttlsReply:
        conn.send(b"STARTTLS\r\n" + (INJECTED if inject else b""))
        code, lines = read_reply(conn)
        return StarttlsReply(code == S220_READY, lines[-1])

    def quit(self, conn: Conn) -> None:
        try:
            conn.send(b"QUIT\r\n")
            read_reply(conn, 2.0)
        except ProbeFailure:
            pass
