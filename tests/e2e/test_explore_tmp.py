from __future__ import annotations

import pytest
from e2e_helpers import CLIENTS, Api, serving, tags, verdict
from test_e2e_clients import CURL_URLS, fetchmail_poll, mutt_session, run_tool

from conftest import require_tool


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("x") / "var", limits={"disrupted_seconds": 3}) as s:
        yield s


@pytest.fixture(scope="module")
def api(inst):
    c = Api(inst)
    yield c
    c.close()


CASES = ["starttls_required", "preauth", "inject"]


def show(name, api, run, out=""):
    step = api.finish(run)
    evs = [
        (e["protocol"], e["type"], e.get("mechanism") or e.get("verb") or e.get("line") or "")
        for e in api.events(run)
        if e["type"]
        in (
            "auth",
            "preauth_used",
            "response_injected",
            "starttls_requested",
            "command",
            "tls_established",
        )
    ]
    print(f"\n### {name}: {verdict(step)} {sorted(tags(step))}\n   {evs[:14]}\n   {out[:300]!r}")


@pytest.mark.parametrize("tc", CASES)
@pytest.mark.parametrize("flag", ["--ssl", "--ssl-reqd"])
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_curl(inst, api, protocol, flag, tc):
    curl = require_tool("curl")
    run = api.create(("immediate", tc))
    api.start(run)
    argv = [
        curl,
        "-sS",
        "--max-time",
        "15",
        flag,
        "--cacert",
        str(inst.ca),
        "--user",
        f"{run.username}:canary-pw",
        "--url",
        CURL_URLS[protocol].format(**inst.ports),
    ]
    if protocol == "smtp":
        argv += ["--mail-from", "a@example.net", "--mail-rcpt", "b@mailtls.test", "-T", "/dev/null"]
    out = run_tool(argv, timeout=30)
    show(f"curl {protocol} {flag} {tc}", api, run, out)


@pytest.mark.parametrize("tc", ["starttls_required", "inject"])
@pytest.mark.parametrize("flag", ["-tlso", "-tls", "none"])
@pytest.mark.parametrize("auth", ["PLAIN", "LOGIN", "auto"])
def test_swaks(inst, api, flag, tc, auth):
    swaks = require_tool("swaks")
    run = api.create(("immediate", tc))
    api.start(run)
    argv = [swaks, "--server", "127.0.0.1", "--port", str(inst.ports["smtp_submission"])]
    if flag != "none":
        argv += [flag, "--tls-verify", "--tls-ca-path", str(inst.ca)]
    argv += [
        "--timeout",
        "10",
        "-au",
        run.username,
        "-ap",
        "canary-pw",
        "--from",
        "a@example.net",
        "--to",
        "b@mailtls.test",
    ]
    argv += ["-a"] + ([auth] if auth != "auto" else [])
    out = run_tool(argv, timeout=30)
    show(f"swaks {flag} -a {auth} {tc}", api, run, out)


@pytest.mark.parametrize("tc", CASES)
@pytest.mark.parametrize("config", ["", "set ssl_force_tls=no\n"])
def test_mutt(inst, api, tmp_path, config, tc):
    run = api.create(("immediate", tc))
    api.start(run)
    try:
        mutt_session(inst, run, tmp_path / "home", config)
        out = "ok"
    except AssertionError as e:
        out = str(e)[-300:]
    show(f"mutt {config.strip() or 'defaults'} {tc}", api, run, out)


@pytest.mark.parametrize("tc", CASES)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_fetchmail(inst, api, tmp_path, protocol, tc):
    run = api.create(("immediate", tc))
    api.start(run)
    out = fetchmail_poll(inst, run, tmp_path / "f", protocol)
    show(f"fetchmail {protocol} {tc}", api, run, out[-400:])
    print(out)


@pytest.mark.parametrize("tc", CASES)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_stdlib(inst, api, protocol, tc):
    for strict in (False, True):
        run = api.create(("immediate", tc))
        api.start(run)
        out = CLIENTS[protocol](inst, run.username, "canary-pw", strict)
        show(f"stdlib {protocol} strict={strict} {tc}", api, run, out)


@pytest.mark.parametrize("tc", CASES)
def test_stdlib_smtp(inst, api, tc):
    for strict in (False, True):
        run = api.create(("immediate", tc))
        api.start(run)
        out = CLIENTS["smtp"](inst, run.username, "canary-pw", strict)
        show(f"stdlib smtp strict={strict} {tc}", api, run, out)
