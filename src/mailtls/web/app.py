"""Assemble the web application: JSON API, security headers, and (when present) the web pages."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailtls import __version__
from mailtls.settings import Settings
from mailtls.web import apidocs
from mailtls.web.api import ApiContext, EventSource, Manager, build_router
from mailtls.web.clientaddr import parse_networks
from mailtls.web.faults import add_fault_handlers
from mailtls.web.ratelimit import RateLimiter
from mailtls.web.streams import StreamHub

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
MAX_BODY_BYTES = 64 * 1024  # forms, JSON and Autodiscover requests are all far smaller


class BodyLimit:
    """Refuse (413) a request body above ``limit`` before the app reads any of it: Starlette
    reads forms and JSON whole into memory. The body (at most ``limit`` bytes) is read here
    and replayed to the app; later ``receive`` calls (disconnects) pass through."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _too_large(send)
                return
            if not message.get("more_body", False):
                break
        first = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([first], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _too_large(send: Send) -> None:
    response = PlainTextResponse("request body too large", status_code=413)
    await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings, manager: Manager, store: EventSource, **extra: Any) -> FastAPI:
    app = FastAPI(
        title="mailtls",
        version=__version__,
        description="Self-test servers for STARTTLS downgrade attacks: runs, steps, verdicts.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # served from local files by web/apidocs.py (the CSP blocks a CDN)
        redoc_url=None,
    )
    ctx = ApiContext(
        manager=manager,
        store=store,
        base_url=settings.http_url,
        trusted=parse_networks(settings.trusted_proxies),
        create_limiter=RateLimiter(
            rate_per_minute=settings.run_creation.rate_per_minute,
            burst=settings.run_creation.burst,
            exempt=parse_networks(settings.connections.exempt),
        ),
        ipv6_prefix=settings.binding.ipv6_prefix,
        streams=StreamHub(settings.web.streams_per_run, settings.web.streams_total),
    )
    app.state.api = ctx
    app.state.settings = settings
    for key, value in extra.items():
        setattr(app.state, key, value)
    app.include_router(build_router(ctx))
    apidocs.register(app, "/api/openapi.json")
    add_fault_handlers(app)
    app.add_middleware(BodyLimit)

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
