"""``mailtls probe`` on ports it does not know: the protocol is read from the greeting (in TLS
for an implicit-TLS port), said on stderr, and then probed; after every standard port was
refused, a hint names the ports where ``mailtls serve`` answers."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest

from conftest import ServeInstance, free_ports
from mailtls.probe.cli import _hint_serve_defaults
from mailtls.probe.detect import detect, greeting_kind, listening
from mailtls.probe.targets import SERVE_DEFAULT_PORTS, WELL_KNOWN, parse_ports, split_ports
from mailtls.settings import Ports

pytestmark = pytest.mark.timeout(90)
NAMES = {
    "smtp_mx": "smtp",
    "smtp_submission": "submission",
    "smtp_tls": "smtps",
    "imap": "imap",
    "imap_tls": "imaps",
    "pop3": "pop3",
    "pop3_tls": "pop3s",
}


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"220 mail.example ESMTP Postfix\r\n", "smtp"),
        (b"220-mail.example first of two\r\n", "smtp"),
        (b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n", "imap"),
        (b"* PREAUTH logged in\r\n", "imap"),
        (b"+OK Dovecot ready.\r\n", "pop3"),
        (b"HTTP/1.1 400 Bad Request\r\n", None),
        (b"SSH-2.0-OpenSSH_9.6\r\n", None),
        (b"2200 nope\r\n", None),
    ],
)
def test_greeting_kind(line: bytes, kind: str | None) -> None:
    assert greeting_kind(line) == kind


def test_serve_default_ports_match_the_settings() -> None:
    defaults = Ports()
    expected = {f"{NAMES[f.name]}:{getattr(defaults, f.name)}" for f in dataclasses.fields(Ports)
                if f.name in NAMES}  # fmt: skip
    assert set(SERVE_DEFAULT_PORTS.split(",")) == expected


def test_unknown_numbers_are_split_off_for_detection() -> None:
    targets, unknown = split_ports("25,4143,imap:1143,4143,5995")
    assert [t.port for t in targets] == [25, 1143] and unknown == [4143, 5995]
    assert split_ports("4143") == ([], [4143])
    assert all(p in WELL_KNOWN for p in (25, 143))


def test_detect_reads_every_serve_port(serve: ServeInstance) -> None:
    for key, name in NAMES.items():
        seen = detect(socket.AF_INET, "127.0.0.1", serve.ports[key], 3.0)
        want = "submission" if name == "smtp" else name  # the greeting cannot tell an MX
        assert seen.target.name == want, (key, seen)
    with pytest.raises(Exception, match="no TLS handshake"):
        detect(socket.AF_INET, "127.0.0.1", serve.ports["http"], 1.0)


def test_cli_says_what_it_found_and_probes_it(serve: ServeInstance) -> None:
    ports = f"{serve.ports['imap']},{serve.ports['pop3_tls']}"
    done = subprocess.run(
        [sys.executable, "-m", "mailtls", "probe", "127.0.0.1", "--ports", ports,
         "--timeout", "3", "--format", "json", "--no-login-attempt"],
        capture_output=True, text=True, timeout=80, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr
    assert f"port {serve.ports['imap']} speaks imap" in done.stderr
    assert f"port {serve.ports['pop3_tls']} speaks pop3s" in done.stderr
    assert done.returncode in (0, 1), done.stderr
    assert f'"port": {serve.ports["imap"]}' in done.stdout


def test_an_unknown_port_where_nothing_listens_is_one_line() -> None:
    (port,) = free_ports(1)
    done = subprocess.run(
        [sys.executable, "-m", "mailtls", "probe", "127.0.0.1", "--ports", str(port),
         "--timeout", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert f"port {port}: cannot tell what it speaks" in done.stderr


def test_hint_names_the_ports_where_serve_answers(
    serve: ServeInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ",".join(f"{NAMES[k]}:{serve.ports[k]}" for k in NAMES)
    assert sorted(listening(socket.AF_INET, "127.0.0.1", [serve.ports["imap"]], 1.0)) == [
        serve.ports["imap"]
    ]
    _hint_serve_defaults("127.0.0.1", 2.0, ports=spec)
    err = capsys.readouterr().err
    assert "hint:" in err and f"imap:{serve.ports['imap']}" in err
    assert parse_ports(err.rsplit("--ports ", 1)[1].strip())  # the suggestion is valid input
