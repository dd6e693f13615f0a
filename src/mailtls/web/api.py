"""The JSON API: create runs, drive steps, read verdicts and events (OpenAPI at /api/openapi.json).

Every operation of the guided web app exists here, so a lab can run any test without a browser.
The run id in URLs is a ≥128-bit secret; it is never derivable from the session code that travels
in the test username.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailtls.runs.binding import address_key
from mailtls.runs.endpoints import PoolExhausted
from mailtls.testcases import STANDARD, TESTCASES
from mailtls.web.clientaddr import Network, client_address
from mailtls.web.deletions import Deletions
from mailtls.web.ratelimit import RateLimiter
from mailtls.web.streams import Stream, StreamHub, TooManyStreams
from mailtls.web.transcript import visible_events

Scenario = Literal["immediate", "two_phase"]
TestCaseName = Literal[
    "baseline",
    "t1",
    "t2",
    "t3",
    "t4",
    "starttls_required",
    "preauth",
    "inject",
    "cert_selfsigned",
    "cert_expired",
    "cert_wronghost",
    "cert_unknown_ca",
    "tls_fallback",
]  # mailtls.testcases.TESTCASES (tests/web keep the two equal)
MAX_EVENT_ID = 2**63 - 1  # event ids are SQLite integers


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario: Scenario
    testcase: TestCaseName


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[StepSpec] | None = Field(default=None, min_length=1, max_length=20)
    plan: Literal["guided", "more"] | None = Field(
        default=None,
        description='"guided": the nine standard steps; "more": the cases beyond T1-T4 '
        "(starttls_required, preauth, inject, cert_*, tls_fallback), see GET /api/testcases",
    )
    protocol: Literal["imap", "pop3"] | None = Field(
        default=None, description="how the client fetches mail (sending is always SMTP)"
    )

    @model_validator(mode="after")
    def _one_of(self) -> RunCreate:
        if (self.steps is None) == (self.plan is None):
            raise ValueError('give exactly one of "steps" or "plan"')
        return self


class StepReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_shown: bool = Field(
        default=False, description="the client showed a security warning or asked to continue"
    )
    cannot_connect: bool = Field(default=False, description="the client could not connect at all")


class Manager(Protocol):
    """The part of ``mailtls.runs.manager.RunManager`` the API uses."""

    def create_run(
        self,
        steps: list[tuple[str, str]] | None = None,
        plan: str | None = None,
        protocol: str | None = None,
    ) -> Any: ...
    def get(self, run_id: str) -> Any: ...
    def view(self, run_id: str, base_url: str) -> dict[str, Any]: ...
    def start_step(self, run_id: str, n: int, client_ips: list[str]) -> Any: ...
    def extend(self, run_id: str, n: int) -> Any: ...
    def report(self, run_id: str, n: int, prompt_shown: bool, cannot_connect: bool) -> Any: ...
    def skip(self, run_id: str, n: int) -> Any: ...
    def finish(self, run_id: str, n: int) -> Any: ...
    def delete(self, run_id: str) -> Any: ...
    def mark_deleted(self, run_id: str) -> tuple[str, str]: ...
    def purge(self, run_id: str, code: str) -> int: ...


class EventSource(Protocol):
    def query(
        self,
        *,
        run: str | None = None,
        step: int | None = None,
        conns: Iterable[str] | None = None,
        code: str | None = None,
        types: Iterable[str] | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...
    def subscribe(self, fn: Any) -> Any: ...


class ApiContext:
    def __init__(
        self,
        manager: Manager,
        store: EventSource,
        base_url: str,
        trusted: tuple[Network, ...],
        create_limiter: RateLimiter,
        ipv6_prefix: int = 64,
        streams: StreamHub | None = None,
    ) -> None:
        self.manager = manager
        self.store = store
        self.base_url = base_url
        self.trusted = trusted
        self.create_limiter = create_limiter
        self.ipv6_prefix = ipv6_prefix
        self.streams = streams if streams is not None else StreamHub(per_run=4, total=1000)
        if store is not None:  # one subscriber for every live stream
            store.subscribe(self.streams.on_record)
        self.deletions = Deletions(manager)

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else "0.0.0.0"
        return client_address(peer, request.headers.get("x-forwarded-for"), self.trusted)

    def creation_allowed(self, request: Request) -> bool:
        """The run creation limit, per address; an IPv6 prefix (like a binding) is one."""
        ip = self.client_ip(request)
        return self.create_limiter.allow(address_key(ip, self.ipv6_prefix) or ip, address=ip)

    def run_or_404(self, run_id: str) -> Any:
        try:
            run = self.manager.get(run_id)
        except LookupError:
            raise HTTPException(status_code=404, detail="no such run") from None
        if run is None or getattr(run, "deleted", False):
            raise HTTPException(status_code=404, detail="no such run")
        return run

    def events_for(self, run: Any, after_id: int = 0) -> list[dict[str, Any]]:
        records = self.store.query(run=run.id, after_id=after_id)
        records += self.store.query(code=run.code, after_id=after_id)
        return visible_events(records, run.code, run_id=run.id)


def pool_exhausted(exc: PoolExhausted) -> HTTPException:
    """Every run's own endpoints are in use: 503, never a silent fall-back to shared ports."""
    return HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": "300"})


def _step_call(ctx: ApiContext, run_id: str, n: int, fn: Any, *args: Any) -> Any:
    ctx.run_or_404(run_id)
    try:
        return fn(run_id, n, *args)
    except PoolExhausted as exc:
        raise pool_exhausted(exc) from None
    except LookupError:
        raise HTTPException(status_code=404, detail=f"run has no step {n}") from None
    except ValueError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


def build_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["runs"])

    @router.get("/testcases", summary="The test cases and the protocols each applies to")
    def list_testcases() -> list[dict[str, Any]]:
        """Where a case does not apply (``starttls_required`` for POP3, ``preauth`` for SMTP
        and POP3) the server behaves as the baseline and the protocol's verdict is
        NOT_APPLICABLE (``testcase_not_applicable``)."""
        return [
            {
                "name": tc.name,
                "summary": tc.summary,
                "protocols": sorted(tc.protocols),
                "standard": tc.name in STANDARD,
            }
            for tc in TESTCASES.values()
        ]

    @router.post("/runs", status_code=201, summary="Create a run (its account and steps)")
    def create_run(request: Request, body: RunCreate) -> dict[str, Any]:
        if not ctx.creation_allowed(request):
            raise HTTPException(status_code=429, detail="too many runs from this address; wait")
        steps: list[tuple[str, str]] | None = None
        if body.steps:
            steps = [(str(s.scenario), str(s.testcase)) for s in body.steps]
        try:
            run = ctx.manager.create_run(steps=steps, plan=body.plan, protocol=body.protocol)
        except PoolExhausted as exc:
            raise pool_exhausted(exc) from None
        return ctx.manager.view(run.id, ctx.base_url)

    @router.get(
        "/runs/{run_id}",
        summary="The run: account, steps, verdicts, findings",
        description=(
            "`account.password` is the run's password: only a login with it counts for the run "
            "(verdict, two_phase activation, login-address binding). Logins with the run's "
            "username and another secret are someone else's: each step counts them in "
            "`username_misused` (`count`, `times`) and lists the finding `username_misused`; "
            "they never change a verdict and no address of theirs is shown."
        ),
    )
    def get_run(run_id: str) -> dict[str, Any]:
        ctx.run_or_404(run_id)
        return ctx.manager.view(run_id, ctx.base_url)

    @router.post(
        "/runs/{run_id}/steps/{n}/start",
        summary="Start a step: bind the caller's address to it (TTL) and arm the test case",
    )
    def start_step(run_id: str, n: int, request: Request) -> dict[str, Any]:
        _step_call(ctx, run_id, n, ctx.manager.start_step, [ctx.client_ip(request)])
        return ctx.manager.view(run_id, ctx.base_url)

    @router.post("/runs/{run_id}/steps/{n}/extend", summary="Extend the step's binding TTL")
    def extend_step(run_id: str, n: int) -> dict[str, Any]:
        _step_call(ctx, run_id, n, ctx.manager.extend)
        return ctx.manager.view(run_id, ctx.base_url)

    @router.post("/runs/{run_id}/steps/{n}/report", summary="The user's answers for a step")
    def report_step(
        run_id: str, n: int, body: Annotated[StepReport | None, Body()] = None
    ) -> dict[str, Any]:
        body = body or StepReport()
        _step_call(ctx, run_id, n, ctx.manager.report, body.prompt_shown, body.cannot_connect)
        return ctx.manager.view(run_id, ctx.base_url)

    @router.post("/runs/{run_id}/steps/{n}/skip", summary="Skip a step")
    def skip_step(run_id: str, n: int) -> dict[str, Any]:
        _step_call(ctx, run_id, n, ctx.manager.skip)
        return ctx.manager.view(run_id, ctx.base_url)

    @router.post("/runs/{run_id}/steps/{n}/finish", summary="Finish a step; returns its verdict")
    def finish_step(run_id: str, n: int) -> dict[str, Any]:
        _step_call(ctx, run_id, n, ctx.manager.finish)
        view = ctx.manager.view(run_id, ctx.base_url)
        step: dict[str, Any] = next(s for s in view["steps"] if s["n"] == n)
        return step

    @router.delete(
        "/runs/{run_id}",
        status_code=202,
        summary="Delete the run now; its records are removed in the background",
        description=(
            "The run is gone at once (404 from then on). Its records, the events that "
            "presented its code and the connections that did are removed from the journal "
            "in the background: poll the `status` URL until `state` is `done`."
        ),
    )
    async def delete_run(run_id: str) -> JSONResponse:
        try:
            status = await ctx.deletions.submit(run_id)
        except LookupError:
            raise HTTPException(status_code=404, detail="no such run") from None
        url = f"/api/runs/{run_id}/deletion"
        return JSONResponse({**status, "status": url}, status_code=202, headers={"Location": url})

    @router.get(
        "/runs/{run_id}/deletion",
        summary="Progress of a deletion: pending, retrying (e.g. disk full) or done",
    )
    def deletion_status(run_id: str) -> dict[str, Any]:
        status = ctx.deletions.status(run_id)
        if status is None:
            raise HTTPException(status_code=404, detail="no deletion of this run is known")
        return status

    @router.get(
        "/runs/{run_id}/events",
        summary="The run's events (JSON), or a live stream with Accept: text/event-stream",
        response_model=None,
    )
    async def run_events(
        run_id: str,
        request: Request,
        after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    ) -> JSONResponse | StreamingResponse:
        run = ctx.run_or_404(run_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            start = _event_id(request.headers.get("last-event-id", ""), after)
            try:
                stream = ctx.streams.open(run.id, run.code)
            except TooManyStreams as exc:
                raise HTTPException(status_code=exc.status, detail=exc.detail) from None
            return _LiveResponse(
                _stream(ctx, run, start, stream),
                on_close=lambda: ctx.streams.close(stream),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        return JSONResponse({"events": await asyncio.to_thread(ctx.events_for, run, after)})

    @router.get(
        "/runs/{run_id}/export.jsonl",
        summary="The run's events as JSONL (the same records as /events)",
        response_class=Response,
    )
    def export_run(run_id: str) -> Response:
        run = ctx.run_or_404(run_id)
        lines = [json.dumps(r, separators=(",", ":"), default=str) for r in ctx.events_for(run)]
        return Response(
            "".join(line + "\n" for line in lines),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="mailtls-run.jsonl"'},
        )

    return router


def _event_id(text: str, default: int) -> int:
    """A client's ``Last-Event-ID``, or ``default`` when it is not an event id."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        return default
    value = int(text)
    return value if value <= MAX_EVENT_ID else default


def _sse(record: dict[str, Any]) -> bytes:
    data = json.dumps(record, separators=(",", ":"), default=str)
    return f"id: {record['id']}\nevent: {record.get('type', 'event')}\ndata: {data}\n\n".encode()


class _LiveResponse(StreamingResponse):
    """A stream whose slot is given back however the response ends (even never started)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Any, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


KEEPALIVE_SECONDS = 15.0


async def _stream(ctx: ApiContext, run: Any, after: int, stream: Stream) -> AsyncIterator[bytes]:
    """Past events after ``after``, then live ones: the hub wakes this stream only for its
    own run's records (no polling of the log)."""
    last = after
    while True:
        records = await asyncio.to_thread(ctx.events_for, run, last)
        for record in records:
            last = max(last, int(record["id"]))
            yield _sse(record)
        while not await stream.wait(KEEPALIVE_SECONDS):
            yield b": keep-alive\n\n"  # a gone client fails this write and ends the stream
