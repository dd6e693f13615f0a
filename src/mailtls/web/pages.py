"""The guided web app: HTML pages over the same run manager as the JSON API.

Works without JavaScript (plain forms and links; every state change is a POST with a CSRF token
followed by a redirect); ``static/app.js`` adds live progress over Server-Sent Events, copy
buttons and the TTL countdown. Jinja2 autoescaping is on for every template, so strings that
came from mail clients are shown as text. No template has an inline script, inline style or
``style=`` attribute (the Content-Security-Policy forbids them).

Pages: ``/`` (landing), ``/run/{id}`` (the run: account, steps), ``/run/{id}/step/{n}`` (one
step: instructions, live progress, the user's answers), ``/r/{token}`` (the owner's permanent
result page, also ``.json``/``.csv``/``?print=1``), ``/s/{token}`` (the shareable view: no
addresses, client names or user names). Account auto-configuration (Mozilla autoconfig,
Autodiscover, Apple profile) lives here too.

Must not import ``mailtls.net``; talks to the run manager and the store through the API context.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from mailtls.runs.codes import parse_code
from mailtls.runs.endpoints import PoolExhausted
from mailtls.runs.model import GUIDED_PLAN, MORE_PLAN
from mailtls.settings import Settings
from mailtls.testcases import TESTCASES
from mailtls.web import csrf, guide, results
from mailtls.web.api import ApiContext, pool_exhausted
from mailtls.web.autoconfig import (
    MAX_AUTODISCOVER_BYTES,
    AutodiscoverError,
    ServerSet,
    autodiscover_response,
    mobileconfig,
    mozilla_autoconfig,
    parse_autodiscover_request,
)
from mailtls.web.fixes import APPS
from mailtls.web.lookup import RunIndex, share_token
from mailtls.web.outcomes import OUTCOMES, step_outcome
from mailtls.web.transcript import visible_events

HERE = Path(__file__).parent


def guided_with_more(protocol: str) -> list[tuple[str, str]]:
    """The nine standard steps, then the "more tests" that apply to the chosen incoming
    protocol or to sending (SMTP): ``preauth`` is IMAP only, so a POP3 user does not get it."""
    more = [
        (scenario, name)
        for scenario, name in MORE_PLAN
        if TESTCASES[name].protocols & {protocol, "smtp"}
    ]
    return [*GUIDED_PLAN, *more]


ATTACKS = ("t1", "t2", "t3", "t4")
STEP_ACTIONS = ("start", "extend", "report", "skip", "finish")
# Beyond what ``transcript.visible_events(share=True)`` hides: the run id (the capability to the
# run page) and the session code travel in run records and events; the shareable view drops them.
SHARE_DROPPED = frozenset({"run", "code", "username", "peer", "addresses", "address", "client"})
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
}


def _servers(settings: Settings) -> ServerSet:
    p = settings.ports
    return ServerSet(
        hostname=settings.hostname,
        domain=settings.domain,
        imap=p.imap,
        imap_tls=p.imap_tls,
        pop3=p.pop3,
        pop3_tls=p.pop3_tls,
        smtp_submission=p.smtp_submission,
        smtp_tls=p.smtp_tls,
    )


def account_servers(settings: Settings, servers: dict[str, list[dict[str, Any]]]) -> ServerSet:
    """The ``ServerSet`` of an account's server settings (the API's ``account.servers``): the
    run's own endpoints, or the shared ports when it has none."""

    def port(protocol: str, security: str) -> int:
        entries = servers.get(protocol, [])
        return next((int(e["port"]) for e in entries if e["security"] == security), 0)

    hosts = [str(e["host"]) for entries in servers.values() for e in entries]
    return ServerSet(
        hostname=hosts[0] if hosts else settings.hostname,
        domain=settings.domain,
        imap=port("imap", "starttls"),
        imap_tls=port("imap", "tls"),
        pop3=port("pop3", "starttls"),
        pop3_tls=port("pop3", "tls"),
        smtp_submission=port("smtp", "starttls"),
        smtp_tls=port("smtp", "tls"),
    )


def clock_text(epoch: Any) -> str:
    """``12:34 UTC`` for an epoch time (the page shows it without JavaScript)."""
    if not isinstance(epoch, int | float):
        return "—"
    return time.strftime("%H:%M UTC", time.gmtime(epoch))


def date_text(epoch: Any) -> str:
    """``2026-11-29 12:34 UTC`` for an epoch time."""
    if not isinstance(epoch, int | float):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def minutes_left(epoch: Any, now: float | None = None) -> int:
    if not isinstance(epoch, int | float):
        return 0
    now = time.time() if now is None else now
    return max(0, int((epoch - now + 59) // 60))


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(guide=guide, outcome=step_outcome, OUTCOMES=OUTCOMES)
    templates.env.filters.update(clock=clock_text, date=date_text, minutes_left=minutes_left)
    return templates


def register(app: FastAPI, ctx: ApiContext) -> None:
    settings: Settings = app.state.settings
    templates = make_templates()
    templates.env.globals.update(settings=settings)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    manager: Any = ctx.manager
    index = RunIndex(ctx.store, manager)

    def render(
        request: Request, name: str, status: int = 200, private: bool = True, **data: Any
    ) -> Response:
        data["csrf_token"] = csrf.token_for(request)
        response = templates.TemplateResponse(request, name, data, status_code=status)
        csrf.set_cookie(request, response)
        if private:
            response.headers.update(PRIVATE_HEADERS)
        return response

    def run_view(run_id: str) -> tuple[Any, dict[str, Any]]:
        run = ctx.run_or_404(run_id)
        return run, manager.view(run_id, ctx.base_url)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        response = render(request, "error.html", status=exc.status_code, message=str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def landing(request: Request) -> Response:
        return render(request, "index.html", private=False, testcases=guide.TESTCASE_TITLE)

    @app.get("/help/fix", response_class=HTMLResponse, include_in_schema=False)
    def fix_page(request: Request) -> Response:
        return render(request, "fix.html", private=False, apps=APPS)

    @app.post("/start", include_in_schema=False)
    async def start(request: Request) -> Response:
        await csrf.verify(request)
        form = await request.form()
        protocol = str(form.get("protocol", "imap"))
        if protocol not in ("imap", "pop3"):
            raise HTTPException(status_code=400, detail="Choose IMAP or POP3.")
        mode = str(form.get("mode", "guided"))
        steps: list[tuple[str, str]] | None = None
        if mode == "single":
            scenario = str(form.get("scenario", ""))
            testcase = str(form.get("testcase", ""))
            if scenario not in ("immediate", "two_phase") or testcase not in guide.TESTCASE_TITLE:
                raise HTTPException(status_code=400, detail="Choose a scenario and a test case.")
            steps = [(scenario, testcase)]
        elif form.get("more") == "yes":
            steps = guided_with_more(protocol)
        if not ctx.creation_allowed(request):
            raise HTTPException(
                status_code=429,
                detail="Too many tests were started from your address. Wait a few minutes.",
            )
        try:
            if steps is not None:
                run = manager.create_run(steps=steps, protocol=protocol)
            else:
                run = manager.create_run(plan="guided", protocol=protocol)
        except PoolExhausted as exc:
            raise pool_exhausted(exc) from None
        return RedirectResponse(f"/run/{run.id}", status_code=303)

    @app.get("/run/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, run_id: str) -> Response:
        run, view = run_view(run_id)
        nxt = guide.next_step(view["steps"])
        return render(request, "run.html", run=run, view=view, next_step=nxt)

    @app.get("/run/{run_id}/step/{n}", response_class=HTMLResponse, include_in_schema=False)
    def step_page(request: Request, run_id: str, n: int) -> Response:
        run, view = run_view(run_id)
        step = guide.step_of(view, n)
        if step is None:
            raise HTTPException(status_code=404, detail="This test has no such step.")
        events = ctx.events_for(run)
        progress = guide.milestones(step, events, view.get("protocol"))
        return render(
            request,
            "step.html",
            run=run,
            view=view,
            step=step,
            events=guide.live_lines(events, n),
            progress=progress,
            instructions=guide.step_instructions(
                step["scenario"], step["testcase"], view.get("protocol")
            ),
            cannot_apply=guide.cannot_apply(step, view, events),
            next_step=guide.next_step(view["steps"], after=n),
            now=time.time(),
        )

    @app.post("/run/{run_id}/step/{n}/{action}", include_in_schema=False)
    async def step_action(request: Request, run_id: str, n: int, action: str) -> Response:
        await csrf.verify(request)
        if action not in STEP_ACTIONS:
            raise HTTPException(status_code=404, detail="Unknown action.")
        run, view = run_view(run_id)
        step = guide.step_of(view, n)
        if step is None:
            raise HTTPException(status_code=404, detail="This test has no such step.")
        form = await request.form()
        try:
            if action == "start":
                manager.start_step(run_id, n, [ctx.client_ip(request)])
            elif action == "extend":
                manager.extend(run_id, n)
            elif action == "report":
                manager.report(
                    run_id,
                    n,
                    form.get("prompt_shown") == "yes",
                    form.get("cannot_connect") == "yes",
                )
            elif action == "skip":
                manager.skip(run_id, n)
            else:
                progress = guide.milestones(step, ctx.events_for(run), view.get("protocol"))
                if step["state"] == "active" and not progress.may_finish:
                    raise HTTPException(
                        status_code=409,
                        detail="This step cannot finish yet. Still needed: "
                        + "; ".join(progress.missing)
                        + ".",
                    )
                manager.finish(run_id, n)
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except PoolExhausted as exc:
            raise pool_exhausted(exc) from None
        if action == "skip":
            nxt = guide.next_step(view["steps"], after=n)
            if nxt is not None:
                return RedirectResponse(f"/run/{run_id}/step/{nxt['n']}", status_code=303)
            return RedirectResponse(f"/run/{run_id}", status_code=303)
        anchor = "#verdict" if action == "finish" else ""
        return RedirectResponse(f"/run/{run_id}/step/{n}{anchor}", status_code=303)

    @app.post("/run/{run_id}/delete", include_in_schema=False)
    async def delete_run(request: Request, run_id: str) -> Response:
        await csrf.verify(request)
        try:
            await ctx.deletions.submit(run_id)  # its records are removed in the background
        except LookupError:
            raise HTTPException(status_code=404, detail="no such run") from None
        return render(request, "deleted.html")

    @app.get("/run/{run_id}/account.mobileconfig", include_in_schema=False)
    def apple_profile(run_id: str) -> Response:
        _run, view = run_view(run_id)
        email = view["account"]["username"]
        servers = account_servers(settings, view["account"]["servers"])
        body = mobileconfig(servers, email, view.get("protocol") or "imap", view["code"])
        return Response(
            body,
            media_type="application/x-apple-aspen-config",
            headers={
                "Content-Disposition": 'attachment; filename="mailtls.mobileconfig"',
                **PRIVATE_HEADERS,
            },
        )

    _register_results(app, ctx, render, index)
    _register_autoconfig(app, ctx, settings, index)


# --- results ---------------------------------------------------------------------------------


def _register_results(
    app: FastAPI, ctx: ApiContext, render: Callable[..., Response], index: RunIndex
) -> None:
    manager: Any = ctx.manager

    def owner_view(token: str) -> tuple[Any, dict[str, Any]]:
        run = manager.find_by_result_token(token) if len(token) <= 64 else None
        if run is None or getattr(run, "deleted", False):
            raise HTTPException(status_code=404, detail="There is no result at this address.")
        return run, manager.view(run.id, ctx.base_url)

    def shared_view(token: str) -> tuple[Any, dict[str, Any]]:
        run_id = index.run_id_for_share(token)
        if run_id is None:
            raise HTTPException(status_code=404, detail="There is no result at this address.")
        run = ctx.run_or_404(run_id)
        return run, manager.view(run.id, ctx.base_url)

    def page(request: Request, run: Any, view: dict[str, Any], share: bool, token: str) -> Response:
        events = _events(ctx, run, share)
        return render(
            request,
            "result.html",
            run=run,
            view=_public(view, share),
            run_id=None if share else run.id,
            share=share,
            token=token,
            share_link=f"/s/{share_token(token)}" if not share else None,
            printing=request.query_params.get("print") == "1",
            rows=results.rows(view["steps"], guide.transcripts(events)),
            headline=results.headline(view["steps"]),
            advice=results.advice(view["steps"], view.get("protocol")),
            apps=APPS,
        )

    def json_export(run: Any, view: dict[str, Any], share: bool) -> Response:
        events = _events(ctx, run, share)
        data = _public(view, share) | {"events": events}
        return Response(
            json.dumps(data, indent=2, default=str),
            media_type="application/json",
            headers={
                "Content-Disposition": 'attachment; filename="mailtls-result.json"',
                **PRIVATE_HEADERS,
            },
        )

    @app.get("/r/{token}.json", include_in_schema=False)
    def result_json(token: str, share: bool = False) -> Response:
        run, view = owner_view(token)
        return json_export(run, view, share)

    @app.get("/s/{token}.json", include_in_schema=False)
    def shared_json(token: str) -> Response:
        run, view = shared_view(token)
        return json_export(run, view, True)

    def csv_export(view: dict[str, Any]) -> Response:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["n", "scenario", "testcase", "verdict", "reason", "findings"])
        for s in view["steps"]:
            tags = " ".join(str(f.get("tag")) for f in s.get("findings") or [])
            row = [s["n"], s["scenario"], s["testcase"], s.get("verdict") or s["state"]]
            writer.writerow([*row, s.get("reason") or "", tags])
        return PlainTextResponse(
            out.getvalue(),
            media_type="text/csv",
            headers={
                "Content-Disposition": 'attachment; filename="mailtls-result.csv"',
                **PRIVATE_HEADERS,
            },
        )

    @app.get("/r/{token}.csv", include_in_schema=False)
    def result_csv(token: str) -> Response:
        return csv_export(owner_view(token)[1])

    @app.get("/s/{token}.csv", include_in_schema=False)
    def shared_csv(token: str) -> Response:
        return csv_export(shared_view(token)[1])

    @app.get("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
    def result_page(request: Request, token: str, share: bool = False) -> Response:
        run, view = owner_view(token)
        if share:
            return RedirectResponse(f"/s/{share_token(token)}", status_code=303)
        return page(request, run, view, False, token)

    @app.get("/s/{token}", response_class=HTMLResponse, include_in_schema=False)
    def shared_page(request: Request, token: str) -> Response:
        run, view = shared_view(token)
        return page(request, run, view, True, token)


# --- account auto-configuration ---------------------------------------------------------------


def _register_autoconfig(
    app: FastAPI, ctx: ApiContext, settings: Settings, index: RunIndex
) -> None:
    manager: Any = ctx.manager

    def allowed(email: str) -> bool:
        """During an active immediate t1–t4 step autoconfig answers 404, as an attacker would."""
        code = parse_code(email)
        run_id = index.run_id_for_code(code) if code else None
        if run_id is None:
            return True
        try:
            run = manager.get(run_id)
        except LookupError:
            return True
        return not any(
            str(s.state) == "active" and s.scenario == "immediate" and s.testcase in ATTACKS
            for s in run.steps
        )

    def servers_for(email: str) -> ServerSet:
        """The run's own endpoints for its username; the shared ports for anyone else."""
        code = parse_code(email)
        run_id = index.run_id_for_code(code) if code else None
        endpoints = manager.endpoints_of(run_id) if run_id is not None else None
        if endpoints is None:
            return _servers(settings)
        return account_servers(settings, endpoints.servers())

    def not_found() -> Response:
        return PlainTextResponse("not found", status_code=404)

    def autoconfig(emailaddress: str = "") -> Response:
        if len(emailaddress) > 320:
            return PlainTextResponse("address too long", status_code=400)
        if emailaddress and not allowed(emailaddress):
            return not_found()
        return Response(
            mozilla_autoconfig(servers_for(emailaddress), emailaddress),
            media_type="application/xml",
            headers={"Cache-Control": "no-store"},
        )

    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        app.add_api_route(path, autoconfig, include_in_schema=False)

    async def autodiscover(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_AUTODISCOVER_BYTES:
            return PlainTextResponse("request too large", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_AUTODISCOVER_BYTES:
                return PlainTextResponse("request too large", status_code=413)
        try:
            email = parse_autodiscover_request(bytes(body))
        except AutodiscoverError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        if not allowed(email):
            return not_found()
        return Response(
            autodiscover_response(servers_for(email), email),
            media_type="application/xml",
            headers={"Cache-Control": "no-store"},
        )

    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        app.add_api_route(path, autodiscover, methods=["POST"], include_in_schema=False)


def _events(ctx: ApiContext, run: Any, share: bool) -> list[dict[str, Any]]:
    records = ctx.store.query(run=run.id) + ctx.store.query(code=run.code)
    events = visible_events(records, run.code, run_id=run.id, share=share)
    if share:
        events = [{k: v for k, v in e.items() if k not in SHARE_DROPPED} for e in events]
    return events


def _public(view: dict[str, Any], share: bool) -> dict[str, Any]:
    """The result data; the shareable view also drops the run id, links and session code."""
    data = dict(view)
    data.pop("account", None)
    if share:
        data.pop("id", None)
        data.pop("links", None)
        data.pop("code", None)
        data["steps"] = [
            {k: v for k, v in s.items() if k != "collisions"} for s in view.get("steps", [])
        ]
    return data
