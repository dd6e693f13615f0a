"""Shared test helpers.

``require_tool(name)``: skip when a system program is missing on a developer's laptop, but fail
when ``MAILTLS_REQUIRE_SYSTEM=1`` (CI), so a missing install step can never pass silently.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(*names: str) -> str:
    """Return the path of the first program found among ``names``; skip or fail if none."""
    for name in names:
        path = shutil.which(name) or (
            f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
        )
        if path:
            return path
    msg = f"system program {' or '.join(names)} is not installed"
    if os.environ.get("MAILTLS_REQUIRE_SYSTEM") == "1":
        pytest.fail(msg + " (MAILTLS_REQUIRE_SYSTEM=1)")
    pytest.skip(msg)


def require_file(path: str, why: str) -> None:
    """A file a system package installs (e.g. /etc/dovecot/dovecot.conf): skip or fail like
    ``require_tool``."""
    if os.path.exists(path):
        return
    msg = f"{path} is missing ({why})"
    if os.environ.get("MAILTLS_REQUIRE_SYSTEM") == "1":
        pytest.fail(msg + " (MAILTLS_REQUIRE_SYSTEM=1)")
    pytest.skip(msg)


# --- a real `mailtls serve` subprocess on free loopback ports --------------------------------

import contextlib  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

PORT_NAMES = (
    "smtp_mx",
    "smtp_submission",
    "smtp_tls",
    "imap",
    "imap_tls",
    "pop3",
    "pop3_tls",
    "http",
)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class ServeInstance:
    data_dir: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes]
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_serve(
    data_dir: Path,
    config_extra: str = "",
    ports: dict[str, int] | None = None,
    limits: dict[str, float | int] | None = None,
) -> ServeInstance:
    """``config_extra``: top-level TOML keys; ``limits``: extra keys of the ``[limits]`` table
    (written here, TOML forbids a second one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if ports is None:
        ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    port_lines = "\n".join(f"{k} = {v}" for k, v in ports.items())
    limit_lines = "\n".join(
        f"{k} = {v}" for k, v in {"auth_fail_delay": 0.05, **(limits or {})}.items()
    )
    config = data_dir / "mailtls.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        "fsync = false\n"
        f"{config_extra}\n"
        f"[ports]\n{port_lines}\n"
        f"[limits]\n{limit_lines}\n"
    )
    log = data_dir / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTLS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailtls", "serve", "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    inst = ServeInstance(data_dir, ports, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mailtls serve exited early:\n{inst.output()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(inst.url + "/api/openapi.json", timeout=2) as resp,
        ):
            if resp.status == 200:
                return inst
        time.sleep(0.1)
    inst.stop(signal.SIGKILL)
    raise RuntimeError(f"mailtls serve did not become ready:\n{inst.output()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeInstance]:
    """A fresh `mailtls serve` with its own data folder and free ports; stopped afterwards."""
    inst = start_serve(tmp_path / "var")
    try:
        yield inst
    finally:
        inst.stop()
