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
from collections.abc import Collection, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

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


# Test servers listen below the kernel's ephemeral range (32768-60999 here), so that no client
# connection of a parallel test can take a server's port as its source port between the moment
# a port is picked and the moment the server (or its restart after kill -9) binds it. Standard
# ports and endpoint pools come from two spaces, so that scattered standard ports never break
# up the room for a pool's consecutive ports, and both stay clear of the product's default pool
# (20000-25999), which a test may keep. Each pytest-xdist worker draws from its own slice of
# each space, so two workers never pick the same port.
PORT_SPACE = (26000, 32768)  # standard ports (free_ports)
POOL_SPACE = (10000, 20000)  # endpoint pools (free_port_range)


def _worker_slice(space: tuple[int, int]) -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker) % count if worker.isdigit() else 0
    width = (space[1] - space[0]) // count
    return range(space[0] + index * width, space[0] + (index + 1) * width)


def free_ports(n: int, avoid: range = range(0)) -> list[int]:
    """``n`` distinct ports free now on 127.0.0.1, from this worker's slice of ``PORT_SPACE``,
    outside ``avoid`` (a server's endpoint pool)."""
    import random

    space, rng, found = _worker_slice(PORT_SPACE), random.Random(), list[int]()
    for _ in range(50 * n):
        port = rng.choice(space)
        if port not in found and port not in avoid and _bindable("127.0.0.1", port):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError(f"no {n} free ports in {space}")


POOL_SIZE = 1000  # ports of a test server's endpoint pool (six per run, kept for the grace)


def free_port_range(
    size: int = POOL_SIZE,
    hosts: tuple[str, ...] = ("127.0.0.1", "::1"),
    avoid: Collection[int] = (),
) -> int:
    """The first port of ``size`` consecutive ports that are free now on ``hosts``, in this
    worker's slice of ``POOL_SPACE`` (below the ephemeral range, like ``free_ports``), holding
    none of ``avoid`` (the server's own standard ports)."""
    import random

    space, rng = _worker_slice(POOL_SPACE), random.Random()
    for _ in range(200):
        first = rng.randrange(space.start, space.stop - size)
        ports = range(first, first + size)
        if any(p in ports for p in avoid):
            continue
        if all(_bindable(host, port) for port in ports for host in hosts):
            return first
    raise RuntimeError("no free port range for the endpoint pool")


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        # as the servers bind: a port whose old connections linger in TIME_WAIT is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == 99  # EADDRNOTAVAIL: no such address here (no IPv6)
    return True


@dataclass
class ServeInstance:
    data_dir: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes]
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    # account name (before the @) -> listener kind -> the run's own port (filled by the kits)
    accounts: dict[str, dict[str, int]] = field(default_factory=dict)

    def port_for(self, username: str, kind: str) -> int:
        """The run's own port of ``kind`` for the account, else the shared one."""
        return self.ports_for(username)[kind]

    def ports_for(self, username: str) -> dict[str, int]:
        """``ports`` with the run's own endpoints in place of the shared ones."""
        local = username.split("@", 1)[0].strip().lower()
        return {**self.ports, **self.accounts.get(local, {})}

    def remember(self, view: dict[str, Any]) -> None:
        """Note a run's endpoints from the API's ``account`` (protocol: host, port, security)."""
        account = view["account"]
        names = {("smtp", "starttls"): "smtp_submission", ("smtp", "tls"): "smtp_tls"}
        ports: dict[str, int] = {}
        for protocol, servers in account["servers"].items():
            for srv in servers:
                kind = names.get((protocol, srv["security"]))
                kind = kind or (protocol if srv["security"] == "starttls" else protocol + "_tls")
                ports.setdefault(kind, int(srv["port"]))
        self.accounts[str(account["username"]).split("@", 1)[0].lower()] = ports

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
    endpoints: dict[str, Any] | None = None,
) -> ServeInstance:
    """``config_extra``: top-level TOML keys; ``limits`` and ``endpoints``: extra keys of the
    ``[limits]`` and ``[endpoints]`` tables (written here, TOML forbids a second one). The
    endpoint pool is on, as by default, over a free port range (``{"enabled": False}``: address
    binding, the fall-back)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pool = dict(endpoints or {})
    if pool.get("enabled", True) and "port_first" not in pool and not pool.get("prefix"):
        first = free_port_range(avoid=(ports or {}).values())
        pool |= {"port_first": first, "port_last": first + POOL_SIZE - 1}
    if ports is None:
        taken = range(pool.get("port_first", 0), pool.get("port_last", -1) + 1)
        ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES), avoid=taken), strict=True))
    port_lines = "\n".join(f"{k} = {v}" for k, v in ports.items())
    limit_lines = "\n".join(
        f"{k} = {v}" for k, v in {"auth_fail_delay": 0.05, **(limits or {})}.items()
    )
    endpoint_lines = "\n".join(f"{k} = {_toml(v)}" for k, v in pool.items())
    config = data_dir / "mailtls.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        "fsync = false\n"
        f"{config_extra}\n"
        f"[ports]\n{port_lines}\n"
        f"[limits]\n{limit_lines}\n"
        f"[endpoints]\n{endpoint_lines}\n"
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


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    return str(value)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeInstance]:
    """A fresh `mailtls serve` with its own data folder and free ports; stopped afterwards."""
    inst = start_serve(tmp_path / "var")
    try:
        yield inst
    finally:
        inst.stop()
