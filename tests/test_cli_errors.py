"""Every user mistake and closed pipe of the ``mailtls`` CLI: one line (or none), the documented
exit code (the README's table, ``mailtls.cli.EXIT_CODES``), never a traceback. Real
subprocesses, a real ``mailtls serve`` where one is needed."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ServeInstance, free_ports, start_serve
from mailtls.cli import EXIT_CODES, SUBCOMMANDS, build_parser
from mailtls.store import Store

pytestmark = pytest.mark.timeout(90)
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("MAILTLS_", "SHODAN_"))}


def mailtls(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailtls", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "Task exception" not in done.stderr, done.stderr


def test_exit_code_table_is_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in readme, f"exit code {code} is not in the README's table"


def test_serve_with_the_http_port_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        mail = free_ports(7)
        names = ["smtp_mx", "smtp_submission", "smtp_tls", "imap", "imap_tls", "pop3", "pop3_tls"]
        config = tmp_path / "mailtls.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "var"}"\nfsync = false\n[ports]\nhttp = {port}\n'
            + "".join(f"{n} = {p}\n" for n, p in zip(names, mail, strict=True))
        )
        done = mailtls("serve", "--config", str(config))
    no_traceback(done)
    assert done.returncode == 3
    assert "mailtls serving" not in done.stderr  # nothing announced that is not there
    assert f"cannot listen: Address already in use (web app on 127.0.0.1:{port})" in done.stderr


@pytest.mark.parametrize("kind", ["file-in-the-way", "missing-root"])
def test_serve_with_a_data_dir_it_cannot_use(tmp_path: Path, kind: str) -> None:
    if kind == "file-in-the-way":
        (tmp_path / "plain-file").write_text("x")
        data_dir = tmp_path / "plain-file" / "var"
    else:
        data_dir = Path("/proc/mailtls-nope/var")
    done = mailtls("serve", "--data-dir", str(data_dir), "--http-port", "0")
    no_traceback(done)
    assert done.returncode == 3
    assert f"cannot use the data folder {data_dir}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader is gone before anything is written (`| head -0`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "mailtls", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=60,
            env=ENV,
            check=False,
        )
    finally:
        os.close(write)


def test_export_into_a_closed_pipe(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with Store(data, fsync=False) as store:
        for i in range(2000):
            store.append({"type": "command", "run": "R1", "conn": f"c{i}", "line": "NOOP"})
    done = _closed_pipe("export", "--data-dir", str(data))
    assert b"Traceback" not in done.stderr, done.stderr
    assert b"BrokenPipe" not in done.stderr
    assert done.returncode == 141


def test_census_into_a_closed_pipe(tmp_path: Path) -> None:
    done = _closed_pipe("census", "--dry-run", "--format", "json", "--data-dir", str(tmp_path))
    assert b"Traceback" not in done.stderr, done.stderr
    assert done.returncode == 141


def test_help_into_a_closed_pipe() -> None:
    done = _closed_pipe("audit", "--help")
    assert b"Traceback" not in done.stderr, done.stderr


def test_unknown_option_prints_the_subcommand_usage() -> None:
    done = mailtls("audit", "--bogus")
    no_traceback(done)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: mailtls audit")
    assert "unrecognized arguments: --bogus" in done.stderr
    nested = mailtls("run", "show", "R1", "--bogus")
    assert nested.returncode == 2 and nested.stderr.startswith("usage: mailtls run show")


def test_run_against_nothing_is_could_not_run() -> None:
    (port,) = free_ports(1)
    done = mailtls("--json", "run", "show", "R1", "--server", f"http://127.0.0.1:{port}")
    no_traceback(done)
    assert done.returncode == 3
    assert "cannot reach the server" in done.stderr
    bad = mailtls("run", "show", "R1", "--server", "ftp://example.org")
    assert bad.returncode == 2 and "not an http(s) URL" in bad.stderr


def test_run_against_serve(serve: ServeInstance) -> None:
    wrong = mailtls("run", "create", "--step", "immediate:t9", "--server", serve.url)
    no_traceback(wrong)
    assert wrong.returncode == 2
    assert "steps.0.testcase" in wrong.stderr and "'t9'" in wrong.stderr
    assert "[{" not in wrong.stderr and "'loc'" not in wrong.stderr  # not the raw 422 list
    assert len(wrong.stderr.strip().splitlines()) == 1

    made = httpx.post(
        f"{serve.url}/api/runs", json={"steps": [{"scenario": "immediate", "testcase": "t1"}]}
    ).json()
    for args in (
        ["--json", "run", "show", made["id"], "--server", serve.url],
        ["run", "--json", "show", made["id"], "--server", serve.url],
        ["run", "show", made["id"], "--json", "--server", serve.url],
        ["--server", serve.url, "run", "show", made["id"], "--json"],
    ):
        done = mailtls(*args)
        no_traceback(done)
        assert done.returncode == 0, (args, done.stderr)
        assert f'"id": "{made["id"]}"' in done.stdout, args
    missing = mailtls("run", "show", "no-such-run", "--server", serve.url)
    assert missing.returncode == 2 and "404" in missing.stderr


def _parsers() -> list[argparse.ArgumentParser]:
    out = []
    for name in SUBCOMMANDS:
        top = build_parser([name])
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        stack = [sub.choices[name]]
        while stack:
            parser = stack.pop()
            out.append(parser)
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    stack.extend(action.choices.values())
    return out


def test_every_command_and_argument_has_help() -> None:
    missing = []
    for parser in _parsers():
        if not (parser.description or "").strip():
            missing.append(f"{parser.prog}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_serve_logs_run_events_and_a_status_line(tmp_path: Path) -> None:
    inst = start_serve(tmp_path / "loud", config_extra="[log]\nstatus_seconds = 0.5\n")
    quiet = start_serve(
        tmp_path / "quiet", config_extra="[log]\nactivity = false\nstatus_seconds = 0\n"
    )
    try:
        ids = []
        for server in (inst, quiet):
            run = httpx.post(
                f"{server.url}/api/runs",
                json={"steps": [{"scenario": "immediate", "testcase": "t1"}]},
            ).json()
            ids.append(run["id"])
            httpx.post(f"{server.url}/api/runs/{run['id']}/steps/1/start")
            httpx.post(f"{server.url}/api/runs/{run['id']}/steps/1/finish")
        deadline = time.monotonic() + 10
        while "status:" not in inst.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = inst.output()
        code = None
        for line in log.splitlines():
            if "created (1 steps" in line:
                code = line.split("run ", 1)[1].split()[0]
        assert code, log
        assert f"run {code} step 1 started" in log
        assert f"run {code} step 1 finished: INCONCLUSIVE" in log
        assert "connections open" in log and "events/s" in log and "refused" in log
        assert ids[0] not in log  # the run id is a capability: never logged
        assert "created (1 steps" not in quiet.output()
        assert "status:" not in quiet.output()
    finally:
        inst.stop()
        quiet.stop()


def test_serve_quiet_flag_turns_both_off() -> None:
    from mailtls.serve_cli import add_parser, settings_from

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    settings = settings_from(parser.parse_args(["serve", "--quiet"]))
    assert not settings.log.activity and settings.log.status_seconds == 0
    loud = settings_from(parser.parse_args(["serve"]))
    assert loud.log.activity and loud.log.status_seconds > 0
