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

from mailtls.cli import CannotRun, UserError
from mailtls.findings import EXIT_FINDINGS, EXIT_OK
from mailtls.termsafe import escape_markup, escape_terminal

DEFAULT_SERVER = "http://127.0.0.1:8080"


EPILOG = """\
examples:
  mailtls run create --plan guided --protocol imap
  mailtls run create --step immediate:t1 --step two_phase:t3
  mailtls run start RUN_ID 1          (then let the mail client connect)
  mailtls run finish RUN_ID 1
  mailtls --json run show RUN_ID

exit codes: 0 ok, 1 a step FAILed (finish, show), 2 usage error or a request the server refused,
3 the server could not be reached or failed.
"""


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--server and --json, accepted before and after the action (``run show X --json``)."""
    default_server: Any = argparse.SUPPRESS if suppress else DEFAULT_SERVER
    default_json: Any = argparse.SUPPRESS if suppress else False
    parser.add_argument(
        "--server",
        default=default_server,
        metavar="URL",
        help=f"base URL of mailtls serve (default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default_json, help="print the API's JSON answer"
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="drive a self-test run through the JSON API (lab use)",
        description=(
            "Create a run, start and finish its steps, and read its verdicts through the JSON "
            "API of a running `mailtls serve`, e.g. to script a matrix of mail clients."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, suppress=False)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, helptext: str) -> argparse.ArgumentParser:
        a = actions.add_parser(
            name, help=helptext, description=helptext[:1].upper() + helptext[1:] + "."
        )
        _common(a, suppress=True)
        return a

    c = action("create", "create a run and print its account")
    c.add_argument(
        "--plan",
        choices=["guided", "more"],
        help="guided: the nine standard steps; more: the cases beyond T1-T4 (GET /api/testcases)",
    )
    c.add_argument(
        "--step",
        action="append",
        metavar="SCENARIO:TESTCASE",
        help="a step such as immediate:t1 or two_phase:t3 (repeatable)",
    )
    c.add_argument(
        "--protocol", choices=["imap", "pop3"], help="how the client fetches mail (default imap)"
    )
    for name, helptext in (
        ("start", "start step N (arms its test case on the run's own servers)"),
        ("extend", "extend step N's binding"),
        ("skip", "skip step N"),
        ("finish", "finish step N and print its verdict"),
    ):
        a = action(name, helptext)
        _run_and_step(a)
    r = action("report", "answer step N's questions (what the person saw)")
    _run_and_step(r)
    r.add_argument(
        "--prompt-shown", action="store_true", help="the client showed a security warning"
    )
    r.add_argument(
        "--cannot-connect", action="store_true", help="the client could not connect at all"
    )
    s = action("show", "show a run and its verdicts")
    s.add_argument("run_id", metavar="RUN_ID", help="the run's id (from `run create`)")
    e = action("events", "print a run's events")
    e.add_argument("run_id", metavar="RUN_ID", help="the run's id (from `run create`)")
    p.set_defaults(func=run)


def _run_and_step(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="the run's id (from `run create`)")
    parser.add_argument("n", metavar="N", type=int, help="the step's number (1, 2, ...)")


SHOWN_DETAIL = 300  # characters of a server's error text shown


def _request(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    try:
        resp = client.request(method, path, json=body)
    except httpx.InvalidURL as exc:  # a path or --server that is not one
        raise UserError(f"not a valid address: {_shown(str(exc))}") from None
    except httpx.HTTPError as exc:
        raise CannotRun(
            f"cannot reach the server at {client.base_url}: {_shown(str(exc))}"
        ) from None
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
        error = CannotRun if resp.status_code >= 500 else UserError
        raise error(f"the server refused ({resp.status_code}): {_shown(_detail_text(detail))}")
    return data


def _detail_text(detail: Any) -> str:
    """FastAPI's 422 list as one sentence: where, what was wrong, and what was given."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for item in detail[:5]:
        if not isinstance(item, dict):
            continue
        loc = [str(x) for x in item.get("loc", []) if x != "body"]
        where = ".".join(loc) or "request"
        given = (
            f" (got {item['input']!r})"
            if not isinstance(item.get("input"), dict | list) and "input" in item
            else ""
        )
        parts.append(f"{where}: {item.get('msg', 'invalid')}{given}")
    return "; ".join(parts) or "the request was not valid"


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
        if client.base_url.scheme not in ("http", "https") or not client.base_url.host:
            raise UserError(f"--server is not an http(s) URL: {_shown(args.server)}")
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
    return _exit_code(args.action, data)


def _exit_code(action: str, data: Any) -> int:
    """1 when a step FAILed (``finish``: that step; ``show``: any step), else 0."""
    if action == "finish" and isinstance(data, dict):
        return EXIT_FINDINGS if data.get("verdict") == "FAIL" else EXIT_OK
    if action == "show" and isinstance(data, dict):
        steps = data.get("steps") or []
        return EXIT_FINDINGS if any(s.get("verdict") == "FAIL" for s in steps) else EXIT_OK
    return EXIT_OK


def print_run(console: Console, run: dict[str, Any]) -> None:
    account = run.get("account", {})
    console.print(f"run [bold]{escape_markup(str(run.get('id')))}[/bold]")
    console.print(f"account: {escape_markup(str(account.get('username')))}")
    console.print(f"password: {escape_markup(str(account.get('password')))}")
    if account.get("binding") == "endpoint":
        console.print("servers (this run's own; connect only here):")
    elif account.get("binding"):
        console.print("servers (shared; bound by this machine's address when a step starts):")
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
