"""The JSON API of a real ``mailtls serve`` as a lab script uses it: the live event stream,
unknown runs and malformed bodies."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from e2e_helpers import Api, api, imap_client, inst  # noqa: F401 (the module's fixtures)

from conftest import ServeInstance


@pytest.mark.timeout(40)
def test_live_stream_pushes_new_events(inst: ServeInstance, api: Api) -> None:
    """Every event reaches the stream as it happens, not at the next unrelated event: events
    appended while the stream was writing earlier ones must still wake it. A client logs in
    while the stream is open; the step is finished only once the stream showed the login (or
    after 5 s), so a late ``auth`` frame shows up behind ``step_finished``."""
    run = api.create(("immediate", "baseline"))
    api.start(run)
    seen_auth = threading.Event()
    outcome: list[str] = []
    logged_in: list[float] = []

    def client() -> None:
        outcome.append(imap_client(inst, run.username, run.password, False))
        logged_in.append(time.monotonic())
        seen_auth.wait(timeout=5)
        api.finish(run)

    worker = threading.Thread(target=client)
    names: list[str] = []
    auth_frame = float("inf")
    url = f"{api.base}/runs/{run.id}/events"
    headers = {"accept": "text/event-stream"}
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=20)) as resp:
        for line in resp.iter_lines():
            if not line.startswith("event: "):
                continue
            names.append(line[len("event: ") :])
            if names[-1] == "step_started" and not worker.is_alive():
                worker.start()  # the past has arrived; now the live part
            if names[-1] == "auth":
                auth_frame = time.monotonic()
                seen_auth.set()
            if names[-1] == "step_finished":
                break
    worker.join(timeout=20)
    assert outcome == ["tls-login"]
    assert names[:3] == ["run_created", "endpoints_assigned", "step_started"]
    assert "auth" in names and names.index("auth") < names.index("step_finished")
    assert auth_frame - logged_in[0] < 2.0, "the login reached the stream only later"


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
