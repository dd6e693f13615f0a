"""What ``mailtls serve`` tells its operator while it works: one line per run event (created,
step started / armed / finished with its verdict, deleted) and a periodic status line
(connections open, runs, events per second, connections refused by the limits).

Fed by the store's subscription (``on_record`` runs in the appending thread: it only counts and
formats). Runs are named by their session code (it travels in the test username anyway), never
by their run id, which is the capability to the run's pages. ``[log]`` settings (or
``serve --quiet``) turn both off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mailtls.settings import Log

log = logging.getLogger("mailtls.activity")
MAX_CODES = 10000  # run id -> code entries kept for naming later events (oldest dropped)


class Activity:
    def __init__(self, settings: Log, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, str] = {}
        self.events = 0
        self.refused = 0
        self.runs_created = 0
        self.steps_finished = 0
        self._last = (clock(), 0)

    def on_record(self, record: Mapping[str, Any]) -> None:
        kind = record.get("type")
        with self._lock:
            self.events += 1
            if kind == "connection_refused":
                self.refused += 1
            elif kind == "run_created":
                self.runs_created += 1
                self._remember(record)
            elif kind == "step_finished":
                self.steps_finished += 1
        if self._settings.activity:
            line = self.describe(record)
            if line:
                log.info("%s", line)

    def _remember(self, record: Mapping[str, Any]) -> None:
        run, code = record.get("run"), record.get("code")
        if isinstance(run, str) and isinstance(code, str):
            if len(self._codes) >= MAX_CODES:
                self._codes.pop(next(iter(self._codes)))
            self._codes[run] = code

    def _name(self, record: Mapping[str, Any]) -> str:
        code = self._codes.get(str(record.get("run")))
        return f"run {code}" if code else "a run"

    def describe(self, record: Mapping[str, Any]) -> str | None:
        """The operator's line for a run event; None for the other records."""
        kind = record.get("type")
        step = record.get("step")
        if kind == "run_created":
            steps = record.get("steps")
            count = len(steps) if isinstance(steps, list) else "?"
            proto = record.get("protocol") or "imap"
            return f"{self._name(record)} created ({count} steps, {proto})"
        if kind == "step_started":
            return f"{self._name(record)} step {step} started"
        if kind == "step_activated":
            return f"{self._name(record)} step {step} armed (first secure login)"
        if kind == "step_skipped":
            return f"{self._name(record)} step {step} skipped"
        if kind == "step_finished":
            tags = record.get("tags") or []
            detail = f" ({', '.join(str(t) for t in tags)})" if tags else ""
            return f"{self._name(record)} step {step} finished: {record.get('verdict')}{detail}"
        if kind == "run_deleted":
            return f"{self._name(record)} deleted by its owner"
        return None

    def status(self, open_connections: int) -> str:
        now = self._clock()
        with self._lock:
            then, before = self._last
            rate = (self.events - before) / max(now - then, 1e-9)
            self._last = (now, self.events)
            return (
                f"status: {open_connections} connections open, {self.runs_created} runs created, "
                f"{self.steps_finished} steps finished, {rate:.1f} events/s, "
                f"{self.refused} connections refused"
            )

    async def report_every(self, open_connections: Callable[[], int]) -> None:
        """Log the status line every ``status_seconds`` (never when 0)."""
        seconds = self._settings.status_seconds
        if seconds <= 0:
            return
        while True:
            await asyncio.sleep(seconds)
            log.info("%s", self.status(open_connections()))
