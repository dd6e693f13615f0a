"""A public server: a stranger costs a bounded amount (issue 10, points 3-6), through a real
``mailtls serve``: HTTP deadlines and caps, live-stream caps, background deletion that removes
every connection that presented the run's code, the free-space floor and a full disk."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_helpers import HOST, Api, connect, journal, read_until, serving

from conftest import ServeInstance

pytestmark = pytest.mark.timeout(90)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def _greets(inst: ServeInstance) -> bool:
    with connect(inst.ports["smtp_submission"], timeout=3) as s:
        return read_until(s, b"\r\n").startswith(b"220 ")


def _half_requests(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=3)
        s.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n")  # never finished
        socks.append(s)
    return socks


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b"" or True  # data (a 503) or EOF: the server let go
    except TimeoutError:
        return False
    except OSError:
        return True


def test_half_sent_http_requests_are_capped_and_timed_out(tmp_path: Path) -> None:
    extra = "[web]\nheader_seconds = 1.5\nper_ip = 8\n"
    with serving(tmp_path / "var", extra) as inst:
        socks = _half_requests(inst.ports["http"], 30)
        try:
            time.sleep(0.3)
            for s in socks:
                s.settimeout(0.2)
            refused = [s for s in socks if _closed(s)]
            assert len(refused) >= 22  # beyond 8 per address: 503 and closed at once
            assert _greets(inst)  # the mail side is untouched
            time.sleep(2.0)
            held = [s for s in socks if s not in refused and not _closed(s)]
            assert held == []  # the header deadline closed the rest
        finally:
            for s in socks:
                s.close()
        with httpx.Client(timeout=5) as client:  # and the web side serves again
            assert client.get(inst.url + "/api/openapi.json").status_code == 200


@contextlib.contextmanager
def _stream(url: str) -> Iterator[int]:
    with httpx.stream(
        "GET", url, headers={"accept": "text/event-stream"}, timeout=httpx.Timeout(5.0)
    ) as resp:
        yield resp.status_code


def test_live_streams_are_capped_per_run_and_in_total(tmp_path: Path) -> None:
    extra = "[web]\nstreams_per_run = 2\nstreams_total = 3\n"
    with serving(tmp_path / "var", extra) as inst:
        api = Api(inst)
        one, two = api.create(("immediate", "t1")), api.create(("immediate", "t1"))
        url = f"{api.base}/runs/{{}}/events"
        with contextlib.ExitStack() as stack:
            codes = [stack.enter_context(_stream(url.format(one.id))) for _ in range(3)]
            assert codes == [200, 200, 429]
            assert stack.enter_context(_stream(url.format(two.id))) == 200
            assert stack.enter_context(_stream(url.format(two.id))) == 503
        # closed streams give their slots back
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with _stream(url.format(two.id)) as code:
                if code == 200:
                    break
            time.sleep(0.2)
        assert code == 200
        api.close()


def test_delete_is_background_and_removes_unbound_connections_with_the_code(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "var") as inst:
        api = Api(inst)
        run = api.create(("immediate", "t1"))
        # a connection not bound to the run (no step started) presents its code
        with connect(inst.ports["imap"]) as s:
            read_until(s, b"\r\n")
            s.sendall(f"a1 LOGIN {run.username} wrong\r\n".encode())
            read_until(s, b"a1 ")
            s.sendall(b"a2 LOGOUT\r\n")
            read_until(s, b"a2 ")
        deadline = time.monotonic() + 5
        while not any(r.get("code") == run.code and r.get("run") is None for r in journal(inst)):
            assert time.monotonic() < deadline, "the unbound login was not recorded"
            time.sleep(0.1)
        conns = {r["conn"] for r in journal(inst) if r.get("code") == run.code and "conn" in r}
        resp = api.http.delete(f"{api.base}/runs/{run.id}")
        assert resp.status_code == 202, resp.text
        status_url = inst.url + resp.json()["status"]
        deadline = time.monotonic() + 10
        while (state := api.http.get(status_url).json()["state"]) != "done":
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert api.http.get(f"{api.base}/runs/{run.id}").status_code == 404
        left = [r for r in journal(inst) if r.get("conn") in conns or r.get("code") == run.code]
        assert left == [], left
        assert not any(r.get("run") == run.id for r in journal(inst))
        api.close()


def test_below_the_free_space_floor_new_runs_are_refused_and_bots_not_recorded(
    tmp_path: Path,
) -> None:
    extra = "[storage]\nmin_free_mb = 1000000000\ncheck_seconds = 0.5\n"
    with serving(tmp_path / "var", extra) as inst:
        with httpx.Client(timeout=5) as client:
            resp = client.post(inst.url + "/api/runs", json={"plan": "guided"})
            assert resp.status_code == 503 and "disk" in resp.json()["detail"]
            token = form_token(client.get(inst.url + "/").text)
            resp = client.post(inst.url + "/start", data={"mode": "guided", "csrf": token})
            assert resp.status_code == 503 and "text/html" in resp.headers["content-type"]
            assert "nearly full" in resp.text and "Traceback" not in resp.text
        before = len(journal(inst))
        for _ in range(20):
            with connect(inst.ports["smtp_mx"]) as s:
                read_until(s, b"\r\n")
                s.sendall(b"EHLO bot.example\r\nQUIT\r\n")
                read_until(s, b"221")
        assert len(journal(inst)) == before  # unbound traffic is not recorded
        assert "below the floor" in inst.output()


def _mount_tmpfs(path: Path, size_mb: int) -> None:
    if os.geteuid() != 0:
        if os.environ.get("MAILTLS_REQUIRE_SYSTEM") == "1":
            pytest.fail("mounting a small tmpfs needs root (MAILTLS_REQUIRE_SYSTEM=1)")
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True
    )


def _fill(path: Path) -> None:
    """Take every free byte of the disk holding ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, 48)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_gets_protocol_errors_and_503_then_recovers(small_disk: Path) -> None:
    extra = "[storage]\nmin_free_mb = 0\n"
    with serving(small_disk / "var", extra) as inst:
        api = Api(inst)
        run = api.create(("immediate", "baseline"))  # its own ports: connections bound to it
        ballast = small_disk / "ballast"
        _fill(ballast)
        # a run's connection is recorded when it opens: that fails, the client is told so (once
        # the journal's last page, allocated before the disk filled, is full as well)
        for _ in range(40):
            with connect(inst.port_for(run.username, "smtp_submission")) as s:
                first = read_until(s, b"\r\n")
            if not first.startswith(b"220 "):
                break
        assert first.startswith(b"421 ")
        with connect(inst.port_for(run.username, "imap")) as s:
            assert read_until(s, b"\r\n").startswith(b"* BYE ")
        with connect(inst.port_for(run.username, "pop3")) as s:
            assert read_until(s, b"\r\n").startswith(b"-ERR ")
        api.close()
        # one bound to no run writes nothing before its close (one summary): it is served
        assert _greets(inst)
        with httpx.Client(timeout=5) as client:
            resp = client.post(inst.url + "/api/runs", json={"plan": "guided"})
            assert resp.status_code == 503, resp.text
        ballast.unlink()
        assert _greets(inst)
        with httpx.Client(timeout=5) as client:
            assert client.post(inst.url + "/api/runs", json={"plan": "guided"}).status_code == 201
        log = inst.output()
        assert "Traceback" not in log
        assert log.count("cannot record mail connections") == 1


def test_the_floor_recovers_by_itself(small_disk: Path) -> None:
    extra = "[storage]\nmin_free_mb = 16\ncheck_seconds = 0.3\n"
    with serving(small_disk / "var", extra) as inst, httpx.Client(timeout=5) as client:
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (40 << 20))
        time.sleep(1.0)
        assert client.post(inst.url + "/api/runs", json={"plan": "guided"}).status_code == 503
        assert _greets(inst)  # mail keeps being served
        ballast.unlink()
        time.sleep(1.0)
        assert client.post(inst.url + "/api/runs", json={"plan": "guided"}).status_code == 201
        assert "free again" in inst.output()


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _pipeline(port: int, commands: int) -> None:
    """One connection pipelining ``commands`` EHLO/NOOP lines, reading every reply."""
    with connect(port, timeout=60) as s:
        read_until(s, b"\r\n")
        done = threading.Event()

        def drain() -> None:
            while not done.is_set():
                try:
                    data = s.recv(1 << 16)
                except OSError:
                    return
                if not data or b"221 " in data:
                    return

        reader = threading.Thread(target=drain)
        reader.start()
        chunk = b"EHLO a\r\nNOOP\r\n" * 500
        for _ in range(commands // 1000):
            s.sendall(chunk)
        s.sendall(b"QUIT\r\n")
        reader.join(60)
        done.set()


@pytest.mark.timeout(180)
def test_a_flood_keeps_memory_bounded_and_sigterm_quick(tmp_path: Path) -> None:
    """The index lags behind a pipelining flood: its backlog waits in the journal, not in RAM."""
    with serving(tmp_path / "var", "[storage]\nindex_queue = 2000\n") as inst:
        pid = inst.proc.pid
        before = _vm(pid, "VmRSS")
        flooders = [
            threading.Thread(target=_pipeline, args=(inst.ports["smtp_mx"], 100_000))
            for _ in range(4)
        ]
        for t in flooders:
            t.start()
        for t in flooders:
            t.join(150)
        grown = _vm(pid, "VmHWM") - before
        assert grown < 120 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB"
        t0 = time.monotonic()
        inst.stop()
        assert time.monotonic() - t0 < 10.0  # no backlog to index first (main: 15-22 s)
