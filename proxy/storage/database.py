"""The SQLite database: migrations, connection setup, one writer thread, a small pool of readers.

Following datasette's model, one thread owns the only write connection and takes work from a
queue. Everything written goes through :meth:`Database.execute_write`; the writer drains whatever
is queued and applies it in ONE transaction (``BEGIN IMMEDIATE``, so it is also correct when
several processes share the file), each job inside its own savepoint so one failing job does not
take its neighbours down. A job's awaiting caller is resolved only after the transaction holding it
has committed (group commit): a response that waits for its usage row is durable once it returns.

Durability: WAL with ``synchronous=NORMAL`` (the default). A commit is in the WAL file, i.e. in the
kernel, before the caller is resolved, so killing the process (even SIGKILL) loses nothing that was
acknowledged; a power cut may lose the last commits before the next checkpoint. ``FULL`` adds one
fsync per transaction (not per row, thanks to grouping) and also survives power loss; choose it
with ``LLMSERVER_DB_SYNCHRONOUS=FULL`` on hardware where an fsync is cheap.

Faults: a full disk and a database locked by another process are temporary. ``BEGIN IMMEDIATE``
that finds the file locked past the busy timeout is tried again until :data:`WRITE_RETRY_SECONDS`
have passed (so a lock held 8 s by another program delays writes, it does not lose them); after
that, and for a full disk, the jobs fail with :class:`DatabaseBusyError` (``temporary``: the proxy
answers 503 with ``retry-after``). Such an incident is logged when it starts and when writes work
again, not once per failed job (:class:`~proxy.storage.faults.Incident`).

Checkpoints: the writer never checkpoints the WAL itself (``wal_autocheckpoint = 0``), so no commit
pays for copying the WAL into the database file; a :class:`~proxy.storage.walcheckpoint.Checkpointer` thread
does it on its own connection, and keeps the WAL bounded (see there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from proxy.storage.errors import DatabaseClosedError, DatabaseError, StorageError
from proxy.storage.faults import Incident, disk_full, is_temporary, translate
from proxy.storage.jobs import WriteJob, WriterStats, deliver, deliver_results
from proxy.storage.migrate import BUSY_TIMEOUT_MS, apply_migrations
from proxy.storage.owed import Owed
from proxy.storage.walcheckpoint import Checkpointer

log = logging.getLogger(__name__)

T = TypeVar("T")

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
WRITE_RETRY_SECONDS = 30.0  # how long the writer keeps trying to get a lock another process holds
# An oversized WAL (after a burst, or readers that held it) is cut back to this when it starts over.
WAL_SIZE_LIMIT = 16 * 1024 * 1024


def resolve_path(url: str) -> Path:
    """The absolute file path of a ``sqlite://`` URL; ``ValueError`` for anything else.

    ``sqlite:///abs/path`` is absolute, ``sqlite://rel/path`` is relative to the working
    directory, ``sqlite://~/x`` is in the home directory.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ValueError("expected a sqlite:// URL, e.g. sqlite://data/app.db or sqlite:///var/lib/llmserver/app.db")
    if not rest or rest.strip("/") == "":
        raise ValueError("the URL has no file path")
    if "?" in rest or "#" in rest:
        raise ValueError("query parameters and fragments are not supported in the database URL")
    if rest.strip("/") == ":memory:":
        raise ValueError("an in-memory database cannot be shared between connections; give a file path")
    if rest.startswith("/"):
        return Path("/" + rest.lstrip("/"))
    return Path(rest).expanduser().absolute()


def connect(path: Path, *, readonly: bool = False, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection set up the way every connection here must be (WAL, busy timeout, foreign keys)."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


class Database:
    """One writer thread with the only write connection, a checkpoint thread, a few reader threads."""

    def __init__(
        self,
        path: Path,
        *,
        readers: int = 2,
        synchronous: str = "NORMAL",
        max_batch: int = 1000,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self.stats = WriterStats()
        self.checkpointer = checkpointer or Checkpointer()
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._reader_count = readers
        self._queue: queue.SimpleQueue[WriteJob | None] = queue.SimpleQueue()  # None: stop
        self._writer: threading.Thread | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._read_conns: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_read_conns: list[sqlite3.Connection] = []
        self._closed = False
        self.incident = Incident()
        self.owed = Owed(self.submit_write)  # rows whose write failed for a temporary reason (issue 18)
        # The owner id named on the quota reservations made through this database (proxy.storage.owner),
        # set by a serving process; None: they are reclaimed by age only.
        self.reservation_owner: str | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        *,
        migrate: bool = True,
        readers: int = 2,
        synchronous: str = "NORMAL",
        checkpointer: Checkpointer | None = None,
    ) -> AsyncIterator[Database]:
        """Migrate (unless told not to), start, and close on exit (also when starting failed half-way)."""
        if migrate:
            await asyncio.to_thread(apply_migrations, path)
        db = cls(path, readers=readers, synchronous=synchronous, checkpointer=checkpointer)
        try:
            await db.start()
            yield db
        finally:
            await db.close()

    async def start(self) -> None:
        """Open the connections and start the writer and checkpoint threads."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(target=self._run_writer, args=(ready,), name="db-writer", daemon=True)
        self._writer.start()
        await asyncio.wrap_future(ready)
        try:
            conn = await asyncio.to_thread(connect, self.path, synchronous=self._synchronous)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open {self.path}: {exc}") from exc
        self.checkpointer.start(conn)
        self._readers = concurrent.futures.ThreadPoolExecutor(self._reader_count, thread_name_prefix="db-read")
        for _ in range(self._reader_count):
            conn = await asyncio.to_thread(connect, self.path, readonly=True, synchronous=self._synchronous)
            self._all_read_conns.append(conn)
            self._read_conns.put(conn)

    async def close(self) -> None:
        """Try the owed rows once more, finish every queued write, then stop the threads and close all connections.

        The checkpoint thread stops last, once nothing writes or reads any more, so that its final
        checkpoint covers every write and need not wait for a reader.
        """
        if self._closed:
            return
        if self._writer is not None:
            await self.owed.close()  # tried once more while the writer still runs
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        for conn in self._all_read_conns:
            conn.close()
        self._all_read_conns.clear()
        await asyncio.to_thread(self.checkpointer.stop)

    def unwritable(self) -> str | None:
        """Why a write would fail now (``"disk full"``, ``"write failing"``), or None. Cheap (one
        ``statvfs``): admission asks it for every request, ``/readyz`` for every probe, so that a
        request is refused before it runs rather than served without its usage row (issue 18)."""
        if disk_full(self.path):
            return "disk full"
        return "write failing" if self.incident.failing() else None

    async def execute_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread; return its value once its transaction committed.

        ``fn`` runs inside a savepoint of a larger transaction and must not BEGIN, COMMIT or
        ROLLBACK. If it raises, only its own changes are undone and the exception reaches the
        caller (``sqlite3.Error`` wrapped in :class:`DatabaseError`). Cancelling the caller does
        not cancel the write.
        """
        return await self.submit_write(fn)

    def submit_write(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """:meth:`execute_write` without the wait: the job is queued now, the future settles once it
        committed (or failed). Cancelling the future does not cancel the write."""
        if self._closed or self._writer is None:
            raise DatabaseClosedError("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(WriteJob(fn, future, loop))
        return future

    async def execute_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only connection in a reader thread."""
        if self._closed or self._readers is None:
            raise DatabaseClosedError("the database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._read_conns.get()
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise translate(exc, "read failed", self.path) from exc
        finally:
            if conn.in_transaction:
                conn.rollback()
            self._read_conns.put(conn)

    def _run_writer(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = connect(self.path, synchronous=self._synchronous)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread's job, not a commit's
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except sqlite3.Error as exc:
            ready.set_exception(DatabaseError(f"cannot open {self.path}: {exc}"))
            return
        ready.set_result(None)
        try:
            stop = False
            while not stop:
                batch, stop = self._next_batch()
                if batch:
                    self._run_batch(conn, batch)
        finally:
            conn.close()

    def _next_batch(self) -> tuple[list[WriteJob], bool]:
        """Block for one item, then take whatever else is queued (up to ``max_batch``)."""
        batch: list[WriteJob] = []
        item = self._queue.get()
        while item is not None:
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _run_batch(self, conn: sqlite3.Connection, batch: list[WriteJob]) -> None:
        """One transaction for ``batch``; it waits while the checkpoint thread holds writes off."""
        self.checkpointer.begin_write()
        try:
            self._commit_batch(conn, batch)
        finally:
            self.checkpointer.end_write()

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, tried again while another process holds the lock (up to a bound)."""
        deadline = time.monotonic() + WRITE_RETRY_SECONDS
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:  # each try already waited the busy timeout
                if not is_temporary(exc, self.path) or time.monotonic() >= deadline:
                    raise
                log.debug("database locked by another process; trying again")
                time.sleep(0.05)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[WriteJob]) -> None:
        done: list[tuple[WriteJob, Any]] = []
        try:
            self._begin(conn)
            for job in batch:
                ok, value = self._run_job(conn, job)
                if ok:
                    done.append((job, value))
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction failed (or a bug): every unanswered job fails
            self._fail_batch(conn, batch, exc)
            return
        self.stats.transactions += 1
        self.stats.jobs += len(done)
        if len(done) == len(batch):
            self.incident.recovered()
        deliver_results(done)

    def _fail_batch(self, conn: sqlite3.Connection, batch: list[WriteJob], exc: Exception) -> None:
        """The transaction itself failed: roll back and fail every job not already answered."""
        temporary = isinstance(exc, sqlite3.Error) and is_temporary(exc, self.path)
        if temporary:
            self.incident.failed(exc)
        else:
            log.error("write transaction of %d jobs failed: %s", len(batch), exc, exc_info=True)
        self.stats.failed_transactions += 1
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback after a failed write transaction failed too")
        if isinstance(exc, sqlite3.Error):
            error = translate(exc, "write transaction failed", self.path)
        else:
            error = DatabaseError(f"write transaction failed: {exc}")
            error.__cause__ = exc
        for job in batch:
            if not job.delivered:
                self.stats.failed_jobs += 1
                deliver(job, None, error)

    def _run_job(self, conn: sqlite3.Connection, job: WriteJob) -> tuple[bool, Any]:
        """Run one job in a savepoint; deliver its failure at once, return (ok, value)."""
        conn.execute("SAVEPOINT job")
        try:
            value = job.fn(conn)
        except Exception as exc:  # the job's own failure: undo it, keep the batch going
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            self.stats.failed_jobs += 1
            error: BaseException = exc
            if isinstance(exc, sqlite3.Error):
                error = translate(exc, "write failed", self.path)
            if isinstance(error, StorageError) and error.temporary:
                self.incident.failed(exc)
            else:
                log.warning("write job failed: %s", exc, exc_info=not isinstance(exc, StorageError))
            deliver(job, None, error)
            return False, None
        conn.execute("RELEASE job")
        return True, value
