"""`mailtls run` against a real `mailtls serve`: the lab workflow from a terminal, with every
peer-supplied string escaped (no raw control characters reach the terminal)."""

from __future__ import annotations

import http.server
import json
import os
import smtplib
import subprocess
import sys
import threading

import pytest

from conftest import ServeInstance
from mailtls.cli import main


def _run(inst: ServeInstance, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailtls", "run", "--server", inst.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},  # a wide terminal: rich folds to fit otherwise
    )


@pytest.mark.timeout(60)
def test_run_cli_drives_a_t1_step_to_fail(serve: ServeInstance) -> None:
    created = _run(serve, "--json", "create", "--step", "immediate:t1")
    assert created.returncode == 0, created.stderr
    run = json.loads(created.stdout)
    assert _run(serve, "start", run["id"], "1").returncode == 0
    port = run["account"]["servers"]["smtp"][0]["port"]  # the run's own submission port
    assert port != serve.ports["smtp_submission"]
    with smtplib.SMTP("127.0.0.1", port, "\x1b[31mevil", timeout=10) as c:
        c.ehlo("\x1b]0;pwned\x07host")  # control characters in EHLO
        assert not c.has_extn("starttls")  # t1 stripped it
        c.login(run["account"]["username"], run["account"]["password"])
    finished = _run(serve, "finish", run["id"], "1")
    assert finished.returncode == 1 and "FAIL" in finished.stdout  # exit 1: a step FAILed
    events = _run(serve, "events", run["id"])
    assert events.returncode == 0
    assert "\x1b" not in events.stdout and "\x07" not in events.stdout
    assert "pwned" in events.stdout  # the EHLO is shown, its escape sequence neutralised
    shown = _run(serve, "show", run["id"])
    assert "plaintext_auth" in shown.stdout and run["account"]["username"] in shown.stdout
    assert f"127.0.0.1:{port}" in shown.stdout or f"localhost:{port}" in shown.stdout
    assert "this run's own" in shown.stdout


def test_run_cli_user_errors_are_one_line(serve: ServeInstance) -> None:
    bad = _run(serve, "create", "--step", "nonsense")
    assert bad.returncode == 2 and "SCENARIO:TESTCASE" in bad.stderr
    missing = _run(serve, "show", "no-such-run")
    assert missing.returncode == 2 and "404" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
    down = subprocess.run(
        [sys.executable, "-m", "mailtls", "run", "--server", "http://127.0.0.1:9", "show", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 3 and "cannot reach" in down.stderr  # could not run


class _NotMailtls(http.server.BaseHTTPRequestHandler):
    """A web server that is not ``mailtls serve``: HTML for every path, 200 or 404."""

    def do_GET(self) -> None:
        status = 200 if self.path.startswith("/api/runs/html") else 404
        body = b"<html>\x1b]0;title\x07" + b"x" * 5000 + b"</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_run_cli_against_a_wrong_server_is_a_user_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A --server that is not mailtls (HTML answers) or not a URL: one escaped, bounded line."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _NotMailtls)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        for server, run_id in ((url, "html"), (url, "missing"), ("http://[::1", "x")):
            assert main(["run", "--server", server, "show", run_id]) == 2, (server, run_id)
            err = capsys.readouterr().err
            assert err.startswith("mailtls: error: ") and err.count("\n") == 1, err
            assert "\x1b" not in err and "\x07" not in err and len(err) < 600, err
    finally:
        httpd.shutdown()
        httpd.server_close()
