"""Helpers for the run tests: a settable clock, a real store, and a mail shell stand-in.

``MailShell`` writes connection events exactly as the I/O shell does (flat envelope with
``conn``, ``protocol``, ``client``, ``run``, ``step``, ``binding``), asking the run manager's
``binder`` at accept time and ``authenticate`` at login, so the manager sees what it sees in
production without sockets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mailtls import settings as cfg
from mailtls.protocols.base import Credential
from mailtls.runs import codes
from mailtls.runs.manager import RunManager
from mailtls.runs.types import Binding
from mailtls.store import Store

KEY = bytes(range(32))
T0 = 1_800_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(endpoints: cfg.Endpoints | None = None, **binding: Any) -> cfg.Settings:
    """Address binding (endpoints off) unless ``endpoints`` are given: most run tests are of
    the address binding; tests/runs/test_runs_endpoints.py passes endpoints."""
    values = {"ttl_seconds": 600.0, "grace_seconds": 60.0} | binding
    return replace(
        cfg.Settings(),
        binding=cfg.Binding(**values),
        endpoints=endpoints or cfg.Endpoints(enabled=False),
    )


@dataclass
class Env:
    """A data directory with a store and a run manager wired like ``mailtls serve`` does."""

    data_dir: Path
    clock: Clock = field(default_factory=Clock)
    conf: cfg.Settings = field(default_factory=settings)
    kicks: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store: Store
        self.manager: RunManager
        self.open()

    def open(self) -> None:
        self.store = Store(self.data_dir, fsync=False)
        self.manager = RunManager(self.store, self.conf, KEY, self.clock)
        self.manager.load()
        self.store.subscribe(self.manager.on_record)
        self.manager.set_kicker(lambda run_id, reason: self.kicks.append((run_id, reason)))
        self.shell = MailShell(self.store, self.manager, self.clock)

    def restart(self) -> None:
        self.store.close()
        self.open()

    def close(self) -> None:
        self.store.close()


_conn_ids: Iterator[int] = itertools.count(1)


@dataclass
class MailShell:
    store: Store
    manager: RunManager
    clock: Clock

    def connect(
        self, client: str, protocol: str = "imap", port: int = 2143, security: str = "starttls"
    ) -> Conn:
        binding = self.manager.binder(client, ("127.0.0.1", port))
        conn = Conn(self, f"c{next(_conn_ids)}", protocol, port, client, binding)
        testcase = binding.testcase if binding is not None and binding.active else "baseline"
        conn.record(
            "connection_opened",
            security=security,
            testcase=testcase,
            active=binding is not None and binding.active,
        )
        return conn


@dataclass
class Conn:
    shell: MailShell
    conn: str
    protocol: str
    port: int
    client: str
    binding: Binding | None
    tls: bool = False

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        b = self.binding
        return self.shell.store.append(
            {
                "ts": self.shell.clock(),
                "conn": self.conn,
                "protocol": self.protocol,
                "listener": self.protocol,
                "port": self.port,
                "client": self.client,
                "cport": 50000,
                "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"}
                if self.tls
                else None,
                "run": b.run_id if b else None,
                "step": b.step if b else None,
                "binding": b.as_fields() if b else None,
                "type": kind,
                **fields,
            }
        )

    def caps(self, starttls: bool) -> dict[str, Any]:
        return self.record(
            "capabilities_sent",
            starttls_offered=starttls and not self.tls,
            auth_mechanisms=["PLAIN", "LOGIN"],
            tls=self.tls,
        )

    def starttls(self) -> dict[str, Any]:
        self.record("starttls_requested", advertised=True)
        self.tls = True
        return self.record("tls_established", version="TLSv1.3", cipher="x", implicit=False)

    def login(self, username: str, password: str | None = None) -> dict[str, Any]:
        """A PLAIN login; ``password`` defaults to the password of the run the username names
        (the user's own client), any other string is someone else's guess."""
        manager = self.shell.manager
        if password is None:
            code = codes.parse_code(username)
            run_id = manager._by_code.get(code) if code else None  # the kit knows the runs
            password = manager.password_for(run_id) if run_id else "no-such-run"
        decision = manager.authenticate(Credential(username, password.encode()))
        return self.record(
            "auth",
            mechanism="PLAIN",
            username=decision.display,
            code=decision.code,
            tls=self.tls,
            secret_sent=True,
            secret_in_clear=not self.tls,
            outcome="success" if decision.ok else "failure",
            proof=decision.proof,
        )

    def close(self) -> dict[str, Any]:
        return self.record("connection_closed", by="client", bytes_in=1, bytes_out=1, duration=1.0)
