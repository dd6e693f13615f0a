"""Live event streams (SSE): one store subscriber for all of them, caps per run and in total.

The store calls ``StreamHub.on_record`` once per record, in the appending thread; the hub looks
the record's run and session code up in a dict and wakes only the streams of that run (a flag
per stream, so a burst of records costs one wake-up), never every open stream. A stream then
queries the store for its run's new events on the event loop. ``open`` refuses a stream beyond
``per_run`` streams of one run (``TooManyStreams``, HTTP 429) or ``total`` streams in all
(HTTP 503).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class TooManyStreams(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Stream:
    """One open stream: ``wait`` returns True when its run has new events (False on timeout)."""

    __slots__ = ("_event", "_loop", "_pending", "code", "run_id")

    def __init__(self, run_id: str, code: str, loop: asyncio.AbstractEventLoop) -> None:
        self.run_id = run_id
        self.code = code
        self._loop = loop
        self._event = asyncio.Event()
        self._pending = False

    def notify(self, on_loop: bool) -> None:
        if self._pending:
            return  # a wake-up is already on its way
        self._pending = True
        if on_loop:
            self._loop.call_soon(self._event.set)
        else:
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        # clear before the caller queries: a record appended meanwhile wakes it again
        self._event.clear()
        self._pending = False
        return True


class StreamHub:
    def __init__(self, per_run: int, total: int) -> None:
        self.per_run = per_run
        self.total = total
        self._by_key: dict[str, tuple[Stream, ...]] = {}  # run id or code -> its streams
        self._count = 0
        self._lock = threading.Lock()  # open/close (loop) vs. on_record (any thread)
        self._loop_thread: int | None = None

    @property
    def open_streams(self) -> int:
        return self._count

    def open(self, run_id: str, code: str) -> Stream:
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        with self._lock:
            if self.total > 0 and self._count >= self.total:
                raise TooManyStreams(503, "too many live streams on this server; retry later")
            if self.per_run > 0 and len(self._by_key.get(run_id, ())) >= self.per_run:
                raise TooManyStreams(429, "too many live streams for this run; close one")
            stream = Stream(run_id, code, loop)
            for key in (run_id, code):
                self._by_key[key] = (*self._by_key.get(key, ()), stream)
            self._count += 1
            return stream

    def close(self, stream: Stream) -> None:
        with self._lock:
            for key in (stream.run_id, stream.code):
                rest = tuple(s for s in self._by_key.get(key, ()) if s is not stream)
                if rest:
                    self._by_key[key] = rest
                else:
                    self._by_key.pop(key, None)
            self._count -= 1

    def on_record(self, record: dict[str, Any]) -> None:
        """The store's subscriber: wake the streams of the record's run or code (if any)."""
        by_key = self._by_key
        if not by_key:
            return
        run, code = record.get("run"), record.get("code")
        streams = by_key.get(run, ()) if type(run) is str else ()
        if type(code) is str:
            streams += by_key.get(code, ())
        if streams:
            on_loop = threading.get_ident() == self._loop_thread
            for stream in streams:
                stream.notify(on_loop)
