"""POP3 client dialogue for the probe: greeting, CAPA, dummy AUTH PLAIN or USER/PASS, STLS.

Dovecot refuses cleartext logins with the same ``[AUTH]`` code it uses for a failed login, so
``classify`` reads the text. The injected command after ``STLS`` is ``CAPA`` (legal before
login, always answered). Imports only ``conn``, ``classify`` and ``dialogue``.
"""

from __future__ import annotations

from mailtls.probe.classify import AuthOutcome, Caps, classify_pop3_auth, parse_pop3_capa
from mailtls.probe.conn import MAX_LINES, Conn, ProbeFailure
from mailtls.probe.dialogue import DummyCredentials, LoginResult, StarttlsReply, Stopwatch

INJECTED = b"CAPA\r\n"


def _line(conn: Conn, timeout: float | None = None) -> str:
    return conn.read_line(timeout).decode("utf-8", "replace").rstrip("\r\n")


class Pop3Dialogue:
    name = "pop3"
    starttls_command = "STLS"

    def greet(self, conn: Conn) -> str:
        line = _line(conn)
        if not line.startswith("+OK"):
            raise ProbeFailure("protocol", f"the server refused the session: {line}")
        return line

    def capabilities(self, conn: Conn) -> Caps:
        conn.send(b"CAPA\r\n")
        first = _line(conn)
        if not first.startswith("+OK"):
            return Caps(user_command=True)
        body: list[str] = []
        while len(body) < MAX_LINES:
            line = _line(conn)
            if line == ".":
                return parse_pop3_capa(body)
            body.append(line[1:] if line.startswith("..") else line)
        raise ProbeFailure("protocol", f"CAPA reply longer than {MAX_LINES} lines")

    def login(self, conn: Conn, caps: Caps, creds: DummyCredentials, wait: float) -> LoginResult:
        if "PLAIN" in caps.mechanisms:
            watch = Stopwatch()
            conn.send(
                f"AUTH PLAIN {creds.plain_response()}\r\n".encode(),
                shown="AUTH PLAIN <dummy credentials redacted>",
            )
            line = _line(conn, wait)
            if line.startswith("+ ") or line == "+":
                conn.send(b"*\r\n")
                _line(conn)
                return LoginResult("AUTH PLAIN", AuthOutcome.UNCLASSIFIED, line, watch.seconds())
            return LoginResult("AUTH PLAIN", classify_pop3_auth(line), line, watch.seconds())
        watch = Stopwatch()
        conn.send(f"USER {creds.user}\r\n".encode())
        line = _line(conn, wait)
        if line.startswith("+OK"):
            watch = Stopwatch()
            conn.send(f"PASS {creds.password}\r\n".encode(), shown="PASS <dummy password redacted>")
            line = _line(conn, wait)
        return LoginResult("USER/PASS", classify_pop3_auth(line), line, watch.seconds())

    def requires_tls(self, conn: Conn) -> bool | None:
        return None

    def starttls(self, conn: Conn, inject: bool) -> StarttlsReply:
        conn.send(b"STLS\r\n" + (INJECTED if inject else b""))
        line = _line(conn)
        return StarttlsReply(line.startswith("+OK"), line)

    def quit(self, conn: Conn) -> None:
        try:
            conn.send(b"QUIT\r\n")
            _line(conn, 2.0)
        except ProbeFailure:
            pass
