"""The runs' own listening sockets: opened at once, served by the standard listener of their kind
(same core, records with the real local port), closed on release; a taken port is named."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from net_testkit import Journal, LineClient, make_settings, start_server

from conftest import free_port_range
from mailtls.net.endpoints import RunListeners
from mailtls.runs.endpoints import Endpoint, EndpointUnavailable, RunEndpoints
from mailtls.runs.types import Binding

pytestmark = pytest.mark.timeout(30)


def endpoints(run_id: str, *ports: int, address: str = "") -> RunEndpoints:
    return RunEndpoints(
        run_id, "localhost", address, "", tuple(Endpoint("mini", address, p) for p in ports)
    )


async def greeting(port: int) -> bytes:
    def talk() -> bytes:
        client = LineClient(port)
        try:
            return client.line()
        finally:
            client.close()

    return await asyncio.to_thread(talk)


async def test_open_serve_and_close(tmp_path: Path) -> None:
    journal = Journal()
    seen: list[tuple[str, int]] = []

    def binder(ip: str, local: tuple[str, int]) -> Binding:
        seen.append(local)  # bound, so its records are kept whole (not summed up)
        return Binding("r1", 1, "baseline", "immediate", "endpoint", active=False)

    server = await start_server(make_settings(tmp_path), journal, binder=binder)
    listeners = RunListeners(server.listener, ("127.0.0.1",))
    first = free_port_range(4, ("127.0.0.1",))
    try:
        listeners.open(endpoints("r1", first, first + 1))
        assert listeners.descriptors == 2 and len(listeners) == 1
        assert await greeting(first + 1)  # served (the client waited in the backlog at worst)
        assert seen[-1] == ("127.0.0.1", first + 1)
        opened = await journal.wait_for("connection_opened")
        assert opened[-1]["port"] == first + 1 and opened[-1]["listener"] == "mini"
        with pytest.raises(EndpointUnavailable) as taken:  # another run's port: named, nothing kept
            listeners.open(endpoints("r2", first + 2, first))
        assert taken.value.endpoint.port == first and len(listeners) == 1
        listeners.close("r1")
        await asyncio.sleep(0.1)
        assert listeners.descriptors == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", first), timeout=2).close()
        listeners.open(endpoints("r2", first + 2, first))  # the pool may hand them out again
        assert await greeting(first)
        listeners.close_all()
    finally:
        await server.close(grace=0.2)


async def test_a_close_right_after_the_open_leaves_nothing_listening(tmp_path: Path) -> None:
    server = await start_server(make_settings(tmp_path), Journal())
    listeners = RunListeners(server.listener, ("127.0.0.1",))
    first = free_port_range(2, ("127.0.0.1",))
    try:
        listeners.open(endpoints("r1", first, first + 1))
        listeners.close("r1")  # before the loop served them
        await asyncio.sleep(0.1)
        for port in (first, first + 1):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        await server.close(grace=0.2)


async def test_a_wildcard_listen_address_serves_run_addresses_itself(tmp_path: Path) -> None:
    server = await start_server(make_settings(tmp_path), Journal())
    listeners = RunListeners(server.listener, ("0.0.0.0",))  # never binds: only asked
    try:
        listeners.open(endpoints("r1", 2143, address="198.51.100.7"))
        assert listeners.descriptors == 0
    finally:
        listeners.close_all()
        await server.close(grace=0.2)
