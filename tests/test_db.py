"""The database layer: migrations, connection setup, the group-commit writer, checkpoints, durability."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from proxy.storage.database import WAL_SIZE_LIMIT, Database, resolve_path
from proxy.storage.errors import DatabaseClosedError, DatabaseError
from proxy.storage.migrate import MIGRATIONS_DIR, apply_migrations, known_migrations
from proxy.storage.usage import UsageEvent, record_usage
from proxy.storage.walcheckpoint import Checkpointer

REPO = Path(__file__).resolve().parent.parent
SEED_TABLES = {"users", "api_keys", "token_usage_events", "models", "huggingface_tokens"}

pytestmark = pytest.mark.timeout(30)


def insert_key(conn: sqlite3.Connection, token_limit: int | None = None) -> int:
    """A key row without argon2 (the hash is never checked in these tests)."""
    now = time.time()
    (key_id,) = conn.execute(
        "INSERT INTO api_keys (public_id, name, secret_hash, last_four, created_at, updated_at, token_limit) "
        "VALUES (hex(randomblob(6)), 'test', 'not-a-hash', 'abcd', ?, ?, ?) RETURNING id",
        (now, now, token_limit),
    ).fetchone()
    return int(key_id)


def event(request_id: str, key_id: int | None, prompt: int = 3, completion: int = 4) -> UsageEvent:
    return UsageEvent(request_id, key_id, "smollm2", "/v1/chat/completions", prompt, completion, 200)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/lib/llmserver/app.db", Path("/var/lib/llmserver/app.db")),
        ("sqlite:////var/lib/app.db", Path("/var/lib/app.db")),
        ("sqlite://data/app.db", Path.cwd() / "data/app.db"),
        ("sqlite://./x.db", Path.cwd() / "x.db"),
        ("sqlite://~/x.db", Path.home() / "x.db"),
    ],
)
def test_resolve_path_accepts_sqlite_urls(url: str, expected: Path) -> None:
    assert resolve_path(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgres://db/app",
        "data/app.db",
        "sqlite://",
        "sqlite:///",
        "sqlite://:memory:",
        "sqlite://a.db?mode=ro",
    ],
)
def test_resolve_path_refuses_everything_else(url: str) -> None:
    with pytest.raises(ValueError):
        resolve_path(url)


def test_the_migrations_are_read_from_the_top_level_folder_of_the_checkout() -> None:
    """issue 20: the design card's layout puts migrations/ beside proxy/ and runtime/; a checkout (make
    run, make test) reads them there (tests/test_packaging.py: the installed wheel ships its own)."""
    assert MIGRATIONS_DIR == REPO / "migrations"
    assert known_migrations()[0] == "20250101000000_init"
    assert not (REPO / "proxy" / "storage" / "migrations").exists()


def test_an_installation_without_its_migrations_is_refused_by_name(tmp_path: Path) -> None:
    """Never a database without tables: no SQL files where they should be is a clear error."""
    with pytest.raises(DatabaseError, match=f"no database migrations in {tmp_path}"):
        apply_migrations(tmp_path / "app.db", tmp_path)
    with pytest.raises(DatabaseError, match="the installation is incomplete"):
        known_migrations(tmp_path)


def test_migrations_apply_once_and_leave_a_sound_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "app.db"
    applied = apply_migrations(path)
    assert applied[0] == "20250101000000_init"
    assert apply_migrations(path) == []
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    assert tables >= SEED_TABLES | {"api_key_changes", "quota_reservations"}
    assert {"token_usage_events_key_time", "token_usage_events_model_time"} <= indexes


@pytest.mark.asyncio
async def test_connections_are_set_up_as_promised(db: Database) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[object, ...]:
        return tuple(
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous", "query_only")
        )

    assert await db.execute_write(pragmas) == ("wal", 1, 5000, 1, 0)
    assert await db.execute_read(pragmas) == ("wal", 1, 5000, 1, 1)
    with pytest.raises(DatabaseError):  # readers are read-only
        await db.execute_read(lambda conn: conn.execute("DELETE FROM users"))


@pytest.mark.asyncio
async def test_group_commit_writes_every_row_in_few_transactions(db: Database) -> None:
    key_id = await db.execute_write(insert_key)
    n = 2000
    ids = await asyncio.gather(*(record_usage(db, event(f"req-{i}", key_id)) for i in range(n)))
    assert len(set(ids)) == n
    assert db.stats.transactions < n / 20, db.stats  # many rows per transaction
    row = await db.execute_read(
        lambda conn: conn.execute(
            "SELECT count(*), (SELECT tokens_used FROM api_keys), (SELECT request_count FROM api_keys), "
            "(SELECT endpoint_counts FROM api_keys) FROM token_usage_events"
        ).fetchone()
    )
    assert tuple(row) == (n, 7 * n, n, '{"/v1/chat/completions":2000}')


@pytest.mark.asyncio
async def test_a_write_is_visible_to_other_connections_when_it_returns(db: Database) -> None:
    key_id = await db.execute_write(insert_key)
    await record_usage(db, event("seen", key_id))
    other = sqlite3.connect(db.path)
    try:
        assert other.execute("SELECT count(*) FROM token_usage_events WHERE request_id = 'seen'").fetchone() == (1,)
    finally:
        other.close()


@pytest.mark.asyncio
async def test_a_failed_job_surfaces_and_spares_its_batch(db: Database) -> None:
    key_id = await db.execute_write(insert_key)
    await record_usage(db, event("dup", key_id))

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES ('x', 'y', 0)")
        raise RuntimeError("boom")

    results = await asyncio.gather(
        record_usage(db, event("a", key_id)),
        record_usage(db, event("dup", key_id)),  # duplicate request id
        db.execute_write(boom),
        record_usage(db, event("b", key_id)),
        return_exceptions=True,
    )
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert isinstance(results[1], DatabaseError) and isinstance(results[1].__cause__, sqlite3.IntegrityError)
    assert isinstance(results[2], RuntimeError)
    counts = await db.execute_read(
        lambda conn: conn.execute(
            "SELECT (SELECT count(*) FROM token_usage_events), (SELECT request_count FROM api_keys), "
            "(SELECT count(*) FROM users)"
        ).fetchone()
    )
    assert tuple(counts) == (3, 3, 0)  # the failed jobs left nothing behind, not even counters
    assert db.stats.failed_jobs == 2


@pytest.mark.asyncio
async def test_a_failed_commit_fails_every_job_of_the_transaction(db: Database) -> None:
    key_id = await db.execute_write(insert_key)

    def violate_at_commit(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO quota_reservations (api_key_id, tokens, created_at) VALUES (999, 1, 0)")

    gate = threading.Event()

    def wait_for_gate(conn: sqlite3.Connection) -> None:
        gate.wait(5)

    blocker = asyncio.ensure_future(db.execute_write(wait_for_gate))
    await asyncio.sleep(0.05)  # the writer is busy: the next jobs queue up and share one transaction
    jobs = [db.execute_write(violate_at_commit), record_usage(db, event("lost", key_id))]
    pending = asyncio.gather(*jobs, return_exceptions=True)
    await asyncio.sleep(0.01)
    gate.set()
    await blocker
    results = await pending
    assert all(isinstance(r, DatabaseError) for r in results), results
    assert await db.execute_read(lambda c: c.execute("SELECT count(*) FROM token_usage_events").fetchone()[0]) == 0
    assert db.stats.failed_transactions == 1
    assert isinstance(await record_usage(db, event("after", key_id)), int)  # the writer goes on


@pytest.mark.asyncio
async def test_close_finishes_queued_writes_then_refuses_new_ones(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "app.db") as db:
        key_id = await db.execute_write(insert_key)
        tasks = [asyncio.ensure_future(record_usage(db, event(f"r{i}", key_id))) for i in range(200)]
        await asyncio.sleep(0)
    assert all(isinstance(task.result(), int) for task in tasks)
    with pytest.raises(DatabaseClosedError):
        await db.execute_write(insert_key)
    with pytest.raises(DatabaseClosedError):
        await db.execute_read(lambda conn: None)
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        assert conn.execute("SELECT count(*) FROM token_usage_events").fetchone() == (200,)
    finally:
        conn.close()


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def db_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("db-")}


@pytest.mark.asyncio
async def test_commits_never_checkpoint_and_the_wal_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    n = 3000  # one transaction each: without checkpoints the WAL would grow to ~60 MB
    largest = 0
    async with Database.open(path, checkpointer=Checkpointer(every=50)) as db:
        assert await db.execute_write(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        key_id = await db.execute_write(insert_key)
        for i in range(n):
            await record_usage(db, event(f"r{i}", key_id))
            if i % 25 == 0:
                largest = max(largest, wal_size(path))
        # Concurrent writes and reads while the checkpoint thread works.
        await asyncio.gather(
            *(record_usage(db, event(f"c{i}", key_id)) for i in range(500)),
            *(
                db.execute_read(lambda c: c.execute("SELECT count(*) FROM token_usage_events").fetchone())
                for _ in range(50)
            ),
        )
        stats = db.checkpointer.stats
        assert stats.checkpoints > 0 and stats.failures == 0, stats
    assert largest < WAL_SIZE_LIMIT, f"the WAL reached {largest} bytes"
    assert wal_size(path) == 0  # the final checkpoint emptied it
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        row = conn.execute("SELECT count(*), (SELECT request_count FROM api_keys) FROM token_usage_events").fetchone()
        assert row == (n + 500, n + 500)
    finally:
        conn.close()


class StarvedCheckpointer(Checkpointer):
    """A checkpoint thread that gets little CPU, as on 2 cores at load 15: each pass starts late."""

    def _passive(self, conn: sqlite3.Connection) -> tuple[int, bool]:
        time.sleep(0.1)
        return super()._passive(conn)


@pytest.mark.asyncio
async def test_a_starved_checkpoint_thread_holds_the_writer_back_instead_of_letting_the_wal_grow(
    tmp_path: Path,
) -> None:
    """The WAL reached 28-32 MB (limit 16) when other work starved the checkpoint thread: the writer,
    never waiting, outran it. Beyond a backlog the writer now waits for the round under way."""
    path = tmp_path / "app.db"
    largest = 0
    async with Database.open(path, checkpointer=StarvedCheckpointer(every=25, interval=0.05)) as db:
        key_id = await db.execute_write(insert_key)
        for i in range(1200):
            await record_usage(db, event(f"s{i}", key_id))
            if i % 10 == 0:
                largest = max(largest, wal_size(path))
        waits = db.checkpointer.stats.waits
    assert largest < 4 * 1024 * 1024, f"the WAL reached {largest} bytes"
    assert waits > 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM token_usage_events").fetchone()[0] == 1200
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_a_reader_holding_the_wal_makes_the_checkpointer_restart_it(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    checkpointer = Checkpointer(every=20, interval=0.05, restart_after=2, restart_wait=0.05)
    async with Database.open(path, checkpointer=checkpointer) as db:
        key_id = await db.execute_write(insert_key)
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM token_usage_events").fetchone()  # holds its snapshot
        i = 0
        deadline = time.monotonic() + 10
        while checkpointer.stats.restarts_busy == 0 and time.monotonic() < deadline:
            await record_usage(db, event(f"held{i}", key_id))
            i += 1
        stats = checkpointer.stats
        assert stats.restarts >= 1 and stats.restarts_busy >= 1 and stats.behind >= 2, stats
        held_pages = stats.wal_pages
        reader.execute("ROLLBACK")
        reader.close()
        # Released: the WAL is copied in full and starts over, smaller than it had grown.
        deadline = time.monotonic() + 10
        while checkpointer.stats.wal_pages >= held_pages and time.monotonic() < deadline:
            await record_usage(db, event(f"free{i}", key_id))
            i += 1
        assert checkpointer.stats.wal_pages < held_pages, checkpointer.stats
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM token_usage_events").fetchone() == (i,)
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_close_stops_the_checkpoint_thread(tmp_path: Path) -> None:
    before = db_threads()
    async with Database.open(tmp_path / "app.db", checkpointer=Checkpointer(interval=60)) as db:
        assert db.checkpointer.running
        key_id = await db.execute_write(insert_key)
        await record_usage(db, event("one", key_id))  # wakes the thread, which then waits for the interval
    assert not db.checkpointer.running
    assert db_threads() == before
    assert wal_size(tmp_path / "app.db") == 0


DURABILITY_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from proxy.storage.database import Database
    from proxy.storage.usage import UsageEvent, record_usage

    async def main():
        async with Database.open(Path(sys.argv[1]), migrate=False) as db:
            i = 0
            while True:
                events = [UsageEvent(f"r{i + j}", None, "m", "/v1/x", 1, 1, 200) for j in range(50)]
                await asyncio.gather(*(record_usage(db, e) for e in events))
                i += 50
                sys.stdout.write(f"{i}\\n")
                sys.stdout.flush()

    asyncio.run(main())
    """
)


def test_sigkill_loses_no_acknowledged_usage(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    apply_migrations(path)
    child = subprocess.Popen(
        [sys.executable, "-c", DURABILITY_CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = 0
    while acknowledged < 2000:
        line = child.stdout.readline()
        assert line, "the writer process died"
        acknowledged = int(line)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    conn = sqlite3.connect(path)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM token_usage_events").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert rows >= acknowledged
