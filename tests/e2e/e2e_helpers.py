"""End-to-end test kit: a real ``mailtls serve`` subprocess, its JSON API and reference clients.

- ``serving(data_dir, config_extra, limits)``: a server for a block (a module fixture or one
  test), through ``conftest.start_serve``.
- ``Api``: create a run, start/finish a step, read the run, its events, its SSE stream, its result
  page and exports. Runs are created from rotating 127.0.x.y source addresses because creation is
  rate limited per address; steps are always started from 127.0.0.1, the address the clients
  connect from. Each run has its own endpoints (the pool is on, as by default): the clients take
  the run's ports from the API's ``account`` (``ServeInstance.port_for``); servers started with
  endpoints off bind by address (newest binding wins, so every test starts its own step first).
- Reference clients from the standard library (``smtplib``, ``imaplib``, ``poplib``): an
  opportunistic one (STARTTLS only when advertised) and a strict one (always STARTTLS, stop when
  it fails), each bounded by socket timeouts.
- ``Wire``: a raw line client that can switch to TLS, for scripted and hostile dialogues.
- ``journal``: the records of ``DATA_DIR/events.jsonl`` (the record itself; API views reduce
  connections that never presented the run's code, so tests of such connections read it).

Imports only the standard library, httpx and the shared ``conftest``; never ``mailtls`` (the
server is a black box to these tests; only the durability test calls the store's ``rebuild``).
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import json
import os
import poplib
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServeInstance, start_serve

HOST = "127.0.0.1"
CLIENT_TIMEOUT = 8.0


# --- servers --------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    data_dir: Path,
    config_extra: str = "",
    limits: dict[str, float | int] | None = None,
    endpoints: dict[str, Any] | None = None,
) -> Iterator[ServeInstance]:
    """A running server for the block; stopped (SIGTERM) afterwards."""
    inst = start_serve(data_dir, config_extra, limits=limits, endpoints=endpoints)
    try:
        yield inst
    finally:
        inst.stop()


# --- the JSON API ---------------------------------------------------------------------------

_sources = itertools.count(os.getpid() % 200)


@dataclass
class Run:
    id: str
    code: str
    username: str
    password: str
    result_url: str
    view: dict[str, Any]


class Api:
    """The JSON API of one server, as a lab script would use it."""

    def __init__(self, inst: ServeInstance) -> None:
        self.inst = inst
        self.base = inst.url + "/api"
        self.http = httpx.Client(timeout=15.0)

    def close(self) -> None:
        self.http.close()

    def create(self, *steps: tuple[str, str]) -> Run:
        n = next(_sources)
        source = f"127.0.{1 + (n // 250) % 250}.{1 + n % 250}"
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport, timeout=15.0) as client:
            resp = client.post(
                self.base + "/runs",
                json={"steps": [{"scenario": s, "testcase": t} for s, t in steps]},
            )
        assert resp.status_code == 201, resp.text
        view = resp.json()
        self.inst.remember(view)
        return Run(
            id=view["id"],
            code=view["code"],
            username=view["account"]["username"],
            password=view["account"]["password"],
            result_url=view["links"]["result"],
            view=view,
        )

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.http.post(self.base + path, json=body)
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def start(self, run: Run, n: int = 1) -> dict[str, Any]:
        """Bind 127.0.0.1 (this client's address) to step ``n``; returns the step."""
        return step_of(self._post(f"/runs/{run.id}/steps/{n}/start"), n)

    def finish(self, run: Run, n: int = 1) -> dict[str, Any]:
        """Finish step ``n``; returns the step with its verdict."""
        return self._post(f"/runs/{run.id}/steps/{n}/finish")

    def get(self, run: Run) -> dict[str, Any]:
        resp = self.http.get(f"{self.base}/runs/{run.id}")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        self.inst.remember(data)  # a restarted server has the run's endpoints from its journal
        return data

    def step(self, run: Run, n: int = 1) -> dict[str, Any]:
        return step_of(self.get(run), n)

    def events(self, run: Run) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.base}/runs/{run.id}/events")
        assert resp.status_code == 200, resp.text
        events: list[dict[str, Any]] = resp.json()["events"]
        return events

    def wait_events(
        self, run: Run, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll the events until ``pred`` holds (the server writes some after the reply)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(run)
            if pred(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.1)

    def sse_text(self, run: Run, seconds: float = 1.5) -> str:
        """What the live stream sends in ``seconds`` (the past events come first)."""
        chunks: list[str] = []
        deadline = time.monotonic() + seconds
        timeout = httpx.Timeout(seconds + 5, read=seconds)
        with (
            contextlib.suppress(httpx.ReadTimeout),
            httpx.stream(
                "GET",
                f"{self.base}/runs/{run.id}/events",
                headers={"accept": "text/event-stream"},
                timeout=timeout,
            ) as resp,
        ):
            assert resp.status_code == 200
            for chunk in resp.iter_text():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    break
        return "".join(chunks)

    def texts(self, run: Run) -> dict[str, str]:
        """Every API and page response about the run, by name (for secret scans)."""
        out = {
            "run": json.dumps(self.get(run)),
            "events": json.dumps(self.events(run)),
            "sse": self.sse_text(run),
        }
        resp = self.http.get(f"{self.base}/runs/{run.id}/export.jsonl")
        assert resp.status_code == 200, resp.text
        out["export_jsonl"] = resp.text
        for suffix, name in (("", "result_page"), (".json", "json"), (".csv", "csv")):
            resp = self.http.get(run.result_url + suffix)
            assert resp.status_code == 200, (name, resp.status_code)
            out[name] = resp.text
        for suffix, name in (("", "share_page"), (".json", "share_json")):
            resp = self.http.get(run.result_url + suffix, params={"share": "true"})
            if resp.status_code in (302, 303, 307):  # the shareable view lives at its own link
                resp = self.http.get(self.inst.url + resp.headers["location"])
            assert resp.status_code == 200, (name, resp.status_code)
            out[name] = resp.text
        resp = self.http.get(f"{self.inst.url}/run/{run.id}")
        if resp.status_code == 200:
            out["run_page"] = resp.text
        return out


def step_of(view: dict[str, Any], n: int) -> dict[str, Any]:
    step: dict[str, Any] = next(s for s in view["steps"] if s["n"] == n)
    return step


def verdict(step: dict[str, Any]) -> tuple[str, str | None]:
    return step["verdict"], step["reason"]


def tags(step: dict[str, Any]) -> set[str]:
    return {str(f["tag"]) for f in step.get("findings") or []}


# --- reference clients from the standard library -------------------------------------------


def tls_context(inst: ServeInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca))


CLIENT_ERRORS = (
    OSError,
    ssl.SSLError,
    smtplib.SMTPException,
    imaplib.IMAP4.error,
    poplib.error_proto,
)


def smtp_client(
    inst: ServeInstance,
    user: str,
    password: str,
    always_starttls: bool,
    ctx: ssl.SSLContext | None = None,
) -> str:
    """Submission client; returns what happened ("tls-login", "plain-login", "stopped: ...").

    The outcome is fixed when the login is answered: the server may close the connection right
    after it (two_phase activation closes the run's connections), so QUIT errors do not count.
    """
    ctx = ctx or tls_context(inst)
    try:
        s = smtplib.SMTP(HOST, inst.port_for(user, "smtp_submission"), timeout=CLIENT_TIMEOUT)
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    try:
        s.ehlo()
        tls = False
        if always_starttls or s.has_extn("starttls"):
            try:
                s.starttls(context=ctx)
                s.ehlo()
                tls = True
            except CLIENT_ERRORS as exc:
                return f"stopped: {exc!r}"
        s.login(user, password)
        with contextlib.suppress(*CLIENT_ERRORS):
            s.quit()
        return "tls-login" if tls else "plain-login"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    finally:
        s.close()


def imap_client(
    inst: ServeInstance,
    user: str,
    password: str,
    always_starttls: bool,
    ctx: ssl.SSLContext | None = None,
) -> str:
    ctx = ctx or tls_context(inst)
    try:
        m = imaplib.IMAP4(HOST, inst.port_for(user, "imap"), timeout=CLIENT_TIMEOUT)
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    try:
        tls = False
        if always_starttls or "STARTTLS" in m.capabilities:
            try:
                m.starttls(ssl_context=ctx)
                tls = True
            except CLIENT_ERRORS as exc:
                return f"stopped: {exc!r}"
        m.login(user, password)
        with contextlib.suppress(*CLIENT_ERRORS):
            m.logout()
        return "tls-login" if tls else "plain-login"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    finally:
        with contextlib.suppress(OSError):
            m.shutdown()


def pop3_client(
    inst: ServeInstance,
    user: str,
    password: str,
    always_starttls: bool,
    ctx: ssl.SSLContext | None = None,
) -> str:
    ctx = ctx or tls_context(inst)
    try:
        p = poplib.POP3(HOST, inst.port_for(user, "pop3"), timeout=CLIENT_TIMEOUT)
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    try:
        tls = False
        try:
            caps = p.capa()
        except poplib.error_proto:
            caps = {}
        if always_starttls or "STLS" in caps:
            try:
                p.stls(context=ctx)
                tls = True
            except CLIENT_ERRORS as exc:
                return f"stopped: {exc!r}"
        p.user(user)
        p.pass_(password)
        with contextlib.suppress(*CLIENT_ERRORS):
            p.quit()
        return "tls-login" if tls else "plain-login"
    except CLIENT_ERRORS as exc:
        return f"error: {exc!r}"
    finally:
        with contextlib.suppress(OSError):
            p.close()


CLIENTS: dict[str, Callable[..., str]] = {  # (inst, user, password, always_starttls, ctx)
    "smtp": smtp_client,
    "imap": imap_client,
    "pop3": pop3_client,
}


# --- raw sockets ------------------------------------------------------------------------------


def connect(port: int, timeout: float = CLIENT_TIMEOUT, source: str = HOST) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 16) -> bytes:
    """Read until ``marker`` appears, EOF, the socket timeout, or ``limit`` bytes."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        while marker not in data and len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def read_all(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """Read until EOF, the socket timeout or ``limit`` bytes."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        while len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


class Wire:
    """A raw line-oriented client connection that can switch to TLS (for scripted dialogues)."""

    def __init__(self, port: int, timeout: float = CLIENT_TIMEOUT) -> None:
        self.sock: socket.socket = connect(port, timeout)
        self.buf = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """One line with its ending; b"" at EOF or timeout; at most 64 KiB."""
        while b"\n" not in self.buf and len(self.buf) < 1 << 16:
            try:
                chunk = self.sock.recv(4096)
            except (TimeoutError, ConnectionError, ssl.SSLError):
                chunk = b""
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        end = self.buf.find(b"\n") + 1 or len(self.buf)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def smtp_reply(self) -> bytes:
        """A whole (multi-line) SMTP reply."""
        out = b""
        while True:
            line = self.line()
            out += line
            if not line or line[3:4] != b"-":
                return out

    def imap_reply(self, tag: bytes) -> bytes:
        """Lines up to the tagged reply or a continuation request."""
        out = b""
        while True:
            line = self.line()
            out += line
            if not line or line.startswith((tag + b" ", b"+")):
                return out

    def upgrade(self, ctx: ssl.SSLContext) -> None:
        assert not self.buf, self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")


def journal(inst: ServeInstance, run: Run | None = None) -> list[dict[str, Any]]:
    """The complete records of the server's journal (the record itself, unreduced), optionally
    only those bound to ``run``. API views reduce connections that never showed the run's code."""
    records = []
    for line in (inst.data_dir / "events.jsonl").read_bytes().split(b"\n")[:-1]:
        record: dict[str, Any] = json.loads(line)
        if run is None or record.get("run") == run.id:
            records.append(record)
    return records


def wait_journal(
    inst: ServeInstance, run: Run, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = journal(inst, run)
        if pred(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


# --- module fixtures: a module imports ``inst`` and ``api`` (or defines its own ``inst``) ------


@pytest.fixture(scope="module")
def inst(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeInstance]:
    """One `mailtls serve` on its test defaults for the whole module."""
    with serving(tmp_path_factory.mktemp(request.module.__name__) / "var") as server:
        yield server


@pytest.fixture(scope="module")
def api(inst: ServeInstance) -> Iterator[Api]:
    """The JSON API of the module's ``inst``."""
    client = Api(inst)
    yield client
    client.close()
