"""The JSON API and the guided web app, served by ``mailtls serve`` on the same event loop.

- ``api``: the JSON API (OpenAPI at ``/api/openapi.json``) over the run manager.
- ``clientaddr``: the caller's address as seen through the configured trusted proxies.
- ``ratelimit``: per-client token buckets (run creation).
- ``app``: assembles the Starlette/FastAPI application.

Must not import ``mailtls.net`` internals or the protocol cores: it talks to the run manager and
the store only.
"""
