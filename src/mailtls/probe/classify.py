"""Pure classification of server replies: capabilities and the answer to a dummy login.

A dummy login before TLS ends in one of four outcomes:

- ``REFUSED_BEFORE_TLS``: the server would not take credentials on this connection (SMTP ``530``,
  ``538``, ``534``, ``504``, Postfix's ``503 5.5.1`` when ``smtpd_tls_auth_only`` hides AUTH; IMAP
  ``[PRIVACYREQUIRED]`` or a refusal after ``LOGINDISABLED``; Dovecot's POP3 "Plaintext
  authentication disallowed on non-secure connections", which carries the same ``[AUTH]`` code as
  a failed login, so the text decides);
- ``PROCESSED``: the credentials were checked as a normal login and failed (``535``,
  ``NO [AUTHENTICATIONFAILED]``, a failed-login ``-ERR``): the server accepts cleartext passwords;
- ``ACCEPTED``: the fake login succeeded (a test server that accepts anyone): same exposure;
- ``UNCLASSIFIED``: anything else, reported verbatim.

No I/O, no clock: tables in, enums out. Imports only the standard library.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class AuthOutcome(enum.Enum):
    REFUSED_BEFORE_TLS = "refused-before-tls"
    PROCESSED = "processed"
    ACCEPTED = "accepted"
    UNCLASSIFIED = "unclassified"

    @property
    def exposes_credentials(self) -> bool:
        return self in (AuthOutcome.PROCESSED, AuthOutcome.ACCEPTED)


@dataclass(frozen=True)
class Caps:
    """What a server advertises on one connection (before or after TLS)."""

    starttls: bool = False
    mechanisms: tuple[str, ...] = ()
    login_disabled: bool = False
    user_command: bool = False
    raw: tuple[str, ...] = ()

    @property
    def plaintext_mechanisms(self) -> tuple[str, ...]:
        """Mechanisms that carry the password itself (PLAIN, LOGIN)."""
        return tuple(m for m in self.mechanisms if m in ("PLAIN", "LOGIN"))


# --- SMTP ---------------------------------------------------------------------------------

S220_READY = 220
S235_AUTH_OK = 235
S250_OK = 250
S334_CONTINUE = 334
S503_BAD_SEQUENCE = 503
S504_UNRECOGNISED_MECH = 504
S530_STARTTLS_FIRST = 530
S534_MECH_TOO_WEAK = 534
S535_AUTH_FAILED = 535
S538_ENCRYPTION_REQUIRED = 538

_SMTP_REFUSED = {S530_STARTTLS_FIRST, S534_MECH_TOO_WEAK, S538_ENCRYPTION_REQUIRED}
_TLS_WORDS = re.compile(r"starttls|tls|ssl|encrypt|secure|plaintext|cleartext", re.IGNORECASE)


def parse_ehlo(lines: Sequence[str]) -> Caps:
    """Keywords of a ``250`` EHLO reply (``250-STARTTLS``, ``250 AUTH PLAIN LOGIN``)."""
    starttls = False
    mechs: list[str] = []
    raw: list[str] = []
    for line in lines[1:]:
        text = line[4:].strip()
        raw.append(text)
        words = text.upper().replace("=", " ").split()
        if not words:
            continue
        if words[0] == "STARTTLS":
            starttls = True
        elif words[0] == "AUTH":
            mechs += [w for w in words[1:] if w not in mechs]
    return Caps(starttls=starttls, mechanisms=tuple(mechs), raw=tuple(raw))


def classify_smtp_auth(code: int, text: str, auth_advertised: bool) -> AuthOutcome:
    """The final reply to ``AUTH``; ``text`` is the reply text after the code."""
    if code == S235_AUTH_OK:
        return AuthOutcome.ACCEPTED
    if code == S535_AUTH_FAILED:
        return AuthOutcome.PROCESSED
    if code in _SMTP_REFUSED:
        return AuthOutcome.REFUSED_BEFORE_TLS
    if code == S504_UNRECOGNISED_MECH:
        return AuthOutcome.REFUSED_BEFORE_TLS
    if code == S503_BAD_SEQUENCE and (not auth_advertised or text.startswith("5.5.1")):
        # Postfix with smtpd_tls_auth_only hides AUTH and answers "503 5.5.1 Error:
        # authentication not enabled" until TLS is up.
        return AuthOutcome.REFUSED_BEFORE_TLS
    return AuthOutcome.UNCLASSIFIED


def smtp_requires_tls(code: int, text: str) -> bool | None:
    """The reply to ``MAIL FROM:<>`` before TLS: True when it demands STARTTLS first."""
    if code == S530_STARTTLS_FIRST:
        return True
    if 200 <= code < 300:
        return False
    if code >= 500 and _TLS_WORDS.search(text):
        return True
    if 400 <= code < 600:
        return False
    return None


# --- IMAP ---------------------------------------------------------------------------------

_IMAP_CAPS = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_RESP_CODE = re.compile(r"^\[([A-Z0-9-]+)", re.IGNORECASE)


def parse_imap_caps(words: Iterable[str]) -> Caps:
    raw = tuple(w for w in words if w)
    upper = [w.upper() for w in raw]
    mechs = tuple(dict.fromkeys(w[5:] for w in upper if w.startswith("AUTH=")))
    return Caps(
        starttls="STARTTLS" in upper,
        mechanisms=mechs,
        login_disabled="LOGINDISABLED" in upper,
        raw=raw,
    )


def imap_caps_from_line(line: str) -> Caps | None:
    """Capabilities from a greeting code ``[CAPABILITY ...]`` or a ``* CAPABILITY`` line."""
    found = _IMAP_CAPS.search(line)
    if found:
        return parse_imap_caps(found.group(1).split())
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "*" and parts[1].upper() == "CAPABILITY":
        return parse_imap_caps(parts[2:])
    return None


def response_code(text: str) -> str | None:
    found = _RESP_CODE.match(text.strip())
    return found.group(1).upper() if found else None


def classify_imap_auth(status: str, text: str, login_disabled: bool) -> AuthOutcome:
    """A tagged reply to LOGIN/AUTHENTICATE: ``status`` OK/NO/BAD, ``text`` the rest."""
    status = status.upper()
    code = response_code(text)
    if status == "OK":
        return AuthOutcome.ACCEPTED
    if code == "PRIVACYREQUIRED":
        return AuthOutcome.REFUSED_BEFORE_TLS
    if status in ("NO", "BAD") and login_disabled:
        return AuthOutcome.REFUSED_BEFORE_TLS
    if status == "NO" and code in ("AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED"):
        return AuthOutcome.PROCESSED
    if status == "NO" and _TLS_WORDS.search(text):
        return AuthOutcome.REFUSED_BEFORE_TLS
    return AuthOutcome.UNCLASSIFIED


# --- POP3 ---------------------------------------------------------------------------------

_POP3_REFUSED = re.compile(
    r"disallowed on non-secure|not allowed without (ssl|tls)|requires? (ssl|tls|starttls|stls|"
    r"encryption)|(ssl|tls|stls|starttls) (required|first)|must (issue|use) (stls|starttls)",
    re.IGNORECASE,
)
_POP3_FAILED = re.compile(
    r"authentication failed|invalid (login|password|user)|bad (login|password)|incorrect|"
    r"login failed|\[auth\]",
    re.IGNORECASE,
)


def parse_pop3_capa(lines: Sequence[str]) -> Caps:
    """The body lines of a ``CAPA`` reply (without ``+OK`` and the final ``.``)."""
    starttls = user = False
    mechs: list[str] = []
    for line in lines:
        words = line.upper().split()
        if not words:
            continue
        if words[0] == "STLS":
            starttls = True
        elif words[0] == "USER":
            user = True
        elif words[0] == "SASL":
            mechs += [w for w in words[1:] if w not in mechs]
    return Caps(starttls=starttls, mechanisms=tuple(mechs), user_command=user, raw=tuple(lines))


def classify_pop3_auth(line: str) -> AuthOutcome:
    """The final status line of USER/PASS or AUTH."""
    text = line.strip()
    if text.startswith("+OK"):
        return AuthOutcome.ACCEPTED
    if not text.startswith("-ERR"):
        return AuthOutcome.UNCLASSIFIED
    if _POP3_REFUSED.search(text):
        return AuthOutcome.REFUSED_BEFORE_TLS
    if _POP3_FAILED.search(text):
        return AuthOutcome.PROCESSED
    return AuthOutcome.UNCLASSIFIED
