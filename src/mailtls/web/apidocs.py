"""The API documentation page (Swagger UI) and the site icon, served from this machine only.

Swagger UI's script and stylesheet come from the ``fastapi-offline`` package (it ships them as
static files; nothing is fetched from a CDN, so the page works without Internet access); the
page's start-up code is our own static file (``static/apidocs.js``), so the site's
Content-Security-Policy keeps ``script-src 'self'`` without ``unsafe-inline``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).parent
DOCS_URL = "/api/docs"
VENDOR_URL = "/api/docs/vendor"
ICON = HERE / "static" / "favicon.ico"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailtls JSON API</title>
<link rel="icon" href="/favicon.ico">
<link rel="stylesheet" href="{vendor}/swagger-ui.css">
</head>
<body>
<noscript><p>This page needs JavaScript. The same description is at
<a href="{openapi}">{openapi}</a> (OpenAPI JSON).</p></noscript>
<div id="swagger-ui" data-openapi="{openapi}"></div>
<script src="{vendor}/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"""


def _vendor_dir() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    path = Path(fastapi_offline.__file__).parent / "static"
    return path if (path / "swagger-ui-bundle.js").exists() else None


def register(app: FastAPI, openapi_url: str) -> None:
    """``/api/docs`` (Swagger UI), its files, and ``/favicon.ico``."""
    vendor = _vendor_dir()

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(ICON, media_type="image/x-icon")

    @app.get("/api/docs/init.js", include_in_schema=False)
    def init_script() -> FileResponse:
        return FileResponse(HERE / "static" / "apidocs.js", media_type="text/javascript")

    @app.get(DOCS_URL, response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        if vendor is None:
            return HTMLResponse(
                f"<!doctype html><title>mailtls JSON API</title><p>Swagger UI is not installed "
                f'(pip install fastapi-offline). The API description is at <a href="{openapi_url}">'
                f"{openapi_url}</a>.</p>",
                status_code=503,
            )
        return HTMLResponse(PAGE.format(vendor=VENDOR_URL, openapi=openapi_url))

    if vendor is not None:
        app.mount(VENDOR_URL, StaticFiles(directory=str(vendor)), name="apidocs-vendor")
