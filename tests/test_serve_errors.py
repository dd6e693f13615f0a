"""`mailtls serve` with certificate settings it cannot use stops with one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _serve(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mailtls.toml"
    path.write_text(f'data_dir = "{tmp_path / "var"}"\nfsync = false\n{config}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTLS_")}
    return subprocess.run(
        [sys.executable, "-m", "mailtls", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "config",
    [
        '[tls]\ncert_file = "/nonexistent/server.pem"\nkey_file = "/nonexistent/server.key"',
        'hostname = "bad..name"',
    ],
)
def test_unusable_certificate_settings_are_one_line(tmp_path: Path, config: str) -> None:
    done = _serve(tmp_path, config)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("mailtls: error: "), done.stderr


@pytest.mark.timeout(60)
def test_a_certificate_that_does_not_load_is_one_line(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("not a certificate\n")
    config = f'[tls]\ncert_file = "{cert}"\nkey_file = "{cert}"'
    done = _serve(tmp_path, config)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "cannot load certificate" in done.stderr
