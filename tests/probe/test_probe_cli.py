"""``mailtls probe`` on the command line: usage errors, DNS failure, refused and silent ports,
plaintext on an implicit-TLS port, STARTTLS missing, hostile banners, the three formats."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from probe_servers import Pki, make_pki
from probe_toyserver import Mode, ToyServer, running, server_context


def mailtls(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailtls", "probe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def amailtls(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(mailtls, *args)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ("127.0.0.1",))


def toy(
    pki: Pki,
    greeting: bytes | None = None,
    silent: bool = False,
    offer_starttls: bool = True,
    login_delay: float = 0.0,
) -> ToyServer:
    ctx = server_context(str(pki.cert), str(pki.key))
    return ToyServer("smtp", Mode.SAFE, ctx, greeting, silent, offer_starttls, login_delay)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1", "--ports", "99999"], "not a port"),
        (["127.0.0.1", "--ports", "gopher:70"], "unknown protocol"),
        (["127.0.0.1", "--ports", ","], "no port to probe"),
        (["127.0.0.1", "--fail-on", "severe"], "unknown severity"),
        (["127.0.0.1", "--timeout", "soon"], "--timeout wants seconds"),
        (["127.0.0.1", "--timeout", "nan"], "between"),
        (["127.0.0.1", "--timeout", "0"], "between"),
        (["127.0.0.1", "--cafile", "/nonexistent/ca.pem"], "cannot read --cafile"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    out = mailtls(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_cafile_that_is_not_a_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    out = mailtls("127.0.0.1", "--cafile", str(bad))
    assert out.returncode == 2 and "--cafile" in out.stderr and "Traceback" not in out.stderr


def test_name_that_cannot_resolve() -> None:
    # a 64-character label is refused by the IDNA codec before any DNS query leaves the host
    out = mailtls("a" * 64 + ".invalid", "--ports", "25")
    assert out.returncode == 3
    assert "cannot resolve" in out.stderr and "Traceback" not in out.stderr


def test_refused_port_is_a_clear_per_port_result() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mailtls("127.0.0.1", "--ports", f"submission:{port}", "--format", "json")
    assert out.returncode == 3 and "no port answered" in out.stderr
    doc = json.loads(out.stdout)
    (p,) = doc["ports"]
    assert p["status"] == "refused" and "refused" in p["error"]
    assert [f["id"] for f in doc["findings"]] == ["probe-port-unreachable"]


@pytest.mark.timeout(60)
async def test_silent_server_times_out_per_port(pki: Pki) -> None:
    async with running(toy(pki, silent=True)) as server:
        out = await amailtls("127.0.0.1", "--ports", f"imap:{server.port}", "--timeout", "0.5")
    assert out.returncode == 3
    assert "no answer within" in out.stdout and "Traceback" not in out.stderr


async def test_plaintext_on_implicit_tls_port(pki: Pki) -> None:
    async with running(toy(pki)) as server:
        out = await amailtls(
            "127.0.0.1", "--ports", f"smtps:{server.port}", "--format", "json", "--timeout", "3"
        )
    doc = json.loads(out.stdout)
    assert {f["id"] for f in doc["findings"]} == {"probe-implicit-tls-failed"}
    (finding,) = doc["findings"]
    assert "speaks plaintext" in finding["reason"] and finding["severity"] == "high"
    assert out.returncode == 1


async def test_starttls_not_offered(pki: Pki) -> None:
    async with running(toy(pki, offer_starttls=False)) as server:
        out = await amailtls(
            "127.0.0.1", "--ports", f"submission:{server.port}", "--format", "json"
        )
    doc = json.loads(out.stdout)
    sev = {f["id"]: f["severity"] for f in doc["findings"]}
    assert sev == {"probe-tls-not-offered": "high", "probe-auth-before-tls": "critical"}
    assert doc["ports"][0]["tls"] is None and doc["ports"][0]["injection"] is None


async def test_hostile_banner_is_escaped(pki: Pki) -> None:
    banner = b"220 evil \x1b[31mred\x1b[0m [bold]x[/bold] \xe2\x80\xae\r\n"
    async with running(toy(pki, greeting=banner)) as server:
        text = await amailtls(
            "127.0.0.1", "--ports", f"smtp:{server.port}", "--cafile", str(pki.ca)
        )
        as_json = await amailtls("127.0.0.1", "--ports", f"smtp:{server.port}", "--format", "json")
    assert "\x1b" not in text.stdout and "\u202e" not in text.stdout
    assert "\x1b" not in as_json.stdout
    transcript = json.loads(as_json.stdout)["ports"][0]["transcript"]
    assert any("\\x1b[31mred" in line for line in transcript)


async def test_sarif_and_fail_on(pki: Pki) -> None:
    async with running(toy(pki)) as server:
        spec = f"submission:{server.port}"
        sarif = await amailtls(
            "127.0.0.1", "--ports", spec, "--cafile", str(pki.ca), "--format", "sarif"
        )
        lax = await amailtls(
            "127.0.0.1", "--ports", spec, "--cafile", str(pki.ca), "--fail-on", "critical"
        )
    doc = json.loads(sarif.stdout)
    assert doc["version"] == "2.1.0"
    results = doc["runs"][0]["results"]
    by_rule = {r["ruleId"]: r for r in results}
    assert set(by_rule) == {"probe-auth-before-tls", "probe-submission-tls-optional"}
    auth = by_rule["probe-auth-before-tls"]
    assert auth["level"] == "error" and auth["properties"]["evidence"]
    assert "source address equals the target" in sarif.stderr
    assert sarif.returncode == 1
    assert lax.returncode == 0  # high < critical


async def test_slow_failed_login_is_classified_not_a_timeout(pki: Pki) -> None:
    """Each network step may take 0.5 s; the server answers the dummy login after 1.5 s."""
    async with running(toy(pki, login_delay=1.5)) as server:
        out = await amailtls(
            "127.0.0.1", "--ports", f"submission:{server.port}", "--timeout", "0.5",
            "--cafile", str(pki.ca), "--format", "json",
        )  # fmt: skip
    doc = json.loads(out.stdout)
    login = doc["ports"][0]["login_before_tls"]
    assert login["outcome"] == "processed" and login["seconds"] >= 1.4
    (finding,) = [f for f in doc["findings"] if f["id"] == "probe-auth-before-tls"]
    assert any("delayed failure" in e for e in finding["evidence"])
