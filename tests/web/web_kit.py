"""Test kit of the web app tests: Debian's chromium through Playwright, scripted mail clients.

- ``launch_browser()``: Playwright driving ``/usr/bin/chromium`` (never a downloaded browser);
  skips on a laptop without chromium, fails in CI (``require_tool``).
- Scripted mail clients from the standard library, bounded by socket timeouts: an opportunistic
  IMAP/SMTP client (STARTTLS only when advertised) and a strict one (always STARTTLS, stops when
  it fails). Each returns what happened instead of raising.
- ``form_token``/``SCREENSHOTS``: small helpers for form posts and screenshots.

Imports only the standard library, httpx, playwright and the shared ``conftest``.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import ServeInstance, require_tool

HOST = "127.0.0.1"
CLIENT_TIMEOUT = 6.0
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
CLIENT_ERRORS = (OSError, ssl.SSLError, smtplib.SMTPException, imaplib.IMAP4.error)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def launch_browser() -> Iterator[Any]:
    path = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else path,
            args=BROWSER_ARGS,
            timeout=30_000,
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page in its own browser context, and every dialog (alert, confirm) it opened."""

    page: Any
    dialogs: list[str] = field(default_factory=list)


def new_tab(browser: Any, phone: bool = False, javascript: bool = True) -> Tab:
    context = browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        is_mobile=phone,
        has_touch=phone,
        java_script_enabled=javascript,
    )
    context.set_default_timeout(10_000)
    tab = Tab(context.new_page())

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(str(dialog.message))
        dialog.dismiss()

    tab.page.on("dialog", on_dialog)
    return tab


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


# --- scripted mail clients -------------------------------------------------------------------


def tls_context(inst: ServeInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca))


def imap_session(
    inst: ServeInstance,
    user: str,
    password: str,
    *,
    strict: bool = False,
    client_id: str | None = None,
) -> str:
    """One IMAP session: "tls-login", "plain-login", "stopped: ..." or "error: ..."."""
    try:
        m = imaplib.IMAP4(HOST, inst.port_for(user, "imap"), timeout=CLIENT_TIMEOUT)
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    try:
        tls = False
        if strict or "STARTTLS" in m.capabilities:
            try:
                m.starttls(ssl_context=tls_context(inst))
                tls = True
            except CLIENT_ERRORS as exc:
                return f"stopped: {exc!r}"
        if client_id is not None:
            quoted = client_id.replace("\\", "\\\\").replace('"', '\\"')
            m.xatom("ID", f'("name" "{quoted}" "vendor" "{quoted}")')
        m.login(user, password)
        with contextlib.suppress(*CLIENT_ERRORS):
            m.select("INBOX")
            m.logout()
        return "tls-login" if tls else "plain-login"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    finally:
        with contextlib.suppress(OSError):
            m.shutdown()


def smtp_session(
    inst: ServeInstance, user: str, password: str, *, strict: bool = False, ehlo: str | None = None
) -> str:
    """One submission session that logs in and sends a short message."""
    try:
        with smtplib.SMTP(
            HOST, inst.port_for(user, "smtp_submission"), timeout=CLIENT_TIMEOUT
        ) as s:
            s.ehlo(ehlo or "client.example")
            tls = False
            if strict or s.has_extn("starttls"):
                try:
                    s.starttls(context=tls_context(inst))
                    s.ehlo(ehlo or "client.example")
                    tls = True
                except CLIENT_ERRORS as exc:
                    return f"stopped: {exc!r}"
            s.login(user, password)
            s.sendmail("me@example.org", ["someone@example.org"], b"Subject: test\r\n\r\nhello\r\n")
            return "tls-login" if tls else "plain-login"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
