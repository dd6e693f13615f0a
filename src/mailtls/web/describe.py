"""One friendly sentence per event, for people who have never heard of STARTTLS.

Used by the live progress (pushed over Server-Sent Events) and by the transcripts on the result
page. Values that came from a client are never interpolated here except numbers and our own
names (protocol, port), so the sentences are safe text; templates escape them anyway.
"""

from __future__ import annotations

from typing import Any

PROTO = {"smtp": "the sending server (SMTP)", "imap": "IMAP", "pop3": "POP3"}


def _where(ev: dict[str, Any]) -> str:
    proto = PROTO.get(str(ev.get("protocol")), str(ev.get("protocol") or "the server"))
    port = ev.get("port")
    return f"{proto} on port {port}" if port else proto


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe(ev: dict[str, Any]) -> str | None:
    t = ev.get("type")
    where = _where(ev)
    if t == "connection_opened":
        return f"Your app connected to {where}."
    if t == "implicit_tls_blocked":
        return f"Your app tried the encrypted-only port of {where}; the attacker blocked it."
    if t == "capabilities_sent":
        if ev.get("tls"):
            return None
        if ev.get("starttls_offered"):
            return f"{_cap(where)} offered encryption (STARTTLS)."
        return f"{_cap(where)} did NOT offer encryption (the attacker removed it)."
    if t == "starttls_requested":
        if ev.get("advertised"):
            return "Your app asked to switch on encryption."
        return "Your app asked for encryption even though it was not offered."
    if t == "starttls_refused":
        if ev.get("reason") == "testcase":
            return "The attacker refused the switch to encryption."
        return "The server refused an encryption request that it had not offered."
    if t == "starttls_disrupted":
        if ev.get("stage") == "handshake":
            return "The attacker broke the encryption handshake."
        return "The attacker broke the encrypted connection right after it started."
    if t == "tls_established":
        return f"The connection to {where} is now encrypted ({ev.get('version', 'TLS')})."
    if t == "tls_failed":
        return "The encryption handshake failed."
    if t == "client_hello_offered":
        offered = f"offered {ev.get('highest', 'TLS')} at most"
        if ev.get("answer") == "alert":
            return (
                f"Your app {offered}; the attacker answered with an error, as a broken "
                "network would."
            )
        if ev.get("fallback"):
            scsv = "" if ev.get("fallback_scsv") else ", without saying it was a retry"
            return f"Your app tried again with an older encryption version ({offered}{scsv})."
        return f"Your app tried again ({offered})."
    if t == "preauth_greeted":
        return "The attacker told your app it was already logged in, without encryption."
    if t == "preauth_used":
        return "Your app used the mailbox WITHOUT encryption (the attacker can read it)."
    if t == "response_injected":
        return "The attacker slipped a forged answer in just before encryption started."
    if t == "pipelined_after_starttls":
        return "Your app sent commands before encryption was ready (they were discarded)."
    if t == "auth":
        if ev.get("secret_in_clear"):
            return "Your app sent its password WITHOUT encryption."
        if ev.get("secret_sent") and ev.get("tls"):
            return "Your app logged in over an encrypted connection."
        if ev.get("outcome") == "cancelled":
            return "Your app started to log in, then cancelled."
        return "Your app tried to log in."
    if t == "username_sent":
        if not ev.get("tls"):
            return "Your app sent its user name without encryption (no password)."
        return None
    if t == "data_after_disruption":
        return "Your app sent more data after the attack."
    if t == "message_received":
        return "Your app sent a test message (it was discarded)."
    if t == "connection_closed":
        return f"The connection to {where} ended."
    if t == "session_kicked":
        return "The server closed an open connection so that your app reconnects."
    if t == "step_started":
        return "Step started: connections from your address now count for this step."
    if t == "step_activated":
        return "Your app logged in securely: the attack is now active."
    if t == "step_finished":
        return "Step finished."
    return None
