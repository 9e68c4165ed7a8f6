"""Issue 18: rows owed to the ledger (``proxy.storage.owed``): kept while the disk refuses them, written
once it takes them, bounded, and what is still owed at shutdown logged (the real proxy and a real full
disk: ``tests/faults/test_ledger_disk_full.py``)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import pytest

from proxy.storage import owed as owed_module
from proxy.storage.errors import DatabaseBusyError, DatabaseError
from proxy.storage.owed import Owed, WriteFn


class Disk:
    """A writer whose writes fail with ``failure`` while ``full``; what it wrote."""

    def __init__(self) -> None:
        self.full = True
        self.failure: Exception = DatabaseBusyError("disk full")
        self.written: list[str] = []

    def submit(self, write: WriteFn) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.full:
            future.set_exception(self.failure)
        else:
            future.set_result(write(sqlite3.connect(":memory:")))
        return future

    def row(self, name: str) -> WriteFn:
        return lambda conn: self.written.append(name)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owed_module, "FIRST_PAUSE", 0.01)
    monkeypatch.setattr(owed_module, "LONGEST_PAUSE", 0.02)


@pytest.mark.asyncio
async def test_owed_rows_are_written_once_the_disk_takes_them() -> None:
    disk = Disk()
    owed = Owed(disk.submit)
    assert owed.keep(disk.row("a"), 10, "row a") and owed.keep(disk.row("b"), 5, "row b")
    await asyncio.sleep(0.1)  # several rounds against the full disk: nothing lost
    assert len(owed) == 2 and owed.tokens == 15 and disk.written == []
    disk.full = False
    for _ in range(100):
        if not len(owed):
            break
        await asyncio.sleep(0.01)
    assert disk.written == ["a", "b"] and owed.written == 2
    await owed.close()


@pytest.mark.asyncio
async def test_the_queue_is_bounded_and_what_is_left_at_shutdown_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    disk = Disk()
    owed = Owed(disk.submit, limit=2)
    assert owed.keep(disk.row("a"), 10, "row a") and owed.keep(disk.row("b"), 5, "row b")
    with caplog.at_level(logging.ERROR, "proxy.storage.owed"):
        assert not owed.keep(disk.row("c"), 1, "row c")  # the caller releases its reservation
        assert owed.lost == 1 and "row c is lost" in caplog.text
        await owed.close()  # tried once more: still full
    assert "2 usage row(s) (15 tokens) are still owed" in caplog.text
    assert disk.written == []


@pytest.mark.asyncio
async def test_a_row_that_fails_for_good_is_dropped_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    disk = Disk()
    disk.failure = DatabaseError("constraint failed")
    owed = Owed(disk.submit)
    with caplog.at_level(logging.ERROR, "proxy.storage.owed"):
        owed.keep(disk.row("a"), 10, "row a")
        await owed.close()
    assert len(owed) == 0 and "row a could not be written and is dropped" in caplog.text
