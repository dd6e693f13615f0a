"""The deployment files shipped in ``deploy/`` (docs/deploy.md): the systemd unit passes
``systemd-analyze verify`` with no warning, and the sample production settings load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool
from mailtls.settings import load

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "mailtls.service"
SETTINGS = ROOT / "deploy" / "mailtls.toml"
INSTALLED = "/opt/mailtls/venv/bin/mailtls"  # where docs/deploy.md installs it


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script (verify checks that
    the program exists)."""
    script = Path(sys.executable).parent / "mailtls"
    if not script.exists():
        script = tmp_path / "mailtls"
        script.write_text(f'#!/bin/sh\nexec {sys.executable} -m mailtls "$@"\n')
        script.chmod(0o755)
    text = UNIT.read_text()
    assert INSTALLED in text
    unit = tmp_path / "mailtls.service"
    unit.write_text(text.replace(INSTALLED, str(script)))
    return unit


@pytest.mark.system
@pytest.mark.timeout(60)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    done = subprocess.run(
        [analyze, "verify", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # an unknown key is only a warning: none


def test_unit_binds_low_ports_without_root_and_is_sandboxed() -> None:
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
             if "=" in line and not line.startswith("#")}  # fmt: skip
    assert lines["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert lines["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert lines["User"] == "mailtls" and lines["NoNewPrivileges"] == "yes"
    assert lines["ProtectSystem"] == "strict" and lines["StateDirectory"] == "mailtls"
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the certificate
    assert "--config /etc/mailtls/mailtls.toml" in lines["ExecStart"]


def test_sample_production_settings_load() -> None:
    settings = load(SETTINGS, environ={})
    assert settings.data_dir == Path("/var/lib/mailtls")  # the unit's StateDirectory
    ports = settings.ports
    assert (ports.smtp_mx, ports.smtp_submission, ports.smtp_tls) == (25, 587, 465)
    assert (ports.imap, ports.imap_tls, ports.pop3, ports.pop3_tls) == (143, 993, 110, 995)
    assert settings.base_url.startswith("https://")
    assert settings.trusted_proxies and settings.tls.cert_file.startswith("/etc/mailtls/")
    assert "autoconfig.example.org" in settings.public_hostnames


def test_deploy_guide_shows_the_shipped_files() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert UNIT.read_text().strip() in guide  # the guide shows the unit as shipped
    for topic in ("Caddy", "nginx", "X-Forwarded-For", "MX", "SRV", "autoconfig", "SIGHUP",
                  "certbot", "nft", "Backups", "Upgrad", "--network host"):  # fmt: skip
        assert topic in guide, topic
