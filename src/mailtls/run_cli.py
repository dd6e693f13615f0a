"""``mailtls run``: drive a self-test run through the JSON API from a terminal (lab use).

Every string that came from a mail client or the server (usernames, EHLO names, transcript
lines) is escaped before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from mailtls.cli import UserError
from mailtls.termsafe import escape_markup, escape_terminal

DEFAULT_SERVER = "http://127.0.0.1:8080"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="drive a self-test run through the JSON API (lab use)")
    p.add_argument("--server", default=DEFAULT_SERVER, help="base URL of mailtls serve")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="create a run")
    c.add_argument(
        "--plan",
        choices=["guided", "more"],
        help="guided: the nine standard steps; more: starttls_required, preauth, inject",
    )
    c.add_argument(
        "--step",
        action="append",
        metavar="SCENARIO:TESTCASE",
        help="a step such as immediate:t1 (repeatable)",
    )
    c.add_argument("--protocol", choices=["imap", "pop3"])
    for name, helptext in (
        ("start", "start step N (binds this machine's address)"),
        ("extend", "extend step N's binding"),
        ("skip", "skip step N"),
        ("finish", "finish step N and print its verdict"),
    ):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("run_id")
        a.add_argument("n", type=int)
    r = actions.add_parser("report", help="answer step N's questions")
    r.add_argument("run_id")
    r.add_argument("n", type=int)
    r.add_argument("--prompt-shown", action="store_true")
    r.add_argument("--cannot-connect", action="store_true")
    s = actions.add_parser("show", help="show a run and its verdicts")
    s.add_argument("run_id")
    e = actions.add_parser("events", help="print a run's events")
    e.add_argument("run_id")
    p.set_defaults(func=run)


SHOWN_DETAIL = 300  # characters of a server's error text shown


def _request(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    try:
        resp = client.request(method, path, json=body)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: a path that is not one
        raise UserError(f"cannot reach the server: {_shown(str(exc))}") from None
    try:
        data = resp.json() if resp.content else None
    except ValueError:
        data = None
        if resp.status_code < 400:
            raise UserError(
                "the server's answer is not JSON (is --server a mailtls serve?)"
            ) from None
    if resp.status_code >= 400:
        detail = data.get("detail", resp.text) if isinstance(data, dict) else resp.text
        raise UserError(f"server said {resp.status_code}: {_shown(str(detail))}")
    return data


def _shown(text: str) -> str:
    """A server's text on one terminal line: escaped, newlines folded, bounded."""
    text = escape_terminal(" ".join(text.split()))
    return text if len(text) <= SHOWN_DETAIL else text[:SHOWN_DETAIL] + "..."


def _parse_steps(items: list[str]) -> list[dict[str, str]]:
    steps = []
    for item in items:
        scenario, sep, testcase = item.partition(":")
        if not sep:
            raise UserError(f"bad step {item!r}: write SCENARIO:TESTCASE, e.g. immediate:t1")
        steps.append({"scenario": scenario, "testcase": testcase})
    return steps


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        client = httpx.Client(base_url=args.server, timeout=15.0)
    except httpx.InvalidURL as exc:
        raise UserError(f"--server is not a URL: {_shown(str(exc))}") from None
    with client:
        if args.action == "create":
            if bool(args.plan) == bool(args.step):
                raise UserError("give either --plan guided|more or one or more --step")
            body: dict[str, Any] = (
                {"plan": args.plan} if args.plan else {"steps": _parse_steps(args.step)}
            )
            if args.protocol:
                body["protocol"] = args.protocol
            data = _request(client, "POST", "/api/runs", body)
        elif args.action == "report":
            data = _request(
                client,
                "POST",
                f"/api/runs/{args.run_id}/steps/{args.n}/report",
                {"prompt_shown": args.prompt_shown, "cannot_connect": args.cannot_connect},
            )
        elif args.action in ("start", "extend", "skip", "finish"):
            data = _request(client, "POST", f"/api/runs/{args.run_id}/steps/{args.n}/{args.action}")
        elif args.action == "events":
            data = _request(client, "GET", f"/api/runs/{args.run_id}/events")
        else:
            data = _request(client, "GET", f"/api/runs/{args.run_id}")
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif args.action == "events":
        print_events(console, data.get("events", []))
    elif args.action == "finish":
        print_step(console, data)
    else:
        print_run(console, data)
    return 0


def print_run(console: Console, run: dict[str, Any]) -> None:
    account = run.get("account", {})
    console.print(f"run [bold]{escape_markup(str(run.get('id')))}[/bold]")
    console.print(f"account: {escape_markup(str(account.get('username')))}")
    console.print(f"password: {escape_markup(str(account.get('password')))}")
    for proto, servers in (account.get("servers") or {}).items():
        for srv in servers:
            line = f"  {proto}: {srv.get('host')}:{srv.get('port')} ({srv.get('security')})"
            console.print(escape_markup(line))
    table = _steps_table()
    for step in run.get("steps", []):
        table.add_row(*(escape_markup(str(x)) for x in _step_row(step)))
    console.print(table)


def _step_row(step: dict[str, Any]) -> list[Any]:
    findings = ", ".join(str(f.get("tag")) for f in step.get("findings") or [])
    return [
        step.get("n"),
        step.get("scenario"),
        step.get("testcase"),
        step.get("state"),
        step.get("verdict") or "",
        step.get("reason") or "",
        findings,
    ]


def _steps_table() -> Table:
    table = Table()
    for name in ("#", "scenario", "test case", "state", "verdict", "reason", "findings"):
        table.add_column(name, overflow="fold")  # never cut a verdict or a finding tag
    return table


def print_step(console: Console, step: dict[str, Any]) -> None:
    table = _steps_table()
    table.add_row(*(escape_markup(str(x)) for x in _step_row(step)))
    console.print(table)


def print_events(console: Console, events: list[dict[str, Any]]) -> None:
    for ev in events:
        detail = {
            k: v
            for k, v in ev.items()
            if k not in ("id", "ts", "type", "conn", "binding", "run", "step", "tls")
        }
        tls = "TLS" if ev.get("tls") else "plain"
        text = f"{ev.get('id')} {ev.get('type')} [{tls}] {json.dumps(detail, default=str)}"
        console.print(escape_markup(text))
