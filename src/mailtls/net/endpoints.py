"""The runs' own listening sockets: opened when a run gets its endpoints, closed when it gives
them back (``mailtls.runs.endpoints`` decides which; this module only listens).

``open`` binds and listens synchronously, in whatever thread asks (the web app creates runs from
worker threads), so a client that connects as soon as the API answered waits in the backlog
instead of being refused; the sockets are then served on the event loop by the same
``Listener`` objects (and so the same cores, limits and records) as the standard ports. The
connection's local address and port, read at accept time, name its run.

Bounds: one socket per endpoint and listen address; the pool's ``max_runs`` bounds the count,
``descriptors`` reports it. A run's open connections are not cut when its listeners close: the
idle and session limits end them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailtls.net.connection import Listener
from mailtls.runs.endpoints import Endpoint, EndpointUnavailable, RunEndpoints

log = logging.getLogger("mailtls.net")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; not exported by Python 3.11
BACKLOG = 128


@dataclass(slots=True)
class _RunSockets:
    socks: list[tuple[str, socket.socket]]  # not (yet) owned by a server
    count: int = 0  # descriptors of the run
    servers: list[asyncio.Server] = field(default_factory=list)
    pending: int = 0  # create_server tasks not done yet
    closed: bool = False


class RunListeners:
    """Listening sockets per run. Create on the event loop; ``open``/``close`` from any thread."""

    def __init__(
        self,
        listener_for: Callable[[str], Listener],
        listen: Sequence[str],
        *,
        freebind: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener_for = listener_for
        self._listen = tuple(listen)
        self._freebind = freebind
        self._lock = threading.Lock()
        self._runs: dict[str, _RunSockets] = {}

    @property
    def descriptors(self) -> int:
        with self._lock:
            return sum(r.count for r in self._runs.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def open(self, endpoints: RunEndpoints) -> None:
        socks: list[tuple[str, socket.socket]] = []
        try:
            for endpoint in endpoints:
                if endpoint.address and self._covered(endpoint.address):
                    continue
                for host in (endpoint.address,) if endpoint.address else self._listen:
                    socks.append((endpoint.kind, self._bind(endpoint, host)))
        except BaseException:
            for _, sock in socks:
                sock.close()
            raise
        entry = _RunSockets(socks, count=len(socks))
        with self._lock:
            old = self._runs.pop(endpoints.run_id, None)
            self._runs[endpoints.run_id] = entry
        if old is not None:
            self._loop.call_soon_threadsafe(self._stop, old)
        self._loop.call_soon_threadsafe(self._serve, entry)

    def close(self, run_id: str) -> None:
        with self._lock:
            entry = self._runs.pop(run_id, None)
        if entry is not None:
            self._loop.call_soon_threadsafe(self._stop, entry)

    def close_all(self) -> None:
        with self._lock:
            entries, self._runs = list(self._runs.values()), {}
        for entry in entries:
            self._stop(entry)

    def _covered(self, address: str) -> bool:
        """A wildcard listen address of the family already accepts connections to ``address``
        on the standard ports (AnyIP routes the prefix to the host): the standard listener
        takes them, and the connection's local address still names the run."""
        wildcard = "::" if ":" in address else "0.0.0.0"
        return wildcard in self._listen

    def _bind(self, endpoint: Endpoint, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self._freebind:
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((host, endpoint.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                raise EndpointUnavailable(endpoint, exc.strerror or str(exc)) from None
            raise
        return sock

    def _serve(self, entry: _RunSockets) -> None:
        if entry.closed:
            self._close_socks(entry)
            return
        for kind, sock in entry.socks:
            coro = self._loop.create_server(self._listener_for(kind), sock=sock, backlog=BACKLOG)
            task = self._loop.create_task(coro)
            entry.pending += 1
            task.add_done_callback(functools.partial(self._served, entry=entry, sock=sock))

    def _served(
        self, task: asyncio.Task[asyncio.Server], entry: _RunSockets, sock: socket.socket
    ) -> None:
        entry.pending -= 1
        if task.cancelled() or task.exception() is not None:
            log.warning(
                "run endpoint not served: %r", None if task.cancelled() else task.exception()
            )
            sock.close()
            entry.socks = [(k, s) for k, s in entry.socks if s is not sock]
        else:  # the server owns the socket now (uvloop may even have detached it)
            entry.servers.append(task.result())
            entry.socks = [(k, s) for k, s in entry.socks if s is not sock]
        if entry.closed:
            self._stop(entry)

    def _stop(self, entry: _RunSockets) -> None:
        entry.closed = True
        for server in entry.servers:
            server.close()  # closes its listening socket
        entry.servers.clear()
        if not entry.pending:
            self._close_socks(entry)

    @staticmethod
    def _close_socks(entry: _RunSockets) -> None:
        for _, sock in entry.socks:  # only sockets no server took
            with contextlib.suppress(OSError):
                sock.close()
        entry.socks = []
