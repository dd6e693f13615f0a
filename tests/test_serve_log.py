"""``serve_log.Activity``: one line per run event, named by the session code (never the run id),
and the status line's counts and event rate."""

from __future__ import annotations

import logging

import pytest

from mailtls.serve_log import Activity
from mailtls.settings import Log


def test_run_events_become_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    activity = Activity(Log())
    records = [
        {"type": "run_created", "run": "SECRET-RUN-ID", "code": "abc123", "protocol": "pop3",
         "steps": [{"scenario": "immediate", "testcase": "t1"}]},
        {"type": "step_started", "run": "SECRET-RUN-ID", "step": 1},
        {"type": "auth", "run": "SECRET-RUN-ID", "step": 1},
        {"type": "step_activated", "run": "SECRET-RUN-ID", "step": 1},
        {"type": "step_finished", "run": "SECRET-RUN-ID", "step": 1, "verdict": "FAIL",
         "tags": ["plaintext_auth"]},
        {"type": "step_started", "run": "OTHER", "step": 2},
        {"type": "run_deleted", "run": "SECRET-RUN-ID"},
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="mailtls.activity"):
        for record in records:
            activity.on_record(record)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "run abc123 created (1 steps, pop3)",
        "run abc123 step 1 started",
        "run abc123 step 1 armed (first secure login)",
        "run abc123 step 1 finished: FAIL (plaintext_auth)",
        "a run step 2 started",
        "run abc123 deleted by its owner",
    ]
    assert not any("SECRET" in line for line in lines)


def test_status_line_counts_and_rate() -> None:
    now = [100.0]
    activity = Activity(Log(activity=False), clock=lambda: now[0])
    for _ in range(30):
        activity.on_record({"type": "command"})
    activity.on_record({"type": "connection_refused", "reason": "per_ip_limit"})
    activity.on_record({"type": "run_created", "run": "R", "code": "c"})
    now[0] += 8.0
    line = activity.status(open_connections=7)
    assert line == (
        "status: 7 connections open, 1 runs created, 0 steps finished, 4.0 events/s, "
        "1 connections refused"
    )
    now[0] += 10.0
    assert "0.0 events/s" in activity.status(open_connections=0)  # the rate since the last line


def test_quiet_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    activity = Activity(Log(activity=False, status_seconds=0))
    with caplog.at_level(logging.INFO, logger="mailtls.activity"):
        activity.on_record({"type": "run_created", "run": "R", "code": "c", "steps": []})
    assert caplog.records == []
