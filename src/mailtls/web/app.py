"""Assemble the web application: JSON API, security headers, and (when present) the web pages."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

from mailtls import __version__
from mailtls.settings import Settings
from mailtls.web.api import ApiContext, EventSource, Manager, build_router
from mailtls.web.clientaddr import parse_networks
from mailtls.web.ratelimit import RateLimiter

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def create_app(settings: Settings, manager: Manager, store: EventSource, **extra: Any) -> FastAPI:
    app = FastAPI(
        title="mailtls",
        version=__version__,
        description="Self-test servers for STARTTLS downgrade attacks: runs, steps, verdicts.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    ctx = ApiContext(
        manager=manager,
        store=store,
        base_url=settings.http_url,
        trusted=parse_networks(settings.trusted_proxies),
        create_limiter=RateLimiter(rate_per_minute=10, burst=20),
        ipv6_prefix=settings.binding.ipv6_prefix,
    )
    app.state.api = ctx
    app.state.settings = settings
    for key, value in extra.items():
        setattr(app.state, key, value)
    app.include_router(build_router(ctx))

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        path = request.url.path
        if path.startswith(("/api/runs", "/r/", "/s/", "/run")):
            for name, value in PRIVATE_HEADERS.items():
                response.headers[name] = value
        return response

    # The guided web app (issue 3) registers its pages when its package is present.
    if importlib.util.find_spec("mailtls.web.pages") is not None:
        pages = importlib.import_module("mailtls.web.pages")
        pages.register(app, ctx)
    return app
