"""The JSON API of a real ``mailtls serve`` as a lab script uses it: the live event stream,
unknown runs and malformed bodies."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from e2e_helpers import Api, Run, imap_client, serving

from conftest import ServeInstance


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    with serving(tmp_path_factory.mktemp("e2e-api") / "var") as server:
        yield server


@pytest.fixture(scope="module")
def api(inst: ServeInstance) -> Iterator[Api]:
    client = Api(inst)
    yield client
    client.close()


def stream_frames(api: Api, run: Run, frames: queue.Queue[str], stop: threading.Event) -> None:
    """Put each SSE frame's ``event:`` name on ``frames`` until ``stop``; reads are bounded by
    the server's keep-alive comments (every 15 s) and end when the server stops."""
    timeout = httpx.Timeout(10.0, read=30.0)
    url = f"{api.base}/runs/{run.id}/events"
    headers = {"accept": "text/event-stream"}
    try:
        with httpx.stream("GET", url, headers=headers, timeout=timeout) as resp:
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    frames.put(line[len("event: ") :])
                if stop.is_set():
                    return
    except httpx.ReadTimeout:
        frames.put("<read timeout>")


def next_frame(frames: queue.Queue[str], wanted: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if frames.get(timeout=max(0.01, deadline - time.monotonic())) == wanted:
                return True
        except queue.Empty:
            return False
    return False


@pytest.mark.timeout(40)
def test_live_stream_pushes_new_events(inst: ServeInstance, api: Api) -> None:
    """Every event reaches the stream as it happens, not at the next unrelated event: events
    appended while the stream was writing earlier ones must still wake it."""
    run = api.create(("immediate", "baseline"))
    api.start(run)
    frames: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=stream_frames, args=(api, run, frames, stop), daemon=True)
    reader.start()
    try:
        assert next_frame(frames, "step_started", 5)  # the past comes first
        assert imap_client(inst, run.username, "pw", False) == "tls-login"
        assert next_frame(frames, "auth", 5)  # then the live events, as they happen
        api.finish(run)
        assert next_frame(frames, "step_finished", 5)
    finally:
        stop.set()  # the daemon reader ends with its next frame or when the server stops


@pytest.mark.timeout(20)
def test_unknown_run_and_malformed_bodies(api: Api) -> None:
    http = api.http
    assert http.get(f"{api.base}/runs/no-such-run").status_code == 404
    assert http.post(f"{api.base}/runs/no-such-run/steps/1/start").status_code == 404
    run = api.create(("immediate", "t1"))
    assert http.post(f"{api.base}/runs/{run.id}/steps/7/start").status_code == 404
    bodies: list[dict[str, object]] = [
        {"steps": [{"scenario": "immediate", "testcase": "t9"}]},
        {"steps": []},
        {"plan": "guided", "steps": [{"scenario": "immediate", "testcase": "t1"}]},
        {"steps": [{"scenario": "immediate", "testcase": "t1", "extra": 1}]},
    ]
    for body in bodies:
        resp = http.post(f"{api.base}/runs", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert "Traceback" not in resp.text
    resp = http.post(
        f"{api.base}/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
