"""Store faults as clear answers: a full disk (or any store failure) is a 503 page or JSON
error, never a bare 500 with a traceback in the log for every request."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler

from mailtls.runs.model import RunsRefused
from mailtls.store import StoreError, StoreFull

log = logging.getLogger("mailtls.web")

FULL_MESSAGE = (
    "The service cannot record anything right now (its disk is nearly full). "
    "Runs already open keep working; please try again later."
)
FAULT_MESSAGE = "The service cannot reach its data right now; please try again later."
LOG_EVERY = 60.0  # seconds between two log lines about the same fault


def add_fault_handlers(app: FastAPI) -> None:
    last_logged: dict[str, float] = {}

    async def store_fault(request: Request, exc: Exception) -> Response:
        key = type(exc).__name__ + str(exc)
        now = time.monotonic()
        if now - last_logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            last_logged.clear()
            last_logged[key] = now
            log.error("web request %s failed: %s", request.url.path, exc)
        message = FULL_MESSAGE if isinstance(exc, StoreFull | RunsRefused) else FAULT_MESSAGE
        http = HTTPException(status_code=503, detail=message, headers={"Retry-After": "60"})
        # the pages' handler (when registered) renders the HTML page; the API gets JSON
        handler: Any = app.exception_handlers.get(HTTPException, http_exception_handler)
        response: Response = await handler(request, http)
        response.headers["Retry-After"] = "60"
        return response

    app.add_exception_handler(StoreError, store_fault)
    app.add_exception_handler(RunsRefused, store_fault)
