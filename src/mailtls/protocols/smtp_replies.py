"""Named SMTP replies of the SMTP core (one line each, CRLF included), so tests read like prose.

Names follow aiosmtpd's habit: ``S<code>_<MEANING>``. Replies that carry the server's host name
(greeting, EHLO, timeout) are built by functions. ``text(reply)`` gives the line without CRLF, the
form stored in observations. Imports nothing from mailtls.
"""

from __future__ import annotations

from functools import lru_cache

# --- positive --------------------------------------------------------------------------------
S214_HELP = b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP AUTH\r\n"
S214_HELP_STARTTLS = (
    b"214 2.0.0 Commands: EHLO HELO STARTTLS MAIL RCPT DATA RSET NOOP QUIT VRFY HELP AUTH\r\n"
)
S220_READY_TLS = b"220 2.0.0 Ready to start TLS\r\n"
S221_BYE = b"221 2.0.0 Bye\r\n"
S235_AUTH_SUCCESS = b"235 2.7.0 Authentication successful\r\n"
S250_OK = b"250 2.0.0 Ok\r\n"
S250_SENDER_OK = b"250 2.1.0 Ok\r\n"
S250_RCPT_OK = b"250 2.1.5 Ok\r\n"
S250_MESSAGE_OK = b"250 2.0.0 Ok: message received\r\n"
S252_CANNOT_VRFY = b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
S354_START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"

# --- transient negative ----------------------------------------------------------------------
S421_KICKED = b"421 4.3.2 Service shutting down\r\n"
S421_TOO_MANY_ERRORS = b"421 4.7.0 Too many errors\r\n"
S452_TOO_MANY_RCPTS = b"452 4.5.3 Error: too many recipients\r\n"
S454_TLS_NA = b"454 4.7.0 TLS not available due to temporary reason\r\n"

# --- permanent negative ----------------------------------------------------------------------
S500_UNKNOWN = b"500 5.5.2 Error: command not recognized\r\n"
S500_BAD_CHAR = b"500 5.5.2 Error: bad character in command (NUL or bare CR)\r\n"
S500_LINE_TOO_LONG = b"500 5.5.2 Line too long\r\n"
S501_AUTH_ABORTED = b"501 5.7.0 Authentication aborted\r\n"
S501_AUTH_DECODE = b"501 5.5.2 Cannot decode response\r\n"
S501_SYNTAX_AUTH = b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"
S501_SYNTAX_DATA = b"501 5.5.4 Syntax: DATA\r\n"
S501_SYNTAX_EHLO = b"501 5.5.4 Syntax: EHLO hostname\r\n"
S501_SYNTAX_HELO = b"501 5.5.4 Syntax: HELO hostname\r\n"
S501_SYNTAX_MAIL = b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
S501_SYNTAX_RCPT = b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
S501_SYNTAX_RSET = b"501 5.5.4 Syntax: RSET\r\n"
S501_SYNTAX_STARTTLS = b"501 5.5.4 Syntax: STARTTLS\r\n"
S502_EXPN = b"502 5.5.1 EXPN command is disabled\r\n"
S502_STARTTLS_NOT_OFFERED = b"502 5.5.1 Error: command not implemented\r\n"
S503_ALREADY_AUTH = b"503 5.5.1 Error: already authenticated\r\n"
S503_HELO_FIRST = b"503 5.5.1 Error: send HELO/EHLO first\r\n"
S503_MAIL_IN_PROGRESS = b"503 5.5.1 Error: MAIL transaction in progress\r\n"
S503_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
S503_NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
S503_NESTED_MAIL = b"503 5.5.1 Error: nested MAIL command\r\n"
S504_AUTH_MECHANISM = b"504 5.5.4 Unrecognized authentication type\r\n"
S530_AUTH_REQUIRED = b"530 5.7.0 Authentication required\r\n"
S530_STARTTLS_FIRST = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
S535_AUTH_INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
S550_RELAY_DENIED = b"550 5.7.1 Relay access denied\r\n"
S552_TOO_BIG = b"552 5.3.4 Message size exceeds fixed limit\r\n"
S554_NO_VALID_RCPTS = b"554 5.5.1 Error: no valid recipients\r\n"
S555_MAIL_PARAMETER = b"555 5.5.4 Unsupported option\r\n"


def greeting(hostname: str) -> bytes:
    return f"220 {hostname} ESMTP mailtls\r\n".encode()


def helo(hostname: str) -> bytes:
    return f"250 {hostname}\r\n".encode()


def timeout(hostname: str) -> bytes:
    return f"421 4.4.2 {hostname} Error: timeout exceeded\r\n".encode()


def challenge(b64: bytes) -> bytes:
    """A SASL continuation: ``334 <base64>`` (``334 `` alone for an empty challenge)."""
    return b"334 " + b64 + b"\r\n"


@lru_cache(maxsize=64)
def ehlo(hostname: str, size: int, starttls: bool, mechanisms: tuple[str, ...]) -> bytes:
    """The multi-line EHLO reply (cached: only a handful of variants exist per server)."""
    lines = [hostname, "PIPELINING", f"SIZE {size}"]
    if starttls:
        lines.append("STARTTLS")
    lines += ["AUTH " + " ".join(mechanisms), "ENHANCEDSTATUSCODES", "8BITMIME"]
    head = "".join(f"250-{line}\r\n" for line in lines[:-1])
    return f"{head}250 {lines[-1]}\r\n".encode()


def forged_ehlo(hostname: str) -> bytes:
    """``inject``: the EHLO reply forged after the STARTTLS go-ahead (only AUTH PLAIN)."""
    return f"250-{hostname}\r\n250 AUTH PLAIN\r\n".encode()


def text(reply: bytes) -> str:
    """The reply as stored in observations: its last line, without CRLF."""
    return reply.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].decode("utf-8", "replace")
