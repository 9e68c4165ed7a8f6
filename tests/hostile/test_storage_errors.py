"""Issue 14: storage errors mapped once (temporary ones 503, logged once per incident), files private."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.errors import DatabaseBusyError
from proxy.storage.usage import UsageEvent, record_usage


def event(i: int) -> UsageEvent:
    return UsageEvent(f"req_{i}", None, "m", "/v1/chat/completions", 10, 5, 200)


@pytest.mark.asyncio
async def test_a_full_database_is_temporary_logged_once_and_recovers(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    pages = await db.execute_read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await db.execute_write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())
    caplog.set_level(logging.INFO, logger="proxy.storage.database")
    failures = 0
    for i in range(200):  # enough rows to need a new page
        try:
            await record_usage(db, event(i))
        except DatabaseBusyError as exc:
            assert exc.temporary
            failures += 1
    assert failures > 0
    incident = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(incident) == 1 and not incident[0].exc_info, "one line per incident, no traceback"
    await db.execute_write(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchall())
    db.incident.QUIET = 0.0  # the incident ends at the first success (10 s after the last failure in service)
    await record_usage(db, event(10_000))
    assert any("writable again" in r.getMessage() for r in caplog.records)
    ok = await db.execute_read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
    assert ok == "ok"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.asyncio
async def test_the_database_its_wal_and_directory_are_private(tmp_path: Path, repo: KeyRepository) -> None:
    """Old code: data/app.db and its WAL 0644, the directory 0755."""
    path = tmp_path / "data" / "app.db"
    old = os.umask(0o022)
    try:
        async with Database.open(path) as db:
            await KeyRepository(db, repo._mint).create_key("k")
            assert Path(f"{path}-wal").exists()
            assert mode(Path(f"{path}-wal")) == 0o600
    finally:
        os.umask(old)
    assert mode(path.parent) == 0o700 and mode(path) == 0o600


@pytest.mark.asyncio
async def test_existing_open_files_are_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (tmp_path / "grouped").mkdir()
    (tmp_path / "grouped").chmod(0o750)
    path = directory / "app.db"
    path.touch()
    path.chmod(0o644)
    caplog.set_level(logging.WARNING)
    async with Database.open(path):
        pass
    assert mode(directory) == 0o750 and mode(path) == 0o600  # "other" removed; the group kept
    async with Database.open(tmp_path / "grouped" / "app.db"):
        pass
    assert mode(tmp_path / "grouped") == 0o750
    warned = [r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()]
    assert len(warned) == 2, warned
