"""The guided web app: HTML pages over the same run manager as the JSON API.

Works without JavaScript (plain forms and links; every state change is a POST with a CSRF token
followed by a redirect); ``static/app.js`` adds live progress over Server-Sent Events, copy
buttons and the TTL countdown. Jinja2 autoescaping is on for every template, so strings that
came from mail clients are shown as text.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from mailtls.runs.codes import parse_code
from mailtls.settings import Settings
from mailtls.web import csrf, guide
from mailtls.web.api import ApiContext
from mailtls.web.autoconfig import (
    AutodiscoverError,
    ServerSet,
    autodiscover_response,
    mobileconfig,
    mozilla_autoconfig,
    parse_autodiscover_request,
)
from mailtls.web.transcript import visible_events

HERE = Path(__file__).parent
ATTACKS = ("t1", "t2", "t3", "t4")


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


def register(app: FastAPI, ctx: ApiContext) -> None:
    settings: Settings = app.state.settings
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(guide=guide, settings=settings)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    manager: Any = ctx.manager

    def render(request: Request, name: str, status: int = 200, **data: Any) -> Response:
        data["csrf_token"] = csrf.token_for(request)
        response = templates.TemplateResponse(request, name, data, status_code=status)
        csrf.set_cookie(request, response)
        return response

    def run_view(run_id: str) -> tuple[Any, dict[str, Any]]:
        run = ctx.run_or_404(run_id)
        return run, manager.view(run_id, ctx.base_url)

    def step_of(view: dict[str, Any], n: int) -> dict[str, Any]:
        for step in view["steps"]:
            if step["n"] == n:
                return dict(step)
        raise HTTPException(status_code=404, detail="no such step")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return render(request, "error.html", status=exc.status_code, message=str(exc.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        return render(request, "index.html", testcases=guide.TESTCASE_TITLE)

    @app.post("/start", include_in_schema=False)
    async def start(request: Request) -> Response:
        await csrf.verify(request)
        form = await request.form()
        protocol = str(form.get("protocol", "imap"))
        if protocol not in ("imap", "pop3"):
            raise HTTPException(status_code=400, detail="Choose IMAP or POP3.")
        if not ctx.create_limiter.allow(ctx.client_ip(request)):
            raise HTTPException(status_code=429, detail="Too many tests from your address. Wait.")
        mode = str(form.get("mode", "guided"))
        if mode == "single":
            scenario = str(form.get("scenario", ""))
            testcase = str(form.get("testcase", ""))
            if scenario not in ("immediate", "two_phase") or testcase not in guide.TESTCASE_TITLE:
                raise HTTPException(status_code=400, detail="Choose a scenario and a test case.")
            run = manager.create_run(steps=[(scenario, testcase)], protocol=protocol)
        else:
            run = manager.create_run(plan="guided", protocol=protocol)
        return RedirectResponse(f"/run/{run.id}", status_code=303)

    @app.get("/run/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, run_id: str) -> Response:
        run, view = run_view(run_id)
        nxt = next((s for s in view["steps"] if s["state"] in ("pending", "active")), None)
        return render(request, "run.html", run=run, view=view, next_step=nxt)

    @app.get("/run/{run_id}/step/{n}", response_class=HTMLResponse, include_in_schema=False)
    def step_page(request: Request, run_id: str, n: int) -> Response:
        run, view = run_view(run_id)
        step = step_of(view, n)
        events = ctx.events_for(run)
        may_finish, seen, missing = guide.milestones(step, events, view.get("protocol"))
        implicit_only = _implicit_only(view, events)
        return render(
            request,
            "step.html",
            run=run,
            view=view,
            step=step,
            events=[e for e in events if e.get("step") == n and e.get("summary")],
            may_finish=may_finish,
            seen=seen,
            missing=missing,
            instructions=guide.step_instructions(
                step["scenario"], step["testcase"], view.get("protocol")
            ),
            suggest_skip=implicit_only
            and step["scenario"] == "two_phase"
            and step["testcase"] in ("t1", "t2", "t3"),
        )

    @app.post("/run/{run_id}/step/{n}/{action}", include_in_schema=False)
    async def step_action(request: Request, run_id: str, n: int, action: str) -> Response:
        await csrf.verify(request)
        _run, view = run_view(run_id)
        step_of(view, n)
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
            elif action == "finish":
                manager.finish(run_id, n)
            else:
                raise HTTPException(status_code=404, detail="unknown action")
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        if action in ("skip", "finish"):
            later = [s for s in view["steps"] if s["n"] > n and s["state"] == "pending"]
            if later:
                return RedirectResponse(f"/run/{run_id}/step/{later[0]['n']}", status_code=303)
            return RedirectResponse(f"/run/{run_id}", status_code=303)
        return RedirectResponse(f"/run/{run_id}/step/{n}", status_code=303)

    @app.post("/run/{run_id}/delete", include_in_schema=False)
    async def delete_run(request: Request, run_id: str) -> Response:
        await csrf.verify(request)
        ctx.run_or_404(run_id)
        manager.delete(run_id)
        return render(request, "deleted.html")

    @app.get("/run/{run_id}/account.mobileconfig", include_in_schema=False)
    def apple_profile(run_id: str) -> Response:
        _run, view = run_view(run_id)
        email = view["account"]["username"]
        body = mobileconfig(_servers(settings), email, view.get("protocol") or "imap", view["code"])
        return Response(
            body,
            media_type="application/x-apple-aspen-config",
            headers={"Content-Disposition": 'attachment; filename="mailtls.mobileconfig"'},
        )

    def result_view(token: str) -> tuple[Any, dict[str, Any]]:
        run = manager.find_by_result_token(token)
        if run is None or getattr(run, "deleted", False):
            raise HTTPException(status_code=404, detail="No result at this address.")
        return run, manager.view(run.id, ctx.base_url)

    @app.get("/r/{token}.json", include_in_schema=False)
    def result_json(token: str, share: bool = False) -> Response:
        run, view = result_view(token)
        events = visible_events(_run_records(ctx, run), run.code, share=share)
        data = _public(view, share) | {"events": events}
        return Response(
            json.dumps(data, indent=2, default=str),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="mailtls-result.json"'},
        )

    @app.get("/r/{token}.csv", include_in_schema=False)
    def result_csv(token: str) -> Response:
        _run, view = result_view(token)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["n", "scenario", "testcase", "verdict", "reason", "findings"])
        for s in view["steps"]:
            tags = " ".join(str(f.get("tag")) for f in s.get("findings") or [])
            writer.writerow(
                [
                    s["n"],
                    s["scenario"],
                    s["testcase"],
                    s.get("verdict") or "",
                    s.get("reason") or "",
                    tags,
                ]
            )
        return PlainTextResponse(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="mailtls-result.csv"'},
        )

    @app.get("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
    def result_page(request: Request, token: str, share: bool = False) -> Response:
        run, view = result_view(token)
        events = visible_events(_run_records(ctx, run), run.code, share=share)
        by_step: dict[int, list[dict[str, Any]]] = {}
        for e in events:
            if isinstance(e.get("step"), int) and e.get("conn"):
                by_step.setdefault(e["step"], []).append(e)
        return render(
            request,
            "result.html",
            run=run,
            view=_public(view, share),
            share=share,
            token=token,
            by_step=by_step,
        )

    # --- account auto-configuration --------------------------------------------------------

    def autoconfig_allowed(email: str) -> bool:
        """During an active immediate t1–t4 step autoconfig answers 404, as an attacker would."""
        code = parse_code(email)
        if not code:
            return True
        find = getattr(manager, "find_by_code", None)
        run = find(code) if find else None
        if run is None:
            return True
        return not any(
            s.state == "active" and s.scenario == "immediate" and s.testcase in ATTACKS
            for s in run.steps
        )

    def autoconfig(request: Request, emailaddress: str = "") -> Response:
        if emailaddress and not autoconfig_allowed(emailaddress):
            return PlainTextResponse("not found", status_code=404)
        return Response(
            mozilla_autoconfig(_servers(settings), emailaddress), media_type="application/xml"
        )

    app.add_api_route("/mail/config-v1.1.xml", autoconfig, include_in_schema=False)
    app.add_api_route(
        "/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig, include_in_schema=False
    )

    async def autodiscover(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > 16 * 1024:
                return PlainTextResponse("request too large", status_code=413)
        try:
            email = parse_autodiscover_request(bytes(body))
        except AutodiscoverError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        if not autoconfig_allowed(email):
            return PlainTextResponse("not found", status_code=404)
        return Response(
            autodiscover_response(_servers(settings), email), media_type="application/xml"
        )

    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        app.add_api_route(path, autodiscover, methods=["POST"], include_in_schema=False)


def _run_records(ctx: ApiContext, run: Any) -> list[dict[str, Any]]:
    return ctx.store.query(run=run.id) + ctx.store.query(code=run.code)


def _public(view: dict[str, Any], share: bool) -> dict[str, Any]:
    """The result data; the shareable view drops the account secrets and the run id."""
    data = dict(view)
    data.pop("account", None)
    if share:
        data.pop("id", None)
        data.pop("links", None)
        data.pop("code", None)
    return data


def _implicit_only(view: dict[str, Any], events: list[dict[str, Any]]) -> bool:
    """The client used only implicit-TLS ports in baseline (two_phase t1–t3 cannot apply)."""
    baseline = {s["n"] for s in view["steps"] if s["testcase"] == "baseline"}
    kinds = {
        e.get("security")
        for e in events
        if e.get("type") == "connection_opened" and e.get("step") in baseline
    }
    return kinds == {"tls"}
