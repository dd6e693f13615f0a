"""Run deletions in the background: the run is gone at once, its records a little later.

``submit`` marks the run deleted (one journal record, in a worker thread) and queues the purge;
one worker task purges the queued runs one at a time, each in a worker thread (compaction reads
the journal), never on the event loop and never under the run manager's lock. ``status`` answers
``pending``, ``retrying`` (the purge failed, e.g. the disk is full: logged once, retried every
``retry_seconds``) or ``done`` with how many records went, for the last ``keep`` deletions.
A purge cut short by a restart is finished by the run manager's ``load()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from typing import Any, Protocol

log = logging.getLogger("mailtls.web")


class Purger(Protocol):
    def mark_deleted(self, run_id: str) -> tuple[str, str]: ...
    def purge(self, run_id: str, code: str) -> int: ...


class Deletions:
    def __init__(self, manager: Purger, retry_seconds: float = 30.0, keep: int = 1000) -> None:
        self._manager = manager
        self._retry = retry_seconds
        self._keep = keep
        self._queue: deque[tuple[str, str]] = deque()
        self._status: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, run_id: str) -> dict[str, Any]:
        """Mark the run deleted (``LookupError`` when there is none) and queue its purge."""
        run_id, code = await asyncio.to_thread(self._manager.mark_deleted, run_id)
        self._set(run_id, {"state": "pending", "removed": None})
        self._queue.append((run_id, code))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return self._status[run_id]

    def status(self, run_id: str) -> dict[str, Any] | None:
        return self._status.get(run_id)

    def _set(self, run_id: str, status: dict[str, Any]) -> None:
        self._status[run_id] = status
        self._status.move_to_end(run_id)
        while len(self._status) > self._keep:
            self._status.popitem(last=False)

    async def _work(self) -> None:
        failing = ""
        while self._queue:
            run_id, code = self._queue[0]
            try:
                removed = await asyncio.to_thread(self._manager.purge, run_id, code)
            except Exception as exc:  # a worker boundary: say why once, keep the run queued
                if str(exc) != failing:
                    log.error("deleting a run's records failed (%s); retrying", exc)
                    failing = str(exc)
                self._set(run_id, {"state": "retrying", "removed": None})
                await asyncio.sleep(self._retry)
                continue
            failing = ""
            self._queue.popleft()
            self._set(run_id, {"state": "done", "removed": removed})
