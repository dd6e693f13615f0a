"""CSRF protection for the web forms: a double-submit token bound to a SameSite cookie.

Every state-changing form carries a hidden ``csrf`` field equal to the ``mailtls_csrf`` cookie.
A cross-site page can neither read the cookie nor (with SameSite=Strict) make the browser send
it, so a forged post fails the comparison. The JSON API is not cookie-authenticated (the run id
in the URL is the capability) and needs no token.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request, Response

COOKIE = "mailtls_csrf"


def token_for(request: Request) -> str:
    """The request's token (from its cookie) or a fresh one to be set on the response."""
    existing = request.cookies.get(COOKIE, "")
    if len(existing) >= 32:
        return existing
    token = getattr(request.state, "csrf_new", None)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.state.csrf_new = token
    return token


def set_cookie(request: Request, response: Response) -> None:
    token = getattr(request.state, "csrf_new", None)
    if isinstance(token, str):
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=_served_over_https(request)
        )


def _served_over_https(request: Request) -> bool:
    """HTTPS as the browser sees it: the request itself, or the configured public URL (a
    reverse proxy that terminates TLS talks plain HTTP to us)."""
    settings = getattr(request.app.state, "settings", None)
    base_url = str(getattr(settings, "base_url", "") or "")
    return request.url.scheme == "https" or base_url.startswith("https://")


async def verify(request: Request) -> None:
    form = await request.form()
    sent = str(form.get("csrf", ""))
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not sent or not hmac.compare_digest(sent, cookie):
        raise HTTPException(
            status_code=403,
            detail="This form has expired or came from another site. Reload the page and retry.",
        )
