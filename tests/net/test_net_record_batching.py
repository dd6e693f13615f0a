"""The shell hands the records of one read to the sink together (``Store.append_many``: one
journal write) and only then writes that read's replies; plain sinks get records one by one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from net_testkit import SPECS, Journal, MiniCore, authenticator, bound, make_settings

from mailtls.net.connection import batch_sink
from mailtls.net.listeners import MailServer
from mailtls.net.pki import ensure_certificates
from mailtls.store import JOURNAL_NAME, Store


class CountingStore(Store):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, fsync=False)
        self.batches: list[list[str]] = []

    def append_many(self, records: Any) -> None:
        self.batches.append([r["type"] for r in records])
        super().append_many(records)


def journal_types(data_dir: Path) -> list[str]:
    text = (data_dir / JOURNAL_NAME).read_bytes()
    return [json.loads(line)["type"] for line in text.splitlines()]


async def test_records_of_one_read_reach_the_journal_in_one_batch_before_the_replies(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "store")
    settings = make_settings(tmp_path)
    server = MailServer(  # wired as serve.py does it: sink=store.append
        settings,
        certs=ensure_certificates(settings),
        binder=bound,
        authenticator=authenticator,
        sink=store.append,
        core_factories={"mini": MiniCore},
        specs=SPECS,
    )
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port("mini"))
        await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"ONE\r\nTWO\r\nTHREE\r\n")
        first = await asyncio.wait_for(reader.readline(), 5)
        # the client got the first reply: the three command records are already in the file
        assert first == b"250 ONE\r\n"
        assert journal_types(tmp_path / "store").count("command") == 3
        assert ["command"] * 3 in store.batches
        assert await asyncio.wait_for(reader.readline(), 5) == b"250 TWO\r\n"
        assert await asyncio.wait_for(reader.readline(), 5) == b"250 THREE\r\n"
        writer.write(b"QUIT\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"221 bye\r\n"
        writer.close()
    finally:
        await server.close()
        store.close()
    types = journal_types(tmp_path / "store")
    assert types[0] == "connection_opened" and types[-1] == "connection_closed"
    assert types.count("command") == 4


def test_a_plain_sink_gets_records_one_by_one() -> None:
    got: list[dict[str, Any]] = []
    each = batch_sink(got.append)  # a bound append without append_many
    each([{"a": 1}, {"b": 2}])
    assert got == [{"a": 1}, {"b": 2}]
    journal = Journal()
    batch_sink(journal)([{"type": "x"}])
    assert journal.types() == ["x"]
